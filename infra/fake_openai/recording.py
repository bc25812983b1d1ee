"""The request log: every request the fake received, parsed, and what happened to its
response, so that a test can prove what was sent and that a cancelled stream stopped early."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from infra.fake_openai.faults import Failure
    from infra.fake_openai.profile import LatencyProfile

__all__ = ["ENDPOINTS", "RecordedRequest", "RequestLog", "endpoint_name"]

ENDPOINTS = ("transcriptions", "chat", "speech", "moderations", "realtime")
_ALIASES = {
    "transcriptions": "transcriptions",
    "transcription": "transcriptions",
    "audio/transcriptions": "transcriptions",
    "chat": "chat",
    "chat/completions": "chat",
    "completions": "chat",
    "speech": "speech",
    "audio/speech": "speech",
    "moderations": "moderations",
    "moderation": "moderations",
    "realtime": "realtime",
}


def endpoint_name(name: str) -> str:
    """The endpoint a test names, by any of its aliases (``audio/transcriptions``, ``chat``...)."""
    try:
        return _ALIASES[name.strip("/").removeprefix("v1/")]
    except KeyError:
        raise ValueError(f"unknown endpoint {name!r}; one of {ENDPOINTS}") from None


@dataclass
class RecordedRequest:
    """One request the fake received, parsed, and what happened to its response."""

    endpoint: str
    path: str
    headers: dict[str, str]
    received_at: float
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    file: bytes | None = None
    filename: str | None = None
    file_content_type: str | None = None
    #: Multipart fields sent as a list (``languages[]``), by name without the brackets.
    form_lists: dict[str, list[str]] = field(default_factory=dict)
    #: Transcription: the uploaded WAV decoded (mono PCM16) and its rate.
    pcm: bytes | None = None
    sample_rate: int | None = None
    status: int | None = None
    failure: str | None = None
    #: Response body bytes written to the connection, and what the whole body would be.
    bytes_sent: int = 0
    bytes_total: int | None = None
    #: Chat: content tokens sent, and in the whole reply.
    tokens_sent: int = 0
    tokens_total: int | None = None
    #: When the request's body had been read: the profile's latencies count from here, so that
    #: the fake's own parsing and scheduling are not added to them.
    read_at: float | None = None
    first_byte_at: float | None = None
    finished_at: float | None = None
    completed: bool = False
    disconnected: bool = False
    response_text: str | None = None
    #: Realtime: the client events received on the socket, parsed, in order; the responses
    #: created on it (:class:`~infra.fake_openai.realtime.RealtimeResponse`); the ``error``
    #: events sent; the close code the client saw from us, if we closed.
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    #: Chat and transcription: what the fake reported as used.
    usage: dict[str, Any] | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages") or [])

    @property
    def input(self) -> Any:
        """Speech: the text to speak. Moderation: the input as sent (string or list)."""
        return (self.json or {}).get("input")

    @property
    def wav(self) -> bytes | None:
        return self.file

    @property
    def model(self) -> str | None:
        if self.json is not None:
            return self.json.get("model")
        return self.form.get("model")

    @property
    def languages(self) -> list[str] | None:
        """Transcription: the ``languages`` list (gpt-transcribe), as sent."""
        return self.form_lists.get("languages")

    @property
    def reasoning_effort(self) -> str | None:
        return (self.json or {}).get("reasoning_effort")

    @property
    def max_completion_tokens(self) -> int | None:
        return (self.json or {}).get("max_completion_tokens")

    @property
    def session(self) -> dict[str, Any]:
        """Realtime: the session's configuration as last sent in ``session.created`` or
        ``session.updated``."""
        return dict(self.json or {})

    @property
    def instructions(self) -> str | None:
        """Realtime: the session's instructions."""
        return (self.json or {}).get("instructions")

    @property
    def voice(self) -> str | None:
        """Speech: the voice asked for. Realtime: the session's voice."""
        body = self.json or {}
        if self.endpoint == "realtime":
            return ((body.get("audio") or {}).get("output") or {}).get("voice")
        return body.get("voice")

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


class RequestLog:
    """The log's part of :class:`~infra.fake_openai.server.FakeOpenAI`: it records requests
    and answers a test's questions about them, from any thread, under the server's lock.
    Taking a request's injected failure is the faults' part (``_take_failure``)."""

    _lock: threading.Lock
    _idle: threading.Condition
    _log: list[RecordedRequest]
    _realtime_log: list[Any]
    latency: LatencyProfile

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, oldest first, for one endpoint or all."""
        name = endpoint_name(endpoint) if endpoint else None
        with self._lock:
            return [r for r in self._log if name is None or r.endpoint == name]

    def realtime_responses(self) -> list[Any]:
        """Every Realtime response created (on any socket), oldest first: what was asked for,
        what was spoken, how it ended and how many audio bytes it actually sent
        (:class:`~infra.fake_openai.realtime.RealtimeResponse`)."""
        with self._lock:
            return list(self._realtime_log)

    def bytes_streamed(self, endpoint: str | None = None) -> int:
        """Response body bytes actually written, over the recorded requests."""
        return sum(r.bytes_sent for r in self.requests(endpoint))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded request and Realtime response has finished (a stream the
        client closed is finished once the server notices). True if idle before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(r.finished_at is None for r in (*self._log, *self._realtime_log)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
            return True

    def _new_record(self, endpoint: str, request: web.Request) -> RecordedRequest:
        return RecordedRequest(
            endpoint=endpoint,
            path=request.path,
            headers=dict(request.headers),
            received_at=time.monotonic(),
        )

    def _record(
        self, record: RecordedRequest, kinds: Iterable[str] | None = None
    ) -> tuple[Failure | None, LatencyProfile]:
        """Log ``record`` and take the next injected failure for it, of one of ``kinds`` (of
        any kind by default), with the latency profile it is served by."""
        with self._lock:
            self._log.append(record)
            failure = self._take_failure(record.endpoint, kinds)
            if failure is not None:
                record.failure = failure.kind
            return failure, self.latency

    def _finish(self, record: RecordedRequest, *, completed: bool) -> None:
        with self._lock:
            record.completed = completed
            if record.finished_at is None:
                record.finished_at = time.monotonic()
            self._idle.notify_all()
