"""Issue 21, items 1-5, through the real audio handler under moto: the order of a connection's
events (numbered and not), a gap that never fills, a commit in server-VAD mode, and chunks too
small to carry. The same through the local gateway is in ``test_audio_order_local.py``."""

from __future__ import annotations

import base64
import json

from tests.support.events import connect_event, message_event
from tests.support.speech import chunks, speak

SILENCE = b"\x00\x00" * 2400  # 100 ms at 24 kHz


class Child:
    """One connection, driven event by event; each call returns the events it got."""

    def __init__(self, stack, conn: str = "conn-order=") -> None:
        self.stack, self.conn = stack, conn
        assert stack.invoke("$connect", connect_event(connection_id=conn))["statusCode"] == 200

    def send(self, body: dict, stamp: int | None = None) -> list[dict]:
        before = len(self.stack.recorder.events(self.conn))
        self.stack.invoke(
            "$default",
            message_event(json.dumps(body), connection_id=self.conn, request_time_epoch=stamp),
        )
        return self.stack.recorder.events(self.conn)[before:]

    def append(self, pcm: bytes, event_id: str | None = None, stamp: int | None = None) -> list:
        body = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        if event_id is not None:
            body["event_id"] = event_id
        return self.send(body, stamp)

    def types(self) -> list[str]:
        return self.stack.recorder.types(self.conn)


def errors(events: list[dict]) -> list[str]:
    return [e["error"]["code"] for e in events if e["type"] == "error"]


def server_vad(child: Child) -> None:
    child.send(
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        }
    )


# ---------------------------------------------------------------------------- item 4


def test_a_commit_in_server_vad_mode_ends_the_vads_utterance_too(stack, fake_openai) -> None:
    """The page's stop button commits mid-sentence in server-VAD mode. The VAD stayed inside
    the utterance, took the silence after it for more of it, and ended it again 1.2 s later:
    a phantom utterance, and a second, billed turn on silence."""
    child = Child(stack)
    server_vad(child)
    speech = chunks(speak("I like cats and dogs."))
    n = 0
    for c in [SILENCE] * 5 + speech[: len(speech) // 2]:
        n += 1
        child.append(c, f"audio#{n}")
    assert "input_audio_buffer.speech_started" in child.types()
    fake_openai.script_transcripts("I like cats")
    events = child.send({"type": "input_audio_buffer.commit"})
    assert "input_audio_buffer.committed" in [e["type"] for e in events]
    after = len(child.types())
    for c in [SILENCE] * 25:
        n += 1
        child.append(c, f"audio#{n}")
    assert child.types()[after:] == []  # no speech_started, speech_stopped, committed, turn
    assert len(fake_openai.requests("audio/transcriptions")) == 1
    # and the next real speech is an utterance of its own
    for c in speech + [SILENCE] * 16:
        n += 1
        child.append(c, f"audio#{n}")
    assert child.types()[after:].count("input_audio_buffer.speech_started") == 1
    assert len(fake_openai.requests("audio/transcriptions")) == 2

