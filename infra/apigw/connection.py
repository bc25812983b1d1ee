"""One open WebSocket connection, as the local gateway tracks it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from infra.apigw.events import Peer


@dataclass
class Connection:
    """One open WebSocket connection: what its events carry, its socket, and how it ended."""

    peer: Peer
    ws: web.WebSocketResponse
    request: web.Request
    connected_at: float  # epoch seconds
    path: str
    query: dict[str, str]
    subprotocol: str | None
    last_active_at: float  # epoch seconds
    started_mono: float
    last_active_mono: float
    messages_received: int = 0
    frames_sent: int = 0
    #: Set by whoever ends the connection first: (disconnectStatusCode, disconnectReason).
    end: tuple[int, str] | None = None
    closing: bool = False

    @property
    def connection_id(self) -> str:
        return self.peer.connection_id

    @property
    def source_ip(self) -> str:
        return self.peer.source_ip

    @property
    def user_agent(self) -> str | None:
        return self.peer.user_agent

    def touch(self) -> None:
        self.last_active_at = time.time()
        self.last_active_mono = time.monotonic()
        self.messages_received += 1
