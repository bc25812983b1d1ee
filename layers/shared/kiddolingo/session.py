"""Session configuration: what ``session.update`` may change, validated, and how it is shown.

Pure code: no I/O. ``kiddolingo.protocol`` has validated every field's type and range before
anything here runs. The session object we send mirrors the Realtime API's ``session`` shape
(``audio.input.format``, ``audio.input.turn_detection``, ``audio.output.voice``) with our
extension ``tutor`` (target language, learner age).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from .protocol import (
    DEFAULT_INPUT_RATE,
    OUTPUT_RATE,
    TARGET_LANGUAGES,
    TURN_DETECTION,
    VOICES,
    ProtocolError,
)
from .settings import DEFAULT_TARGET_LANGUAGE, DEFAULT_VOICE
from .vad.limits import CHILD_VAD_DEFAULTS

__all__ = [
    "CHILD_VAD_DEFAULTS",
    "LEARNER",
    "TEACHER",
    "VOICES",
    "SessionConfig",
    "apply_update",
    "session_object",
    "split_update",
]


#: A token's role that may write the tutor's lesson plan (``session.instructions``).
TEACHER = "teacher"
#: Every other role is a learner's: the child's own connection.
LEARNER = "learner"


@dataclass(frozen=True)
class SessionConfig:
    input_rate: int = DEFAULT_INPUT_RATE
    #: ``None`` means manual commits (``turn_detection: null``).
    turn_detection: dict[str, Any] | None = None
    voice: str = DEFAULT_VOICE
    #: The lesson plan a teacher's connection set (``session.instructions``), or None.
    instructions: str | None = None
    target_language: str = DEFAULT_TARGET_LANGUAGE
    learner_age: int | None = None

    @classmethod
    def default(
        cls, voice: str = DEFAULT_VOICE, target_language: str = DEFAULT_TARGET_LANGUAGE
    ) -> SessionConfig:
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
                "plan": self.instructions,
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
            input_rate=int(item.get("input_rate", DEFAULT_INPUT_RATE)),
            turn_detection=_from_item_td(td) if td else None,
            voice=str(item.get("voice") or DEFAULT_VOICE),
            # Only "plan": an "instructions" value stored before learners were refused it
            # may be a learner's, and is never read.
            instructions=item.get("plan") or None,
            target_language=str(item.get("target_language") or DEFAULT_TARGET_LANGUAGE),
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
    return {**CHILD_VAD_DEFAULTS, **{key: _as_on_the_wire(key, value) for key, value in td.items()}}


def _as_on_the_wire(key: str, value: Any) -> Any:
    """A stored ``turn_detection`` value back in the type the wire schema gives it: DynamoDB
    returns numbers as Decimal, and the threshold is stored as text."""
    spec = (TURN_DETECTION.fields or {}).get(key)
    if spec is not None and spec.kind == "num":
        return float(value)
    if spec is not None and spec.kind == "int":
        return int(value)
    return value


def split_update(
    session: dict[str, Any], role: str | None, event_id: str | None
) -> tuple[dict[str, Any], ProtocolError | None]:
    """What of a ``session.update`` this connection may apply, and the refusal of the rest.

    The tutor's rules come from the deployment and lesson plans from a teacher's token. A
    learner's token lives in the child's browser, so a learner's connection never writes
    ``session.instructions``: a non-empty value is refused with a ``permission_denied`` error,
    and the rest of the update still applies (a client that sends instructions with its audio
    format must still be heard). An empty or null value from a learner changes nothing.
    """
    if role == TEACHER or "instructions" not in session:
        return session, None
    allowed = {k: v for k, v in session.items() if k != "instructions"}
    if not session["instructions"]:
        return allowed, None
    return allowed, ProtocolError(
        "permission_denied",
        "Only a teacher's token may set session.instructions (the lesson plan); "
        "the rest of this session.update was applied.",
        event_id=event_id,
        param="session.instructions",
    )


def apply_update(
    config: SessionConfig,
    session: dict[str, Any],
    event_id: str | None = None,
    voices: frozenset[str] = VOICES,
) -> SessionConfig:
    """Apply a validated ``session.update`` payload (unknown fields are ignored, as the
    Realtime API ignores them; an optional field sent as null leaves the setting as it is).
    ``voices``: the voices of the speech API in use (``Settings.speech_voices``)."""
    audio = session.get("audio") or {}
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    updates: dict[str, Any] = {}

    fmt = audio_in.get("format")
    if fmt is not None:
        updates["input_rate"] = fmt.get("rate") or DEFAULT_INPUT_RATE
    if "turn_detection" in audio_in:
        updates["turn_detection"] = _turn_detection(audio_in["turn_detection"], config)
    voice = audio_out.get("voice")
    if voice is not None:
        # The schema knows every voice of any speech API; the one in use may have fewer.
        if voice not in voices:
            raise ProtocolError(
                "invalid_session",
                f"Unknown voice {voice!r}; use one of {', '.join(sorted(voices))}.",
                event_id=event_id,
                param="session.audio.output.voice",
            )
        updates["voice"] = voice
    if "instructions" in session:
        updates["instructions"] = session["instructions"] or None

    tutor = session.get("tutor") or {}
    if tutor.get("target_language") is not None:
        updates["target_language"] = TARGET_LANGUAGES[tutor["target_language"].strip().casefold()]
    if tutor.get("learner_age") is not None:
        updates["learner_age"] = tutor["learner_age"]
    return replace(config, **updates)


def _turn_detection(td: dict[str, Any] | None, config: SessionConfig) -> dict[str, Any] | None:
    if td is None:
        return None
    out = dict(config.turn_detection or CHILD_VAD_DEFAULTS)
    out["type"] = "server_vad"
    for key, value in td.items():
        if key == "threshold" and value is not None:
            out[key] = float(value)
        elif key == "idle_timeout_ms" or (key in out and value is not None):
            out[key] = value
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
