"""The fake's Realtime API socket (``GET /v1/realtime?model=...``), for speech: a session, and
out-of-band responses that read a sentence aloud. See the package docstring for the protocol.

Each socket is a :class:`RecordedRequest` with endpoint ``realtime`` (its session, the client
events, the ``error`` events sent, the audio bytes sent over all its responses); each response
is a :class:`RealtimeResponse`, listed by ``FakeOpenAI.realtime_responses()`` and in its
socket's ``responses``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from infra.fake_openai.server import (
    REALTIME_RESPONSE_FAILURES,
    Failure,
    LatencyProfile,
    RecordedRequest,
    _error_body,
)
from infra.fake_openai.voices import SPEECH_SAMPLE_RATE, word_pieces

if TYPE_CHECKING:
    from infra.fake_openai.server import FakeOpenAI

__all__ = ["AUDIO_TOKEN_MS", "CHARS_PER_TEXT_TOKEN", "VOICES", "RealtimeResponse"]

#: The voices of the Realtime API's speech models.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_VOICE = "marin"
AUDIO_FORMAT = {"type": "audio/pcm", "rate": SPEECH_SAMPLE_RATE}
#: The fake's usage rule, not a fact about OpenAI: an audio output token per 50 ms of audio
#: sent, a text token per 4 characters.
AUDIO_TOKEN_MS = 50
CHARS_PER_TEXT_TOKEN = 4
#: Close code after refusing a key: policy violation (the fake's choice).
AUTH_CLOSE_CODE = 1008
#: Client events of the Realtime API the fake knows but does not serve (it speaks, nothing
#: else): they get an ``error`` naming them rather than the error for an unknown type.
_UNSERVED = (
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "output_audio_buffer.clear",
)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


@dataclass
class RealtimeResponse:
    """One out-of-band response, as the fake received and answered it."""

    id: str
    #: The ``id`` of the socket's session (``session.created``).
    session_id: str
    model: str | None
    #: The ``event_id`` the client gave its ``response.create``, if any.
    event_id: str | None
    #: The ``response`` object of ``response.create``, as sent.
    request: dict[str, Any]
    #: The sentence asked for (the ``input_text`` of the response's input).
    text: str
    #: What the fake spoke and transcribed: ``text``, unless a rewording was scripted.
    spoken: str
    #: The instructions and voice in effect: the response's own, else the session's.
    instructions: str | None
    voice: str | None
    metadata: dict[str, Any] | None
    received_at: float
    #: ``in_progress`` until ``response.done``: then ``completed``, ``cancelled`` or
    #: ``failed`` (an injected ``error`` event). Still ``in_progress`` if the socket went first.
    status: str = "in_progress"
    failure: str | None = None
    #: Audio bytes sent in ``response.output_audio.delta`` events, and the whole audio.
    bytes_sent: int = 0
    bytes_total: int | None = None
    #: The transcript deltas sent, joined.
    transcript_sent: str = ""
    first_byte_at: float | None = None
    cancel_requested_at: float | None = None
    finished_at: float | None = None
    #: The socket closed or dropped before ``response.done``.
    disconnected: bool = False
    #: ``response.done``'s usage.
    usage: dict[str, Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def reworded(self) -> bool:
        return self.spoken != self.text

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


class _SocketGone(Exception):
    """The client went away while a response was being sent."""


class _Dropped(Exception):
    """A response dropped the socket on purpose (an injected fault)."""


class _BadEvent(Exception):
    """A client event the fake refuses: becomes an ``error`` event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param


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
                headers = {}
                if failure.retry_after_ms is not None:
                    headers["retry-after-ms"] = f"{failure.retry_after_ms:g}"
                record.status = failure.status
                return server._error(failure.status, failure.message, headers)
            ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, autoping=True)
            await ws.prepare(request)
            record.status = 101
            server._sockets.add(ws)
            try:
                socket = _Socket(server, request, ws, record, model)
                completed = await socket.run()
            finally:
                server._sockets.discard(ws)
            return ws
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise
        finally:
            server._finish(record, completed=completed)


class _Socket:
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
        self.session_id = _id("sess")
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
        except _SocketGone:
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
        event = {"event_id": _id("event"), **event}
        data = json.dumps(event, ensure_ascii=False)
        async with self.send_lock:
            if self.ws.closed or self.dropped:
                raise _SocketGone
            try:
                await self.ws.send_str(data)
            except ConnectionError as exc:
                raise _SocketGone from exc

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
            elif kind in _UNSERVED:
                raise _BadEvent(
                    f"The fake Realtime API serves speech only; {kind!r} is not supported.",
                    code="unsupported_event",
                    param="type",
                )
            elif not isinstance(kind, str):
                raise _BadEvent("Missing required parameter: 'type'.", param="type")
            else:
                raise _BadEvent(f"Invalid value: {kind!r}: not a client event.", param="type")
        except _BadEvent as exc:
            await self.send_error(str(exc), code=exc.code, param=exc.param, event_id=event_id)

    async def on_session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise _BadEvent("Missing required parameter: 'session'.", param="session")
        if session.get("type", "realtime") != "realtime":
            raise _BadEvent(
                "The fake serves realtime sessions only (session.type 'realtime').",
                param="session.type",
            )
        modalities = session.get("output_modalities")
        if modalities is not None and modalities != ["audio"]:
            raise _BadEvent(
                "The fake speaks: output_modalities must be ['audio'].",
                param="session.output_modalities",
            )
        output = ((session.get("audio") or {}).get("output")) or {}
        voice = output.get("voice")
        if voice is not None:
            self._check_voice(voice, "session.audio.output.voice")
        if "format" in output:
            self._check_format(output["format"], "session.audio.output.format")
        if "instructions" in session:
            if not isinstance(session["instructions"], str):
                raise _BadEvent("instructions must be a string.", param="session.instructions")
            self.session["instructions"] = session["instructions"]
        if voice is not None:
            self.session["audio"]["output"]["voice"] = voice
        with self.server._lock:
            self.record.json = self.session
        await self.send({"type": "session.updated", "session": self.session})

    @staticmethod
    def _check_voice(voice: Any, param: str) -> None:
        if voice not in VOICES:
            raise _BadEvent(
                f"Invalid value: {voice!r}. Supported values are: {', '.join(VOICES)}.",
                param=param,
            )

    @staticmethod
    def _check_format(fmt: Any, param: str) -> None:
        if not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm":
            raise _BadEvent("The fake speaks audio/pcm only.", param=param)
        if fmt.get("rate", SPEECH_SAMPLE_RATE) != SPEECH_SAMPLE_RATE:
            raise _BadEvent("audio/pcm is 24000 Hz.", param=param)

    async def on_response_create(
        self, event: dict[str, Any], event_id: str | None, received_at: float
    ) -> None:
        params = event.get("response", {})
        if not isinstance(params, dict):
            raise _BadEvent("response must be an object.", param="response")
        if params.get("conversation") != "none":
            raise _BadEvent(
                "The fake serves out-of-band responses only: set response.conversation "
                "to 'none' and give the sentence in response.input.",
                param="response.conversation",
            )
        modalities = params.get("output_modalities")
        if modalities is not None and modalities != ["audio"]:
            raise _BadEvent(
                "The fake speaks: output_modalities must be ['audio'].",
                param="response.output_modalities",
            )
        text = self._input_text(params.get("input"))
        output = ((params.get("audio") or {}).get("output")) or {}
        voice = output.get("voice", self.session["audio"]["output"]["voice"])
        self._check_voice(voice, "response.audio.output.voice")
        if "format" in output:
            self._check_format(output["format"], "response.audio.output.format")
        metadata = params.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            raise _BadEvent(
                "metadata must be at most 16 string keys (64 chars) to string values (512).",
                param="response.metadata",
            )
        instructions = params.get("instructions", self.session["instructions"])
        server = self.server
        spoken = server._spoken_text(text)
        with server._lock:
            failure = server._take_failure("realtime", REALTIME_RESPONSE_FAILURES)
            latency = server.latency
        response = RealtimeResponse(
            id=_id("resp"),
            session_id=self.session_id,
            model=self.model,
            event_id=event_id,
            request=params,
            text=text,
            spoken=spoken,
            instructions=instructions,
            voice=voice,
            metadata=metadata,
            received_at=received_at,
            failure=failure.kind if failure is not None else None,
        )
        with server._lock:
            server._realtime_log.append(response)
            self.record.responses.append(response)
        if failure is not None and failure.kind == "error":
            with server._lock:
                response.status = "failed"
                response.finished_at = time.monotonic()
            body = _error_body(failure.status, failure.message)["error"]
            await self.send_error(
                failure.message,
                kind=body["type"],
                code=failure.code or body["type"],
                event_id=event_id,
            )
            return
        self.active[response.id] = response
        task = asyncio.create_task(self.respond(response, failure, latency))
        self.tasks[response.id] = task
        task.add_done_callback(lambda _t, rid=response.id: self.tasks.pop(rid, None))

    @staticmethod
    def _input_text(items: Any) -> str:
        """The sentence to read: the ``input_text`` of the response's user message(s)."""
        texts = []
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, dict) or item.get("type") != "message":
                    continue
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "input_text":
                        texts.append(str(part.get("text") or ""))
        text = " ".join(t for t in texts if t)
        if not text.strip():
            raise _BadEvent(
                "The fake reads aloud the input_text of response.input: it is missing or empty.",
                code="missing_required_parameter",
                param="response.input",
            )
        return text

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        response_id = event.get("response_id")
        response = self.active.get(response_id) if isinstance(response_id, str) else None
        task = self.tasks.get(response_id) if isinstance(response_id, str) else None
        if response is None or task is None or response.cancel_requested_at is not None:
            raise _BadEvent(
                "Cancellation failed: no active response found"
                + (f" with id {response_id!r}." if response_id else " (give response_id)."),
                code="response_cancel_not_active",
                param="response_id",
            )
        response.cancel_requested_at = time.monotonic()
        task.cancel()

    # -- a response --------------------------------------------------------------------------

    def _response_object(self, response: RealtimeResponse, status: str) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": None,
            "output": [],
            "conversation_id": None,
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": dict(AUDIO_FORMAT), "voice": response.voice}},
            "usage": None,
            "metadata": response.metadata,
        }

    def _item(self, item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
        content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    async def respond(
        self, response: RealtimeResponse, failure: Failure | None, latency: LatencyProfile
    ) -> None:
        item_id = _id("item")
        where = {"response_id": response.id, "item_id": item_id, "output_index": 0}
        part = {**where, "content_index": 0}
        try:
            try:
                await self.send(
                    {
                        "type": "response.created",
                        "response": self._response_object(response, "in_progress"),
                    }
                )
                await self.send(
                    {
                        "type": "response.output_item.added",
                        "response_id": response.id,
                        "output_index": 0,
                        "item": self._item(item_id, "in_progress", None),
                    }
                )
                await self.send(
                    {
                        "type": "response.content_part.added",
                        **part,
                        "part": {"type": "audio", "transcript": ""},
                    }
                )
                await self.stream_audio(response, part, failure, latency)
                status = "completed"
                # All sent: from here a cancel finds no active response, as on the real API.
                self.active.pop(response.id, None)
            except asyncio.CancelledError:
                if response.cancel_requested_at is None:
                    raise  # the socket is closing
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                status = "cancelled"
            await self.finish(response, item_id, part, status)
        except (_SocketGone, asyncio.CancelledError):
            with self.server._lock:
                response.disconnected = True
        except _Dropped:
            with self.server._lock:
                response.disconnected = True
            self.dropped = True
            self.record.failure = response.failure
            if self.request.transport is not None:
                self.request.transport.abort()
        finally:
            self.active.pop(response.id, None)
            with self.server._lock:
                if response.finished_at is None:
                    response.finished_at = time.monotonic()
                self.server._idle.notify_all()

    async def stream_audio(
        self,
        response: RealtimeResponse,
        part: dict[str, Any],
        failure: Failure | None,
        latency: LatencyProfile,
    ) -> None:
        """The audio of the spoken text in deltas of ``speech_chunk_bytes``, each word's
        transcript delta just before the delta where its audio begins (words placed in the
        audio in proportion to their characters)."""
        server = self.server
        spoken = response.spoken
        pcm = await server._speech_audio(spoken)
        response.bytes_total = len(pcm)
        samples = len(pcm) // 2
        words = [
            (piece, 2 * round(samples * (start + len(piece) - len(piece.lstrip())) / len(spoken)))
            for piece, start in word_pieces(spoken)
        ]
        abort_at = None
        if failure is not None and failure.kind in ("abort", "stall"):
            abort_at = failure.after_bytes if failure.after_bytes is not None else len(pcm) // 2
        await server._sleep_until(response.received_at + latency.realtime_first_byte_ms / 1000)
        if failure is not None and failure.kind == "timeout":
            await server._hang(failure.hang_s)
        size = max(1, int(server.speech_chunk_bytes))
        interval = latency.speech_chunk_interval_s(size)
        next_word = 0
        for start in range(0, len(pcm), size):
            chunk = pcm[start : start + size]
            while next_word < len(words) and words[next_word][1] < start + len(chunk):
                await self.send_transcript(response, part, words[next_word][0])
                next_word += 1
            if abort_at is not None and response.bytes_sent + len(chunk) > abort_at:
                head = abort_at - response.bytes_sent
                if head > 0:
                    await self.send_audio(response, part, chunk[:head])
                assert failure is not None
                if failure.kind == "stall":
                    await server._hang(failure.hang_s)
                raise _Dropped
            if start:
                # A sleep per delta, as on /audio/speech: after the first byte only the rate
                # matters, and a fake that fell behind would otherwise send a burst.
                await server._sleep(interval)
            await self.send_audio(response, part, chunk)
        for piece, _ in words[next_word:]:
            await self.send_transcript(response, part, piece)

    async def send_transcript(
        self, response: RealtimeResponse, part: dict[str, Any], delta: str
    ) -> None:
        await self.send({"type": "response.output_audio_transcript.delta", **part, "delta": delta})
        response.transcript_sent += delta

    async def send_audio(
        self, response: RealtimeResponse, part: dict[str, Any], data: bytes
    ) -> None:
        delta = base64.b64encode(data).decode("ascii")
        await self.send({"type": "response.output_audio.delta", **part, "delta": delta})
        now = time.monotonic()
        if response.first_byte_at is None:
            response.first_byte_at = now
        if self.record.first_byte_at is None:
            self.record.first_byte_at = now
        response.bytes_sent += len(data)
        self.record.bytes_sent += len(data)

    async def finish(
        self, response: RealtimeResponse, item_id: str, part: dict[str, Any], status: str
    ) -> None:
        """The closing events: the audio, transcript, part and item are done, then
        ``response.done`` with the usage of what was actually sent."""
        transcript = response.transcript_sent if status == "cancelled" else response.spoken
        item_status = "completed" if status == "completed" else "incomplete"
        await self.send({"type": "response.output_audio.done", **part})
        await self.send(
            {"type": "response.output_audio_transcript.done", **part, "transcript": transcript}
        )
        await self.send(
            {
                "type": "response.content_part.done",
                **part,
                "part": {"type": "audio", "transcript": transcript},
            }
        )
        item = self._item(item_id, item_status, transcript)
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        usage = self._usage(response, transcript)
        body = self._response_object(response, status)
        body["output"] = [item]
        body["usage"] = usage
        if status == "cancelled":
            body["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        await self.send({"type": "response.done", "response": body})
        with self.server._lock:
            response.usage = usage
            response.status = status
            response.finished_at = time.monotonic()

    @staticmethod
    def _usage(response: RealtimeResponse, transcript: str) -> dict[str, Any]:
        """The fake's rule (not OpenAI's): a text token per 4 characters of the instructions
        and the sentence in, and of the transcript out; an audio token per 50 ms of audio
        actually sent."""
        text_in = _text_tokens((response.instructions or "") + response.text)
        text_out = _text_tokens(transcript)
        audio_ms = response.bytes_sent / 2 / SPEECH_SAMPLE_RATE * 1000
        audio_out = math.ceil(audio_ms / AUDIO_TOKEN_MS)
        return {
            "total_tokens": text_in + text_out + audio_out,
            "input_tokens": text_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
