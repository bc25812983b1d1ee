"""API Gateway WebSocket events for the handlers, stamped as API Gateway stamps them."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from .config import ROOT

EVENTS_DIR = ROOT / "events"


def _event_file(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    return data


class Events:
    """API Gateway WebSocket events from ``events/`` (the files ``sam local invoke`` uses)."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self._connect = _event_file("connect")
        self._message = _event_file("response_create")
        self._disconnect = _event_file("disconnect")
        self._n = 0
        #: Sizes of the client's messages (API Gateway bills them in 32 KB units).
        self.sizes: list[int] = []

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        ctx = event["requestContext"]
        now_ms = int(time.time() * 1000)
        rid = f"B{self._n:014d}="[-16:]
        ctx.update(
            connectionId=self.connection_id,
            requestTimeEpoch=now_ms,
            requestId=rid,
            extendedRequestId=rid,
        )
        if "messageId" in ctx:
            ctx["messageId"] = rid
        return event

    def connect(self) -> dict[str, Any]:
        event = copy.deepcopy(self._connect)
        event.pop("queryStringParameters", None)
        event.pop("multiValueQueryStringParameters", None)
        for key in ("headers", "multiValueHeaders"):
            (event.get(key) or {}).pop("Authorization", None)
        event = self._stamp(event)
        event["requestContext"]["connectedAt"] = event["requestContext"]["requestTimeEpoch"]
        return event

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        event = copy.deepcopy(self._message)
        event["body"] = json.dumps(body, separators=(",", ":"))
        self.sizes.append(len(event["body"].encode()))
        return self._stamp(event)

    def disconnect(self) -> dict[str, Any]:
        return self._stamp(copy.deepcopy(self._disconnect))
