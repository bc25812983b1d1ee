"""Speech over the Realtime API: the adapter, through the real SDK's realtime client over a
real WebSocket to the fake, and the reworded-sentence guard through the real handlers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import pytest

from infra.fake_openai import FakeOpenAI, synth_pcm
from kiddolingo.metrics import parse_emf
from kiddolingo.providers import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
)
from kiddolingo.providers.base import Spoken, Usage
from kiddolingo.providers.realtime_speech import READ_ALOUD_INSTRUCTIONS
from kiddolingo.settings import Settings
from tests.test_providers import with_providers
from tests.test_voice_turn import speak_turn, start

SENTENCE = "¡Hola, Ana! ¿Cómo estás?"


def run(settings: Settings, body: Any) -> Any:
    """``body(providers)`` on freshly built providers, closed after."""
    return with_providers(settings, body)


async def read_one(p: Any, text: str = SENTENCE) -> tuple[bytes, str]:
    """``text`` read aloud in a session of its own: its audio and its transcript."""
    session = p.speech.open(voice="coral")
    try:
        return await read(session.stream(text))
    finally:
        await session.aclose()


async def read(stream: Any) -> tuple[bytes, str]:
    audio, words = bytearray(), []
    async with contextlib.aclosing(stream):
        async for item in stream:
            if isinstance(item, Spoken):
                words.append(item.text)
            else:
                assert isinstance(item, bytes) and len(item) % 2 == 0
                audio += item
    return bytes(audio), "".join(words)


def test_a_sentence_is_read_aloud_by_an_out_of_band_response(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    usage = Usage()

    async def body(p: Any) -> tuple[bytes, str]:
        session = p.speech.open(voice="coral", usage=usage)
        try:
            return await read(session.stream(SENTENCE))
        finally:
            await session.aclose()

    audio, words = run(fake_realtime_settings, body)
    assert audio == synth_pcm(SENTENCE)
    assert words == SENTENCE
    (socket,) = fake_openai.requests("realtime")
    assert socket.model == "gpt-realtime-2.1-mini"
    (response,) = fake_openai.realtime_responses()
    assert response.text == SENTENCE and response.completed
    assert response.voice == "coral"
    request = response.request
    assert request["conversation"] == "none"  # nothing kept on OpenAI's side
    assert request["output_modalities"] == ["audio"]
    assert request["instructions"] == READ_ALOUD_INSTRUCTIONS
    assert "word for word" in READ_ALOUD_INSTRUCTIONS
    assert request["reasoning"] == {"effort": "minimal"}
    assert request["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert usage.amounts[("gpt-realtime-2.1-mini", "audio_output_tokens")] > 0


def test_sentences_in_flight_together_on_one_socket_keep_their_own_audio(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    texts = ["Uno, dos, tres.", "Me gustan los gatos.", "¿Y a ti?"]

    async def body(p: Any) -> list[tuple[bytes, str]]:
        session = p.speech.open(voice="coral")
        try:
            return list(await asyncio.gather(*(read(session.stream(t)) for t in texts)))
        finally:
            await session.aclose()

    results = run(fake_realtime_settings, body)
    assert results == [(synth_pcm(t), t) for t in texts]
    assert len(fake_openai.requests("realtime")) == 1
    assert len({r.session_id for r in fake_openai.realtime_responses()}) == 1


def test_closing_a_stream_early_cancels_its_response(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    # Audio paced as a real voice model streams it, so there is more to come when we stop.
    fake_openai.set_latency(speech_realtime_factor=2.0)
    long = "Una frase bastante larga para hablar un buen rato sin parar nunca jamás."

    async def body(p: Any) -> None:
        session = p.speech.open(voice="coral")
        try:
            stream = session.stream(long)
            got = 0
            async for item in stream:
                if isinstance(item, bytes):
                    got += len(item)
                    if got >= 4800:
                        break
            await stream.aclose()
            for _ in range(100):
                if fake_openai.realtime_responses()[0].finished:
                    break
                await asyncio.sleep(0.02)
        finally:
            await session.aclose()

    run(fake_realtime_settings, body)
    (response,) = fake_openai.realtime_responses()
    assert response.cancel_requested_at is not None
    assert response.cancelled
    assert response.bytes_sent < len(synth_pcm(long))


def test_closing_the_session_closes_the_socket_and_every_response(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    fake_openai.set_latency(speech_realtime_factor=1.0)

    async def body(p: Any) -> None:
        session = p.speech.open(voice="coral")
        stream = session.stream("Una frase larga que nadie escuchará hasta el final, seguro.")
        await stream.__anext__()
        await session.aclose()
        with contextlib.suppress(BaseException):
            await stream.aclose()

    run(fake_realtime_settings, body)
    (response,) = fake_openai.realtime_responses()
    for _ in range(100):
        if response.finished or response.disconnected:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert response.disconnected or response.cancelled
    assert response.bytes_sent < len(
        synth_pcm("Una frase larga que nadie escuchará hasta el final, seguro.")
    )


@pytest.mark.parametrize(
    ("kind", "error"),
    [("error", ProviderError), ("abort", ProviderConnectionError)],
)
def test_a_failed_response_is_a_provider_error(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings, kind: str, error: type
) -> None:
    fake_openai.fail("realtime", kind=kind, after_bytes=0, times=None)

    with pytest.raises(error) as info:
        run(fake_realtime_settings, read_one)
    assert info.value.stage == "speech"
    # Retried as the SDK retries HTTP requests (PROVIDER_MAX_RETRIES=2): three in all.
    assert len(fake_openai.realtime_responses()) == 3


@pytest.mark.parametrize("kind", ["error", "abort"])
def test_a_response_that_fails_before_its_audio_is_retried(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings, kind: str
) -> None:
    """Once, before any audio: the child hears the sentence once, whole."""
    fake_openai.fail("realtime", kind=kind, after_bytes=0)

    assert run(fake_realtime_settings, read_one) == (synth_pcm(SENTENCE), SENTENCE)
    assert [r.completed for r in fake_openai.realtime_responses()] == [False, True]


def test_a_refused_key_is_an_auth_error(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    fake_openai.fail("realtime", status=401, times=None)

    with pytest.raises(ProviderAuthError):
        run(fake_realtime_settings, read_one)
    assert len(fake_openai.requests("realtime")) == 1  # a refused key is not retried


# ------------------------------------------------------------------ through the real handlers


def test_a_reworded_sentence_is_cut_and_counted_and_the_reply_goes_on(
    stack, fake_openai: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.speech import speak

    first, second, third = "¡Muy bien!", "¿Cuál es tu color favorito?", "El mío es el azul."
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies(f"{first} {second} {third}")
    # The voice model answers the question instead of reading it: far past the tolerance.
    strayed = "Mi color favorito es el verde, y ahora dime dónde vives."
    fake_openai.reword(strayed, match="color favorito")
    # Paced as a voice model speaks, so the guard stops a response still in flight.
    fake_openai.set_latency(speech_realtime_factor=4.0)
    start(stack)
    speak_turn(stack, "conn-A=", speak("Hola"))

    events = stack.recorder.events("conn-A=")
    shown = "".join(e["delta"] for e in events if e["type"].endswith("transcript.delta"))
    # The first and third sentences are shown (and heard) whole; of the second, at most the
    # words it shares with the text before the guard stopped it, never the strayed part.
    assert shown.startswith(first) and shown.endswith(third)
    assert "dime" not in shown and "verde" not in shown
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert "dime" not in done["output"][0]["content"][0]["transcript"]
    # Its audio stopped: less than the whole reworded reading reached the child.
    posted = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(posted) < len(synth_pcm(first) + synth_pcm(strayed) + synth_pcm(third))
    assert posted.startswith(synth_pcm(first)) and posted.endswith(synth_pcm(third))
    # The metric counts it.
    (record,) = [r for r in parse_emf(capsys.readouterr().out) if "VoiceToVoiceMs" in r]
    assert record["SpeechStrayed"] == 1
    # The reworded response was cancelled: it stopped costing money.
    reworded = [r for r in fake_openai.realtime_responses() if r.reworded]
    assert len(reworded) == 1 and reworded[0].cancel_requested_at is not None


def test_a_small_rewording_is_what_the_child_sees(stack, fake_openai: FakeOpenAI) -> None:
    from tests.support.speech import speak

    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies("No lo sé. ¿Y tú? (I do not know. And you?)")
    fake_openai.reword(lambda s: s.replace("I do not", "I don't"), match="I do not")
    sid = start(stack)
    speak_turn(stack, "conn-A=", speak("Hola"))
    events = stack.recorder.events("conn-A=")
    shown = "".join(e["delta"] for e in events if e["type"].endswith("transcript.delta"))
    assert "I don't know" in shown and "I do not" not in shown
    from kiddolingo.conversation import load_history

    hist = load_history(stack.session_item(sid)["hist"])
    assert hist[-1]["text"] == shown


def test_a_wrong_key_is_an_auth_error_and_is_not_retried(
    fake_openai: FakeOpenAI, fake_realtime_settings: Settings
) -> None:
    """The Realtime API takes the upgrade, then refuses the key with an error event."""
    from dataclasses import replace

    from kiddolingo.settings import StageSettings

    speech = fake_realtime_settings.speech
    settings = replace(
        fake_realtime_settings,
        speech=StageSettings(speech.model, speech.base_url, "sk-wrong", None),
    )

    fake_openai.required_api_key = speech.api_key
    try:
        with pytest.raises(ProviderAuthError):
            run(settings, read_one)
    finally:
        fake_openai.required_api_key = None
    assert len(fake_openai.requests("realtime")) == 1
