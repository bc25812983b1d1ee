"""Every server event we send parses with the official SDK's own Realtime event types, and
every client event we accept is one the SDK can send."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from tests.support.speech import speak
from tests.test_server_vad import SILENCE, append, send, start_vad
from tests.test_voice_turn import CONN, speak_turn, start

SERVER = TypeAdapter(__import__("openai.types.realtime", fromlist=["x"]).RealtimeServerEvent)


def _check(events: list[dict]) -> set[str]:
    seen = set()
    for event in events:
        parsed = SERVER.validate_python(event)
        assert parsed.type == event["type"]
        seen.add(event["type"])
    return seen


def test_manual_turn_events_parse_with_the_sdk(stack, fake_openai) -> None:
    start(stack)
    speak_turn(stack, CONN, speak("Hello"))
    send(stack, {"type": "input_audio_buffer.clear"}, conn=CONN)
    send(stack, {"type": "bogus"}, conn=CONN)
    seen = _check(stack.recorder.events(CONN))
    assert {
        "session.created",
        "session.updated",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.done",
        "input_audio_buffer.cleared",
        "error",
    } <= seen


def test_vad_and_truncation_events_parse_with_the_sdk(stack, fake_openai) -> None:
    start_vad(stack, conn="c2=")
    frames = [SILENCE] * 3 + [
        speak("Hello there")[i : i + 4800] for i in range(0, len(speak("Hello there")), 4800)
    ]
    frames += [SILENCE] * 16
    for n, c in enumerate(frames, start=1):
        send(stack, append(n, c), conn="c2=")
    item = next(
        e for e in stack.recorder.events("c2=") if e["type"] == "response.output_audio.delta"
    )["item_id"]
    send(
        stack,
        {
            "type": "conversation.item.truncate",
            "item_id": item,
            "content_index": 0,
            "audio_end_ms": 100,
        },
        conn="c2=",
    )
    seen = _check(stack.recorder.events("c2="))
    assert {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.truncated",
    } <= seen


@pytest.mark.parametrize(
    "name",
    [
        "session_update",
        "input_audio_buffer_append",
        "input_audio_buffer_commit",
        "input_audio_buffer_clear",
        "conversation_item_truncate",
        "response_create",
        "response_cancel",
    ],
)
def test_sample_client_events_are_sdk_client_events(name: str) -> None:
    import json

    from openai.types.realtime import RealtimeClientEvent

    from tests.support.events import load_event

    body = json.loads(load_event(name)["body"])
    TypeAdapter(RealtimeClientEvent).validate_python(body)
