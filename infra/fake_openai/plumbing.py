"""What every HTTP endpoint of the fake shares: the key check, OpenAI-style errors, pacing by
deadlines, and the frame of a request (record it, take its failure, answer, note how it ended)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

if TYPE_CHECKING:
    from infra.fake_openai.faults import Failure
    from infra.fake_openai.profile import LatencyProfile
    from infra.fake_openai.recording import RecordedRequest

__all__ = ["Aborted", "Exchange", "HttpPlumbing", "error_body", "error_response"]

#: Reads a request's body into its record; told whether the key was accepted.
BodyReader = Callable[[web.Request, "RecordedRequest", bool], Awaitable[None]]


class Exchange(NamedTuple):
    """One accepted request being answered: the request, its record, its injected failure
    (if any) and the latency profile it is served by."""

    request: web.Request
    record: RecordedRequest
    failure: Failure | None
    latency: LatencyProfile


#: Answers an accepted request.
Answer = Callable[[Exchange], Awaitable[web.StreamResponse]]


class Aborted(Exception):
    """The handler aborted the connection on purpose."""


def error_body(status: int, message: str) -> dict[str, Any]:
    """The body of an OpenAI-style error: its ``type`` follows the status."""
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


class HttpPlumbing:
    """The plumbing's part of :class:`~infra.fake_openai.server.FakeOpenAI`, used by every
    endpoint family. The recording (``_new_record``, ``_record``, ``_finish``) is the request
    log's part, and ``_before_body`` the faults' part."""

    #: When set, requests must carry ``Authorization: Bearer <required_api_key>``.
    required_api_key: str | None

    async def _serve(
        self, endpoint: str, request: web.Request, read: BodyReader, answer: Answer
    ) -> web.StreamResponse:
        """One request to ``endpoint``, from its arrival to its end: recorded, its body read,
        its key checked, its injected failure acted out, then ``answer``."""
        record = self._new_record(endpoint, request)
        denied = self._check_auth(request)
        await read(request, record, denied is None)
        failure, latency = self._record(record)

        async def respond() -> web.StreamResponse:
            if denied is not None:
                return denied
            return await answer(Exchange(request, record, failure, latency))

        return await self._handle(request, record, failure, respond)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        problem = self._auth_problem(request)
        return None if problem is None else error_response(401, problem)

    def _auth_problem(self, request: web.Request) -> str | None:
        """Why the request's ``Authorization: Bearer`` key is refused, or None."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return "missing API key"
        required = self.required_api_key
        if required is not None and auth[7:].strip() != required:
            return "incorrect API key provided"
        return None

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (``time.monotonic()``). Pacing by deadlines keeps a stream
        at its profile's rate: a sleep per token would add each wake-up's lateness to all the
        tokens after it."""
        await self._sleep(deadline - time.monotonic())

    @staticmethod
    def _read_at(record: RecordedRequest) -> float:
        """The instant the profile counts from: every handler reads the body before it waits."""
        assert record.read_at is not None, f"{record.endpoint}: the body was never read"
        return record.read_at

    async def _handle(
        self,
        request: web.Request,
        record: RecordedRequest,
        failure: Failure | None,
        respond: Callable[[], Any],
    ) -> web.StreamResponse:
        """Act out a failure due before the body, else ``respond``; then note in the record
        how the request ended (the client may have gone midway)."""
        completed = False
        try:
            response = await self._before_body(request, record, failure)
            if response is None:
                response = await respond()
            record.status = response.status
            completed = response.status < 400 and not record.disconnected
            return response
        except Aborted:
            if request.transport is not None:
                request.transport.abort()
            # Nothing more reaches the client; this only keeps aiohttp from logging an error.
            return web.Response(status=499)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise
        finally:
            self._finish(record, completed=completed)

    async def _read_json(
        self, request: web.Request, record: RecordedRequest, authorised: bool
    ) -> None:
        """Read a JSON body, even when the key was refused: the log then shows what was sent."""
        raw = await request.read()
        record.read_at = time.monotonic()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record.json = body if isinstance(body, dict) else {}

    async def _write(
        self, response: web.StreamResponse, record: RecordedRequest, data: bytes
    ) -> None:
        """Write part of a streamed body, counting what was actually sent."""
        await response.write(data)
        if record.first_byte_at is None:
            record.first_byte_at = time.monotonic()
        record.bytes_sent += len(data)
