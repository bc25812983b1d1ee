"""The WebSocket API: one connection from ``$connect`` through its messages to ``$disconnect``.

The ``$connect`` function runs *before* the handshake completes: a non-2xx ``statusCode``
refuses the upgrade with that HTTP status, and a ``Sec-WebSocket-Protocol`` in the returned
``headers`` is the subprotocol of the handshake. Every text message becomes a MESSAGE event for
the route its body selects, run without waiting for the one before. However the connection ends
(client close, ``DELETE @connections``, a limit, a timeout, an abrupt drop, shutdown), one
``$disconnect`` event says how. A failing integration sends the client API Gateway's
``{"message": "Internal server error", "connectionId": …, "requestId": …}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web

from infra.apigw import events
from infra.apigw.connection import Connection
from infra.apigw.events import REASON_GOING_AWAY, REASON_NO_STATUS, Peer, aws_id
from infra.apigw.invocations import TIMEOUTS, Invoker
from infra.apigw.limits import GatewayWebSocketResponse
from infra.apigw.routes import select_route
from infra.lambda_runtime import FunctionSpec, InvocationResult

log = logging.getLogger("kiddolingo.local.gateway")


class WebSocketApi:
    """The WebSocket half of :class:`~infra.apigw.server.LocalGateway` (its settings below)."""

    routes: dict[str, FunctionSpec]
    connections: dict[str, Connection]
    stage: str
    api_id: str
    port: int
    idle_timeout_s: float
    max_connection_s: float
    max_frame_bytes: int
    max_message_bytes: int
    _selection_path: list[str] | None
    _invoker: Invoker
    _tasks: set[asyncio.Task[Any]]

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._invoker.stopping:
            return web.Response(status=503, text="Service Unavailable")
        now = time.time()
        peer = Peer(
            connection_id=aws_id(),
            connected_at_ms=int(now * 1000),
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            domain_name=request.host,
            stage=self.stage,
            api_id=self.api_id,
        )
        refusal, subprotocol = await self._run_connect(request, peer)
        if refusal is not None:
            return refusal
        ws = self._socket(subprotocol)
        try:
            await ws.prepare(request)
        except (ConnectionResetError, web.HTTPException) as exc:
            log.info("handshake of %s failed: %s", peer.connection_id, exc)
            self._disconnect_before_open(peer, 1006, "Handshake failed")
            return ws if ws.prepared else web.Response(status=400)
        conn = self._open(peer, ws, request, now)
        try:
            await self._serve(conn)
        finally:
            self.connections.pop(conn.connection_id, None)
            conn.closing = True
            code, reason = conn.end or (1006, "Connection lost")
            self._spawn(self._disconnect(conn, code, reason))
        return ws

    async def _run_connect(
        self, request: web.Request, peer: Peer
    ) -> tuple[web.Response | None, str | None]:
        """Run ``$connect``: a refusal to answer the handshake with, else the subprotocol."""
        if "$connect" not in self.routes:
            return None, None
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers]
        query = parse_qsl(request.query_string, keep_blank_values=True)
        event = events.connect_event(peer, headers, query, port=self.port)
        result = await self._invoke("$connect", peer.connection_id, event)
        if result is None or (result.error or {}).get("errorType") == "Gateway.Timeout":
            return web.Response(status=504, text="Endpoint request timed out"), None
        status = result.status_code()
        if not 200 <= status < 300:
            log.info("$connect refused %s with %s", peer.connection_id, status)
            return web.Response(status=status, text=_status_text(status)), None
        subprotocol: str | None = None
        for name, value in result.headers().items():
            if name.lower() == "sec-websocket-protocol":
                subprotocol = value.strip() or None
        return None, subprotocol

    def _socket(self, subprotocol: str | None) -> GatewayWebSocketResponse:
        return GatewayWebSocketResponse(
            max_frame_bytes=self.max_frame_bytes,
            protocols=(subprotocol,) if subprotocol else (),
            compress=False,
            timeout=3.0,  # how long a server-side close waits for the client's close frame
            max_msg_size=self.max_message_bytes + 1,
            autoping=True,
            autoclose=True,
        )

    def _open(
        self, peer: Peer, ws: web.WebSocketResponse, request: web.Request, now: float
    ) -> Connection:
        mono = time.monotonic()
        conn = Connection(
            peer=peer,
            ws=ws,
            request=request,
            connected_at=now,
            path=request.path,
            query=dict(parse_qsl(request.query_string, keep_blank_values=True)),
            subprotocol=ws.ws_protocol,
            last_active_at=now,
            started_mono=mono,
            last_active_mono=mono,
        )
        self.connections[peer.connection_id] = conn
        return conn

    async def _serve(self, conn: Connection) -> None:
        ws = conn.ws
        while True:
            now = time.monotonic()
            idle_deadline = conn.last_active_mono + self.idle_timeout_s
            max_deadline = conn.started_mono + self.max_connection_s
            if now >= max_deadline or now >= idle_deadline:
                await self._close(conn, 1001, REASON_GOING_AWAY)
                return
            try:
                msg = await ws.receive(timeout=max(0.001, min(idle_deadline, max_deadline) - now))
            except TimeoutError:
                continue
            except (RuntimeError, ConnectionResetError):
                if conn.end is None:
                    conn.end = (1006, "Connection lost")
                return
            if msg.type is WSMsgType.TEXT:
                conn.touch()
                stamp = ws.receipt_stamp() if isinstance(ws, GatewayWebSocketResponse) else None
                self._on_message(conn, msg.data, stamp)
            elif msg.type is WSMsgType.BINARY:
                if isinstance(ws, GatewayWebSocketResponse):
                    ws.receipt_stamp()
                await self._close(conn, WSCloseCode.UNSUPPORTED_DATA, "Binary frames unsupported")
                return
            elif msg.type in _ENDINGS:
                if conn.end is None:
                    conn.end = _end_of(conn, msg)
                return

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        """Close from the server side with ``code``; the serve loop then ends the connection."""
        if conn.end is None:
            conn.end = (code, reason)
        conn.closing = True
        try:
            await conn.ws.close(code=code, message=reason.encode()[:120])
        except Exception as exc:  # the peer may be gone already
            log.debug("close of %s: %s", conn.connection_id, exc)

    def _on_message(self, conn: Connection, body: str, received_ms: int | None = None) -> None:
        route_key = select_route(self._selection_path, body, self.routes)
        if route_key is None:
            # No route and no $default: API Gateway answers "Forbidden".
            self._spawn(self._send_error(conn, "Forbidden", aws_id()))
            return
        event = events.message_event(conn.peer, body, route_key=route_key, received_ms=received_ms)
        self._spawn(self._run_message(conn, route_key, event))

    async def _run_message(self, conn: Connection, route_key: str, event: dict[str, Any]) -> None:
        result = await self._invoke(route_key, conn.connection_id, event)
        request_id = event["requestContext"]["requestId"]
        if result is None or result.error is not None:
            timed_out = result is None or (result.error or {}).get("errorType") in TIMEOUTS
            message = "Endpoint request timed out" if timed_out else "Internal server error"
            await self._send_error(conn, message, request_id)

    async def _send_error(self, conn: Connection, message: str, request_id: str) -> None:
        if conn.closing or conn.ws.closed:
            return
        payload = {"message": message, "connectionId": conn.connection_id, "requestId": request_id}
        with suppress(Exception):
            await conn.ws.send_str(json.dumps(payload))

    async def _disconnect(self, conn: Connection, code: int, reason: str) -> None:
        if "$disconnect" not in self.routes:
            return
        event = events.disconnect_event(conn.peer, code, reason)
        await self._invoke("$disconnect", conn.connection_id, event)

    def _disconnect_before_open(self, peer: Peer, code: int, reason: str) -> None:
        if "$disconnect" in self.routes:
            event = events.disconnect_event(peer, code, reason)
            self._spawn(self._invoke("$disconnect", peer.connection_id, event))

    async def _invoke(
        self, route_key: str, connection_id: str, event: dict[str, Any]
    ) -> InvocationResult | None:
        return await self._invoker.invoke(route_key, connection_id, event)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


#: The messages that end the serve loop besides a data frame that breaks a limit.
_ENDINGS = (WSMsgType.CLOSE, WSMsgType.ERROR, WSMsgType.CLOSING, WSMsgType.CLOSED)


def _end_of(conn: Connection, msg: Any) -> tuple[int, str]:
    """The ``disconnectStatusCode`` and ``disconnectReason`` of a connection ended by ``msg``."""
    if msg.type is WSMsgType.CLOSE:
        code = int(msg.data or 0)
        if code in (0, 1005):
            return (1005, REASON_NO_STATUS)
        return (code, str(msg.extra or ""))
    if msg.type is WSMsgType.ERROR:
        code = int(getattr(msg.data, "code", None) or conn.ws.close_code or 1011)
        detail = str(msg.data) if msg.data else ""
        log.info("closing %s: %s (%s)", conn.connection_id, code, detail)
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            return (1009, "Message too big")
        return (code, detail or "Protocol error")
    return (1006, "Connection lost")


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
