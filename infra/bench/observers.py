"""What the benchmark sees of each invocation: its AWS calls and posts (botocore hooks on the
handlers' session), its CPU with moto's share apart, and whether it started a turn (a turn
observer of ``kiddolingo.observe``)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from infra.containers import capture_post


@dataclass
class Invocation:
    """One handler invocation: its AWS calls, posts and CPU."""

    kind: str  # connect | control | speech | silence | disconnect
    #: Milliseconds of audio in the append (the page sends 100 ms blocks, or several as one).
    audio_ms: int = 0
    seq: int = 0
    sent_at: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    posts: list[str] = field(default_factory=list)
    cpu_ms: float = 0.0
    moto_cpu_ms: float = 0.0
    wall_ms: float = 0.0
    error: Any = None
    #: It started a turn (``kiddolingo.observe.turn_started``): an ordinary or a speculative one.
    ran_turn: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ended_utterance(self) -> bool:
        return any(
            p in ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed")
            for p in self.posts
        )

    @property
    def chunk_path(self) -> bool:
        """An append that neither ended the utterance nor ran a turn."""
        return (
            self.kind in ("speech", "silence")
            and not self.ran_turn
            and not self.ended_utterance
            and not self.error
        )

    @property
    def answered(self) -> bool:
        return any(p.startswith("response.") for p in self.posts)

    @property
    def n_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class Post:
    at: float
    type: str
    invocation: Invocation | None
    fields: dict[str, Any]
    #: The message's size in bytes (0: not known, a container's post; each is under 32 KB).
    nbytes: int = 0


#: The invocation this thread runs now (set around each in-process invocation).
CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "bench_invocation", default=None
)


class Observer:
    """botocore hooks on the handlers' session: counts calls per invocation, captures posts.

    Calls made where the invocation's context does not reach (a thread pool inside a turn)
    are kept as orphans with their time, and assigned to the turn running then.
    """

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.orphans: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def install(self, events: Any) -> None:
        events.register("before-call", self._before_call)

    def _before_call(self, model: Any, params: dict[str, Any], **kwargs: Any) -> Any:
        service = model.service_model.service_name
        op = f"{service}.{model.name}"
        inv = CURRENT.get()
        if inv is None:
            with self.lock:
                self.orphans.append((time.perf_counter(), op))
        else:
            with inv.lock:
                inv.calls[op] += 1
        if model.name != "PostToConnection":
            return None
        nbytes = len(params.get("body") or b"")
        return capture_post(
            params, lambda at, etype, fields: self.record(inv, at, etype, fields, nbytes)
        )

    def record(
        self,
        inv: Invocation | None,
        at: float,
        etype: str,
        fields: dict[str, Any],
        nbytes: int = 0,
    ) -> None:
        """One post to the connection (here, or reported by a container)."""
        if inv is not None:
            with inv.lock:
                inv.posts.append(etype)
        with self.lock:
            self.posts.append(Post(at, etype, inv, fields, nbytes))

    def mark(self) -> int:
        with self.lock:
            return len(self.posts)

    def first(self, since: int, etype: str) -> Post | None:
        with self.lock:
            for post in self.posts[since:]:
                if post.type == etype:
                    return post
        return None


_MOTO_LOCK = threading.RLock()


@contextlib.contextmanager
def serialized_moto() -> Iterator[None]:
    """Make moto's in-process AWS one request at a time, and account for its CPU.

    moto's backends are not thread-safe: two concurrent ``UpdateItem`` calls on one item can
    fail inside moto ("dictionary changed size during iteration"), which real DynamoDB never
    does. Serializing moto's request processing keeps the handlers' concurrency intact (they
    still run in parallel threads; DynamoDB itself applies one write to an item at a time).
    The CPU moto spends emulating AWS is charged to the invocation, to be subtracted: Lambda
    does not pay it.
    """
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.process_request

    def process_request(self: Any, request: Any) -> Any:
        with _MOTO_LOCK:
            started = time.thread_time()
            try:
                return original(self, request)
            finally:
                inv = CURRENT.get()
                if inv is not None:
                    with inv.lock:
                        inv.moto_cpu_ms += (time.thread_time() - started) * 1000.0

    BotocoreStubber.process_request = process_request  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.process_request = original  # type: ignore[method-assign]


def mark_turn() -> None:
    """The invocation running now (this thread's) starts a turn: a ``kiddolingo.observe`` turn
    observer, called in the invoking thread."""
    inv = CURRENT.get()
    if inv is not None:
        inv.ran_turn = True
