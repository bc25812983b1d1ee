"""The local API Gateway: its settings, start and stop, the HTTP dispatch, and test helpers.

What happens on a connection is in :mod:`infra.apigw.websocket`; this module puts the parts
together on one aiohttp server and one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from infra.apigw.connection import Connection
from infra.apigw.events import REASON_GOING_AWAY, REASON_NORMAL
from infra.apigw.invocations import Invocation, Invoker
from infra.apigw.limits import (
    IDLE_TIMEOUT_S,
    INTEGRATION_TIMEOUT_S,
    MAX_CONNECTION_S,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_POST_BYTES,
)
from infra.apigw.management import MANAGEMENT_PATH, json_response, management
from infra.apigw.routes import parse_route_selection, resolve_routes
from infra.apigw.static import WEB_DIR, Page, PageConfig
from infra.apigw.websocket import WebSocketApi
from infra.background import start_loop_thread
from infra.lambda_runtime import (
    EnvironmentPatch,
    FunctionSpec,
    LambdaFunction,
    merged_environment,
)

log = logging.getLogger("kiddolingo.local.gateway")


class LocalGateway(WebSocketApi):
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
        functions: Mapping[str, FunctionSpec] | None = None,
        *,
        route_selection_expression: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        stage: str | None = None,
        api_id: str | None = None,
        web_dir: Path | str | None = WEB_DIR,
        page_config: PageConfig = None,
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
        self.routes, self.route_selection_expression, self.stage = resolve_routes(
            functions, route_selection_expression, stage
        )
        self._selection_path = parse_route_selection(self.route_selection_expression)
        self.api_id = api_id or "".join(
            random.choices(string.ascii_lowercase + string.digits, k=10)
        )
        self.host = host
        self.port = port
        self.page = Page(web_dir, page_config)
        self.idle_timeout_s = idle_timeout_s
        self.max_connection_s = max_connection_s
        self.max_frame_bytes = max_frame_bytes
        self.max_message_bytes = max_message_bytes
        self.max_post_bytes = max_post_bytes
        self._invoker = Invoker(
            self.routes,
            max_workers=max_workers,
            integration_timeout_s=integration_timeout_s,
            keep_invocations=keep_invocations,
        )
        self._env_patch = (
            EnvironmentPatch(merged_environment(self.routes, environment_overrides or {}))
            if apply_environment
            else None
        )
        self.connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def functions(self) -> dict[str, LambdaFunction]:
        """The function each route runs (routes of one logical id share one)."""
        return self._invoker.functions

    @property
    def invocations(self) -> deque[Invocation]:
        """Every invocation so far (the latest ``keep_invocations``), oldest first."""
        return self._invoker.invocations

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
        if self._env_patch is not None:
            self._env_patch.apply()
        await self._invoker.start()
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
        self._invoker.stopping = True
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
        await self._invoker.shutdown(deadline - time.monotonic())
        if self._env_patch is not None:
            self._env_patch.restore()

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

    # -- HTTP dispatch -----------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        match = MANAGEMENT_PATH.match(request.path)
        if match:
            stage = match.group("stage")
            if stage is not None and stage != self.stage:
                return json_response({"message": "Forbidden"}, 403, "ForbiddenException")
            conn = self.connections.get(match.group("id"))
            return await management(
                request, conn, max_post_bytes=self.max_post_bytes, close=self._delete
            )
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed")
        if request.path == "/config.json":
            return self.page.config(request)
        return await self.page.file(request)

    def _delete(self, conn: Connection) -> None:
        """``DELETE @connections/{id}``: a normal close from the server side."""
        conn.closing = True
        if conn.end is None:
            conn.end = (1000, REASON_NORMAL)
        self._spawn(self._close(conn, 1000, REASON_NORMAL))

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

    def wait_for_invocations(self, *args: Any, **kwargs: Any) -> list[Invocation]:
        """Block until matching invocations exist (:meth:`Invoker.wait_for`'s arguments)."""
        return self._invoker.wait_for(*args, **kwargs)

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
