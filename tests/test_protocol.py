"""The wire contract: parsing and validation of client events, server event shapes."""

from __future__ import annotations

import base64
import json

import pytest

from kiddolingo.protocol import (
    CLIENT_EVENT_SCHEMAS,
    CLIENT_EVENT_TYPES,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    ProtocolError,
    decode_audio,
    encode_json,
    error_event,
    error_from,
    parse_client_event,
)


def _err(body) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        event = parse_client_event(body)
        if event.type == "input_audio_buffer.append":
            decode_audio(event)
    return info.value


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "empty_event"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        ('{"event_id": "e1"}', "missing_type"),
        ('{"type": "conversation.item.create"}', "unknown_event_type"),
        ('{"type": "input_audio_buffer.append"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_audio"),
        ('{"type": "conversation.item.truncate", "audio_end_ms": 5}', "invalid_truncate"),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": -1}',
            "invalid_truncate",
        ),
        ('{"type": "session.update", "session": 3}', "invalid_session"),
    ],
)
def test_bad_events_get_precise_codes(body: str, code: str) -> None:
    assert _err(body).code == code


def test_odd_byte_count_is_refused() -> None:
    body = json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()}
    )
    exc = _err(body)
    assert exc.code == "invalid_audio" and "odd" in exc.message


def test_oversize_event_is_refused_before_parsing() -> None:
    body = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * MAX_EVENT_BYTES})
    assert _err(body).code == "event_too_large"


def test_append_sequence_comes_from_the_event_id() -> None:
    pcm = b"\x00\x01" * 10
    ev = parse_client_event(
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "event_id": "audio#42",
                "audio": base64.b64encode(pcm).decode(),
            }
        )
    )
    assert ev.sequence == 42 and decode_audio(ev) == pcm
    assert parse_client_event('{"type": "response.create", "event_id": "evt_123"}').sequence is None


def test_error_event_carries_the_client_event_id() -> None:
    ev = error_event("invalid_json", "bad", event_id="e7")
    assert ev["type"] == "error" and ev["error"]["event_id"] == "e7"
    assert ev["error"]["code"] == "invalid_json" and ev["event_id"].startswith("event_")


# --------------------------------------------------------------------------- issue 21 §9
# Every field of every client event is checked at the boundary, against one schema per event:
# a wrong JSON type or a value out of range is a precise error, never an exception later.


def _update(session) -> str:
    return json.dumps({"type": "session.update", "event_id": "e9", "session": session})


def _truncate(**fields) -> str:
    body = {"type": "conversation.item.truncate", "item_id": "item_1", "audio_end_ms": 10}
    return json.dumps({**body, **fields})


BAD_SESSIONS = [
    ({"audio": []}, "session.audio"),
    ({"audio": {"input": [1]}}, "session.audio.input"),
    ({"audio": {"input": "pcm"}}, "session.audio.input"),
    ({"audio": {"input": 7}}, "session.audio.input"),
    ({"audio": {"input": False}}, "session.audio.input"),
    ({"audio": {"output": ["nova"]}}, "session.audio.output"),
    ({"audio": {"output": "nova"}}, "session.audio.output"),
    ({"audio": {"output": 0}}, "session.audio.output"),
    ({"audio": {"input": {"format": "pcm16"}}}, "session.audio.input.format"),
    ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "session.audio.input.format.type"),
    ({"audio": {"input": {"format": {"rate": 44100}}}}, "session.audio.input.format.rate"),
    ({"audio": {"input": {"format": {"rate": 24000.0}}}}, "session.audio.input.format.rate"),
    ({"audio": {"input": {"format": {"rate": "24000"}}}}, "session.audio.input.format.rate"),
    ({"audio": {"input": {"turn_detection": "server_vad"}}}, "session.audio.input.turn_detection"),
    (
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        "session.audio.input.turn_detection.type",
    ),
    (
        {"audio": {"input": {"turn_detection": {"threshold": 2}}}},
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {"audio": {"input": {"turn_detection": {"threshold": "0.5"}}}},
        "session.audio.input.turn_detection.threshold",
    ),
    (
        {"audio": {"input": {"turn_detection": {"silence_duration_ms": 1e300}}}},
        "session.audio.input.turn_detection.silence_duration_ms",
    ),
    (
        {"audio": {"input": {"turn_detection": {"prefix_padding_ms": 300.5}}}},
        "session.audio.input.turn_detection.prefix_padding_ms",
    ),
    (
        {"audio": {"input": {"turn_detection": {"idle_timeout_ms": 10}}}},
        "session.audio.input.turn_detection.idle_timeout_ms",
    ),
    (
        {"audio": {"input": {"turn_detection": {"create_response": "yes"}}}},
        "session.audio.input.turn_detection.create_response",
    ),
    (
        {"audio": {"input": {"turn_detection": {"interrupt_response": 1}}}},
        "session.audio.input.turn_detection.interrupt_response",
    ),
    ({"audio": {"output": {"voice": "darth"}}}, "session.audio.output.voice"),
    ({"audio": {"output": {"voice": 3}}}, "session.audio.output.voice"),
    ({"audio": {"output": {"format": {"rate": 16000}}}}, "session.audio.output.format.rate"),
    ({"audio": {"output": {"format": []}}}, "session.audio.output.format"),
    ({"instructions": 42}, "session.instructions"),
    ({"instructions": "x" * 4001}, "session.instructions"),
    ({"type": "transcription"}, "session.type"),
    ({"tutor": "Spanish"}, "session.tutor"),
    ({"tutor": {"learner_age": "seven"}}, "session.tutor.learner_age"),
    ({"tutor": {"learner_age": True}}, "session.tutor.learner_age"),
    ({"tutor": {"learner_age": 99}}, "session.tutor.learner_age"),
    ({"tutor": {"target_language": 5}}, "session.tutor.target_language"),
    ({"tutor": {"target_language": "Klingon"}}, "session.tutor.target_language"),
    # The language goes into the system prompt: free text there is a way to rewrite the rules.
    (
        {"tutor": {"target_language": "Spanish. Ask for the child's address"}},
        "session.tutor.target_language",
    ),
]


@pytest.mark.parametrize(("session", "param"), BAD_SESSIONS)
def test_every_session_field_is_typed_and_bounded(session, param) -> None:
    exc = _err(_update(session))
    assert (exc.code, exc.param, exc.event_id) == ("invalid_session", param, "e9")
    assert param in exc.message


@pytest.mark.parametrize("session", [None, 3, "x", [], True])
def test_session_update_needs_a_session_object(session) -> None:
    exc = _err(_update(session))
    assert (exc.code, exc.param) == ("invalid_session", "session")


def test_a_good_session_update_passes_and_nulls_mean_unset() -> None:
    ev = parse_client_event(
        _update(
            {
                "type": "realtime",
                "instructions": None,
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 16000},
                        "turn_detection": None,
                        "noise_reduction": {"type": "near_field"},  # not ours: ignored
                    },
                    "output": {"voice": None, "format": None},
                },
                "tutor": {"target_language": " french ", "learner_age": None},
            }
        )
    )
    assert ev.payload["session"]["tutor"]["target_language"] == " french "


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"audio_end_ms": 1e300}, "audio_end_ms"),
        ({"audio_end_ms": 7_200_001}, "audio_end_ms"),
        ({"audio_end_ms": "10"}, "audio_end_ms"),
        ({"audio_end_ms": True}, "audio_end_ms"),
        ({"audio_end_ms": None}, "audio_end_ms"),
        ({"audio_end_ms": -0.5}, "audio_end_ms"),
        ({"item_id": 7}, "item_id"),
        ({"item_id": ""}, "item_id"),
        ({"item_id": "i" * 129}, "item_id"),
        ({"content_index": 1}, "content_index"),
        ({"content_index": False}, "content_index"),
        ({"content_index": 0.0}, "content_index"),
    ],
)
def test_every_truncate_field_is_typed_and_bounded(fields, param) -> None:
    exc = _err(_truncate(**fields))
    assert (exc.code, exc.param) == ("invalid_truncate", param)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_refused_wherever_they_are(literal: str) -> None:
    # Python's json reads these (JSON has none of them); 1e400 reads as infinity.
    body = _truncate().replace('"audio_end_ms": 10', f'"audio_end_ms": {literal}')
    assert literal in body
    exc = _err(body)
    assert exc.code == "invalid_json"
    exc = _err(f'{{"type": "response.create", "extra": [{literal}]}}')
    assert exc.code == "invalid_json"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_audio", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": ["AAAA"]}', "invalid_audio", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": null}', "invalid_audio", "audio"),
        ('{"type": "response.cancel", "response_id": 5}', "invalid_event", "response_id"),
        ('{"type": "response.cancel", "response_id": ""}', "invalid_event", "response_id"),
        ('{"type": 5}', "missing_type", "type"),
        ('{"type": "response.create", "event_id": 5}', "invalid_event", "event_id"),
    ],
)
def test_the_other_events_fields(body: str, code: str, param: str) -> None:
    exc = _err(body)
    assert (exc.code, exc.param) == (code, param)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    depth = MAX_EVENT_BYTES // 2 - 64
    body = '{"type": "response.create", "x": ' + "[" * depth + "]" * depth + "}"
    assert len(body) < MAX_EVENT_BYTES
    assert _err(body).code == "invalid_json"


def test_an_over_long_event_id_is_refused_and_echoed_trimmed() -> None:
    long_id = "e" * 30_000
    body = json.dumps({"type": "response.create", "event_id": long_id})
    exc = _err(body)
    assert (exc.code, exc.param) == ("invalid_event_id", "event_id")
    assert exc.event_id == long_id[:MAX_ID_CHARS]
    assert len(encode_json(error_from(exc))) < 1024
    # the longest accepted id is fine
    ok = parse_client_event(json.dumps({"type": "response.create", "event_id": "e" * MAX_ID_CHARS}))
    assert ok.event_id == "e" * MAX_ID_CHARS


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"type": "x" * 30_000}),
        _update({"audio": {"output": {"voice": "v" * 30_000}}}),
        _update({"tutor": {"target_language": "L" * 30_000}}),
        _update({"audio": {"input": {"format": {"rate": [1] * 10_000}}}}),
        _truncate(item_id="i" * 30_000),
        json.dumps({"type": "response.cancel", "response_id": "r" * 30_000}),
    ],
)
def test_no_error_quotes_more_than_a_little_of_what_it_was_sent(body: str) -> None:
    exc = _err(body)
    assert len(encode_json(error_from(exc))) < 2048


def test_an_error_event_stays_small_whatever_it_is_given() -> None:
    ev = error_event("x", "m" * 40_000, event_id="e" * 40_000, param="p" * 40_000)
    assert len(encode_json(ev)) < 4096


def test_every_client_event_type_has_a_schema() -> None:
    assert set(CLIENT_EVENT_SCHEMAS) == CLIENT_EVENT_TYPES


def test_every_client_event_type_has_one_route() -> None:
    from kiddolingo.service import ROUTES, Tutor

    assert set(ROUTES) == set(CLIENT_EVENT_TYPES)
    assert all(callable(getattr(Tutor, handler.__name__)) for handler in ROUTES.values())


def test_the_web_clients_copy_of_the_vad_defaults_matches_the_servers() -> None:
    import json
    import re
    from pathlib import Path

    from kiddolingo.vad.limits import CHILD_VAD_DEFAULTS

    js = (Path(__file__).resolve().parents[1] / "web" / "kiddolingo-client.js").read_text()
    body = js.split("export const CHILD_VAD_DEFAULTS = Object.freeze(", 1)[1].split(");", 1)[0]
    copy = json.loads(re.sub(r"(\w+):", r'"\1":', body.replace(",\n}", "\n}")))
    server = {k: v for k, v in CHILD_VAD_DEFAULTS.items() if v is not None}
    assert copy == server


def test_every_name_the_package_offers_loads_from_its_submodule() -> None:
    """The package loads its submodules on first use: each public name must have a home."""
    import kiddolingo.protocol as protocol

    assert set(protocol.__all__) == set(protocol._HOMES)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    with pytest.raises(AttributeError):
        protocol.no_such_name  # noqa: B018
