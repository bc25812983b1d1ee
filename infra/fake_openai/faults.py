"""Injected failures: an HTTP status, a hang past the client's timeout, a stream aborted or
stalled midway, a dropped socket, a Realtime ``error`` event."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from aiohttp import web

from infra.fake_openai.plumbing import Aborted, error_response
from infra.fake_openai.recording import endpoint_name

if TYPE_CHECKING:
    from infra.fake_openai.recording import RecordedRequest

__all__ = ["FAILURE_KINDS", "REALTIME_RESPONSE_FAILURES", "Failure", "FaultInjection"]

#: What an injected failure may be, per endpoint. The Realtime endpoint refuses the handshake
#: with ``status``; the others happen to one response on an open socket.
FAILURE_KINDS = ("status", "timeout", "abort", "stall", "error")
REALTIME_RESPONSE_FAILURES = ("timeout", "abort", "stall", "error")


@dataclass
class Failure:
    """An injected failure: ``kind`` is ``status`` (answer with ``status``), ``timeout`` (hang
    for ``hang_s`` before answering, past any sensible client timeout), ``abort`` (close the
    connection: after ``after_bytes`` of a streamed body, half of it by default, or at once
    for a non-streamed endpoint) or ``stall`` (a streamed body stops at that point and hangs
    for ``hang_s``). ``times=None`` fails until :meth:`FakeOpenAI.reset`.

    On the ``realtime`` endpoint: ``status`` refuses the WebSocket handshake with that HTTP
    status; the others strike the next ``response.create``: ``error`` answers it with an
    ``error`` event (``status`` picks its type, ``code`` its code), ``timeout`` holds its first
    audio byte for ``hang_s`` (then it goes on), ``abort`` drops the socket after
    ``after_bytes`` of its audio (half by default), ``stall`` stops there, hangs for ``hang_s``
    and then drops the socket."""

    endpoint: str
    kind: str = "status"
    status: int = 500
    times: int | None = 1
    retry_after_ms: float | None = 10.0
    hang_s: float = 30.0
    after_bytes: int | None = None
    message: str = "injected failure"
    code: str | None = None


def abort_point(failure: Failure | None, total: int) -> int | None:
    """Where an ``abort`` or ``stall`` cuts a body of ``total`` bytes (half of it unless the
    failure says), or None when the failure does not cut the body."""
    if failure is None or failure.kind not in ("abort", "stall"):
        return None
    return failure.after_bytes if failure.after_bytes is not None else total // 2


class FaultInjection:
    """The faults' part of :class:`~infra.fake_openai.server.FakeOpenAI`: a test injects a
    failure from any thread, a handler takes it and acts it out. A hang waits on ``_wake``,
    which ``reset`` and ``stop`` set so that no request hangs past them."""

    _lock: threading.Lock
    _failures: list[Failure]
    _wake: asyncio.Event | None

    def fail(
        self,
        endpoint: str,
        status: int = 500,
        times: int | None = 1,
        *,
        kind: str = "status",
        retry_after_ms: float | None = 10.0,
        hang_s: float = 30.0,
        after_bytes: int | None = None,
        message: str = "injected failure",
        code: str | None = None,
    ) -> Failure:
        """Make the next ``times`` requests to ``endpoint`` fail (``None``: until reset).

        ``kind="status"`` answers ``status`` with an OpenAI-style error body and, when
        ``retry_after_ms`` is set, a ``retry-after-ms`` header (which keeps the SDK's retries
        fast in tests). ``kind="timeout"`` hangs for ``hang_s`` before answering.
        ``kind="abort"`` breaks the connection midway through a streamed body (after
        ``after_bytes``, half by default) or at once. ``kind="stall"`` stops a streamed body at
        the same point and hangs for ``hang_s`` (a read timeout mid-stream), then aborts.

        On ``realtime`` (see :class:`Failure`): ``status`` refuses the handshake; ``error``,
        ``timeout``, ``abort`` and ``stall`` strike the next ``response.create``."""
        name = endpoint_name(endpoint)
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        if kind == "error" and name != "realtime":
            raise ValueError("kind='error' (an error event) is for the realtime endpoint only")
        failure = Failure(
            name,
            kind,
            status,
            times,
            retry_after_ms,
            hang_s,
            after_bytes,
            message,
            code,
        )
        with self._lock:
            self._failures.append(failure)
        return failure

    def _take_failure(self, endpoint: str, kinds: Iterable[str] | None = None) -> Failure | None:
        """The next injected failure for ``endpoint`` among ``kinds`` (any kind by default),
        counted down. The caller holds the lock."""
        wanted = None if kinds is None else set(kinds)
        for candidate in self._failures:
            if (
                candidate.endpoint == endpoint
                and (wanted is None or candidate.kind in wanted)
                and (candidate.times is None or candidate.times > 0)
            ):
                if candidate.times is not None:
                    candidate.times -= 1
                return candidate
        return None

    def _wake_hangs(self) -> None:
        """Release every request hanging on an injected failure (on the server's loop)."""
        if self._wake is not None:
            self._wake.set()
            self._wake = asyncio.Event()

    async def _hang(self, seconds: float) -> None:
        """Hang for ``seconds``, or until ``reset`` or ``stop`` wakes the hanging requests."""
        wake = self._wake
        if wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _before_body(
        self, request: web.Request, record: RecordedRequest, failure: Failure | None
    ) -> web.StreamResponse | None:
        """Apply an injected failure that happens before any body is sent."""
        streamed = record.endpoint in ("chat", "speech")
        if failure is None or (failure.kind in ("abort", "stall") and streamed):
            return None
        if failure.kind in ("timeout", "stall"):
            await self._hang(failure.hang_s)
            return error_response(504, "injected timeout")
        if failure.kind == "abort":
            raise Aborted
        return self._refuse(failure)

    @staticmethod
    def _refuse(failure: Failure) -> web.Response:
        """The error a ``status`` failure answers, with its ``retry-after-ms`` (which keeps the
        SDK's retries fast in tests)."""
        headers = {}
        if failure.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{failure.retry_after_ms:g}"
        return error_response(failure.status, failure.message, headers)

    async def _break_stream(self, failure: Failure | None) -> NoReturn:
        """Cut a streamed body where its failure strikes: a stall hangs first."""
        if failure is not None and failure.kind == "stall":
            await self._hang(failure.hang_s)
        raise Aborted
