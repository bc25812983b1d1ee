"""The fake OpenAI-compatible server itself: wire formats, latency, failures, the request log."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import openai
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from infra.fake_openai import (
    MS_PER_CHAR,
    REASONING_TOKENS,
    SPEECH_SAMPLE_RATE,
    FakeOpenAI,
    LatencyProfile,
    chat_tokens,
    contracted,
    demo_reply,
    espeak_available,
    espeak_pcm,
    fake_openai_process,
    speech_pcm,
    synth_pcm,
)
from kiddolingo.audio import pcm16_to_wav

ROOT = Path(__file__).resolve().parents[1]
MESSAGES: list[Any] = [{"role": "user", "content": "Hola"}]


def client(fake: FakeOpenAI, **kwargs: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", **kwargs)  # type: ignore[arg-type]


def wav() -> bytes:
    return pcm16_to_wav(b"\x10\x00" * 1600, 16000)


# --- lifecycle --------------------------------------------------------------------------------


def test_start_stop_and_context_managers() -> None:
    fake = FakeOpenAI(latency=LatencyProfile.zero())
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    fake.start()
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
    assert fake.start() is fake  # idempotent
    fake.stop()
    fake.stop()

    async def main() -> str:
        async with FakeOpenAI(latency=LatencyProfile.zero()) as running:
            async with client(running) as c:
                response = await c.moderations.create(input="hola")
            return response.model

    assert asyncio.run(main()) == "omni-moderation-latest"


def test_cli_prints_its_base_url_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.fake_openai", "--port", "0", "--profile", "zero"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        response = httpx2.post(
            f"{base_url}/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={"Authorization": "Bearer sk-cli"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == demo_reply(MESSAGES)
    finally:
        process.terminate()
        assert process.wait(10) == 0
        assert process.stdout is not None
        process.stdout.close()


def test_a_fake_in_a_process_of_its_own_is_driven_like_one_in_this_process() -> None:
    with fake_openai_process(latency=LatencyProfile.zero()) as fake:
        assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
        fake.script_transcripts("Me llamo Ana.")
        fake.script_replies("¡Hola, Ana!")

        async def main() -> tuple[str, str]:
            async with client(fake) as c:  # type: ignore[arg-type]
                heard = await c.audio.transcriptions.create(
                    model="whisper-1", file=("a.wav", wav(), "audio/wav")
                )
                reply = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return heard.text, reply.choices[0].message.content or ""

        assert asyncio.run(main()) == ("Me llamo Ana.", "¡Hola, Ana!")
        # The request log comes back across the process boundary, parsed.
        (stt,) = fake.requests("transcriptions")
        assert stt.file == wav() and stt.response_text == "Me llamo Ana."
        assert [r.endpoint for r in fake.requests()] == ["transcriptions", "chat"]
        assert fake.wait_idle(5.0)

        # The Realtime socket too, and its records and a rewording cross the boundary.
        fake.reword(contracted)

        async def speak() -> bytes:
            c = client(fake)  # type: ignore[arg-type]
            async with c, c.realtime.connect(model=REALTIME_MODEL) as conn:
                await conn.recv()
                await conn.response.create(response=sentence_response("I do not know."))
                return audio_of(await until_done(conn))

        assert asyncio.run(speak()) == synth_pcm("I don't know.")
        assert fake.wait_idle(5.0)
        (response,) = fake.realtime_responses()
        assert response.spoken == "I don't know." and response.completed
        fake.reset()
        assert fake.requests() == []


# --- wire formats -----------------------------------------------------------------------------


def test_chat_stream_is_sse_token_by_token_ending_with_done(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_replies("¡Hola! 😊 (Hello!)")
    response = httpx2.post(
        f"{fake_openai.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert contents == chat_tokens("¡Hola! 😊 (Hello!)")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_without_stream_and_with_a_token_limit(fake_openai: FakeOpenAI) -> None:
    async def main() -> tuple[str | None, str | None, str | None]:
        async with client(fake_openai) as c:
            full = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            short = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3)
            return (
                full.choices[0].message.content,
                short.choices[0].message.content,
                short.choices[0].finish_reason,
            )

    full, short, reason = asyncio.run(main())
    assert full == demo_reply(MESSAGES)
    assert short == "".join(chat_tokens(demo_reply(MESSAGES))[:3]) and reason == "length"


def test_stream_usage_chunk_when_asked(fake_openai: FakeOpenAI) -> None:
    async def main() -> list[object]:
        async with client(fake_openai) as c:
            stream = await c.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk.usage async for chunk in stream]

    usages = asyncio.run(main())
    assert usages[-1] is not None and all(u is None for u in usages[:-1])


def test_bad_chat_requests(fake_openai: FakeOpenAI) -> None:
    url = f"{fake_openai.base_url}/chat/completions"
    auth = {"Authorization": "Bearer sk-test"}
    assert httpx2.post(url, json={"model": "gpt-4o"}, headers=auth).status_code == 400
    assert httpx2.post(url, content=b"{not json", headers=auth).status_code == 400
    unauthenticated = httpx2.post(url, json={"model": "gpt-4o", "messages": MESSAGES})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["message"] == "missing API key"


@pytest.mark.parametrize("fmt", ["json", "text", "verbose_json"])
def test_transcription_response_formats(fake_openai: FakeOpenAI, fmt: str) -> None:
    fake_openai.script_transcripts("uno")

    async def main() -> object:
        async with client(fake_openai) as c:
            create: Any = c.audio.transcriptions.create
            return await create(
                model="whisper-1", file=("turn.wav", wav(), "audio/wav"), response_format=fmt
            )

    result = asyncio.run(main())
    assert (result if isinstance(result, str) else result.text).strip() == "uno"  # type: ignore[attr-defined]


def test_transcripts_come_from_the_script_then_a_function_then_the_default(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script_transcripts("primero", "segundo")
    fake_openai.default_transcript = "por defecto"

    async def transcribe(n: int) -> list[str]:
        async with client(fake_openai) as c:
            out = []
            for _ in range(n):
                t = await c.audio.transcriptions.create(
                    model="whisper-1", file=("turn.wav", wav(), "audio/wav")
                )
                out.append(t.text)
            return out

    assert asyncio.run(transcribe(3)) == ["primero", "segundo", "por defecto"]
    fake_openai.transcriber = lambda request: f"{request.sample_rate} Hz"
    assert asyncio.run(transcribe(1)) == ["16000 Hz"]


def test_transcription_rejects_what_is_not_a_wav(fake_openai: FakeOpenAI) -> None:
    async def main() -> None:
        async with client(fake_openai, max_retries=0) as c:
            await c.audio.transcriptions.create(
                model="whisper-1", file=("audio.raw", b"\x00\x01" * 800)
            )

    with pytest.raises(openai.BadRequestError, match="Invalid file format"):
        asyncio.run(main())


def test_speech_is_pcm_only(fake_openai: FakeOpenAI) -> None:
    async def main(fmt: str) -> bytes:
        async with client(fake_openai, max_retries=0) as c:
            speech = await c.audio.speech.create(
                model="tts-1-hd",
                voice="nova",
                input="Hola",
                response_format=fmt,  # type: ignore[arg-type]
            )
            return speech.content

    assert asyncio.run(main("pcm")) == synth_pcm("Hola")
    with pytest.raises(openai.BadRequestError):
        asyncio.run(main("mp3"))


def test_synth_pcm_is_deterministic_speech_like_audio() -> None:
    pcm = synth_pcm("Hola amigo")
    assert pcm == synth_pcm("Hola amigo")
    assert len(pcm) == len("Hola amigo") * SPEECH_SAMPLE_RATE * MS_PER_CHAR // 1000 * 2
    samples = np.frombuffer(pcm, dtype="<i2")
    per_char = SPEECH_SAMPLE_RATE * MS_PER_CHAR // 1000
    assert not samples[4 * per_char : 5 * per_char].any()  # the space is silence
    assert np.abs(samples[:per_char]).max() > 5000
    assert synth_pcm("Hola") != synth_pcm("Hole")
    assert synth_pcm("") == b""


def test_moderation_results_per_input(fake_openai: FakeOpenAI) -> None:
    fake_openai.flag("malo", "harassment", 0.8)
    fake_openai.flag("raro", {"sexual/minors": 0.03})
    with pytest.raises(ValueError):
        fake_openai.flag("x", "not-a-category")

    async def main() -> object:
        async with client(fake_openai) as c:
            return await c.moderations.create(
                model="omni-moderation-latest", input=["hola", "eres MALO", "algo raro"]
            )

    results = asyncio.run(main()).results  # type: ignore[attr-defined]
    assert [r.flagged for r in results] == [False, True, False]
    assert results[1].categories.harassment is True
    assert results[1].category_scores.harassment == 0.8
    assert results[2].category_scores.sexual_minors == 0.03
    assert results[0].category_scores.sexual_minors < 0.001


def test_demo_replies_follow_the_target_language_and_the_turn() -> None:
    spanish = demo_reply([{"role": "user", "content": "hola"}])
    assert spanish == "¡Hola! 😊 (Hello!) ¿Cómo estás? (How are you?)"
    second = demo_reply([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert second != spanish
    french = demo_reply(
        [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "x"}]
    )
    assert french.startswith("Bonjour")
    german = demo_reply(
        [{"role": "system", "content": "Target language: German"}, {"role": "user", "content": "x"}]
    )
    assert german.startswith("Hallo")


def test_chat_tokens_are_word_ish_and_lossless() -> None:
    text = "¡Hola, Ana! 😊 ¿Qué tal?  Bien."
    tokens = chat_tokens(text)
    assert "".join(tokens) == text
    assert tokens[:4] == ["¡", "Hola", ",", " Ana"]
    assert " 😊" in tokens


# --- latency ----------------------------------------------------------------------------------


def test_latency_profile_is_applied(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_latency(
        LatencyProfile(
            transcription_ms=120,
            chat_first_token_ms=100,
            chat_tokens_per_s=100,
            speech_first_byte_ms=80,
            speech_realtime_factor=10,
            moderation_ms=50,
        )
    )
    fake_openai.script_replies("uno dos tres cuatro cinco seis siete ocho nueve diez")

    async def main() -> dict[str, float]:
        async with client(fake_openai) as c:
            timings: dict[str, float] = {}
            t0 = time.monotonic()
            await c.audio.transcriptions.create(
                model="whisper-1", file=("turn.wav", wav(), "audio/wav")
            )
            timings["transcription"] = time.monotonic() - t0

            t0 = time.monotonic()
            stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and "first" not in timings:
                    timings["first"] = time.monotonic() - t0
            timings["chat"] = time.monotonic() - t0

            t0 = time.monotonic()
            async with c.audio.speech.with_streaming_response.create(
                model="tts-1-hd", voice="nova", input="Hola amigo", response_format="pcm"
            ) as response:
                async for _ in response.iter_bytes():
                    timings.setdefault("speech_first", time.monotonic() - t0)
            timings["speech"] = time.monotonic() - t0

            t0 = time.monotonic()
            await c.moderations.create(input="hola")
            timings["moderation"] = time.monotonic() - t0
            return timings

    t = asyncio.run(main())
    # Lower bounds are the profile; upper bounds leave room for a loaded machine.
    assert 0.12 <= t["transcription"] < 1.0
    assert 0.10 <= t["first"] < 0.8
    assert 0.19 <= t["chat"] < 1.2  # 100 ms + 10 tokens at 100/s
    assert 0.08 <= t["speech_first"] < 0.8
    assert 0.08 + 0.6 / 10 * 0.8 <= t["speech"] < 1.5  # 600 ms of audio at 10x
    assert 0.05 <= t["moderation"] < 0.8
    (speech,) = fake_openai.requests("speech")
    assert speech.first_byte_at is not None
    assert speech.first_byte_at - speech.received_at >= 0.08


def test_profiles() -> None:
    assert LatencyProfile.named("realistic") == LatencyProfile()
    assert LatencyProfile().transcription_ms == 600
    assert LatencyProfile().chat_first_token_ms == 450
    assert LatencyProfile().chat_tokens_per_s == 40
    assert LatencyProfile().speech_first_byte_ms == 200
    # Speech's first byte is the same on both paths, so benchmarks compare them fairly.
    assert LatencyProfile().realtime_first_byte_ms == LatencyProfile().speech_first_byte_ms
    assert LatencyProfile().realtime_connect_ms == 300
    zero = LatencyProfile.named("zero")
    assert zero.realtime_connect_ms == zero.realtime_first_byte_ms == 0
    assert zero.token_interval_s() == 0 and zero.speech_chunk_interval_s(4800) == 0
    assert LatencyProfile().speech_chunk_interval_s(4800) == pytest.approx(0.1 / 4)
    with pytest.raises(ValueError):
        LatencyProfile.named("slow")


# --- failures, log, reset ---------------------------------------------------------------------


def test_failures_count_down_and_reset_clears_them(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("moderations", 503, times=2, retry_after_ms=None)
    fake_openai.fail("moderations", 429, times=1)

    def status() -> int:
        return httpx2.post(
            f"{fake_openai.base_url}/moderations",
            json={"input": "hola"},
            headers={"Authorization": "Bearer sk-test"},
        ).status_code

    assert [status() for _ in range(4)] == [503, 503, 429, 200]
    assert [r.failure for r in fake_openai.requests("moderations")] == [
        "status",
        "status",
        "status",
        None,
    ]
    fake_openai.fail("moderation", 500, times=None)
    assert [status() for _ in range(3)] == [500, 500, 500]
    fake_openai.reset()
    assert status() == 200
    assert len(fake_openai.requests()) == 1
    with pytest.raises(ValueError):
        fake_openai.fail("images")
    with pytest.raises(ValueError):
        fake_openai.fail("chat", kind="explode")


def test_retry_after_header_is_sent(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("chat", 429, retry_after_ms=25)
    response = httpx2.post(
        f"{fake_openai.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": "Bearer sk-test"},
    )
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "25"
    assert response.json()["error"]["type"] == "rate_limit_exceeded"


def test_a_hang_is_released_by_reset(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("speech", kind="timeout", hang_s=30)
    result: dict[str, int] = {}

    def call() -> None:
        result["status"] = httpx2.post(
            f"{fake_openai.base_url}/audio/speech",
            json={"model": "tts-1", "voice": "nova", "input": "hola", "response_format": "pcm"},
            headers={"Authorization": "Bearer sk-test"},
            timeout=10,
        ).status_code

    thread = threading.Thread(target=call)
    started = time.monotonic()
    thread.start()
    while not fake_openai.requests("speech") and time.monotonic() - started < 5:
        time.sleep(0.01)  # a loaded machine may take a while to send it
    assert not fake_openai.wait_idle(0.05)
    fake_openai.reset()
    thread.join(5)
    assert result["status"] == 504
    assert time.monotonic() - started < 3


def test_required_api_key(fake_openai: FakeOpenAI) -> None:
    fake_openai.required_api_key = "sk-right"

    async def main(key: str) -> str:
        async with openai.AsyncOpenAI(
            base_url=fake_openai.base_url, api_key=key, max_retries=0
        ) as c:
            return (await c.moderations.create(input="hola")).model

    with pytest.raises(openai.AuthenticationError):
        asyncio.run(main("sk-wrong"))
    assert asyncio.run(main("sk-right")) == "omni-moderation-latest"


def test_request_log_and_byte_counters(fake_openai: FakeOpenAI) -> None:
    async def main() -> None:
        async with client(fake_openai) as c:
            async with c.audio.speech.with_streaming_response.create(
                model="tts-1-hd", voice="shimmer", input="¡Hola!", response_format="pcm"
            ) as response:
                await response.read()
            await c.moderations.create(input="¡Hola!")

    asyncio.run(main())
    assert fake_openai.wait_idle(2)
    (speech,) = fake_openai.requests("audio/speech")
    assert speech.input == "¡Hola!" and speech.json and speech.json["voice"] == "shimmer"
    assert speech.model == "tts-1-hd"
    assert speech.completed and not speech.disconnected and speech.finished
    assert speech.bytes_sent == speech.bytes_total == len(synth_pcm("¡Hola!"))
    assert fake_openai.bytes_streamed("speech") == len(synth_pcm("¡Hola!"))
    (moderation,) = fake_openai.requests("moderations")
    assert moderation.input == "¡Hola!"
    assert [r.endpoint for r in fake_openai.requests()] == ["speech", "moderations"]


# --- the Realtime socket ----------------------------------------------------------------------

REALTIME_MODEL = "gpt-realtime-2.1-mini"
SENTENCE = "Hola amigo, ¿cómo estás hoy?"


def sentence_response(text: str, key: str = "1", **extra: Any) -> dict[str, Any]:
    """An out-of-band ``response.create`` body, as the speech adapter sends it."""
    return {
        "conversation": "none",
        "output_modalities": ["audio"],
        "instructions": "Read the user's text aloud, word for word.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ],
        "metadata": {"sentence": key},
        **extra,
    }


async def until_done(conn: Any, n: int = 1) -> list[Any]:
    """Every event received until ``n`` responses are done (errors included)."""
    events: list[Any] = []
    done = 0
    async for event in conn:
        events.append(event)
        if event.type == "response.done":
            done += 1
            if done == n:
                break
    return events


def audio_of(events: list[Any], response_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(e.delta)
        for e in events
        if e.type == "response.output_audio.delta"
        and (response_id is None or e.response_id == response_id)
    )


def transcript_of(events: list[Any], response_id: str | None = None) -> list[str]:
    return [
        e.delta
        for e in events
        if e.type == "response.output_audio_transcript.delta"
        and (response_id is None or e.response_id == response_id)
    ]


def test_realtime_out_of_band_response_over_the_sdk(fake_openai: FakeOpenAI) -> None:
    async def main() -> tuple[Any, Any, list[Any]]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            created = await conn.recv()
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "You are a kind tutor's voice.",
                    "audio": {"output": {"voice": "coral"}},
                }
            )
            updated = await conn.recv()
            await conn.response.create(event_id="create-1", response=sentence_response(SENTENCE))
            return created, updated, await until_done(conn)

    created, updated, events = asyncio.run(main())
    assert type(created).__name__ == "SessionCreatedEvent"
    assert created.session.model == REALTIME_MODEL
    assert created.session.output_modalities == ["audio"]
    assert created.session.audio.output.format.type == "audio/pcm"
    assert created.session.audio.output.format.rate == 24000
    assert created.session.audio.output.voice == "marin"
    assert updated.type == "session.updated" and updated.session.audio.output.voice == "coral"

    kinds = [e.type for e in events]
    assert kinds[:3] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-5:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert set(kinds[3:-5]) == {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    }
    created_response = events[0].response
    assert created_response.status == "in_progress" and created_response.id.startswith("resp_")
    assert created_response.conversation_id is None
    assert created_response.metadata == {"sentence": "1"}
    response_id = created_response.id
    assert all(getattr(e, "response_id", response_id) == response_id for e in events)
    deltas = [e for e in events if e.type == "response.output_audio.delta"]
    assert type(deltas[0]).__name__ == "ResponseAudioDeltaEvent"
    assert {(e.output_index, e.content_index) for e in deltas} == {(0, 0)}
    assert all(len(base64.b64decode(e.delta)) <= 4800 for e in deltas)  # ~100 ms each
    assert audio_of(events) == synth_pcm(SENTENCE)
    words = transcript_of(events)
    assert "".join(words) == SENTENCE and len(words) == len(SENTENCE.split())

    # Each word's delta comes just before the audio delta that holds its first sound.
    per_char = len(synth_pcm("x"))
    sent = 0
    for event in events:
        if event.type == "response.output_audio.delta":
            sent += len(base64.b64decode(event.delta))
        elif event.type == "response.output_audio_transcript.delta":
            start = SENTENCE.index(event.delta.strip()) * per_char
            assert sent <= start < sent + 4800, event.delta

    (transcript_done,) = [e for e in events if e.type == "response.output_audio_transcript.done"]
    assert transcript_done.transcript == SENTENCE
    done = events[-1].response
    assert done.status == "completed" and done.metadata == {"sentence": "1"}
    assert done.output[0].content[0].transcript == SENTENCE
    audio_ms = len(synth_pcm(SENTENCE)) / 2 / 24
    assert done.usage.output_token_details.audio_tokens == math.ceil(audio_ms / 50)
    assert done.usage.output_token_details.text_tokens == math.ceil(len(SENTENCE) / 4)
    assert done.usage.input_tokens == done.usage.input_token_details.text_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens

    assert fake_openai.wait_idle(5)
    (socket,) = fake_openai.requests("realtime")
    assert socket.model == REALTIME_MODEL and socket.path == "/v1/realtime"
    assert socket.headers["Authorization"] == "Bearer sk-test"
    assert socket.instructions == "You are a kind tutor's voice." and socket.voice == "coral"
    assert [e["type"] for e in socket.events] == ["session.update", "response.create"]
    assert socket.bytes_sent == len(synth_pcm(SENTENCE)) and socket.completed
    (response,) = fake_openai.realtime_responses()
    assert response is not None and socket.responses[0].id == response.id == response_id
    assert response.text == response.spoken == SENTENCE and not response.reworded
    assert response.instructions == "Read the user's text aloud, word for word."
    assert response.voice == "coral" and response.model == REALTIME_MODEL
    assert response.metadata == {"sentence": "1"} and response.event_id == "create-1"
    assert response.completed and response.bytes_sent == response.bytes_total
    assert response.usage == done.usage.model_dump(exclude_none=True)


def test_two_responses_in_flight_interleave_each_with_its_own_id(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.set_latency(speech_realtime_factor=40)  # 2.5 ms a delta: both get turns
    first, second = "Uno dos tres cuatro cinco.", "Seis siete ocho nueve diez."

    async def main() -> list[Any]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()  # session.created
            await conn.response.create(response=sentence_response(first, "1"))
            await conn.response.create(response=sentence_response(second, "2"))
            return await until_done(conn, 2)

    events = asyncio.run(main())
    ids = {
        e.response.metadata["sentence"]: e.response.id
        for e in events
        if e.type == "response.created"
    }
    assert audio_of(events, ids["1"]) == synth_pcm(first)
    assert audio_of(events, ids["2"]) == synth_pcm(second)
    assert "".join(transcript_of(events, ids["1"])) == first
    assert "".join(transcript_of(events, ids["2"])) == second
    order = [e.response_id for e in events if e.type == "response.output_audio.delta"]
    first_of_two = order.index(ids["2"])
    assert ids["1"] in order[first_of_two:], "the second started after the first had finished"
    assert [e.response.status for e in events if e.type == "response.done"] == ["completed"] * 2


def test_cancel_stops_the_response_at_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_latency(speech_realtime_factor=4)  # 25 ms a delta
    long = "Esta es una frase bastante larga para que haya tiempo de cancelarla."

    async def main() -> tuple[list[Any], int]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            await conn.response.create(response=sentence_response(long))
            events: list[Any] = []
            async for event in conn:
                events.append(event)
                if event.type == "response.output_audio.delta":
                    await conn.response.cancel(response_id=event.response_id)
                    break
            events += await until_done(conn)
            # A second cancel finds nothing active: an error, and the socket stays usable.
            await conn.response.cancel(event_id="again", response_id=event.response_id)
            error = await conn.recv()
            await asyncio.sleep(0.2)
            await conn.response.create(response=sentence_response("Hola."))
            late = await until_done(conn)
            return [*events, error], len(audio_of(late))

    events, next_audio = asyncio.run(main())
    done = next(e for e in events if e.type == "response.done")
    assert done.response.status == "cancelled"
    assert done.response.status_details.reason == "client_cancelled"
    received = len(audio_of(events))
    assert 0 < received < len(synth_pcm(long))
    assert events[-1].type == "error" and events[-1].error.code == "response_cancel_not_active"
    assert events[-1].error.event_id == "again"
    assert next_audio == len(synth_pcm("Hola."))
    assert fake_openai.wait_idle(5)
    cancelled = fake_openai.realtime_responses()[0]
    assert cancelled.cancelled and cancelled.cancel_requested_at is not None
    assert cancelled.bytes_sent == received < cancelled.bytes_total  # nothing sent after done
    audio_ms = received / 2 / 24
    assert done.response.usage.output_token_details.audio_tokens == math.ceil(audio_ms / 50)


def test_closing_the_socket_stops_every_response(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_latency(speech_realtime_factor=2)

    async def main() -> int:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            await conn.response.create(response=sentence_response(SENTENCE, "1"))
            await conn.response.create(response=sentence_response(SENTENCE, "2"))
            async for event in conn:
                if event.type == "response.output_audio.delta":
                    return len(base64.b64decode(event.delta))
        raise AssertionError("no audio")

    asyncio.run(main())
    assert fake_openai.wait_idle(5)
    responses = fake_openai.realtime_responses()
    assert len(responses) == 2
    for response in responses:
        assert response.disconnected and response.status == "in_progress" and response.finished
        assert response.bytes_sent < len(synth_pcm(SENTENCE))
    (socket,) = fake_openai.requests("realtime")
    assert socket.bytes_sent == sum(r.bytes_sent for r in responses)
    assert fake_openai.bytes_streamed("realtime") == socket.bytes_sent


def test_bad_events_get_error_events_and_the_socket_stays_open(fake_openai: FakeOpenAI) -> None:
    bad: list[dict[str, Any]] = [
        {"type": "response.make", "event_id": "e1"},
        {"type": "input_audio_buffer.append", "event_id": "e2", "audio": ""},
        {"type": "response.create", "event_id": "e3", "response": {"input": []}},
        {
            "type": "response.create",
            "event_id": "e4",
            "response": sentence_response("   "),
        },
        {
            "type": "session.update",
            "event_id": "e5",
            "session": {"audio": {"output": {"voice": "nova"}}},
        },
        {
            "type": "response.create",
            "event_id": "e6",
            "response": sentence_response("Hola", audio={"output": {"voice": "nova"}}),
        },
        {"type": "response.cancel", "event_id": "e7", "response_id": "resp_nothing"},
        {"event_id": "e8"},
    ]

    async def main() -> tuple[list[Any], list[Any]]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            errors = []
            await conn.send_raw("{not json")
            errors.append(await conn.recv())
            for event in bad:
                await conn.send_raw(json.dumps(event))
                errors.append(await conn.recv())
            await conn.response.create(response=sentence_response("Hola."))
            return errors, await until_done(conn)

    errors, events = asyncio.run(main())
    assert all(e.type == "error" and e.error.type == "invalid_request_error" for e in errors)
    assert [e.error.event_id for e in errors] == [None, *(b.get("event_id") for b in bad)]
    assert errors[2].error.code == "unsupported_event"
    assert errors[3].error.param == "response.conversation"
    assert errors[4].error.param == "response.input"
    assert "coral" in errors[5].error.message
    assert errors[6].error.param == "response.audio.output.voice"
    assert errors[7].error.code == "response_cancel_not_active"
    assert audio_of(events) == synth_pcm("Hola.")
    assert fake_openai.wait_idle(5)
    (socket,) = fake_openai.requests("realtime")
    assert len(socket.errors) == len(errors)
    assert len(fake_openai.realtime_responses()) == 1


def test_realtime_latency_profile(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_latency(
        realtime_connect_ms=150, realtime_first_byte_ms=120, speech_realtime_factor=10
    )

    async def main() -> dict[str, float]:
        times: dict[str, float] = {}
        async with client(fake_openai) as c:
            t0 = time.monotonic()
            async with c.realtime.connect(model=REALTIME_MODEL) as conn:
                times["connect"] = time.monotonic() - t0
                await conn.recv()
                t0 = time.monotonic()
                await conn.response.create(response=sentence_response("Hola amigo"))
                async for event in conn:
                    if event.type == "response.created":
                        times["created"] = time.monotonic() - t0
                    if event.type == "response.output_audio.delta":
                        times.setdefault("first_byte", time.monotonic() - t0)
                    if event.type == "response.done":
                        times["done"] = time.monotonic() - t0
                        break
        return times

    t = asyncio.run(main())
    assert 0.15 <= t["connect"] < 1.0
    assert t["created"] < 0.1
    assert 0.12 <= t["first_byte"] < 0.7
    assert 0.12 + 0.6 / 10 * 0.8 <= t["done"] < 1.5  # 600 ms of audio at 10x
    (response,) = fake_openai.realtime_responses()
    assert response.first_byte_at is not None
    assert response.first_byte_at - response.received_at >= 0.12


# --- Realtime faults and rewording ------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 429, 503])
def test_realtime_handshake_refused(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.fail("realtime", status)

    async def main() -> None:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL):
            pass

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(main())
    assert info.value.response.status_code == status
    (socket,) = fake_openai.requests("realtime")
    assert socket.status == status and socket.failure == "status"


def test_realtime_wrong_key_is_an_error_event_then_a_close(fake_openai: FakeOpenAI) -> None:
    fake_openai.required_api_key = "sk-right"

    async def main(key: str) -> list[Any]:
        events: list[Any] = []
        c = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key=key)
        async with c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            with pytest.raises(ConnectionClosedError) as info:
                async for event in conn:
                    events.append(event)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        return events

    (error,) = asyncio.run(main("sk-wrong"))
    assert error.type == "error" and error.error.code == "invalid_api_key"
    assert fake_openai.wait_idle(5)
    assert fake_openai.requests("realtime")[0].close_code == 1008


def test_realtime_error_event_instead_of_the_response(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("realtime", kind="error", status=500, code="server_error", message="boom")

    async def main() -> tuple[Any, list[Any]]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            await conn.response.create(event_id="create-1", response=sentence_response("Uno."))
            error = await conn.recv()
            await conn.response.create(event_id="create-2", response=sentence_response("Dos."))
            return error, await until_done(conn)

    error, events = asyncio.run(main())
    assert error.type == "error"
    assert (error.error.type, error.error.code, error.error.message) == (
        "server_error",
        "server_error",
        "boom",
    )
    assert error.error.event_id == "create-1"
    assert audio_of(events) == synth_pcm("Dos.")
    failed, served = fake_openai.realtime_responses()
    assert failed.status == "failed" and failed.failure == "error" and failed.bytes_sent == 0
    assert failed.text == "Uno." and served.completed


def test_realtime_dropped_socket_mid_response(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("realtime", kind="abort", after_bytes=6000)

    async def main() -> list[Any]:
        events: list[Any] = []
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            await conn.response.create(response=sentence_response(SENTENCE))
            with pytest.raises(ConnectionClosedError):
                async for event in conn:
                    events.append(event)
        return events

    events = asyncio.run(main())
    assert len(audio_of(events)) == 6000
    assert "response.done" not in {e.type for e in events}
    assert fake_openai.wait_idle(5)
    (response,) = fake_openai.realtime_responses()
    assert response.bytes_sent == 6000 and response.disconnected and response.failure == "abort"
    (socket,) = fake_openai.requests("realtime")
    assert socket.failure == "abort" and not socket.completed


def test_realtime_stall_then_drop(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("realtime", kind="stall", after_bytes=4800, hang_s=0.4)

    async def main() -> tuple[int, float]:
        got = 0
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            await conn.response.create(response=sentence_response(SENTENCE))
            with pytest.raises(ConnectionClosedError):
                async for event in conn:
                    if event.type == "response.output_audio.delta":
                        got += len(base64.b64decode(event.delta))
                        stalled_at = time.monotonic()
            return got, time.monotonic() - stalled_at

    got, silent = asyncio.run(main())
    assert got == 4800 and silent >= 0.35


def test_realtime_slow_first_byte(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("realtime", kind="timeout", hang_s=0.4)

    async def main() -> tuple[float, float, bytes]:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            t0 = time.monotonic()
            await conn.response.create(response=sentence_response("Hola."))
            created = await conn.recv()
            assert created.type == "response.created"
            created_s = time.monotonic() - t0
            events = await until_done(conn)
            first = next(e for e in events if e.type == "response.output_audio.delta")
            assert first is not None
            return created_s, time.monotonic() - t0, audio_of(events)

    created_s, total_s, audio = asyncio.run(main())
    assert created_s < 0.2 and total_s >= 0.4
    assert audio == synth_pcm("Hola.")  # slow, then whole


def test_a_realtime_hang_is_released_by_reset(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail("realtime", kind="timeout", hang_s=30)

    async def main() -> float:
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            t0 = time.monotonic()
            await conn.response.create(response=sentence_response("Hola."))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(fake_openai.reset)
            await until_done(conn)
            return time.monotonic() - t0

    assert asyncio.run(main()) < 3


def test_reworded_sentences_speak_and_transcribe_the_other_words(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.reword("Hola, mi amigo querido.")
    fake_openai.reword(contracted, times=None, match="do not")

    async def main() -> list[list[Any]]:
        out = []
        async with client(fake_openai) as c, c.realtime.connect(model=REALTIME_MODEL) as conn:
            await conn.recv()
            for text in ("Hola amigo.", "Hola amigo.", "I do not know.", "Sí."):
                await conn.response.create(response=sentence_response(text))
                out.append(await until_done(conn))
        return out

    replaced, plain, contraction, untouched = asyncio.run(main())
    assert audio_of(replaced) == synth_pcm("Hola, mi amigo querido.")
    assert "".join(transcript_of(replaced)) == "Hola, mi amigo querido."
    done = next(e for e in replaced if e.type == "response.output_audio_transcript.done")
    assert done.transcript == "Hola, mi amigo querido."
    assert audio_of(plain) == synth_pcm("Hola amigo.")  # times=1: once only
    assert "".join(transcript_of(contraction)) == "I don't know."
    assert audio_of(contraction) == synth_pcm("I don't know.")
    assert "".join(transcript_of(untouched)) == "Sí."
    records = fake_openai.realtime_responses()
    assert [r.reworded for r in records] == [True, False, True, False]
    assert records[0].text == "Hola amigo." and records[0].spoken == "Hola, mi amigo querido."


def test_contracted_is_a_small_rewording() -> None:
    assert contracted("I do not know, it is fine.") == "I don't know, it's fine."
    assert contracted("¡Hola! ¿Cómo estás?") == "Hola! Cómo estás?"
    assert contracted("Voy a el parque.") == "Voy al parque."
    assert contracted("Bien.") == "Bien"  # always a change


# --- espeak-ng speech -------------------------------------------------------------------------


def band_energy(pcm: bytes, low: float, high: float) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / SPEECH_SAMPLE_RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum())


def test_espeak_speech_says_words_on_both_paths(fake_openai: FakeOpenAI) -> None:
    if not espeak_available():
        pytest.skip("needs espeak-ng (a Debian package; `make test` installs it)")
    fake_openai.set_speech("espeak")
    hola, perro = "¡Hola! 😊 (Hello!) ¿Cómo estás?", "El perro dice guau."

    async def main() -> tuple[bytes, bytes]:
        async with client(fake_openai) as c:
            speech = await c.audio.speech.create(
                model="tts-1-hd", voice="nova", input=hola, response_format="pcm"
            )
            async with c.realtime.connect(model=REALTIME_MODEL) as conn:
                await conn.recv()
                await conn.response.create(response=sentence_response(perro))
                return speech.content, audio_of(await until_done(conn))

    over_http, over_realtime = asyncio.run(main())
    assert over_http == espeak_pcm(hola) and over_realtime == espeak_pcm(perro)
    for pcm in (over_http, over_realtime):
        seconds = len(pcm) / 2 / SPEECH_SAMPLE_RATE
        assert 0.7 < seconds < 5.0
        assert band_energy(pcm, 100, 4000) > 0.8  # voice, not noise or a click
        loud = np.abs(np.frombuffer(pcm, dtype="<i2")).max()
        assert loud > 3000
    assert espeak_pcm(hola) != espeak_pcm(perro)
    assert espeak_pcm("Hola amigo.") != speech_pcm("Hola amigo.", "tones")
    assert len(espeak_pcm("Hola amigo.")) == len(espeak_pcm("Hola amigo."))
    assert espeak_pcm("😊") == b""
    fake_openai.reset()
    assert fake_openai.speech == "tones"


def test_speech_modes_are_checked() -> None:
    with pytest.raises(ValueError):
        FakeOpenAI(speech="robot")
    with pytest.raises(ValueError):
        speech_pcm("hola", "robot")


# --- the successor models' request fields -----------------------------------------------------


def test_gpt_transcribe_takes_a_languages_list_and_reports_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_transcripts("hola")

    async def main() -> Any:
        async with client(fake_openai, max_retries=0) as c:
            return await c.audio.transcriptions.create(
                model="gpt-transcribe",
                file=("turn.wav", wav(), "audio/wav"),
                response_format="json",
                languages=["es", "en"],
            )

    result = asyncio.run(main())
    assert result.text == "hola"
    assert result.usage.type == "duration" and result.usage.seconds == pytest.approx(0.1)
    (request,) = fake_openai.requests("transcriptions")
    assert request.languages == ["es", "en"] and "language" not in request.form
    assert request.usage == {"type": "duration", "seconds": 0.1}


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        ("gpt-transcribe", {"language": "es"}, "not 'language'"),
        ("gpt-transcribe", {"response_format": "verbose_json"}, "json or text"),
        ("gpt-transcribe", {"languages": ["Spanish"]}, "ISO-639-1"),
        ("whisper-1", {"languages": ["es"]}, "languages"),
    ],
)
def test_transcription_parameters_must_fit_the_model(
    fake_openai: FakeOpenAI, model: str, params: dict[str, Any], message: str
) -> None:
    async def main() -> None:
        async with client(fake_openai, max_retries=0) as c:
            create: Any = c.audio.transcriptions.create
            await create(model=model, file=("turn.wav", wav(), "audio/wav"), **params)

    with pytest.raises(openai.BadRequestError, match=message):
        asyncio.run(main())


def test_reasoning_chat_fields_are_recorded_and_usage_reported(fake_openai: FakeOpenAI) -> None:
    async def main(effort: str) -> list[Any]:
        async with client(fake_openai, max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="gpt-6-luna",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                reasoning_effort=effort,  # type: ignore[arg-type]
                max_completion_tokens=150,
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(main("low"))
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and all(c.usage is None for c in chunks[:-1])
    n_tokens = len(chat_tokens(demo_reply(MESSAGES)))
    assert usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS["low"]
    assert usage.completion_tokens == n_tokens + REASONING_TOKENS["low"]
    assert usage.prompt_tokens == 1 and usage.total_tokens == 1 + usage.completion_tokens
    (request,) = fake_openai.requests("chat")
    assert request.reasoning_effort == "low" and request.max_completion_tokens == 150
    assert request.usage == usage.model_dump(exclude_none=True)
    assert asyncio.run(main("none"))[-1].usage.completion_tokens_details.reasoning_tokens == 0
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        asyncio.run(main("lots"))


def test_reasoning_delays_the_first_token(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_latency(chat_first_token_ms=0, chat_tokens_per_s=200)

    async def first_token_s(effort: str) -> float:
        async with client(fake_openai) as c:
            t0 = time.monotonic()
            stream = await c.chat.completions.create(
                model="gpt-6-luna",
                messages=MESSAGES,
                stream=True,
                reasoning_effort=effort,  # type: ignore[arg-type]
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    return time.monotonic() - t0
        raise AssertionError("no content")

    assert asyncio.run(first_token_s("none")) < 0.25
    assert asyncio.run(first_token_s("low")) >= 64 / 200
