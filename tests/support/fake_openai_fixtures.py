"""Pytest fixtures around the fake OpenAI-compatible server (``infra/fake_openai``).

Add to a conftest: ``pytest_plugins = ["tests.support.fake_openai_fixtures"]``.

- ``fake_openai_server`` (session): one server for the whole run, zero latency.
- ``fake_openai`` (function): that server, reset before and after the test.
- ``fake_openai_env`` (function): the process environment pointed at it (``OPENAI_BASE_URL``,
  ``OPENAI_API_KEY``; per-stage overrides removed), with the settings and provider caches
  cleared so code under test picks it up; yields the server.
- ``fake_openai_settings`` (function): a :class:`Settings` for it with a short timeout and the
  old models on the HTTP speech endpoint, for code that takes settings explicitly.
- ``fake_realtime_settings`` (function): the same with the default models (speech over the
  Realtime API).
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

    # The old defaults, on the HTTP speech endpoint: the adapters they use stay (for
    # OpenAI-compatible servers) and are tested through these settings.
    return Settings(
        transcription=stage("whisper-1"),
        chat=stage("gpt-4o"),
        chat_reasoning_effort="",
        speech_api="http",
        speech=stage("tts-1-hd"),
        speech_voice="nova",
        moderation=stage("omni-moderation-latest"),
        provider_timeout_s=5.0,
        provider_max_retries=2,
    ).check()


@pytest.fixture
def fake_realtime_settings(fake_openai: FakeOpenAI) -> Settings:
    """The default models (speech over the Realtime API), on the fake."""

    def stage(model: str) -> StageSettings:
        return StageSettings(model, fake_openai.base_url, FAKE_API_KEY, None)

    defaults = Settings()
    return Settings(
        transcription=stage(defaults.transcription.model),
        chat=stage(defaults.chat.model),
        speech=stage(defaults.speech.model),
        moderation=stage(defaults.moderation.model),
        provider_timeout_s=5.0,
        provider_max_retries=2,
    ).check()
