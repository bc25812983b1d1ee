"""The wire contract: parsing and validation of client events, server event shapes."""

from __future__ import annotations

import base64
import json

import pytest

from kiddolingo.protocol import (
    MAX_EVENT_BYTES,
    ProtocolError,
    decode_audio,
    error_event,
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
