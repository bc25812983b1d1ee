"""A local stand-in for the API Gateway WebSocket API and its Management API (aiohttp).

What it does, as API Gateway does it:

* **Any path with an ``Upgrade: websocket``** is the WebSocket API (``ws://host:port/``,
  ``/realtime?model=…``): the ``$connect`` function runs *before* the handshake completes; a
  non-2xx ``statusCode`` refuses the upgrade with that HTTP status; a ``Sec-WebSocket-Protocol``
  in the returned ``headers`` is the subprotocol of the handshake (none otherwise).
* Every text message becomes a ``MESSAGE`` event, routed with the route selection expression
  (``$request.body.type``): a declared route of that name, else ``$default``. Invocations run
  in a thread pool **concurrently** — a connection's messages are not serialized.
* The connection's end (client close, ``DELETE @connections``, limits, idle/max-duration
  timeouts, an abrupt drop, server shutdown) becomes a ``DISCONNECT`` event with the
  ``disconnectStatusCode`` / ``disconnectReason`` of that end.
* The events have the fields and shapes of API Gateway's Lambda proxy events: ``requestContext``
  (``routeKey``, ``eventType``, ``extendedRequestId``, ``requestTime``, ``messageDirection``,
  ``stage``, ``connectedAt``, ``requestTimeEpoch``, ``identity``, ``requestId``, ``domainName``,
  ``connectionId``, ``apiId``, plus ``messageId`` on MESSAGE and ``disconnectStatusCode`` /
  ``disconnectReason`` on DISCONNECT); ``headers``/``multiValueHeaders`` (and the query string
  parameters when there is a query) on CONNECT; the four fixed headers API Gateway sends on
  DISCONNECT; ``body`` on MESSAGE; ``isBase64Encoded``.
* Limits: a frame over 32 KB or a message over 128 KB closes with 1009, a binary frame with
  1003; idle timeout 10 min and maximum connection 2 h close with 1001 (all constructor
  parameters, small in tests). A failing integration sends the client API Gateway's
  ``{"message": "Internal server error", "connectionId": …, "requestId": …}``.
* **The Management API** at ``/{stage}/@connections/{id}`` and ``/@connections/{id}``:
  ``POST`` sends the body to the client as one text frame (413 PayloadTooLargeException over
  128 KB), ``GET`` returns ``connectedAt``/``identity``/``lastActiveAt``, ``DELETE`` closes it
  (204); an unknown or closed connection gets 410 ``GoneException``. SigV4 is not checked.

Besides that it serves the page: ``GET /`` is ``web/index.html``, other paths are static files of
``web/``, and ``GET /config.json`` tells the page about demo mode, auth and the WebSocket URL.

Run it through ``infra.local`` (``make run``); tests use :meth:`LocalGateway.start_background`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import mimetypes
import os
import random
import re
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket import reader_py
from aiohttp.http_websocket import WebSocketError

from infra.background import start_loop_thread
from infra.lambda_runtime import (
    EnvironmentPatch,
    FunctionSpecLike,
    InvocationResult,
    LambdaFunction,
    merged_environment,
)

log = logging.getLogger("kiddolingo.local.gateway")
#: The error of a message dropped before it started because the gateway is stopping.
STOPPING = "Gateway.Stopping"

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"

KB = 1024
MAX_FRAME_BYTES = 32 * KB
MAX_MESSAGE_BYTES = 128 * KB
MAX_POST_BYTES = 128 * KB
IDLE_TIMEOUT_S = 10 * 60.0
MAX_CONNECTION_S = 2 * 60 * 60.0
INTEGRATION_TIMEOUT_S = 29.0
DEFAULT_ROUTE_SELECTION = "$request.body.type"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MANAGEMENT_PATH = re.compile(r"^(?:/(?P<stage>[^/@][^/]*))?/@connections/(?P<id>[^/]+)/?$")
#: Hop-by-hop headers API Gateway does not pass to the $connect integration.
_DROPPED_HEADERS = {"connection", "upgrade"}

#: ``disconnectReason`` texts, as API Gateway words them where we know it.
REASON_NO_STATUS = "Client-side close frame status not set"
REASON_NORMAL = "Connection Closed Normally"
REASON_GOING_AWAY = "Going away"


def aws_id() -> str:
    """An id in API Gateway's style: 16 URL-safe base64 characters ending in ``=``."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def request_time(epoch_s: float) -> str:
    """API Gateway's ``requestTime``: CLF format, English month names, UTC."""
    t = time.gmtime(epoch_s)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_route_selection(expression: str) -> list[str] | None:
    """``$request.body.type`` (or ``${request.body.type}``) → ``["type"]``; None if unsupported."""
    expr = expression.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = "$" + expr[2:-1]
    prefix = "$request.body."
    if not expr.startswith(prefix) or len(expr) == len(prefix):
        return None
    return expr[len(prefix) :].split(".")


def select_route(path: list[str] | None, body: str, routes: Mapping[str, Any]) -> str | None:
    """The route key for a message body: the selected declared route, else ``$default``."""
    key: Any = None
    if path:
        try:
            value: Any = json.loads(body)
        except (ValueError, RecursionError):
            # Not JSON, or nested deeper than the parser goes: no route value, so $default
            # (whose handler answers with an error event), never a dropped connection.
            value = None
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        key = value
    if (
        isinstance(key, str)
        and key in routes
        and key not in ("$connect", "$disconnect", "$default")
    ):
        return key
    return "$default" if "$default" in routes else None


# --------------------------------------------------------------------------------------------
# aiohttp WebSocket with API Gateway's frame limit
# --------------------------------------------------------------------------------------------
class _FrameLimitedReader(reader_py.WebSocketReader):
    """aiohttp's reader, plus API Gateway's per-frame size limit (1009 when exceeded)."""

    def __init__(self, *args: Any, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_frame_bytes = max_frame_bytes

    def _handle_frame(self, fin: bool, opcode: int, payload: Any, compressed: int) -> None:
        if opcode in (0x0, 0x1, 0x2) and len(payload) > self._max_frame_bytes:
            raise WebSocketError(
                WSCloseCode.MESSAGE_TOO_BIG,
                f"Frame of {len(payload)} bytes exceeds {self._max_frame_bytes} bytes",
            )
        super()._handle_frame(fin, opcode, payload, compressed)


class _GatewayWebSocketResponse(web.WebSocketResponse):
    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_frame_bytes = max_frame_bytes

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # Same as aiohttp's, with the frame-limited (pure Python) reader.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        self._reader = reader_py.WebSocketDataQueue(request._protocol, 2**16, loop=loop)
        self._parser = _FrameLimitedReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
            max_frame_bytes=self._max_frame_bytes,
        )
        cb = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=cb)
        request.protocol.keep_alive(False)


# --------------------------------------------------------------------------------------------
# Connections and invocations
# --------------------------------------------------------------------------------------------
@dataclass
class Connection:
    """One open WebSocket connection, as the gateway tracks it."""

    connection_id: str
    ws: web.WebSocketResponse
    request: web.Request
    connected_at: float  # epoch seconds
    source_ip: str
    user_agent: str | None
    domain_name: str
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
    def connected_at_ms(self) -> int:
        return int(self.connected_at * 1000)

    def touch(self) -> None:
        self.last_active_at = time.time()
        self.last_active_mono = time.monotonic()
        self.messages_received += 1


@dataclass
class Invocation:
    """One handler invocation, kept for tests and debugging (``LocalGateway.invocations``)."""

    route_key: str
    connection_id: str
    event: dict[str, Any]
    started_at: float
    finished_at: float | None = None
    result: InvocationResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalGateway:
    """The local API Gateway WebSocket API.

    ``functions`` maps route keys (``$connect``, ``$default``, ``$disconnect``, custom routes) to
    function specs (``logical_id``, ``code_dir``, ``handler``, ``environment``, ``timeout_s``);
    by default they come from ``infra.template.functions()``, as does the route selection
    expression. ``port=0`` picks a free port (read :attr:`port` after :meth:`start`).

    ``environment_overrides`` are applied to ``os.environ`` over the functions' template
    environment while the gateway runs (restored by :meth:`stop`); ``apply_environment=False``
    leaves ``os.environ`` alone.
    """

    def __init__(
        self,
        functions: Mapping[str, FunctionSpecLike] | None = None,
        *,
        route_selection_expression: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        stage: str | None = None,
        api_id: str | None = None,
        web_dir: Path | str | None = WEB_DIR,
        page_config: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connection_s: float = MAX_CONNECTION_S,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_post_bytes: int = MAX_POST_BYTES,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        max_workers: int = 64,
        environment_overrides: Mapping[str, str | None] | None = None,
        apply_environment: bool = True,
        keep_invocations: int = 10_000,
    ) -> None:
        template = None
        if functions is None or route_selection_expression is None or stage is None:
            template = _template_module(required=functions is None)
        if functions is None:
            assert template is not None
            functions = template.functions()
        self.routes: dict[str, FunctionSpecLike] = dict(functions)
        self.route_selection_expression = (
            route_selection_expression
            or _template_value(template, "route_selection_expression")
            or DEFAULT_ROUTE_SELECTION
        )
        self._selection_path = parse_route_selection(self.route_selection_expression)
        self.stage = stage or _template_value(template, "stage_name") or "local"
        self.api_id = api_id or "".join(
            random.choices(string.ascii_lowercase + string.digits, k=10)
        )
        self.host = host
        self.port = port
        self.web_dir = Path(web_dir).resolve() if web_dir else None
        self.page_config = page_config
        self.idle_timeout_s = idle_timeout_s
        self.max_connection_s = max_connection_s
        self.max_frame_bytes = max_frame_bytes
        self.max_message_bytes = max_message_bytes
        self.max_post_bytes = max_post_bytes
        self.integration_timeout_s = integration_timeout_s
        self.max_workers = max_workers

        # One LambdaFunction per logical id (two routes on one function share its container).
        by_id: dict[str, LambdaFunction] = {}
        self.functions: dict[str, LambdaFunction] = {}
        for route, spec in self.routes.items():
            fn = by_id.get(spec.logical_id)
            if fn is None:
                fn = by_id[spec.logical_id] = LambdaFunction(spec)
            self.functions[route] = fn

        self._env_patch = (
            EnvironmentPatch(merged_environment(self.routes, environment_overrides or {}))
            if apply_environment
            else None
        )
        self.connections: dict[str, Connection] = {}
        self.invocations: deque[Invocation] = deque(maxlen=keep_invocations)
        self._invocations_changed = threading.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running = 0  # invocations on worker threads right now
        self._running_lock = threading.Condition()

    # -- URLs --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The page: ``http://127.0.0.1:<port>/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        """The WebSocket API: ``ws://127.0.0.1:<port>/`` (any path works)."""
        return f"ws://{self.host}:{self.port}/"

    @property
    def management_url(self) -> str:
        """What a handler builds from the event: ``http://{domainName}/{stage}``."""
        return f"http://{self.host}:{self.port}/{self.stage}"

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and serve on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        if self._env_patch is not None:
            self._env_patch.apply()
        for fn in {id(f): f for f in self.functions.values()}.values():
            if getattr(fn.spec, "snap_start", False):
                # Deploying publishes a version: its snapshot is made before any client comes.
                await asyncio.to_thread(fn.publish)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix="lambda"
        )
        app = web.Application(client_max_size=max(self.max_post_bytes * 2, 1024 * 1024))
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("local API Gateway on %s (stage %s, api %s)", self.ws_url, self.stage, self.api_id)

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Close every connection (1001, $disconnect runs), wait for invocations, unbind."""
        if self._runner is None:
            return
        self._stopping = True
        await asyncio.gather(
            *(
                self._close(conn, 1001, REASON_GOING_AWAY)
                for conn in list(self.connections.values())
            )
        )
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._tasks):
            task.cancel()
        await self._runner.cleanup()
        self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            # Invocations already running finish before the stores behind them stop (bounded:
            # a hung one cannot be killed, as in Lambda's runtime emulation).
            await asyncio.to_thread(self._wait_idle, max(1.0, deadline - time.monotonic()))
        if self._env_patch is not None:
            self._env_patch.restore()

    def _wait_idle(self, timeout: float) -> bool:
        with self._running_lock:
            return self._running_lock.wait_for(lambda: self._running == 0, timeout)

    def start_background(self) -> LocalGateway:
        """Run the gateway on its own event loop in a daemon thread; returns once it listens."""
        self._loop, self._thread = start_loop_thread("local-gateway", self.start, timeout=None)
        return self

    def stop_background(self, timeout: float = 15.0) -> None:
        """Stop a gateway started with :meth:`start_background`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.stop(), loop)
            try:
                future.result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    @contextmanager
    def running(self) -> Iterator[LocalGateway]:
        """``with LocalGateway(...).running() as gw:`` — background start and stop."""
        self.start_background()
        try:
            yield self
        finally:
            self.stop_background()

    # -- test helpers ------------------------------------------------------------------------
    def drop(self, connection_id: str) -> bool:
        """Drop a connection abruptly (TCP abort, no close frame), like a network failure.

        ``$disconnect`` then runs with 1006. Safe to call from any thread. False if unknown.
        """
        return self._call_in_loop(self._drop, connection_id)

    def close_connection(self, connection_id: str, code: int = 1000, reason: str = "") -> bool:
        """Close a connection from the server side with a close frame (any thread)."""

        async def close() -> bool:
            conn = self.connections.get(connection_id)
            if conn is None:
                return False
            await self._close(conn, code, reason or REASON_NORMAL)
            return True

        return self._call_in_loop(close)

    def wait_for_invocations(
        self,
        route_key: str | None = None,
        count: int = 1,
        *,
        timeout: float = 5.0,
        finished: bool = True,
        predicate: Callable[[Invocation], bool] | None = None,
    ) -> list[Invocation]:
        """Block until ``count`` matching invocations exist (finished ones by default)."""
        deadline = time.monotonic() + timeout

        def matching() -> list[Invocation]:
            return [
                inv
                for inv in list(self.invocations)
                if (route_key is None or inv.route_key == route_key)
                and (not finished or inv.finished_at is not None)
                and (predicate is None or predicate(inv))
            ]

        with self._invocations_changed:
            while True:
                found = matching()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(found)}/{count} {route_key or 'any'} invocations after {timeout}s"
                    )
                self._invocations_changed.wait(min(remaining, 0.05))

    def wait_for_connections(self, count: int = 1, *, timeout: float = 5.0) -> list[str]:
        """Block until at least ``count`` connections are open; returns their ids."""
        deadline = time.monotonic() + timeout
        while True:
            ids = [c.connection_id for c in list(self.connections.values()) if not c.closing]
            if len(ids) >= count:
                return ids
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids)}/{count} connections after {timeout}s")
            time.sleep(0.02)

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = self._loop
        if loop is None:
            raise RuntimeError("gateway is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("use the async variant from the gateway's own loop")
        return asyncio.run_coroutine_threadsafe(fn(*args), loop).result(10)

    async def _drop(self, connection_id: str) -> bool:
        conn = self.connections.get(connection_id)
        if conn is None:
            return False
        if conn.end is None:
            conn.end = (1006, "Connection dropped")
        conn.closing = True
        transport = conn.request.transport
        if transport is not None:
            transport.abort()
        return True

    async def adrop(self, connection_id: str) -> bool:
        """:meth:`drop` for callers on the gateway's own loop."""
        return await self._drop(connection_id)

    # -- HTTP dispatch -----------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        match = _MANAGEMENT_PATH.match(request.path)
        if match:
            stage = match.group("stage")
            if stage is not None and stage != self.stage:
                return _json({"message": "Forbidden"}, 403, "ForbiddenException")
            return await self._management(request, match.group("id"))
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed")
        if request.path == "/config.json":
            return self._config(request)
        return await self._static(request)

    def _config(self, request: web.Request) -> web.Response:
        config: dict[str, Any] = {
            "demo": False,
            "authRequired": False,
            "wsUrl": f"ws://{request.host}/",
        }
        extra = self.page_config() if callable(self.page_config) else self.page_config
        config.update(extra or {})
        return web.json_response(config, headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        if self.web_dir is None:
            return web.Response(status=404, text="Not Found")
        rel = request.path.lstrip("/") or "index.html"
        target = (self.web_dir / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.web_dir) or not target.is_file():
            return web.Response(status=404, text="Not Found")
        ctype = _content_type(target)
        headers = {"Cache-Control": "no-store", "Content-Type": ctype}
        return web.FileResponse(target, headers=headers)

    # -- WebSocket API -----------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return web.Response(status=503, text="Service Unavailable")
        connection_id = aws_id()
        now = time.time()
        source_ip = request.remote or "127.0.0.1"
        user_agent = request.headers.get("User-Agent")
        domain_name = request.host
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        base: dict[str, Any] = {
            "connection_id": connection_id,
            "connected_at_ms": int(now * 1000),
            "source_ip": source_ip,
            "user_agent": user_agent,
            "domain_name": domain_name,
        }

        subprotocol: str | None = None
        if "$connect" in self.routes:
            event = self._connect_event(request, **base)
            result = await self._invoke("$connect", connection_id, event, wait=True)
            if result is None or (result.error or {}).get("errorType") == "Gateway.Timeout":
                return web.Response(status=504, text="Endpoint request timed out")
            status = result.status_code()
            if not 200 <= status < 300:
                log.info("$connect refused %s with %s", connection_id, status)
                return web.Response(status=status, text=_status_text(status))
            for name, value in result.headers().items():
                if name.lower() == "sec-websocket-protocol":
                    subprotocol = value.strip() or None

        ws = _GatewayWebSocketResponse(
            max_frame_bytes=self.max_frame_bytes,
            protocols=(subprotocol,) if subprotocol else (),
            compress=False,
            timeout=3.0,  # how long a server-side close waits for the client's close frame
            max_msg_size=self.max_message_bytes + 1,
            autoping=True,
            autoclose=True,
        )
        try:
            await ws.prepare(request)
        except (ConnectionResetError, web.HTTPException) as exc:
            log.info("handshake of %s failed: %s", connection_id, exc)
            await self._disconnected_before_open(base, 1006, "Handshake failed")
            return ws if ws.prepared else web.Response(status=400)
        mono = time.monotonic()
        conn = Connection(
            connection_id=connection_id,
            ws=ws,
            request=request,
            connected_at=now,
            source_ip=source_ip,
            user_agent=user_agent,
            domain_name=domain_name,
            path=request.path,
            query=query,
            subprotocol=ws.ws_protocol,
            last_active_at=now,
            started_mono=mono,
            last_active_mono=mono,
        )
        self.connections[connection_id] = conn
        try:
            await self._serve(conn)
        finally:
            self.connections.pop(connection_id, None)
            conn.closing = True
            code, reason = conn.end or (1006, "Connection lost")
            self._spawn(self._disconnect(conn, code, reason))
        return ws

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
                self._on_message(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self._close(conn, WSCloseCode.UNSUPPORTED_DATA, "Binary frames unsupported")
                return
            elif msg.type is WSMsgType.CLOSE:
                if conn.end is None:
                    code = int(msg.data or 0)
                    if code in (0, 1005):
                        conn.end = (1005, REASON_NO_STATUS)
                    else:
                        conn.end = (code, str(msg.extra or ""))
                return
            elif msg.type is WSMsgType.ERROR:
                if conn.end is None:
                    code = int(getattr(msg.data, "code", None) or ws.close_code or 1011)
                    detail = str(msg.data) if msg.data else ""
                    if code == WSCloseCode.MESSAGE_TOO_BIG:
                        conn.end = (1009, "Message too big")
                    else:
                        conn.end = (code, detail or "Protocol error")
                    log.info("closing %s: %s (%s)", conn.connection_id, code, detail)
                return
            elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
                if conn.end is None:
                    conn.end = (1006, "Connection lost")
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

    def _on_message(self, conn: Connection, body: str) -> None:
        route_key = select_route(self._selection_path, body, self.routes)
        message_id = aws_id()
        if route_key is None:
            # No route and no $default: API Gateway answers "Forbidden".
            self._spawn(self._send_error(conn, "Forbidden", aws_id()))
            return
        event = self._message_event(conn, route_key, body, message_id)
        self._spawn(self._run_message(conn, route_key, event))

    async def _run_message(self, conn: Connection, route_key: str, event: dict[str, Any]) -> None:
        result = await self._invoke(route_key, conn.connection_id, event, wait=True)
        request_id = event["requestContext"]["requestId"]
        if result is None or result.error is not None:
            timed_out = result is None or (result.error or {}).get("errorType") in (
                "Gateway.Timeout",
                "Sandbox.Timedout",
            )
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
        event = self._disconnect_event(
            connection_id=conn.connection_id,
            connected_at_ms=conn.connected_at_ms,
            source_ip=conn.source_ip,
            user_agent=conn.user_agent,
            domain_name=conn.domain_name,
            code=code,
            reason=reason,
        )
        await self._invoke("$disconnect", conn.connection_id, event, wait=True)

    async def _disconnected_before_open(self, base: dict[str, Any], code: int, reason: str) -> None:
        if "$disconnect" in self.routes:
            event = self._disconnect_event(**base, code=code, reason=reason)
            self._spawn(self._invoke("$disconnect", base["connection_id"], event, wait=True))

    async def _invoke(
        self, route_key: str, connection_id: str, event: dict[str, Any], *, wait: bool
    ) -> InvocationResult | None:
        fn = self.functions[route_key]
        record = Invocation(route_key, connection_id, event, time.time())
        self._record(record)
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        future = loop.run_in_executor(self._executor, self._run_invocation, route_key, fn, event)
        timeout = min(fn.timeout_s, self.integration_timeout_s)
        result = InvocationResult(error={"errorType": "Cancelled", "errorMessage": "cancelled"})
        try:
            result = await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            log.warning("%s for %s timed out after %.1f s", route_key, connection_id, timeout)
            result = InvocationResult(
                error={
                    "errorType": "Gateway.Timeout",
                    "errorMessage": f"integration timed out after {timeout} s",
                }
            )
        finally:
            record.finished_at = time.time()
            record.result = result
            with self._invocations_changed:
                self._invocations_changed.notify_all()
        if result.error is not None and result.error.get("errorType") != STOPPING:
            log.warning(
                "%s for %s failed: %s: %s",
                route_key,
                connection_id,
                result.error.get("errorType"),
                result.error.get("errorMessage"),
            )
        return result

    def _run_invocation(self, route_key: str, fn: Any, event: dict[str, Any]) -> Any:
        """One invocation on a worker thread. Once the gateway is stopping, a message still
        queued behind a backlog is dropped before it starts (its connection is closed): the
        ``$disconnect`` runs need the workers, and the stores stop right after the gateway."""
        if self._stopping and route_key not in ("$connect", "$disconnect"):
            return InvocationResult(
                error={"errorType": STOPPING, "errorMessage": "the local gateway is stopping"}
            )
        with self._running_lock:
            self._running += 1
        try:
            return fn.invoke(event)
        finally:
            with self._running_lock:
                self._running -= 1
                self._running_lock.notify_all()

    def _record(self, record: Invocation) -> None:
        with self._invocations_changed:
            self.invocations.append(record)
            self._invocations_changed.notify_all()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ------------------------------------------------------------------------------
    def _request_context(
        self,
        *,
        route_key: str,
        event_type: str,
        connection_id: str,
        connected_at_ms: int,
        source_ip: str,
        user_agent: str | None,
        domain_name: str,
        message_id: str | None = None,
        disconnect: tuple[int, str] | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        request_id = aws_id()
        ctx: dict[str, Any] = {"routeKey": route_key}
        if message_id is not None:
            ctx["messageId"] = message_id
        if disconnect is not None:
            ctx["disconnectStatusCode"] = disconnect[0]
        ctx["eventType"] = event_type
        ctx["extendedRequestId"] = request_id
        ctx["requestTime"] = request_time(now)
        ctx["messageDirection"] = "IN"
        if disconnect is not None:
            ctx["disconnectReason"] = disconnect[1]
        identity: dict[str, Any] = {"sourceIp": source_ip}
        if user_agent:
            identity["userAgent"] = user_agent
        ctx.update(
            {
                "stage": self.stage,
                "connectedAt": connected_at_ms,
                "requestTimeEpoch": int(now * 1000),
                "identity": identity,
                "requestId": request_id,
                "domainName": domain_name,
                "connectionId": connection_id,
                "apiId": self.api_id,
            }
        )
        return ctx

    def _connect_event(
        self,
        request: web.Request,
        *,
        connection_id: str,
        connected_at_ms: int,
        source_ip: str,
        user_agent: str | None,
        domain_name: str,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for raw_name, raw_value in request.raw_headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            lower = name.lower()
            if lower in _DROPPED_HEADERS or lower.startswith("x-forwarded-"):
                continue
            name = names.setdefault(lower, name)
            headers[name] = value
            multi.setdefault(name, []).append(value)
        added = {
            "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
            "X-Forwarded-For": source_ip,
            "X-Forwarded-Port": str(self.port),
            "X-Forwarded-Proto": "http",
        }
        for name, value in added.items():
            headers[name] = value
            multi[name] = [value]
        event: dict[str, Any] = {"headers": headers, "multiValueHeaders": multi}
        pairs = parse_qsl(request.query_string, keep_blank_values=True)
        if pairs:
            single: dict[str, str] = {}
            many: dict[str, list[str]] = {}
            for key, value in pairs:
                single[key] = value
                many.setdefault(key, []).append(value)
            event["queryStringParameters"] = single
            event["multiValueQueryStringParameters"] = many
        event["requestContext"] = self._request_context(
            route_key="$connect",
            event_type="CONNECT",
            connection_id=connection_id,
            connected_at_ms=connected_at_ms,
            source_ip=source_ip,
            user_agent=user_agent,
            domain_name=domain_name,
        )
        event["isBase64Encoded"] = False
        return event

    def _message_event(
        self, conn: Connection, route_key: str, body: str, message_id: str
    ) -> dict[str, Any]:
        return {
            "requestContext": self._request_context(
                route_key=route_key,
                event_type="MESSAGE",
                connection_id=conn.connection_id,
                connected_at_ms=conn.connected_at_ms,
                source_ip=conn.source_ip,
                user_agent=conn.user_agent,
                domain_name=conn.domain_name,
                message_id=message_id,
            ),
            "body": body,
            "isBase64Encoded": False,
        }

    def _disconnect_event(
        self,
        *,
        connection_id: str,
        connected_at_ms: int,
        source_ip: str,
        user_agent: str | None,
        domain_name: str,
        code: int,
        reason: str,
    ) -> dict[str, Any]:
        # API Gateway sends these four headers on $disconnect, with these (empty) values.
        headers = {"Host": domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        return {
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": self._request_context(
                route_key="$disconnect",
                event_type="DISCONNECT",
                connection_id=connection_id,
                connected_at_ms=connected_at_ms,
                source_ip=source_ip,
                user_agent=user_agent,
                domain_name=domain_name,
                disconnect=(code, reason),
            ),
            "isBase64Encoded": False,
        }

    # -- Management API ----------------------------------------------------------------------
    async def _management(self, request: web.Request, connection_id: str) -> web.Response:
        conn = self.connections.get(connection_id)
        if request.method not in ("POST", "GET", "DELETE"):
            return _json({"message": "Method Not Allowed"}, 405)
        if conn is None or conn.closing or conn.ws.closed:
            if request.method == "POST":
                await request.read()
            return _gone()
        if request.method == "GET":
            return web.json_response(
                {
                    "connectedAt": _iso(conn.connected_at),
                    "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent or ""},
                    "lastActiveAt": _iso(conn.last_active_at),
                }
            )
        if request.method == "DELETE":
            conn.closing = True
            if conn.end is None:
                conn.end = (1000, REASON_NORMAL)
            self._spawn(self._close(conn, 1000, REASON_NORMAL))
            return web.Response(status=204)
        data = await request.read()
        if len(data) > self.max_post_bytes:
            return _json(
                {"message": f"Message too long. Max size is {self.max_post_bytes} bytes"},
                413,
                "PayloadTooLargeException",
            )
        try:
            try:
                await conn.ws.send_str(data.decode("utf-8"))
            except UnicodeDecodeError:
                await conn.ws.send_bytes(data)
        except Exception as exc:  # closed under us
            log.debug("post to %s failed: %s", connection_id, exc)
            return _gone()
        conn.frames_sent += 1
        return web.Response(status=200)


# --------------------------------------------------------------------------------------------
def _gone() -> web.Response:
    return _json({"message": None}, 410, "GoneException")


def _json(body: Any, status: int, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return web.json_response(body, status=status, headers=headers)


def _status_text(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".js", ".mjs"):
        return "text/javascript; charset=utf-8"
    if suffix in (".html", ".css", ".json", ".txt", ".svg"):
        base = {
            ".html": "text/html",
            ".css": "text/css",
            ".json": "application/json",
            ".txt": "text/plain",
            ".svg": "image/svg+xml",
        }[suffix]
        return f"{base}; charset=utf-8"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _template_module(*, required: bool) -> Any:
    try:
        import infra.template as template
    except ImportError:
        if required:
            raise
        return None
    return template


def _template_value(template: Any, name: str) -> str | None:
    if template is None:
        return None
    value = getattr(template, name, None)
    if callable(value):
        try:
            value = value()
        except Exception:
            return None
    if isinstance(value, str) and value:
        return value
    upper = getattr(template, name.upper(), None)
    return upper if isinstance(upper, str) and upper else None
