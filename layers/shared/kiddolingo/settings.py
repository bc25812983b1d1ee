"""Settings from the environment, one frozen object per process.

Every model and every provider stage's endpoint is configuration (the announced model
shutdowns in DESIGN §3 make that a necessity). A stage falls back to the standard
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` when it has no setting of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

STAGES = ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION")


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    return int(raw) if raw.strip() else default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    return float(raw) if raw.strip() else default


@dataclass(frozen=True)
class StageSettings:
    """Where one provider stage (transcription, chat, speech, moderation) lives."""

    model: str
    base_url: str | None
    api_key: str | None
    #: SSM SecureString name, or a Secrets Manager ARN/name prefixed ``secretsmanager:``.
    api_key_parameter: str | None


@dataclass(frozen=True)
class Settings:
    table_name: str = "kiddolingo-sessions"
    bucket_name: str = "kiddolingo-audio"
    transcription: StageSettings = field(
        default_factory=lambda: StageSettings("whisper-1", None, None, None)
    )
    chat: StageSettings = field(default_factory=lambda: StageSettings("gpt-4o", None, None, None))
    speech: StageSettings = field(
        default_factory=lambda: StageSettings("tts-1-hd", None, None, None)
    )
    moderation: StageSettings = field(
        default_factory=lambda: StageSettings("omni-moderation-latest", None, None, None)
    )
    speech_voice: str = "nova"
    chat_temperature: float = 0.7
    chat_max_tokens: int = 150
    target_language: str = "Spanish"
    session_ttl_hours: int = 24
    log_transcripts: bool = False
    provider_timeout_s: float = 10.0
    provider_max_retries: int = 2
    turn_deadline_s: float = 20.0
    #: How long a turn holds its connection's response slot at most (see ``lease_s``).
    response_lease_s: float = 60.0
    speculative_fraction: float = 0.08
    moderation_enabled: bool = True
    auth_required: bool = True
    auth_secret: str | None = None
    auth_secret_parameter: str | None = None
    max_appends_per_second: int = 50
    #: Every turn that reaches a provider counts, a speculation too (~1.5 per answer).
    max_turns_per_minute: int = 20
    max_utterance_ms: int = 30_000
    max_history_messages: int = 20
    parameter_cache_s: int = 300

    @property
    def lease_s(self) -> float:
        """The response slot's lease: ``RESPONSE_LEASE_S``, but always longer than the turn's
        deadline plus its transcription (every attempt at the provider's timeout), so that a
        live turn is never taken for a dead one. A lease too short would only let a second
        response overtake the first, which then stops as if cancelled."""
        transcription_s = self.provider_timeout_s * (self.provider_max_retries + 1)
        return max(self.response_lease_s, self.turn_deadline_s + transcription_s + 5.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default_base = env.get("OPENAI_BASE_URL") or None
        default_key = env.get("OPENAI_API_KEY") or None
        default_key_param = env.get("OPENAI_API_KEY_PARAMETER") or None
        base = cls()

        def stage(name: str, default: StageSettings) -> StageSettings:
            return StageSettings(
                model=env.get(f"{name}_MODEL") or default.model,
                base_url=env.get(f"{name}_BASE_URL") or default_base,
                api_key=env.get(f"{name}_API_KEY") or default_key,
                api_key_parameter=env.get(f"{name}_API_KEY_PARAMETER") or default_key_param,
            )

        return cls(
            table_name=env.get("TABLE_NAME") or base.table_name,
            bucket_name=env.get("BUCKET_NAME") or base.bucket_name,
            transcription=stage("TRANSCRIPTION", base.transcription),
            chat=stage("CHAT", base.chat),
            speech=stage("SPEECH", base.speech),
            moderation=stage("MODERATION", base.moderation),
            speech_voice=env.get("SPEECH_VOICE") or base.speech_voice,
            chat_temperature=_float(env, "CHAT_TEMPERATURE", base.chat_temperature),
            chat_max_tokens=_int(env, "CHAT_MAX_TOKENS", base.chat_max_tokens),
            target_language=env.get("TARGET_LANGUAGE") or base.target_language,
            session_ttl_hours=_int(env, "SESSION_TTL_HOURS", base.session_ttl_hours),
            log_transcripts=_bool(env.get("LOG_TRANSCRIPTS"), base.log_transcripts),
            provider_timeout_s=_float(env, "PROVIDER_TIMEOUT_S", base.provider_timeout_s),
            provider_max_retries=_int(env, "PROVIDER_MAX_RETRIES", base.provider_max_retries),
            turn_deadline_s=_float(env, "TURN_DEADLINE_S", base.turn_deadline_s),
            response_lease_s=_float(env, "RESPONSE_LEASE_S", base.response_lease_s),
            speculative_fraction=_float(env, "SPECULATIVE_FRACTION", base.speculative_fraction),
            moderation_enabled=_bool(env.get("MODERATION_ENABLED"), base.moderation_enabled),
            auth_required=_bool(env.get("AUTH_REQUIRED"), base.auth_required),
            auth_secret=env.get("AUTH_SECRET") or None,
            auth_secret_parameter=env.get("AUTH_SECRET_PARAMETER") or None,
            max_appends_per_second=_int(env, "MAX_APPENDS_PER_SECOND", base.max_appends_per_second),
            max_turns_per_minute=_int(env, "MAX_TURNS_PER_MINUTE", base.max_turns_per_minute),
            max_utterance_ms=_int(env, "MAX_UTTERANCE_MS", base.max_utterance_ms),
            max_history_messages=_int(env, "MAX_HISTORY_MESSAGES", base.max_history_messages),
            parameter_cache_s=_int(env, "PARAMETER_CACHE_S", base.parameter_cache_s),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (a Lambda container reads its environment once)."""
    return Settings.from_env()
