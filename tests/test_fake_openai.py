"""The fake OpenAI-compatible server itself: wire formats, latency, failures, the request log."""

from __future__ import annotations

import asyncio
import json
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

from infra.fake_openai import (
    MS_PER_CHAR,
    SPEECH_SAMPLE_RATE,
    FakeOpenAI,
    LatencyProfile,
    chat_tokens,
    demo_reply,
    fake_openai_process,
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
    zero = LatencyProfile.named("zero")
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
    time.sleep(0.2)
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
