"""Providers through the real ``openai`` SDK over real HTTP against the fake server; the
moderation policy; secrets; the text that goes to speech."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from infra.fake_openai import (
    FakeOpenAI,
    LatencyProfile,
    chat_tokens,
    demo_reply,
    synth_pcm,
)
from infra.fake_openai.server import MODERATION_CATEGORIES
from kiddolingo.audio import pcm16_to_wav
from kiddolingo.providers import (
    CHILD_SAFETY_THRESHOLDS,
    ChatModel,
    Moderator,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
    Providers,
    ProviderServerError,
    ProviderTimeoutError,
    SpeechSynth,
    Transcriber,
    build_providers,
    evaluate_moderation,
    reset_providers,
)
from kiddolingo.settings import Settings, StageSettings
from kiddolingo.speech_text import SentenceSplitter, is_speakable, strip_for_speech

T = TypeVar("T")

MESSAGES = [
    {"role": "system", "content": "You are a friendly Spanish tutor for children."},
    {"role": "user", "content": "Hola"},
]


def with_providers(settings: Settings, body: Callable[[Providers], Awaitable[T]]) -> T:
    """Run ``body`` with freshly built providers on a new event loop, then close them."""
    from kiddolingo.providers.openai_compat import build_openai_providers

    async def main() -> T:
        providers = build_openai_providers(settings)
        try:
            return await body(providers)
        finally:
            await providers.aclose()

    return asyncio.run(main())


def tuned(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


async def collect(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


def speech_pcm(n_samples: int = 4800, rate: int = 24000) -> bytes:
    t = np.arange(n_samples) / rate
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()


# --- the ports --------------------------------------------------------------------------------


def test_openai_providers_implement_the_ports(fake_openai_settings: Settings) -> None:
    async def body(p: Providers) -> None:
        assert isinstance(p.transcriber, Transcriber)
        assert isinstance(p.chat, ChatModel)
        assert isinstance(p.speech, SpeechSynth)
        assert isinstance(p.moderator, Moderator)

    with_providers(fake_openai_settings, body)


# --- transcription ----------------------------------------------------------------------------


def test_transcription_sends_a_valid_wav(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.script_transcripts("  Me gusta el color rojo.  ")
    pcm = speech_pcm()
    wav = pcm16_to_wav(pcm, 24000)

    text = with_providers(
        fake_openai_settings,
        lambda p: p.transcriber.transcribe(wav, languages=["es", "en"], prompt="colores"),
    )

    assert text == "Me gusta el color rojo."
    (request,) = fake_openai.requests("transcriptions")
    assert request.filename == "turn.wav"
    assert request.file_content_type == "audio/wav"
    assert request.wav == wav
    assert (request.pcm, request.sample_rate) == (pcm, 24000)
    assert request.form["model"] == "whisper-1"
    assert request.form["language"] == "es"  # whisper-1 takes one: the most likely
    assert request.form["prompt"] == "colores"
    assert request.form["response_format"] == "json"
    assert request.headers["Authorization"] == "Bearer sk-fake-openai-test"


def test_transcription_without_optional_fields(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    wav = pcm16_to_wav(speech_pcm(1600, 16000), 16000)
    text = with_providers(fake_openai_settings, lambda p: p.transcriber.transcribe(wav))
    assert text == fake_openai.default_transcript
    (request,) = fake_openai.requests("transcriptions")
    assert "language" not in request.form and "prompt" not in request.form
    assert request.sample_rate == 16000


def test_a_headerless_pcm_upload_is_a_bad_request(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    """The brief's bug (raw PCM named audio.raw): the API needs a container."""
    with pytest.raises(ProviderBadRequestError) as info:
        with_providers(fake_openai_settings, lambda p: p.transcriber.transcribe(speech_pcm()))
    assert info.value.stage == "transcription"
    assert info.value.status == 400
    assert info.value.retryable is False
    assert len(fake_openai.requests("transcriptions")) == 1  # not retried


def test_each_stage_has_its_own_endpoint_model_and_key(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    """whisper-large-v3 on another OpenAI-compatible host is one setting away."""
    with FakeOpenAI(latency=LatencyProfile.zero()) as other_host:
        other_host.required_api_key = "gsk-other-host"
        settings = tuned(
            fake_openai_settings,
            transcription=StageSettings(
                "whisper-large-v3", other_host.base_url, "gsk-other-host", None
            ),
        )
        wav = pcm16_to_wav(speech_pcm(), 24000)

        async def body(p: Providers) -> None:
            await p.transcriber.transcribe(wav)
            await collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=150))

        with_providers(settings, body)
        (transcription,) = other_host.requests("transcriptions")
        assert transcription.form["model"] == "whisper-large-v3"
        assert other_host.requests("chat") == []
    assert fake_openai.requests("transcriptions") == []
    assert len(fake_openai.requests("chat")) == 1


# --- chat -------------------------------------------------------------------------------------


def test_chat_streams_text_deltas(fake_openai: FakeOpenAI, fake_openai_settings: Settings) -> None:
    reply = "¡Muy bien! 👍 (Very good!) ¿Te gusta el helado? (Do you like ice cream?)"
    fake_openai.script_replies(reply)

    deltas = with_providers(
        fake_openai_settings,
        lambda p: collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=150)),
    )

    assert deltas == chat_tokens(reply)
    assert len(deltas) > 10
    assert "".join(deltas) == reply
    (request,) = fake_openai.requests("chat")
    assert request.json is not None
    assert request.messages == MESSAGES
    assert request.json["model"] == "gpt-4o"
    assert request.json["stream"] is True
    assert request.json["temperature"] == 0.7
    assert request.json["max_tokens"] == 150
    assert request.completed


def test_chat_messages_are_sent_the_ordinary_way(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    """The chat provider passes its messages through the SDK's typed ``create(messages=...)``:
    the request is exactly the one the SDK makes of them."""
    import openai

    from kiddolingo.conversation import chat_messages

    history = [
        {"role": "user", "text": "Hola, me llamo Ana 👋"},
        {"role": "assistant", "text": "¡Hola, Ana! (Hello, Ana!) ¿Cómo estás? (How are you?)"},
        {"role": "user", "text": 'Bien, "gracias"\nY tú?'},
        {"role": "assistant", "text": "¡Muy bien! (Very good!)"},
    ]
    messages = chat_messages(
        history,
        "¿Qué es esto?",
        target_language="Spanish",
        learner_age=7,
        instructions="Talk about animals.",
        max_history=40,
    )
    with_providers(
        fake_openai_settings,
        lambda p: collect(p.chat.stream(messages, temperature=0.7, max_tokens=150)),
    )

    async def through_the_sdk() -> None:
        async with openai.AsyncOpenAI(api_key="k", base_url=fake_openai.base_url) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=messages,  # type: ignore[arg-type]
                temperature=0.7,
                max_tokens=150,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass

    asyncio.run(through_the_sdk())
    ours, sdks = fake_openai.requests("chat")
    assert ours.json is not None and sdks.json is not None
    assert ours.messages == messages
    assert ours.json == sdks.json


def test_the_successor_models_requests(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    """gpt-transcribe gets the language hint as a list; gpt-6-luna its reasoning effort and
    max_completion_tokens; both report what they billed."""
    from kiddolingo.providers.base import Usage

    fake_openai.script_transcripts("Hola")
    usage = Usage()
    wav = pcm16_to_wav(speech_pcm(), 24000)

    async def turn(p):
        text = await p.transcriber.transcribe(wav, languages=["es", "en"], usage=usage)
        reply = await collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=150, usage=usage))
        return text, reply

    text, reply = with_providers(fake_realtime_settings, turn)
    assert text == "Hola" and reply
    (tr,) = fake_openai.requests("transcriptions")
    assert tr.form["model"] == "gpt-transcribe"
    assert tr.languages == ["es", "en"] and "language" not in tr.form
    (chat,) = fake_openai.requests("chat")
    assert chat.json["model"] == "gpt-6-luna"
    assert chat.json["reasoning_effort"] == "none"
    assert chat.json["max_completion_tokens"] == 150 and "max_tokens" not in chat.json
    assert usage.amounts[("gpt-transcribe", "audio_seconds")] > 0
    assert usage.amounts[("gpt-6-luna", "output_tokens")] > 0


def test_chat_default_demo_reply(fake_openai: FakeOpenAI, fake_openai_settings: Settings) -> None:
    text = with_providers(
        fake_openai_settings,
        lambda p: collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=150)),
    )
    assert "".join(text) == demo_reply(MESSAGES)


def test_closing_a_chat_stream_early_stops_the_server(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.set_latency(LatencyProfile.zero(), chat_tokens_per_s=100)
    fake_openai.script_replies(" ".join(f"palabra{i}" for i in range(200)))

    async def body(p: Providers) -> tuple[list[str], float]:
        started = time.monotonic()
        stream = p.chat.stream(MESSAGES, temperature=0.7, max_tokens=500)
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # type: ignore[attr-defined]
        return got, time.monotonic() - started

    got, elapsed = with_providers(fake_openai_settings, body)
    assert elapsed < 1.0  # 200 tokens would take 2 s
    assert got == ["palabra0", " palabra1", " palabra2"]
    assert fake_openai.wait_idle(5)
    (request,) = fake_openai.requests("chat")
    assert request.disconnected and not request.completed
    assert request.tokens_total == 200
    assert request.tokens_sent < 50
    assert request.bytes_sent < (request.bytes_total or 0) // 4


def test_cancelling_the_consumer_task_closes_the_chat_stream(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    """Barge-in: the turn task is cancelled while it waits for the next token."""
    fake_openai.set_latency(LatencyProfile.zero(), chat_tokens_per_s=50)
    fake_openai.script_replies(" ".join(["hola"] * 200))  # 4 s of tokens

    async def body(p: Providers) -> int:
        received = 0

        async def consume() -> None:
            nonlocal received
            async for _ in p.chat.stream(MESSAGES, temperature=0.7, max_tokens=500):
                received += 1

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 5
        while received < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return received

    received = with_providers(fake_openai_settings, body)
    assert received >= 3
    assert fake_openai.wait_idle(5)
    (request,) = fake_openai.requests("chat")
    assert request.disconnected and not request.completed
    assert request.tokens_sent < 100


# --- speech -----------------------------------------------------------------------------------


def test_speech_streams_even_chunks_that_decode_to_the_synthesized_pcm(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    text = "¡Hola! ¿Cómo estás?"
    chunks = with_providers(
        fake_openai_settings, lambda p: collect(p.speech.stream(text, voice="nova"))
    )
    assert chunks and all(len(c) % 2 == 0 and 0 < len(c) <= 12_000 for c in chunks)
    assert b"".join(chunks) == synth_pcm(text)
    (request,) = fake_openai.requests("speech")
    assert request.json == {
        "model": "tts-1-hd",
        "input": text,
        "voice": "nova",
        "response_format": "pcm",
    }


def test_speech_carries_odd_bytes_between_network_reads(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.speech_chunk_bytes = 1001  # every network read ends mid-sample
    fake_openai.set_latency(LatencyProfile.zero(), speech_realtime_factor=20)
    text = "Buenos días"
    chunks = with_providers(
        fake_openai_settings, lambda p: collect(p.speech.stream(text, voice="nova"))
    )
    assert all(len(c) % 2 == 0 for c in chunks)
    assert len(chunks) > 10
    assert b"".join(chunks) == synth_pcm(text)


def test_large_speech_reads_are_split_under_the_message_limit(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.speech_chunk_bytes = 96_000
    text = "Una frase bastante larga para el tutor. " * 2
    chunks = with_providers(
        fake_openai_settings, lambda p: collect(p.speech.stream(text, voice="nova"))
    )
    assert max(len(c) for c in chunks) <= 12_000
    assert b"".join(chunks) == synth_pcm(text)


def test_closing_a_speech_stream_early_stops_the_server(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.set_latency(LatencyProfile.zero(), speech_realtime_factor=4)
    text = "Había una vez un perro muy simpático que vivía en el campo."  # ~3.6 s of audio

    async def body(p: Providers) -> bytes:
        stream = p.speech.stream(text, voice="nova")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        return first

    first = with_providers(fake_openai_settings, body)
    assert first == synth_pcm(text)[: len(first)]
    assert fake_openai.wait_idle(5)
    (request,) = fake_openai.requests("speech")
    assert request.disconnected and not request.completed
    assert request.bytes_total == len(synth_pcm(text))
    assert request.bytes_sent < request.bytes_total // 2


def test_speech_of_nothing_makes_no_request(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    chunks = with_providers(
        fake_openai_settings, lambda p: collect(p.speech.stream("  ", voice="nova"))
    )
    assert chunks == []
    assert fake_openai.requests("speech") == []


# --- moderation -------------------------------------------------------------------------------


def test_moderation_passes_clean_text(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    verdict = with_providers(
        fake_openai_settings, lambda p: p.moderator.check("Me gustan los gatos")
    )
    assert not verdict.flagged and verdict.categories == [] and verdict.reason == ""
    (request,) = fake_openai.requests("moderations")
    assert request.json == {"input": "Me gustan los gatos", "model": "omni-moderation-latest"}


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"sexual/minors": 0.02}, ["sexual/minors"]),
        ({"sexual": 0.15}, ["sexual"]),
        ({"self-harm/intent": 0.12}, ["self-harm/intent"]),
        ({"violence/graphic": 0.25}, ["violence/graphic"]),
        ({"harassment": 0.35}, ["harassment"]),
        ({"illicit": 0.31}, ["illicit"]),
        ({"hate": 0.32, "violence/graphic": 0.21}, ["violence/graphic", "hate"]),
    ],
)
def test_moderation_is_stricter_than_the_endpoint(
    fake_openai: FakeOpenAI,
    fake_openai_settings: Settings,
    scores: dict[str, float],
    expected: list[str],
) -> None:
    fake_openai.flag("secreto", scores)
    verdict = with_providers(
        fake_openai_settings, lambda p: p.moderator.check("Te cuento un SECRETO")
    )
    assert verdict.flagged
    assert verdict.categories == expected
    assert verdict.reason.startswith("child-safety threshold: " + expected[0])
    assert "secreto" not in verdict.reason.lower()  # no user text in the reason
    # ... while the endpoint itself did not flag it.
    assert all(score < 0.5 for score in scores.values())


def test_moderation_below_our_thresholds_passes(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.flag("lobo", {"violence": 0.3, "harassment": 0.1})  # a wolf story
    verdict = with_providers(
        fake_openai_settings, lambda p: p.moderator.check("El lobo se comió la comida")
    )
    assert not verdict.flagged


def test_moderation_keeps_the_endpoints_own_verdict(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.flag("golpear", "violence", 0.95)
    verdict = with_providers(
        fake_openai_settings, lambda p: p.moderator.check("Quiero golpear a mi hermano")
    )
    assert verdict.flagged
    assert verdict.categories == ["violence"]


def test_empty_text_is_not_sent_to_moderation(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    verdict = with_providers(fake_openai_settings, lambda p: p.moderator.check("   "))
    assert not verdict.flagged
    assert fake_openai.requests("moderations") == []


def test_thresholds_cover_every_category_and_are_stricter_than_the_api() -> None:
    assert set(CHILD_SAFETY_THRESHOLDS) == set(MODERATION_CATEGORIES)
    assert all(limit < 0.5 for limit in CHILD_SAFETY_THRESHOLDS.values())
    assert CHILD_SAFETY_THRESHOLDS["sexual/minors"] <= 0.01


def test_evaluate_moderation_pure() -> None:
    assert not evaluate_moderation({"violence": 0.4}).flagged  # strictly above the limit
    assert evaluate_moderation({"violence": 0.41}).categories == ["violence"]
    verdict = evaluate_moderation(
        {"violence": 0.01}, api_flagged=True, api_categories={"violence": True}
    )
    assert verdict.flagged and verdict.categories == ["violence"]
    assert verdict.reason == "flagged by the moderation endpoint: violence"
    unknown = evaluate_moderation({}, api_flagged=True)
    assert unknown.flagged and unknown.reason == "flagged by the moderation endpoint"
    custom = evaluate_moderation({"hate": 0.05}, thresholds={"hate": 0.01})
    assert custom.categories == ["hate"]


# --- failures ---------------------------------------------------------------------------------


def test_rate_limits_are_retried_by_the_sdk(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.fail("chat", 429, times=2)
    deltas = with_providers(
        fake_openai_settings,
        lambda p: collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=150)),
    )
    assert "".join(deltas) == demo_reply(MESSAGES)
    assert [r.status for r in fake_openai.requests("chat")] == [429, 429, 200]


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, ProviderRateLimitError, "rate_limit"),
        (500, ProviderServerError, "server"),
        (503, ProviderServerError, "server"),
    ],
)
def test_persistent_retryable_failures_become_provider_errors(
    fake_openai: FakeOpenAI,
    fake_openai_settings: Settings,
    status: int,
    error: type[ProviderError],
    kind: str,
) -> None:
    fake_openai.fail("transcriptions", status, times=None)
    wav = pcm16_to_wav(speech_pcm(), 24000)
    with pytest.raises(error) as info:
        with_providers(fake_openai_settings, lambda p: p.transcriber.transcribe(wav))
    assert (info.value.stage, info.value.kind, info.value.status) == ("transcription", kind, status)
    assert info.value.retryable
    assert isinstance(info.value, ProviderError)
    # one attempt and the SDK's two retries
    assert (
        len(fake_openai.requests("transcriptions")) == 1 + fake_openai_settings.provider_max_retries
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProviderBadRequestError), (404, ProviderBadRequestError), (401, ProviderAuthError)],
)
def test_client_errors_are_not_retried(
    fake_openai: FakeOpenAI,
    fake_openai_settings: Settings,
    status: int,
    error: type[ProviderError],
) -> None:
    fake_openai.fail("speech", status, times=None)
    with pytest.raises(error) as info:
        with_providers(
            fake_openai_settings, lambda p: collect(p.speech.stream("Hola", voice="nova"))
        )
    assert info.value.stage == "speech" and info.value.status == status
    assert not info.value.retryable
    assert len(fake_openai.requests("speech")) == 1


def test_a_hanging_provider_times_out(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.fail("moderations", kind="timeout", times=None)
    settings = tuned(fake_openai_settings, provider_timeout_s=0.25, provider_max_retries=1)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        with_providers(settings, lambda p: p.moderator.check("hola"))
    elapsed = time.monotonic() - started
    assert (info.value.stage, info.value.kind, info.value.retryable) == (
        "moderation",
        "timeout",
        True,
    )
    assert len(fake_openai.requests("moderations")) == 2  # the SDK retried the timeout once
    assert 0.5 <= elapsed < 4.0


def test_a_timeout_then_success_is_hidden_by_the_sdk_retry(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.fail("transcriptions", kind="timeout", times=1)
    settings = tuned(fake_openai_settings, provider_timeout_s=0.25, provider_max_retries=1)
    wav = pcm16_to_wav(speech_pcm(), 24000)
    text = with_providers(settings, lambda p: p.transcriber.transcribe(wav))
    assert text == fake_openai.default_transcript


def test_a_chat_stream_broken_midway_is_a_connection_error_and_not_retried(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.script_replies(" ".join(["uno", "dos", "tres"] * 20))
    fake_openai.fail("chat", kind="abort")
    received: list[str] = []

    async def body(p: Providers) -> None:
        async for delta in p.chat.stream(MESSAGES, temperature=0.7, max_tokens=500):
            received.append(delta)

    with pytest.raises(ProviderConnectionError) as info:
        with_providers(fake_openai_settings, body)
    assert info.value.stage == "chat" and info.value.retryable
    assert 0 < len(received) < 60
    assert len(fake_openai.requests("chat")) == 1


@pytest.mark.parametrize("endpoint", ["chat", "speech"])
def test_a_stream_that_stalls_midway_times_out_and_is_not_retried(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings, endpoint: str
) -> None:
    fake_openai.script_replies(" ".join(["uno", "dos", "tres"] * 20))
    fake_openai.fail(endpoint, kind="stall")
    settings = tuned(fake_openai_settings, provider_timeout_s=0.3)
    received: list[object] = []

    async def body(p: Providers) -> None:
        stream = (
            p.chat.stream(MESSAGES, temperature=0.7, max_tokens=500)
            if endpoint == "chat"
            else p.speech.stream("Una frase para hablar un buen rato.", voice="nova")
        )
        async for item in stream:
            received.append(item)

    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        with_providers(settings, body)
    assert time.monotonic() - started < 4.0
    assert info.value.stage == endpoint and info.value.retryable
    assert received  # part of the stream arrived before the stall
    assert len(fake_openai.requests(endpoint)) == 1


def test_a_speech_stream_broken_midway_is_a_connection_error(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings
) -> None:
    fake_openai.fail("speech", kind="abort")
    received: list[bytes] = []

    async def body(p: Providers) -> None:
        async for chunk in p.speech.stream("Hola, ¿qué tal estás hoy?", voice="nova"):
            received.append(chunk)

    with pytest.raises(ProviderConnectionError) as info:
        with_providers(fake_openai_settings, body)
    assert info.value.stage == "speech"
    assert all(len(c) % 2 == 0 for c in received)


def test_missing_credentials_are_an_auth_error(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = tuned(
        fake_openai_settings, chat=StageSettings("gpt-4o", fake_openai.base_url, None, None)
    )
    with pytest.raises(ProviderAuthError) as info:
        with_providers(
            settings, lambda p: collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=10))
        )
    assert info.value.stage == "chat"
    assert fake_openai.requests() == []


def test_provider_errors_pickle_with_their_fields() -> None:
    import pickle

    error = ProviderRateLimitError("chat", status=429, message="slow down")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ProviderRateLimitError
    assert (copy.stage, copy.kind, copy.retryable, copy.status) == ("chat", "rate_limit", True, 429)
    assert str(copy) == "chat provider rate_limit (HTTP 429): slow down"


# --- keys from SSM / Secrets Manager ----------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    parameters.clear_caches()
    with mock_aws():
        import boto3

        yield boto3.session.Session(region_name="us-east-1")
    parameters.clear_caches()


def test_the_key_is_read_from_an_ssm_secure_string(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings, aws: Any
) -> None:
    aws.client("ssm").put_parameter(
        Name="/kiddolingo/openai-key", Value="sk-from-ssm", Type="SecureString"
    )
    fake_openai.required_api_key = "sk-from-ssm"
    settings = tuned(
        fake_openai_settings,
        chat=StageSettings("gpt-4o", fake_openai.base_url, None, "/kiddolingo/openai-key"),
    )

    async def body(p: Providers) -> None:
        for _ in range(2):
            await collect(p.chat.stream(MESSAGES, temperature=0.7, max_tokens=10))

    with_providers(settings, body)
    assert [r.status for r in fake_openai.requests("chat")] == [200, 200]


def test_the_key_is_read_from_secrets_manager_json(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings, aws: Any
) -> None:
    aws.client("secretsmanager").create_secret(
        Name="kiddolingo/openai", SecretString=json.dumps({"api_key": "sk-from-sm"})
    )
    fake_openai.required_api_key = "sk-from-sm"
    settings = tuned(
        fake_openai_settings,
        speech=StageSettings(
            "tts-1-hd", fake_openai.base_url, None, "secretsmanager:kiddolingo/openai"
        ),
    )
    chunks = with_providers(settings, lambda p: collect(p.speech.stream("Hola", voice="nova")))
    assert b"".join(chunks) == synth_pcm("Hola")


def test_a_missing_key_parameter_is_an_auth_error(
    fake_openai: FakeOpenAI, fake_openai_settings: Settings, aws: Any
) -> None:
    settings = tuned(
        fake_openai_settings,
        moderation=StageSettings("omni-moderation-latest", fake_openai.base_url, None, "/nope"),
    )
    with pytest.raises(ProviderAuthError) as info:
        with_providers(settings, lambda p: p.moderator.check("hola"))
    assert info.value.stage == "moderation"
    assert fake_openai.requests() == []


def test_get_api_key_prefers_the_plain_setting() -> None:
    from kiddolingo.secrets import get_api_key

    assert get_api_key(StageSettings("m", None, "sk-plain", "/ignored")) == "sk-plain"
    assert get_api_key(StageSettings("m", None, None, None)) is None


def test_get_secret_value_plain_and_json(aws: Any) -> None:
    from kiddolingo.secrets import SecretNotFoundError, get_secret_value

    aws.client("secretsmanager").create_secret(Name="plain", SecretString="  s3cret \n")
    aws.client("secretsmanager").create_secret(
        Name="single", SecretString=json.dumps({"whatever": "v1"})
    )
    aws.client("secretsmanager").create_secret(
        Name="many", SecretString=json.dumps({"a": "1", "b": "2"})
    )
    assert get_secret_value("secretsmanager:plain") == "s3cret"
    assert get_secret_value("secretsmanager:single") == "v1"
    with pytest.raises(SecretNotFoundError):
        get_secret_value("secretsmanager:many")
    with pytest.raises(SecretNotFoundError):
        get_secret_value("secretsmanager:absent")


# --- building, caching, importing -------------------------------------------------------------


def test_build_providers_is_cached_per_process_and_settings(
    fake_openai_env: FakeOpenAI,
) -> None:
    first = build_providers()
    assert build_providers() is first
    other = build_providers(Settings(chat=StageSettings("gpt-4o-mini", None, "k", None)))
    assert other is not first
    reset_providers()
    assert build_providers() is not first


def test_providers_from_the_environment_reach_the_fake(fake_openai_env: FakeOpenAI) -> None:
    """OPENAI_BASE_URL / OPENAI_API_KEY flow in through Settings."""

    async def main() -> list[str]:
        providers = build_providers()
        try:
            return await collect(providers.chat.stream(MESSAGES, temperature=0.7, max_tokens=50))
        finally:
            await providers.aclose()

    # Two event loops in a row (a Lambda handler may run each invocation with asyncio.run).
    assert "".join(asyncio.run(main())) == demo_reply(MESSAGES)
    assert "".join(asyncio.run(main())) == demo_reply(MESSAGES)
    assert len(fake_openai_env.requests("chat")) == 2


def test_importing_the_providers_does_not_import_openai() -> None:
    code = (
        "import sys\n"
        "import kiddolingo.providers, kiddolingo.audio, kiddolingo.speech_text, "
        "kiddolingo.secrets\n"
        "heavy = [m for m in ('openai', 'httpx2', 'aws_lambda_powertools', 'numpy') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from kiddolingo.providers import build_providers\n"
        "from kiddolingo.settings import Settings\n"
        "build_providers(Settings())\n"
        "assert 'openai' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- text for speech --------------------------------------------------------------------------


def split(text: str, step: int = 1) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        (
            "¡Hola! 😊 (Hello!) ¿Cómo estás? (How are you?)",
            # after "!" the emoji opens the next sentence; inside brackets ")" stays
            ["¡Hola!", "😊 (Hello!)", "¿Cómo estás?", "(How are you?)"],
        ),
        ("(¡Genial! 🎉) Sigue.", ["(¡Genial! 🎉)", "Sigue."]),
        ('Dice "¡hola!" 😊 y se va.', ['Dice "¡hola!" 😊', "y se va."]),
        # an apostrophe opens no quotation
        ("Say 'hi!' now. Let's go! 😊", ["Say 'hi!'", "now.", "Let's go!", "😊"]),
        ("¡Adiós! 👋", ["¡Adiós!", "👋"]),
        ("¿Qué tal?¡Muy bien!", ["¿Qué tal?", "¡Muy bien!"]),
        ("Come fruit, e.g. apples. They are good!", ["Come fruit, e.g. apples.", "They are good!"]),
        ("Cuesta 3.5 euros. Es barato.", ["Cuesta 3.5 euros.", "Es barato."]),
        ("Mr. Smith and Dr. Who. Sra. López too.", ["Mr. Smith and Dr. Who.", "Sra. López too."]),
        ("Hmm... let me think. Okay!", ["Hmm... let me think.", "Okay!"]),
        ("Espera… ¡ya sé!", ["Espera…", "¡ya sé!"]),
        ('He said "hi." Then he left.', ['He said "hi."', "Then he left."]),
        ("1. Uno\n2. Dos", ["1. Uno", "2. Dos"]),
        ("Line one\n\nLine two", ["Line one", "Line two"]),
        ("你好！我是老师。", ["你好！", "我是老师。"]),
        ("Great job 🎉🎉! Next one.", ["Great job 🎉🎉!", "Next one."]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("No ending here", ["No ending here"]),
        ("", []),
    ],
)
def test_sentence_splitter(text: str, sentences: list[str]) -> None:
    assert split(text) == sentences
    assert split(text, 5) == sentences
    assert split(text, len(text) or 1) == sentences


def test_a_sentence_is_released_as_soon_as_the_next_one_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("¡Hola") == []
    assert splitter.feed("!") == []  # could still be "¡Hola!!"
    assert splitter.feed(" 😊 ") == ["¡Hola!"]  # its speech starts without waiting for "("
    assert splitter.feed("(") == []
    assert splitter.feed("Hello!) Ok") == ["😊 (Hello!)"]
    assert splitter.pending == "Ok"
    assert splitter.feed(".") == []
    assert splitter.flush() == ["Ok."]
    assert splitter.flush() == []


def test_a_period_waits_for_the_character_that_decides() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Son 3.") == []
    assert splitter.feed("5") == []  # a decimal, not an end
    assert splitter.feed(" euros. ") == []
    assert splitter.feed("Y") == ["Son 3.5 euros."]


def test_splitting_the_demo_replies_as_streamed_tokens() -> None:
    for turn in range(1, 6):
        messages = [{"role": "user", "content": "x"}] * turn
        reply = demo_reply(messages)
        splitter = SentenceSplitter()
        sentences: list[str] = []
        for token in chat_tokens(reply):
            sentences += splitter.feed(token)
        sentences += splitter.flush()
        assert len(sentences) >= 3
        assert " ".join(sentences) == reply


PICTOGRAPHS = [
    "😊",
    "👍🏽",  # skin tone
    "👨‍👩‍👧",  # ZWJ family
    "🇪🇸",  # flag
    "🏳️‍🌈",  # flag with variation selector and ZWJ
    "❤️",
    "✨",
    "★",
    "→",
    "♪",
    "☀️",
    "🫶",  # newer than some Unicode databases
]


@pytest.mark.parametrize("emoji", PICTOGRAPHS)
def test_strip_for_speech_removes_emoji(emoji: str) -> None:
    spoken = strip_for_speech(f"¡Muy bien {emoji}! (Very good!) {emoji}")
    assert spoken == "¡Muy bien! (Very good!)"


@pytest.mark.parametrize(
    "text",
    [
        "¿Cómo te llamas? ¡Encantada!",
        "Ça va très bien, merci.",
        "Привет, как дела?",
        "你好！我是老师。",
        "こんにちは、元気ですか？",
        "مرحبا! كيف حالك؟",
        "Schön, dass du da bist: 25°C.",
        "नमस्ते",
    ],
)
def test_strip_for_speech_keeps_every_script_and_punctuation(text: str) -> None:
    assert strip_for_speech(text) == text


def test_strip_for_speech_tidies_what_is_left() -> None:
    assert strip_for_speech("😊") == ""
    assert strip_for_speech("(😊)") == ""
    assert strip_for_speech("**Hola** amigo 🐶 🐱 hoy") == "Hola amigo hoy"
    assert strip_for_speech("Great job 🎉!") == "Great job!"
    assert strip_for_speech("Pulsa 1️⃣ ahora") == "Pulsa 1 ahora"


def test_no_pictograph_ever_reaches_speech() -> None:
    for turn in range(1, 6):
        for sentence in split(demo_reply([{"role": "user", "content": "x"}] * turn)):
            spoken = strip_for_speech(sentence)
            assert is_speakable(spoken)
            assert all(unicodedata.category(ch) != "So" for ch in spoken), spoken
    assert not is_speakable(strip_for_speech("🎉 🎉"))
    assert not is_speakable("¡!")
