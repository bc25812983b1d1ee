"""Running the routes' functions as API Gateway's Lambda integration does, and the record of it.

Invocations run on a thread pool, concurrently: a connection's messages are not serialized, as
they are not in API Gateway. Each one is kept (:class:`Invocation`) for tests and debugging.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.lambda_runtime import FunctionSpec, InvocationResult, LambdaFunction

log = logging.getLogger("kiddolingo.local.gateway")
#: The error of a message dropped before it started because the gateway is stopping.
STOPPING = "Gateway.Stopping"
#: The errors of an invocation that ran out of time, at the gateway or in the function.
TIMEOUTS = ("Gateway.Timeout", "Sandbox.Timedout")


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


class Invoker:
    """The routes' functions on a pool of worker threads, with the record of every invocation."""

    def __init__(
        self,
        routes: Mapping[str, FunctionSpec],
        *,
        max_workers: int,
        integration_timeout_s: float,
        keep_invocations: int,
    ) -> None:
        # One LambdaFunction per logical id (two routes on one function share its container).
        by_id: dict[str, LambdaFunction] = {}
        self.functions: dict[str, LambdaFunction] = {}
        for route, spec in routes.items():
            fn = by_id.get(spec.logical_id)
            if fn is None:
                fn = by_id[spec.logical_id] = LambdaFunction(spec)
            self.functions[route] = fn
        self.max_workers = max_workers
        self.integration_timeout_s = integration_timeout_s
        self.invocations: deque[Invocation] = deque(maxlen=keep_invocations)
        self._changed = threading.Condition()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        #: Once set, messages still queued are dropped before they start.
        self.stopping = False
        self._running = 0  # invocations on worker threads right now
        self._running_lock = threading.Condition()

    async def start(self) -> None:
        """Publish the SnapStart functions' snapshots, then open the worker pool."""
        self.stopping = False
        for fn in {id(f): f for f in self.functions.values()}.values():
            if getattr(fn.spec, "snap_start", False):
                # Deploying publishes a version: its snapshot is made before any client comes.
                await asyncio.to_thread(fn.publish)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix="lambda"
        )

    async def shutdown(self, timeout: float) -> None:
        """Drop what is queued; wait (at most ``timeout``) for what is running to finish."""
        if self._executor is None:
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        # Invocations already running finish before the stores behind them stop (bounded:
        # a hung one cannot be killed, as in Lambda's runtime emulation).
        await asyncio.to_thread(self._wait_idle, max(1.0, timeout))

    def _wait_idle(self, timeout: float) -> bool:
        with self._running_lock:
            return self._running_lock.wait_for(lambda: self._running == 0, timeout)

    async def invoke(
        self, route_key: str, connection_id: str, event: dict[str, Any]
    ) -> InvocationResult:
        """Run the route's function with ``event``, within the integration timeout."""
        fn = self.functions[route_key]
        record = Invocation(route_key, connection_id, event, time.time())
        self._record(record)
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        future = loop.run_in_executor(self._executor, self._run, route_key, fn, event)
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
            with self._changed:
                self._changed.notify_all()
        if result.error is not None and result.error.get("errorType") != STOPPING:
            log.warning(
                "%s for %s failed: %s: %s",
                route_key,
                connection_id,
                result.error.get("errorType"),
                result.error.get("errorMessage"),
            )
        return result

    def _run(self, route_key: str, fn: Any, event: dict[str, Any]) -> Any:
        """One invocation on a worker thread. Once the gateway is stopping, a message still
        queued behind a backlog is dropped before it starts (its connection is closed): the
        ``$disconnect`` runs need the workers, and the stores stop right after the gateway."""
        if self.stopping and route_key not in ("$connect", "$disconnect"):
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
        with self._changed:
            self.invocations.append(record)
            self._changed.notify_all()

    def wait_for(
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

        with self._changed:
            while True:
                found = matching()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(found)}/{count} {route_key or 'any'} invocations after {timeout}s"
                    )
                self._changed.wait(min(remaining, 0.05))
