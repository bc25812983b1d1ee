"""Settings from the environment, one frozen object per process.

Every model and every provider stage's endpoint is configuration: OpenAI retires models on
announced dates (the README's model table), and a deployment must be able to move without a
code change. A stage falls back to the standard ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` when it
has no setting of its own.

:meth:`Settings.check` refuses combinations that could only fail later, inside a child's turn
(a ``/audio/speech`` model on the Realtime API, a voice the speech API does not have, ...): the
handlers call it when the container starts, so a wrong deployment fails loudly at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

STAGES = ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION")

#: How speech is made: ``realtime`` (an out-of-band response per sentence on the Realtime API,
#: the only way to OpenAI's current voice models) or ``http`` (``/audio/speech``, for
#: OpenAI-compatible speech servers, and OpenAI's ``tts-1`` family until its shutdown).
SPEECH_APIS = ("realtime", "http")
#: The voices of OpenAI's Realtime voice models.
REALTIME_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
#: The voices of OpenAI's ``/audio/speech`` models (the Realtime ones plus three of their own).
HTTP_VOICES = REALTIME_VOICES | {"fable", "nova", "onyx"}
#: The voice and the language a session starts with, unless the deployment sets others.
DEFAULT_VOICE = "coral"
DEFAULT_TARGET_LANGUAGE = "Spanish"
#: OpenAI's ``/audio/speech`` models: not served by the Realtime API.
HTTP_SPEECH_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
#: ``reasoning_effort`` values the chat API takes ("" sends none: models that do not reason).
CHAT_REASONING_EFFORTS = ("", "none", "minimal", "low", "medium", "high", "xhigh", "max")
#: ``reasoning.effort`` values the Realtime API takes ("" sends none).
SPEECH_REASONING_EFFORTS = ("", "minimal", "low", "medium", "high", "xhigh")


class SettingsError(ValueError):
    """A setting, or a combination of settings, that cannot work."""


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    return int(raw) if raw.strip() else default


def _choice(env: Mapping[str, str], name: str, default: str) -> str:
    """A word setting; set but empty (``NAME=``) means "send none"."""
    raw = env.get(name)
    return default if raw is None else raw.strip().lower()


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
        default_factory=lambda: StageSettings("gpt-transcribe", None, None, None)
    )
    chat: StageSettings = field(
        default_factory=lambda: StageSettings("gpt-6-luna", None, None, None)
    )
    speech: StageSettings = field(
        default_factory=lambda: StageSettings("gpt-realtime-2.1-mini", None, None, None)
    )
    moderation: StageSettings = field(
        default_factory=lambda: StageSettings("omni-moderation-latest", None, None, None)
    )
    speech_api: str = "realtime"
    speech_voice: str = DEFAULT_VOICE
    #: The Realtime voice model reads a given sentence: it needs no reasoning.
    speech_reasoning_effort: str = "minimal"
    chat_temperature: float = 0.7
    chat_max_tokens: int = 150
    #: A short, kind answer to a child needs no deliberation, and reasoning costs first-token
    #: latency; ``none`` also keeps ``temperature`` valid on the reasoning models.
    chat_reasoning_effort: str = "none"
    target_language: str = DEFAULT_TARGET_LANGUAGE
    #: The deployment's lesson plan, for sessions whose teacher set none.
    lesson_plan: str | None = None
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
            speech_api=(env.get("SPEECH_API") or base.speech_api).strip().lower(),
            speech_voice=env.get("SPEECH_VOICE") or base.speech_voice,
            speech_reasoning_effort=_choice(
                env, "SPEECH_REASONING_EFFORT", base.speech_reasoning_effort
            ),
            chat_temperature=_float(env, "CHAT_TEMPERATURE", base.chat_temperature),
            chat_max_tokens=_int(env, "CHAT_MAX_TOKENS", base.chat_max_tokens),
            chat_reasoning_effort=_choice(env, "CHAT_REASONING_EFFORT", base.chat_reasoning_effort),
            target_language=env.get("TARGET_LANGUAGE") or base.target_language,
            lesson_plan=(env.get("LESSON_PLAN") or "").strip() or None,
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

    def check(self) -> Settings:
        """``self`` if the settings can work together, else :class:`SettingsError` naming the
        settings to change. Only what is certain is refused: a custom ``SPEECH_BASE_URL`` may
        serve other models and voices than OpenAI's, so those are not checked against it."""
        problems: list[str] = []
        if self.speech_api not in SPEECH_APIS:
            problems.append(f"SPEECH_API={self.speech_api!r}: use one of {', '.join(SPEECH_APIS)}")
        openai_speech = self.speech.base_url is None
        model = self.speech.model
        if self.speech_api == "realtime":
            if model in HTTP_SPEECH_MODELS:
                problems.append(
                    f"SPEECH_MODEL={model!r} is an /audio/speech model, not a Realtime one: "
                    "set SPEECH_API=http to use it, or a Realtime model such as "
                    "gpt-realtime-2.1-mini"
                )
            if openai_speech and self.speech_voice not in REALTIME_VOICES:
                problems.append(
                    f"SPEECH_VOICE={self.speech_voice!r} is not a Realtime voice: use one of "
                    + ", ".join(sorted(REALTIME_VOICES))
                )
        elif self.speech_api == "http":
            if model.startswith("gpt-realtime"):
                problems.append(
                    f"SPEECH_MODEL={model!r} is a Realtime model: set SPEECH_API=realtime"
                )
            if openai_speech and self.speech_voice not in HTTP_VOICES:
                problems.append(f"SPEECH_VOICE={self.speech_voice!r} is not a speech voice")
        if self.chat_reasoning_effort not in CHAT_REASONING_EFFORTS:
            problems.append(
                f"CHAT_REASONING_EFFORT={self.chat_reasoning_effort!r}: use one of "
                + ", ".join(e for e in CHAT_REASONING_EFFORTS if e)
                + " (or empty for models that do not reason)"
            )
        if self.speech_reasoning_effort not in SPEECH_REASONING_EFFORTS:
            problems.append(
                f"SPEECH_REASONING_EFFORT={self.speech_reasoning_effort!r}: use one of "
                + ", ".join(e for e in SPEECH_REASONING_EFFORTS if e)
                + " (or empty)"
            )
        if problems:
            raise SettingsError("; ".join(problems))
        return self

    @property
    def speech_voices(self) -> frozenset[str]:
        """The voices a session may choose with the speech API in use."""
        return REALTIME_VOICES if self.speech_api == "realtime" else HTTP_VOICES


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (a Lambda container reads its environment once), checked."""
    return Settings.from_env().check()
