"""The Realtime socket (``GET /v1/realtime?model=...``): the handshake, the session, the
client events, and the responses in flight on one connection."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from infra.fake_openai.faults import REALTIME_RESPONSE_FAILURES
from infra.fake_openai.plumbing import error_body
from infra.fake_openai.realtime.events import (
    UNSERVED,
    BadEvent,
    check_session_update,
    response_request,
)
from infra.fake_openai.realtime.response import (
    AUDIO_FORMAT,
    DEFAULT_VOICE,
    RealtimeResponse,
    new_id,
)
from infra.fake_openai.realtime.speaking import SocketGone, Speaker

if TYPE_CHECKING:
    from infra.fake_openai.faults import Failure
    from infra.fake_openai.profile import LatencyProfile
    from infra.fake_openai.recording import RecordedRequest
    from infra.fake_openai.server import FakeOpenAI

__all__ = ["RealtimeEndpoint", "RealtimeSocket"]

#: Close code after refusing a key: policy violation (the fake's choice).
AUTH_CLOSE_CODE = 1008


class RealtimeEndpoint:
    """The aiohttp handler of ``GET /v1/realtime``."""

    def __init__(self, server: FakeOpenAI) -> None:
        self.server = server

    async def handle(self, request: web.Request) -> web.StreamResponse:
        server = self.server
        record = server._new_record("realtime", request)
        record.read_at = record.received_at
        failure, latency = server._record(record, kinds=("status",))
        model = request.query.get("model")
        completed = False
        try:
            await server._sleep_until(record.received_at + latency.realtime_connect_ms / 1000)
            if failure is not None:
                record.status = failure.status
                return server._refuse(failure)
            ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, autoping=True)
            await ws.prepare(request)
            record.status = 101
            server._sockets.add(ws)
            try:
                socket = RealtimeSocket(server, request, ws, record, model)
                completed = await socket.run()
            finally:
                server._sockets.discard(ws)
            return ws
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise
        finally:
            server._finish(record, completed=completed)


class RealtimeSocket:
    """One Realtime connection: its session, its client events, its responses in flight."""

    def __init__(
        self,
        server: FakeOpenAI,
        request: web.Request,
        ws: web.WebSocketResponse,
        record: RecordedRequest,
        model: str | None,
    ) -> None:
        self.server = server
        self.request = request
        self.ws = ws
        self.record = record
        self.model = model
        self.session_id = new_id("sess")
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {"output": {"format": dict(AUDIO_FORMAT), "voice": DEFAULT_VOICE}},
            "max_output_tokens": "inf",
        }
        record.json = self.session
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.active: dict[str, RealtimeResponse] = {}
        self.send_lock = asyncio.Lock()
        self.dropped = False

    # -- the connection ----------------------------------------------------------------------

    async def run(self) -> bool:
        """Serve the socket until it closes; True if it closed cleanly."""
        problem = self.server._auth_problem(self.request)
        if problem is None and not self.model:
            problem = "missing required parameter: 'model'"
        if problem is not None:
            # The real API takes the upgrade and then refuses a wrong key in an event.
            code = "invalid_api_key" if "key" in problem else "missing_required_parameter"
            await self.send_error(problem, code=code)
            await self.ws.close(code=AUTH_CLOSE_CODE, message=problem.encode()[:120])
            self.record.close_code = AUTH_CLOSE_CODE
            return False
        await self.send({"type": "session.created", "session": self.session})
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    await self.on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self.send_error("binary frames are not supported: send JSON text")
                else:
                    break
        except SocketGone:
            pass
        finally:
            await self.stop_all()
            self.record.close_code = self.ws.close_code
        return not self.dropped

    async def stop_all(self) -> None:
        """The socket is closing: every response still in flight stops where it is. They are
        marked first, so the record holds even if this handler is itself cancelled (aiohttp
        cancels it when the client goes) while the responses wind down."""
        now = time.monotonic()
        with self.server._lock:
            for response in self.active.values():
                response.disconnected = True
                response.finished_at = response.finished_at or now
            self.active.clear()
            self.server._idle.notify_all()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def send(self, event: dict[str, Any]) -> None:
        """Send one server event (an ``event_id`` is added). Sends of concurrent responses
        take turns, one whole event each."""
        event = {"event_id": new_id("event"), **event}
        data = json.dumps(event, ensure_ascii=False)
        async with self.send_lock:
            if self.ws.closed or self.dropped:
                raise SocketGone
            try:
                await self.ws.send_str(data)
            except ConnectionError as exc:
                raise SocketGone from exc

    async def send_error(
        self,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = "invalid_value",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        error = {"type": kind, "code": code, "message": message, "param": param}
        error["event_id"] = event_id
        with self.server._lock:
            self.record.errors.append(error)
        await self.send({"type": "error", "error": error})

    def drop(self, failure: str | None) -> None:
        """A response's injected fault drops the connection: no more events go out."""
        self.dropped = True
        self.record.failure = failure
        if self.request.transport is not None:
            self.request.transport.abort()

    # -- client events -----------------------------------------------------------------------

    async def on_text(self, data: str) -> None:
        received_at = time.monotonic()
        try:
            event = json.loads(data)
        except ValueError:
            await self.send_error(
                "The event is not valid JSON.", code="invalid_json", param=None, event_id=None
            )
            return
        if not isinstance(event, dict):
            await self.send_error("An event must be a JSON object.", code="invalid_event")
            return
        with self.server._lock:
            self.record.events.append(event)
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        try:
            if kind == "session.update":
                await self.on_session_update(event)
            elif kind == "response.create":
                await self.on_response_create(event, event_id, received_at)
            elif kind == "response.cancel":
                await self.on_response_cancel(event)
            elif kind in UNSERVED:
                raise BadEvent(
                    f"The fake Realtime API serves speech only; {kind!r} is not supported.",
                    code="unsupported_event",
                    param="type",
                )
            elif not isinstance(kind, str):
                raise BadEvent("Missing required parameter: 'type'.", param="type")
            else:
                raise BadEvent(f"Invalid value: {kind!r}: not a client event.", param="type")
        except BadEvent as exc:
            await self.send_error(str(exc), code=exc.code, param=exc.param, event_id=event_id)

    async def on_session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        output = check_session_update(session)
        if "instructions" in session:
            self.session["instructions"] = session["instructions"]
        voice = output.get("voice")
        if voice is not None:
            self.session["audio"]["output"]["voice"] = voice
        with self.server._lock:
            self.record.json = self.session
        await self.send({"type": "session.updated", "session": self.session})

    async def on_response_create(
        self, event: dict[str, Any], event_id: str | None, received_at: float
    ) -> None:
        """Check the request, record the response, and speak it in a task of its own (so that
        several may be in flight), unless an injected ``error`` refuses it."""
        asked = response_request(event, self.session)
        server = self.server
        spoken = server._spoken_text(asked.text)
        with server._lock:
            failure = server._take_failure("realtime", REALTIME_RESPONSE_FAILURES)
            latency = server.latency
        response = RealtimeResponse(
            id=new_id("resp"),
            session_id=self.session_id,
            model=self.model,
            event_id=event_id,
            request=asked.params,
            text=asked.text,
            spoken=spoken,
            instructions=asked.instructions,
            voice=asked.voice,
            metadata=asked.metadata,
            received_at=received_at,
            failure=failure.kind if failure is not None else None,
        )
        with server._lock:
            server._realtime_log.append(response)
            self.record.responses.append(response)
        if failure is not None and failure.kind == "error":
            await self._refuse_response(response, failure, event_id)
            return
        self._start(response, failure, latency)

    async def _refuse_response(
        self, response: RealtimeResponse, failure: Failure, event_id: str | None
    ) -> None:
        """An injected ``error``: the response fails at once with an ``error`` event."""
        with self.server._lock:
            response.status = "failed"
            response.finished_at = time.monotonic()
        body = error_body(failure.status, failure.message)["error"]
        await self.send_error(
            failure.message,
            kind=body["type"],
            code=failure.code or body["type"],
            event_id=event_id,
        )

    def _start(
        self, response: RealtimeResponse, failure: Failure | None, latency: LatencyProfile
    ) -> None:
        self.active[response.id] = response
        task = asyncio.create_task(Speaker(self, response, failure, latency).run())
        self.tasks[response.id] = task
        task.add_done_callback(lambda _t, rid=response.id: self.tasks.pop(rid, None))

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        response_id = event.get("response_id")
        response = self.active.get(response_id) if isinstance(response_id, str) else None
        task = self.tasks.get(response_id) if isinstance(response_id, str) else None
        if response is None or task is None or response.cancel_requested_at is not None:
            raise BadEvent(
                "Cancellation failed: no active response found"
                + (f" with id {response_id!r}." if response_id else " (give response_id)."),
                code="response_cancel_not_active",
                param="response_id",
            )
        response.cancel_requested_at = time.monotonic()
        task.cancel()
