"""Session configuration: what ``session.update`` may change, validated, and how it is shown.

Pure code: no I/O. The session object we send mirrors the Realtime API's ``session`` shape
(``audio.input.format``, ``audio.input.turn_detection``, ``audio.output.voice``) with our
extension ``tutor`` (target language, learner age).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from .protocol import OUTPUT_RATE, SUPPORTED_INPUT_RATES, ProtocolError
from .settings import HTTP_VOICES

#: Children's server-VAD defaults (product brief, DESIGN §2).
CHILD_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.3,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 1200,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}

VOICES = HTTP_VOICES
MAX_INSTRUCTIONS_CHARS = 4000
_TD_LIMITS = {
    "prefix_padding_ms": (0, 2000),
    "silence_duration_ms": (200, 6000),
    "idle_timeout_ms": (1000, 600_000),
}


@dataclass(frozen=True)
class SessionConfig:
    input_rate: int = 24000
    #: ``None`` means manual commits (``turn_detection: null``).
    turn_detection: dict[str, Any] | None = None
    voice: str = "coral"
    instructions: str | None = None
    target_language: str = "Spanish"
    learner_age: int | None = None

    @classmethod
    def default(cls, voice: str = "coral", target_language: str = "Spanish") -> SessionConfig:
        return cls(
            turn_detection=dict(CHILD_VAD_DEFAULTS), voice=voice, target_language=target_language
        )

    def to_item(self) -> str:
        """The settings as stored: one string attribute (JSON), not a map of a dozen values.
        Every append reads them with its connection item, and each attribute value costs
        botocore (and the service) its own shape walk."""
        return json.dumps(
            {
                "input_rate": self.input_rate,
                "turn_detection": _to_item_td(self.turn_detection),
                "voice": self.voice,
                "instructions": self.instructions,
                "target_language": self.target_language,
                "learner_age": self.learner_age,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_item(cls, item: str | dict[str, Any] | None) -> SessionConfig:
        """Inverse of :meth:`to_item`; also reads the map of an earlier deployment's items."""
        if isinstance(item, str):
            item = json.loads(item)
        if not item or not isinstance(item, dict):
            return cls.default()
        td = item.get("turn_detection")
        return cls(
            input_rate=int(item.get("input_rate", 24000)),
            turn_detection=_from_item_td(td) if td else None,
            voice=str(item.get("voice") or "coral"),
            instructions=item.get("instructions") or None,
            target_language=str(item.get("target_language") or "Spanish"),
            learner_age=int(item["learner_age"]) if item.get("learner_age") is not None else None,
        )

    @property
    def server_vad(self) -> bool:
        return self.turn_detection is not None

    @property
    def create_response(self) -> bool:
        return bool(self.turn_detection and self.turn_detection.get("create_response", True))

    @property
    def interrupt_response(self) -> bool:
        return bool(self.turn_detection and self.turn_detection.get("interrupt_response", True))


def _to_item_td(td: dict[str, Any] | None) -> dict[str, Any] | None:
    if td is None:
        return None
    # DynamoDB has no floats: the threshold travels as a string.
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in td.items() if v is not None}


def _from_item_td(td: dict[str, Any]) -> dict[str, Any]:
    out = dict(CHILD_VAD_DEFAULTS)
    for key, value in td.items():
        if key == "threshold":
            out[key] = float(value)
        elif key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def apply_update(
    config: SessionConfig,
    session: dict[str, Any],
    event_id: str | None,
    voices: frozenset[str] = VOICES,
) -> SessionConfig:
    """Apply a ``session.update`` payload; unknown fields are ignored like the Realtime API.
    ``voices``: the voices of the speech API in use (``Settings.speech_voices``)."""

    def fail(param: str, message: str) -> ProtocolError:
        return ProtocolError("invalid_session", message, event_id=event_id, param=param)

    audio = session.get("audio") or {}
    if not isinstance(audio, dict):
        raise fail("session.audio", "session.audio must be an object.")
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    updates: dict[str, Any] = {}

    fmt = audio_in.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm":
            raise fail(
                "session.audio.input.format",
                "Only {'type': 'audio/pcm', 'rate': 24000 or 16000} input is supported.",
            )
        rate = fmt.get("rate", 24000)
        if rate not in SUPPORTED_INPUT_RATES:
            raise fail(
                "session.audio.input.format.rate",
                f"Input rate {rate!r} is not supported; use 24000 or 16000.",
            )
        updates["input_rate"] = int(rate)

    if "turn_detection" in audio_in:
        updates["turn_detection"] = _turn_detection(audio_in["turn_detection"], config, fail)

    voice = audio_out.get("voice")
    if voice is not None:
        if not isinstance(voice, str) or voice not in voices:
            raise fail(
                "session.audio.output.voice",
                f"Unknown voice {voice!r}; use one of {', '.join(sorted(voices))}.",
            )
        updates["voice"] = voice
    out_fmt = audio_out.get("format")
    if out_fmt is not None and (
        not isinstance(out_fmt, dict)
        or out_fmt.get("type", "audio/pcm") != "audio/pcm"
        or out_fmt.get("rate", OUTPUT_RATE) != OUTPUT_RATE
    ):
        raise fail("session.audio.output.format", "Output is always 24 kHz audio/pcm.")

    if "instructions" in session:
        text = session["instructions"]
        if text is not None and (not isinstance(text, str) or len(text) > MAX_INSTRUCTIONS_CHARS):
            raise fail(
                "session.instructions",
                f"instructions must be a string of at most {MAX_INSTRUCTIONS_CHARS} characters.",
            )
        updates["instructions"] = text or None

    tutor = session.get("tutor")
    if tutor is not None:
        if not isinstance(tutor, dict):
            raise fail("session.tutor", "session.tutor must be an object.")
        lang = tutor.get("target_language")
        if lang is not None:
            if not isinstance(lang, str) or not (1 <= len(lang.strip()) <= 40):
                raise fail("session.tutor.target_language", "target_language must be a name.")
            updates["target_language"] = lang.strip()
        age = tutor.get("learner_age")
        if age is not None:
            if isinstance(age, bool) or not isinstance(age, int) or not 3 <= age <= 17:
                raise fail("session.tutor.learner_age", "learner_age must be a whole number 3-17.")
            updates["learner_age"] = age
    return replace(config, **updates)


def _turn_detection(td: Any, config: SessionConfig, fail: Any) -> dict[str, Any] | None:
    if td is None:
        return None
    if not isinstance(td, dict):
        raise fail(
            "session.audio.input.turn_detection", "turn_detection must be an object or null."
        )
    if td.get("type", "server_vad") != "server_vad":
        raise fail(
            "session.audio.input.turn_detection.type",
            "Only 'server_vad' turn detection (or null for manual commits) is supported.",
        )
    out = dict(config.turn_detection or CHILD_VAD_DEFAULTS)
    out["type"] = "server_vad"
    if "threshold" in td and td["threshold"] is not None:
        t = td["threshold"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise fail("session.audio.input.turn_detection.threshold", "threshold must be 0.0-1.0.")
        out["threshold"] = float(t)
    for key, (lo, hi) in _TD_LIMITS.items():
        if key in td:
            v = td[key]
            if v is None and key == "idle_timeout_ms":
                out[key] = None
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise fail(
                    f"session.audio.input.turn_detection.{key}",
                    f"{key} must be a whole number from {lo} to {hi}.",
                )
            out[key] = v
    for key in ("create_response", "interrupt_response"):
        if key in td and td[key] is not None:
            if not isinstance(td[key], bool):
                raise fail(f"session.audio.input.turn_detection.{key}", f"{key} must be a boolean.")
            out[key] = td[key]
    return out


def session_object(session_id: str, config: SessionConfig, model: str) -> dict[str, Any]:
    """The Realtime ``session`` object for ``session.created`` / ``session.updated``."""
    td = None
    if config.turn_detection is not None:
        td = {k: v for k, v in config.turn_detection.items() if v is not None}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": config.instructions or "",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": config.input_rate},
                "turn_detection": td,
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": OUTPUT_RATE},
                "voice": config.voice,
            },
        },
        "tutor": {
            "target_language": config.target_language,
            "learner_age": config.learner_age,
        },
    }
