"""Errors on the wire: a refused client event (:class:`ProtocolError`) and the Realtime
``error`` event that reports it, bounded whatever it quotes."""

from __future__ import annotations

import json
from typing import Any

from .limits import MAX_ERROR_MESSAGE_CHARS, MAX_ID_CHARS
from .server import server_event

#: A client value quoted in an error message is cut to this many characters.
_SHOWN_CHARS = 64


class ProtocolError(Exception):
    """A client event we cannot accept; becomes a Realtime ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        event_id: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id
        self.param = param
        self.error_type = error_type


def shown(value: Any) -> str:
    """A client value quoted in a message: its JSON text, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def error_event(
    code: str,
    message: str,
    *,
    event_id: str | None = None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    # Bounded whatever it quotes: an error must never be the message that passes 32 KB.
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    error: dict[str, Any] = {"type": error_type, "code": code, "message": message}
    if event_id is not None:
        error["event_id"] = event_id[:MAX_ID_CHARS]
    if param is not None:
        error["param"] = param[:MAX_ID_CHARS]
    return server_event("error", error=error)


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error_event(
        exc.code, exc.message, event_id=exc.event_id, error_type=exc.error_type, param=exc.param
    )
