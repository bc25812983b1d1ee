"""Server events: their common shape, their ids, and their bytes on the socket."""

from __future__ import annotations

import json
import uuid
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def server_event(etype: str, **fields: Any) -> dict[str, Any]:
    return {"type": etype, "event_id": new_id("event"), **fields}


def encode_json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
