"""The successor models as defaults: settings that refuse what cannot work, the requests each
stage makes for its model, and the turn's usage priced at the dated list prices."""

from __future__ import annotations

import pytest

from kiddolingo.conversation import transcription_languages
from kiddolingo.metrics import turn_figures
from kiddolingo.prices import PRICES_DATE, cost_usd
from kiddolingo.providers.base import Usage
from kiddolingo.settings import Settings, SettingsError
from kiddolingo.turn import TurnOutcome


def test_the_defaults_are_the_successors_and_check_out() -> None:
    settings = Settings.from_env({}).check()
    assert settings.transcription.model == "gpt-transcribe"
    assert settings.chat.model == "gpt-6-luna"
    assert settings.chat_reasoning_effort == "none"
    assert settings.speech.model == "gpt-realtime-2.1-mini"
    assert settings.speech_api == "realtime"
    assert settings.speech_voice in settings.speech_voices


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SPEECH_MODEL": "tts-1-hd"}, ["SPEECH_MODEL", "SPEECH_API=http"]),
        ({"SPEECH_API": "http", "SPEECH_MODEL": "gpt-realtime-2.1-mini"}, ["SPEECH_API=realtime"]),
        ({"SPEECH_VOICE": "nova"}, ["SPEECH_VOICE", "coral"]),
        ({"SPEECH_API": "websocket"}, ["SPEECH_API", "realtime, http"]),
        ({"CHAT_REASONING_EFFORT": "lots"}, ["CHAT_REASONING_EFFORT", "none"]),
        ({"SPEECH_REASONING_EFFORT": "none"}, ["SPEECH_REASONING_EFFORT", "minimal"]),
    ],
)
def test_a_wrong_combination_is_refused_at_start_up(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env).check()
    for name in names:
        assert name in str(info.value)


def test_the_old_models_keep_working_through_their_settings() -> None:
    old = Settings.from_env(
        {
            "TRANSCRIPTION_MODEL": "whisper-1",
            "CHAT_MODEL": "gpt-4o",
            "CHAT_REASONING_EFFORT": "",
            "SPEECH_API": "http",
            "SPEECH_MODEL": "tts-1-hd",
            "SPEECH_VOICE": "nova",
        }
    ).check()
    assert old.chat_reasoning_effort == ""
    assert "nova" in old.speech_voices


def test_a_custom_speech_server_may_have_voices_of_its_own() -> None:
    Settings.from_env(
        {
            "SPEECH_API": "http",
            "SPEECH_MODEL": "kokoro",
            "SPEECH_BASE_URL": "http://tts.local/v1",
            "SPEECH_VOICE": "af_bella",
        }
    ).check()


def _chat(effort: str):  # the request shape, without a request
    from kiddolingo.providers.openai_compat import OpenAIChatModel, StageClient

    settings = Settings()
    return OpenAIChatModel(StageClient("chat", settings.chat, settings), reasoning_effort=effort)


def test_the_reasoning_chat_request() -> None:
    messages = [{"role": "user", "content": "hola"}]
    params = _chat("none").request(messages, temperature=0.7, max_tokens=150)
    assert params["reasoning_effort"] == "none"
    assert params["max_completion_tokens"] == 150
    assert "max_tokens" not in params
    assert params["temperature"] == 0.7  # allowed at effort none
    assert params["messages"] is messages  # the ordinary way, through the SDK's transform
    assert params["stream_options"] == {"include_usage": True}
    low = _chat("low").request(messages, temperature=0.7, max_tokens=150)
    assert "temperature" not in low  # refused by reasoning models while they reason


def test_the_classic_chat_request() -> None:
    params = _chat("").request([], temperature=0.5, max_tokens=99)
    assert "reasoning_effort" not in params
    assert params["max_tokens"] == 99 and params["temperature"] == 0.5


def test_transcription_languages() -> None:
    assert transcription_languages("Spanish") == ["es", "en"]
    assert transcription_languages(" french ") == ["fr", "en"]
    assert transcription_languages("English") == ["en"]
    assert transcription_languages("Klingon") == []


def test_a_turns_usage_becomes_metrics_and_dollars() -> None:
    outcome = TurnOutcome("resp_1", "item_1", "completed")
    outcome.usage.add("gpt-transcribe", "audio_seconds", 2.0)
    outcome.usage.add("gpt-6-luna", "input_tokens", 900)
    outcome.usage.add("gpt-6-luna", "cached_input_tokens", 100)
    outcome.usage.add("gpt-6-luna", "output_tokens", 40)
    outcome.usage.add("gpt-realtime-2.1-mini", "input_tokens", 120)
    outcome.usage.add("gpt-realtime-2.1-mini", "audio_output_tokens", 100)
    outcome.strayed = 1
    figures = turn_figures(outcome)
    assert figures["TranscribedSeconds"] == 2.0
    assert figures["ChatInputTokens"] == 1000
    assert figures["ChatOutputTokens"] == 40
    assert figures["SpeechAudioTokens"] == 100
    assert figures["SpeechStrayed"] == 1
    expected = (
        2.0 * 0.0045 / 60 + (900 * 0.10 + 100 * 0.01 + 40 * 0.50 + 120 * 0.60 + 100 * 20.0) / 1e6
    )
    assert figures["ProviderCostUSD"] == pytest.approx(expected, abs=1e-6)


def test_an_unknown_model_costs_nothing_rather_than_a_guess() -> None:
    usage = Usage()
    usage.add("my-own-whisper", "audio_seconds", 60)
    assert cost_usd(usage.amounts) == 0.0
    assert PRICES_DATE.startswith("20")
