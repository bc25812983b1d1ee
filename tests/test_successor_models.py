"""The successor models as defaults: settings that refuse what cannot work, the requests each
stage makes for its model, and the turn's usage priced at the dated list prices."""

from __future__ import annotations

import json

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


# ------------------------------------------------------------------ the first turn (SnapStart)


def _audio_handler_modules(extra_env: dict[str, str]) -> list[str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('app', 'functions/audio/app.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('openai', 'openai.resources.chat', "
        "'kiddolingo.providers.realtime_speech', 'websockets') if m in sys.modules))\n"
    )
    env = {
        **os.environ,
        "TABLE_NAME": "t",
        "BUCKET_NAME": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        **extra_env,
    }
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip())  # a printed list of names


def test_a_snapshot_init_loads_the_provider_sdk_and_an_on_demand_init_does_not() -> None:
    assert _audio_handler_modules({}) == []
    loaded = _audio_handler_modules({"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"})
    assert loaded == [
        "kiddolingo.providers.realtime_speech",
        "openai",
        "openai.resources.chat",
        "websockets",
    ]


_FIRST_TURN_AFTER_SNAPSHOT = r"""
import asyncio, json, ssl, sys, types
import importlib.util
# Lambda's runtime hooks, as its Python runtime provides them to the INIT of a snapshot.
after_restore = []
sys.modules["snapshot_restore_py"] = types.SimpleNamespace(
    register_after_restore=after_restore.append, register_before_snapshot=lambda f: f)
stirred = []
ssl_rand_add = ssl.RAND_add
ssl.RAND_add = lambda data, entropy: (stirred.append(len(data)), ssl_rand_add(data, entropy))
spec = importlib.util.spec_from_file_location('app', 'functions/audio/app.py')
spec.loader.exec_module(importlib.util.module_from_spec(spec))  # the snapshot's INIT
assert not stirred
for hook in after_restore:  # a container restored from the snapshot
    hook()
from kiddolingo.audio import pcm16_to_wav
from kiddolingo.providers import build_providers

built = []
original = ssl.SSLContext.load_verify_locations
def counted(self, *args, **kwargs):
    built.append(1)
    return original(self, *args, **kwargs)
ssl.SSLContext.load_verify_locations = counted
before = set(sys.modules)

async def turn():
    providers = build_providers()
    speech = providers.speech.open(voice="coral")
    await providers.transcriber.transcribe(pcm16_to_wav(bytes(9600), 16000), languages=["es"])
    async for _ in providers.chat.stream([{"role": "user", "content": "hola"}],
                                         temperature=0.7, max_tokens=20):
        pass
    async for _ in speech.stream("Hola amigo."):
        pass
    await speech.aclose()

asyncio.run(turn())
print(json.dumps({"new": sorted(set(sys.modules) - before), "tls": len(built),
                  "stirred": stirred}))
"""


def test_the_first_turn_after_a_snapshot_loads_nothing_and_builds_no_tls_context(
    fake_openai,
) -> None:
    """What a snapshot's INIT leaves ready: the SDK's HTTP and Realtime clients, their models
    and transforms, and one TLS context. A child's first turn then loads no module and loads no
    CA certificates (the Realtime socket's and every stage client's would cost ~45 ms each);
    the restore hook gives OpenSSL fresh randomness before it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "TABLE_NAME": "t",
        "BUCKET_NAME": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        "AWS_LAMBDA_FUNCTION_NAME": "kiddolingo-test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": "sk-test-fake",
    }
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_TURN_AFTER_SNAPSHOT],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert [m for m in got["new"] if m.startswith(("openai", "websockets", "http"))] == []
    assert got["tls"] == 0
    # Each restored container stirs fresh OS randomness into OpenSSL's generator first.
    assert got["stirred"] == [64]


def test_a_secure_realtime_socket_gets_the_process_tls_context() -> None:
    """``websockets`` builds a TLS context per ``wss://`` connection unless given one, and
    refuses one for ``ws://``."""
    import openai

    from kiddolingo.providers.sdk_client import tls_context, websocket_options

    secure = openai.AsyncOpenAI(api_key="k", base_url="https://api.example/v1")
    plain = openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    pinned = openai.AsyncOpenAI(
        api_key="k", base_url="http://127.0.0.1:9/v1", websocket_base_url="wss://rt.example/v1"
    )
    assert websocket_options(secure) == {"ssl": tls_context()}
    assert websocket_options(plain) == {}
    assert websocket_options(pinned)["ssl"] is tls_context()


def test_the_audio_function_runs_from_a_snapshot_through_its_alias() -> None:
    from infra import template as tpl

    spec = tpl.functions()["$default"]
    assert spec.snap_start
    assert not tpl.functions()["$connect"].snap_start


def test_the_local_runtime_publishes_a_snapstart_function_before_its_first_request(
    tmp_path, monkeypatch
) -> None:
    import os

    from infra.lambda_runtime import LambdaFunction
    from infra.template import FunctionSpec

    (tmp_path / "app.py").write_text(
        "import os\n"
        "INIT_TYPE = os.environ.get('AWS_LAMBDA_INITIALIZATION_TYPE')\n"
        "def lambda_handler(event, context):\n"
        "    return {'statusCode': 200, 'body': INIT_TYPE}\n"
    )
    monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    fn = LambdaFunction(FunctionSpec("Fn", tmp_path, "app.lambda_handler", snap_start=True))
    fn.publish()
    assert "AWS_LAMBDA_INITIALIZATION_TYPE" not in os.environ  # restored
    result = fn.invoke({})
    assert result.ok and result.payload["body"] == "snap-start"


def test_a_session_stored_with_a_voice_the_speech_api_lacks_speaks_with_the_default(
    stack, fake_openai
) -> None:
    """Sessions written before the move to the Realtime API may hold ``nova``."""
    from tests.support.speech import speak
    from tests.test_voice_turn import CONN, speak_turn, start

    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies("¡Hola! (Hello!)")
    sid = start(stack)
    assert stack.session_item(sid) is not None
    from kiddolingo import aws
    from kiddolingo.settings import get_settings

    store = aws.session_store(get_settings())
    store.set_connection_config(CONN, '{"voice": "nova", "input_rate": 24000}')
    speak_turn(stack, CONN, speak("Hola"))
    responses = fake_openai.realtime_responses()
    assert responses and all(r.voice == "coral" and r.completed for r in responses)
