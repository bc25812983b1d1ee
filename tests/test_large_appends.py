"""Issue 23: the page sends larger appends where nothing waits on them (web/chunk-policy.js),
and any Realtime client may. Through the real audio handler under moto: the same audio cut into
100 ms appends, into the largest that fit one 32 KB message, and into a mix of sizes gives the
same VAD events, the same audio at the transcription (prefix padding kept, byte for byte) and,
with the speculative turn on, the same audio for the answer prepared during the pause."""

from __future__ import annotations

import json

import pytest

from kiddolingo.protocol import MAX_EVENT_BYTES
from tests.support.speech import speak
from tests.test_server_vad import CONN, SILENCE, append, send, start_vad
from tests.test_speculative import trimmed

BLOCK = len(SILENCE)  # 100 ms at 24 kHz
#: The largest append of whole 100 ms blocks at 24 kHz whose event fits one 32 KB frame.
LARGEST = 5
#: Cuts of the audio, in 100 ms blocks, repeated until it is all sent.
CUTS = {
    "100 ms": [1],
    "largest": [LARGEST],
    "mixed": [1, LARGEST, 3, 1, 2, 4, 1, 1, 5, 2],
}


def the_audio() -> bytes:
    """Silence, a sentence with a pause, and the closing silence: one turn (two with a pause
    long enough for the speculation to start and be discarded)."""
    first = trimmed(speak("I like cats."))
    second = trimmed(speak("And dogs."))
    pad = (-len(first)) % BLOCK
    return b"".join(
        [SILENCE * 5, bytes(pad), first, SILENCE * 4, bytes((-len(second)) % BLOCK), second]
        + [SILENCE] * 16
    )


def cut(audio: bytes, sizes: list[int]) -> list[bytes]:
    out, at, i = [], 0, 0
    while at < len(audio):
        n = sizes[i % len(sizes)] * BLOCK
        out.append(audio[at : at + n])
        at, i = at + n, i + 1
    return out


def run(
    stack, fake_openai, audio: bytes, sizes: list[int], conn: str = CONN
) -> tuple[list[tuple], list[bytes], list[str]]:
    """Send ``audio`` cut into ``sizes`` on a connection of its own: the VAD's marks, the audio
    of every transcription made meanwhile, the event types."""
    start_vad(stack, conn)
    before = len(fake_openai.requests("audio/transcriptions"))
    for n, piece in enumerate(cut(audio, sizes), start=1):
        body = append(n, piece)
        assert len(json.dumps(body)) < MAX_EVENT_BYTES
        send(stack, body, conn)
    events = stack.recorder.events(conn)
    marks = [
        (e["type"], e.get("audio_start_ms", e.get("audio_end_ms")))
        for e in events
        if e["type"].startswith("input_audio_buffer.speech")
    ]
    pcm = [r.pcm for r in fake_openai.requests("audio/transcriptions")[before:]]
    return marks, pcm, [e["type"] for e in events]


def test_the_largest_append_fits_one_frame() -> None:
    body = append(1, SILENCE * LARGEST)
    assert len(json.dumps(body)) < MAX_EVENT_BYTES < len(json.dumps(append(1, SILENCE * 6)))


@pytest.mark.parametrize("name", ["largest", "mixed"])
def test_larger_appends_give_the_turn_of_100_ms_appends(name, stack, fake_openai) -> None:
    fake_openai.script_transcripts("I like cats and dogs.", "I like cats and dogs.")
    reference = run(stack, fake_openai, the_audio(), CUTS["100 ms"], "conn-100ms=")
    marks, pcm, types = run(stack, fake_openai, the_audio(), CUTS[name])
    assert marks == reference[0]
    assert [m[0] for m in marks] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ]
    assert len(pcm) == 1 and pcm == reference[1]  # byte for byte, the prefix padding with it
    # the prefix padding: 300 ms of the silence before the speech start the utterance
    start_ms = marks[0][1]
    audio = the_audio()
    begin = (start_ms - 300) * 48
    assert pcm[0][: 300 * 48] == audio[begin : begin + 300 * 48]
    assert types[-1] == "response.done"
    assert stack.audio_keys() == []


@pytest.fixture
def speculative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SPECULATIVE_FRACTION", "0.15")


@pytest.mark.parametrize("name", ["largest", "mixed"])
def test_a_speculation_hears_the_audio_of_100_ms_appends(
    name, speculative, stack, fake_openai
) -> None:
    """An append that holds the end of the speech and the moment the speculation starts gives
    the speculation the speech up to that moment, not only what came in earlier appends."""
    fake_openai.script_transcripts("I like cats and dogs.", "I like cats and dogs.")
    reference = run(stack, fake_openai, the_audio(), CUTS["100 ms"], "conn-100ms=")
    marks, pcm, types = run(stack, fake_openai, the_audio(), CUTS[name])
    assert marks == reference[0]
    assert pcm == reference[1]  # every transcription (speculations too), byte for byte
    assert types.count("response.created") == 1
    assert types[-1] == "response.done"


def test_an_append_that_ends_one_utterance_and_starts_the_next(stack, fake_openai) -> None:
    """A client sending 500 ms appends: one append holds the end of the closing silence of one
    utterance and the start of the next. Each utterance gets its own audio."""
    first = trimmed(speak("I like cats."))
    second = trimmed(speak("Yes, I do."))
    lead = SILENCE * 5 + bytes((-len(first)) % BLOCK)
    audio = b"".join(
        [lead, first, SILENCE * 12, second, bytes((-len(second)) % BLOCK), SILENCE * 16]
    )
    fake_openai.script_transcripts("I like cats.", "Yes, I do.", "I like cats.", "Yes, I do.")
    ref_marks, reference, _ = run(stack, fake_openai, audio, [1], "conn-100ms=")
    marks, got, types = run(stack, fake_openai, audio, [LARGEST])
    assert [m[0] for m in marks] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ] * 2
    # the 500 ms append that closed the first utterance also opened the second
    largest_ms = LARGEST * 100
    stopped_at = marks[1][1] + 1200  # the frame at which the silence window was full
    started_at = marks[2][1] + 160  # the frame at which the second start was certain
    assert stopped_at // largest_ms == started_at // largest_ms
    assert marks == ref_marks
    assert len(got) == 2 and got == reference  # each utterance its own audio, byte for byte
    assert types.count("response.done") == 2
