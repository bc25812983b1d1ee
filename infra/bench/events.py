"""API Gateway WebSocket events for the handlers, stamped as API Gateway stamps them."""

from __future__ import annotations

import json
import time
from typing import Any

from infra.apigw import events as apigw_events
from infra.apigw.events import REASON_NO_STATUS
from infra.apigw.samples import sample_headers, sample_peer


class Events:
    """API Gateway WebSocket events of the sample connection (``events/``), stamped now.

    Built by ``infra.apigw.events``, as the local gateway builds them; anonymous and without a
    query string, as the bench connects.
    """

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self._n = 0
        #: Sizes of the client's messages (API Gateway bills them in 32 KB units).
        self.sizes: list[int] = []

    def _ids(self) -> dict[str, Any]:
        self._n += 1
        rid = f"B{self._n:014d}="[-16:]
        return {"received_ms": int(time.time() * 1000), "request_id": rid}

    def connect(self) -> dict[str, Any]:
        ids = self._ids()
        peer = sample_peer("connect", self.connection_id, connected_at_ms=ids["received_ms"])
        headers = sample_headers(without=("Authorization",))
        return apigw_events.connect_event(peer, headers, port=443, proto="https", **ids)

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(body, separators=(",", ":"))
        self.sizes.append(len(text.encode()))
        peer = sample_peer("response_create", self.connection_id)
        ids = self._ids()
        return apigw_events.message_event(peer, text, message_id=ids["request_id"], **ids)

    def disconnect(self) -> dict[str, Any]:
        peer = sample_peer("disconnect", self.connection_id)
        return apigw_events.disconnect_event(peer, 1005, REASON_NO_STATUS, **self._ids())
