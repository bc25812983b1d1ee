"""The server events of one reply: its ``realtime.response`` object and the events of its one
audio part (``response.output_audio*``), as the Realtime API shapes them."""

from __future__ import annotations

from typing import Any

from ..protocol import server_event
from ..providers.base import SPEECH_SAMPLE_RATE
from .outcome import TurnOutcome, TurnRequest


def response_object(
    req: TurnRequest,
    status: str,
    outcome: TurnOutcome | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` of ``response.created`` / ``response.done``."""
    output = []
    if outcome is not None:
        output = [
            {
                "id": req.item_id,
                "type": "message",
                "object": "realtime.item",
                "role": "assistant",
                "status": "completed" if status == "completed" else "incomplete",
                "content": [{"type": "output_audio", "transcript": outcome.text}],
            }
        ]
    resp: dict[str, Any] = {
        "object": "realtime.response",
        "id": req.response_id,
        "status": status,
        "output": output,
        "output_modalities": ["audio"],
        "audio": {
            "output": {
                "format": {"type": "audio/pcm", "rate": SPEECH_SAMPLE_RATE},
                "voice": req.voice,
            }
        },
    }
    if details is not None:
        resp["status_details"] = details
    return resp


def part_event(req: TurnRequest, etype: str, **fields: Any) -> dict[str, Any]:
    """An event of the reply's one audio part (output 0, content 0)."""
    return server_event(
        etype,
        response_id=req.response_id,
        item_id=req.item_id,
        output_index=0,
        content_index=0,
        **fields,
    )


def done_details(outcome: TurnOutcome) -> dict[str, Any] | None:
    """``status_details`` of the reply's ``response.done`` (``None`` when it completed)."""
    if outcome.status == "cancelled":
        return {"type": "cancelled", "reason": outcome.reason or "client_cancelled"}
    if outcome.status == "failed" and outcome.error is not None:
        return {
            "type": "failed",
            "error": {
                "type": outcome.error.kind,
                "code": f"{outcome.error.stage}_failed",
                "message": "The tutor could not answer.",
            },
        }
    if outcome.user_flagged or outcome.reason == "content_filter":
        # As the Realtime API ends a response its content filter stopped.
        return {"type": "incomplete", "reason": "content_filter"}
    return None
