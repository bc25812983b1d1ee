"""Pytest fixtures around the fake OpenAI-compatible server (``infra/fake_openai.py``).

Add to a conftest: ``pytest_plugins = ["tests.support.fake_openai_fixtures"]``.

- ``fake_openai_server`` (session): one server for the whole run, zero latency.
- ``fake_openai`` (function): that server, reset before and after the test.
- ``fake_openai_env`` (function): the process environment pointed at it (``OPENAI_BASE_URL``,
  ``OPENAI_API_KEY``; per-stage overrides removed), with the settings and provider caches
  cleared so code under test picks it up; yields the server.
- ``fake_openai_settings`` (function): a :class:`Settings` for it with a short timeout, for
  code that takes settings explicitly, on the older models (whisper-1, gpt-4o, ``tts-1-hd`` on
  ``/audio/speech``).
- ``fake_openai_successor_settings`` (function): the same on the successor models
  (gpt-transcribe, gpt-6-luna at reasoning effort ``none``, gpt-realtime-2.1-mini speech over
  the fake's Realtime socket).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.fake_openai import FakeOpenAI, LatencyProfile
from kiddolingo.settings import STAGES, Settings, StageSettings

FAKE_API_KEY = "sk-fake-openai-test"
_STAGE_VARIABLES = [
    f"{stage}_{suffix}"
    for stage in STAGES
    for suffix in ("BASE_URL", "API_KEY", "API_KEY_PARAMETER")
]


def _clear_caches() -> None:
    from kiddolingo.providers import reset_providers
    from kiddolingo.settings import get_settings

    get_settings.cache_clear()
    reset_providers()


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(latency=LatencyProfile.zero())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_openai_server.reset()
    try:
        yield fake_openai_server
    finally:
        fake_openai_server.reset()


@pytest.fixture
def fake_openai_env(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    for name in (*_STAGE_VARIABLES, "OPENAI_API_KEY_PARAMETER"):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    try:
        yield fake_openai
    finally:
        _clear_caches()


@pytest.fixture
def fake_openai_settings(fake_openai: FakeOpenAI) -> Settings:
    def stage(model: str) -> StageSettings:
        return StageSettings(model, fake_openai.base_url, FAKE_API_KEY, None)

    return Settings(
        transcription=stage("whisper-1"),
        chat=stage("gpt-4o"),
        speech=stage("tts-1-hd"),
        moderation=stage("omni-moderation-latest"),
        speech_api="http",
        speech_voice="nova",
        chat_reasoning_effort="",
        provider_timeout_s=5.0,
        provider_max_retries=2,
    )


@pytest.fixture
def fake_openai_successor_settings(fake_openai: FakeOpenAI) -> Settings:
    def stage(model: str) -> StageSettings:
        return StageSettings(model, fake_openai.base_url, FAKE_API_KEY, None)

    return Settings(
        transcription=stage("gpt-transcribe"),
        chat=stage("gpt-6-luna"),
        speech=stage("gpt-realtime-2.1-mini"),
        moderation=stage("omni-moderation-latest"),
        speech_api="realtime",
        speech_voice="coral",
        chat_reasoning_effort="none",
        provider_timeout_s=5.0,
        provider_max_retries=2,
    ).check()
