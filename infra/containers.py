"""Lambda's execution model for ``make bench --containers N``: one invocation per container.

In Lambda, every concurrent invocation runs in an execution environment of its own: the append
that prepares an answer during the pause holds its container for the whole turn, and the
child's next appends land in other containers, with their own CPU and their own interpreter.
The benchmark's default runs every invocation in threads of its own process, where the turn
being measured shares one GIL with the conversation's other appends (and, under ``mock_aws``,
with moto). Here each container is a process that serves one invocation at a time, with the
handlers loaded once (warm) and the provider SDK warmed by one request per endpoint, as in a
container that has served a turn before. S3 and DynamoDB are moto's own process
(``infra.moto_process``), shared by all containers as the real services are.

Each container reports back over its pipe, as it happens: every post to the connection (its
time on the machine-wide monotonic clock, so the benchmark's timeline holds), the outcome of
each turn as ``kiddolingo.metrics.turn_figures`` sees it, and at the end of each invocation
its AWS calls, its CPU (``time.thread_time()`` of the invoking thread, botocore's HTTP path
included), whether it ran a turn and the EMF records it printed.

On 2 cores the containers still share the machine with moto, the fake provider and the
benchmark itself: their CPU competes, but no longer under one interpreter lock.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import multiprocessing
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: How long a container may take to start (imports, the warm-up requests).
READY_TIMEOUT_S = 60.0
#: How an idle container is chosen for an invocation (``ContainerPool``).
ROUTINGS = ("mru", "random")
#: How long an invocation waits for an idle container before the benchmark gives up.
IDLE_TIMEOUT_S = 60.0


class CapturedPost:
    """The HTTP response a captured post gets (botocore's short-circuit: it is never sent)."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""
        self.raw = None


def post_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a posted event the benchmark looks at (the rest stays behind)."""
    small = {k: v for k, v in data.items() if k in ("item_id", "audio_end_ms", "response", "error")}
    if "response" in small:
        small["response"] = {"status": small["response"].get("status")}
    return small


def capture_post(
    params: dict[str, Any], record: Callable[[float, str, dict[str, Any]], None]
) -> tuple[CapturedPost, dict[str, Any]]:
    """Short-circuit one ``PostToConnection`` (a botocore ``before-call`` answer): hand its
    time, event type and :func:`post_fields` to ``record``, and answer 200 without sending it."""
    body = params["body"]
    data = json.loads(body if isinstance(body, bytes | bytearray) else bytes(body))
    record(time.perf_counter(), str(data.get("type")), post_fields(data))
    return CapturedPost(200), {"ResponseMetadata": {"HTTPStatusCode": 200}}


def apply_environment(values: dict[str, str | None]) -> None:
    """Set each variable of ``values`` in this process's environment (``None``: unset it)."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class _Invocations:
    """What the container reports over its pipe: every post and turn outcome as it happens, and
    per invocation its AWS calls and whether it started a turn.

    The container runs one invocation at a time: every AWS call made meanwhile belongs to it
    (the turn's thread pools included)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self.id: int | None = None
        self.calls: Counter[str] = Counter()
        self.ran_turn = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def before_call(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> Any:
        """botocore's ``before-call`` hook: count the call, capture a post."""
        op = f"{model.service_model.service_name}.{model.name}"
        with self._lock:
            self.calls[op] += 1
            inv_id = self.id
        if model.name != "PostToConnection":
            return None
        return capture_post(
            params, lambda at, etype, fields: self.send(("post", inv_id, at, etype, fields))
        )

    def on_outcome(self, outcome: Any) -> None:
        from kiddolingo.metrics import turn_figures

        self.send(("outcome", time.perf_counter(), outcome.status, turn_figures(outcome)))

    def on_turn_start(self) -> None:
        self.ran_turn = True

    def begin(self, inv_id: int) -> None:
        with self._lock:
            self.id, self.calls, self.ran_turn = inv_id, Counter(), False

    def end(self) -> tuple[dict[str, int], bool]:
        """The invocation is over: its calls, and whether it started a turn."""
        with self._lock:
            self.id = None
            return dict(self.calls), self.ran_turn


def _load_handlers(env: dict[str, str | None]) -> dict[str, Any]:
    from infra import template as tpl
    from infra.lambda_runtime import LambdaFunction

    specs = tpl.functions({"TABLE_NAME": env["TABLE_NAME"], "BUCKET_NAME": env["BUCKET_NAME"]})
    functions = {route: LambdaFunction(spec) for route, spec in specs.items()}
    for fn in functions.values():
        fn.load()
    return functions


def _serve(conn: Any, functions: dict[str, Any], invocations: _Invocations) -> None:
    """Run each invocation the pipe brings, one at a time, until ``None``."""
    while True:
        message = conn.recv()
        if message is None:
            break
        inv_id, route, event = message
        invocations.begin(inv_id)
        out = io.StringIO()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        with contextlib.redirect_stdout(out):
            result = functions[route].invoke(event)
        cpu_ms = (time.thread_time() - cpu0) * 1000.0
        wall_ms = (time.perf_counter() - wall0) * 1000.0
        calls, ran_turn = invocations.end()
        invocations.send(
            ("done", inv_id, cpu_ms, wall_ms, result.error, calls, ran_turn, out.getvalue())
        )


def _container_main(conn: Any, env: dict[str, str | None], warm: bool) -> None:
    """One container: load the handlers, warm the SDK, then serve invocations until ``None``."""
    apply_environment(env)
    # Lambda's marker of a process that is one container: ``kiddolingo.coldstart`` freezes
    # what the container loads once, as it does in Lambda (never in threads of one process).
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "kiddolingo-bench-container")
    from kiddolingo import aws, runtime
    from kiddolingo.observe import observing

    invocations = _Invocations(conn)
    aws._session().events.register("before-call", invocations.before_call)
    with observing(start=invocations.on_turn_start, outcome=invocations.on_outcome):
        functions = _load_handlers(env)
        if warm:
            runtime.run(warm_providers())
        invocations.send(("ready",))
        _serve(conn, functions, invocations)


async def warm_providers(rate: int = 16000) -> None:
    """One request per endpoint: the SDK loaded and its connections open (a warm container)."""
    from kiddolingo.audio import pcm16_to_wav
    from kiddolingo.providers import build_providers

    providers = build_providers()
    await providers.transcriber.transcribe(pcm16_to_wav(bytes(rate // 5), rate))
    async for _ in providers.chat.stream(
        [{"role": "user", "content": "hola"}], temperature=0.7, max_tokens=5
    ):
        pass
    async for _ in providers.speech.stream("hola", voice="coral"):
        pass
    await providers.moderator.check("hola")


class _Container:
    def __init__(self, ctx: Any, env: dict[str, str | None], warm: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_container_main, args=(child, env, warm), name="bench-container", daemon=True
        )
        self.process.start()
        child.close()


@dataclass
class _Pending:
    """An invocation sent to a container, until its ``done`` report (or the container's end)."""

    inv: Any
    container: _Container
    done: threading.Event = field(default_factory=threading.Event)
    #: ``(error, emf_text)`` from the container; ``None``: it died first.
    result: tuple[Any, str] | None = None


class _Idle:
    """The idle containers: ``mru`` hands out the most recently used first, ``random`` any of
    them (Lambda documents neither: warm reuse is likely, the choice among warm ones is not)."""

    def __init__(self, routing: str) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing is one of {ROUTINGS}, not {routing!r}")
        self.routing = routing
        self._items: list[_Container] = []
        self._cond = threading.Condition()

    def put(self, container: _Container) -> None:
        with self._cond:
            self._items.append(container)
            self._cond.notify()

    def get(self, timeout: float) -> _Container:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            i = (
                len(self._items) - 1
                if self.routing == "mru"
                else random.randrange(len(self._items))
            )
            return self._items.pop(i)


class ContainerPool:
    """``size`` warm containers; an invocation waits for an idle one (by ``routing``: the most
    recently used first, as Lambda reuses warm environments, or any). ``invoke`` blocks until
    it is done.

    ``on_post(invocation, at, type, fields)`` gets every post as it is made, ``on_outcome(at,
    status, figures)`` every turn's outcome."""

    def __init__(
        self,
        size: int,
        env: dict[str, str | None],
        *,
        on_post: Callable[[Any, float, str, dict[str, Any]], None],
        on_outcome: Callable[[float, str, dict[str, Any]], None],
        warm: bool = True,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        routing: str = "mru",
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.on_post, self.on_outcome = on_post, on_outcome
        self.idle_timeout_s = idle_timeout_s
        self.containers = [_Container(ctx, env, warm) for _ in range(size)]
        self.idle = _Idle(routing)
        self.busy_max = 0
        self._lock = threading.Lock()
        #: The invocations running now, by id: one per busy container.
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for c in self.containers:
            if not c.conn.poll(max(0.0, deadline - time.monotonic())):
                self.close()
                raise RuntimeError("a benchmark container did not start in time")
            message = c.conn.recv()
            if message != ("ready",):
                self.close()
                raise RuntimeError(f"a benchmark container failed to start: {message!r}")
        for c in self.containers:
            threading.Thread(
                target=self._read, args=(c,), name="bench-container-reader", daemon=True
            ).start()
            self.idle.put(c)

    def invoke(self, route: str, event: dict[str, Any], inv: Any) -> Any:
        """Run one invocation in an idle container; fills ``inv`` (calls, CPU, posts) and
        returns ``(error, emf_text)``."""
        try:
            container = self.idle.get(timeout=self.idle_timeout_s)
        except queue.Empty:
            raise RuntimeError("no benchmark container is left to invoke") from None
        call = _Pending(inv, container)
        with self._lock:
            inv_id = next(self._ids)
            self._pending[inv_id] = call
            self.busy_max = max(self.busy_max, len(self._pending))
        try:
            container.conn.send((inv_id, route, event))
            call.done.wait()
        except OSError:
            pass  # the container is gone (a broken pipe): no result
        finally:
            with self._lock:
                self._pending.pop(inv_id, None)
            if call.result is not None:
                self.idle.put(container)  # one that died is never handed out again
        return call.result or ({"errorMessage": "the container died"}, "")

    def _read(self, container: _Container) -> None:
        while True:
            try:
                message = container.conn.recv()
            except (EOFError, OSError):
                # This container is gone: what it was running ends with an error.
                with self._lock:
                    pending = [p for p in self._pending.values() if p.container is container]
                for call in pending:
                    call.done.set()
                return
            kind = message[0]
            if kind == "post":
                _, inv_id, at, etype, fields = message
                with self._lock:
                    entry = self._pending.get(inv_id)
                self.on_post(entry.inv if entry else None, at, etype, fields)
            elif kind == "outcome":
                _, at, status, figures = message
                self.on_outcome(at, status, figures)
            elif kind == "done":
                _, inv_id, cpu_ms, wall_ms, error, calls, ran_turn, emf = message
                with self._lock:
                    entry = self._pending.get(inv_id)
                if entry is None:
                    continue
                with entry.inv.lock:
                    entry.inv.calls.update(calls)
                    entry.inv.cpu_ms, entry.inv.wall_ms = cpu_ms, wall_ms
                    entry.inv.ran_turn = ran_turn
                entry.result = (error, emf)
                entry.done.set()

    def close(self) -> None:
        for c in self.containers:
            with contextlib.suppress(Exception):
                c.conn.send(None)
        for c in self.containers:
            c.process.join(timeout=10)
            if c.process.is_alive():
                c.process.kill()
            with contextlib.suppress(Exception):
                c.conn.close()

    def __enter__(self) -> ContainerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
