"""Speech over the Realtime API: each reply sentence read aloud by a Realtime voice model.

OpenAI's current voice models (``gpt-realtime-2.1-mini``) are served only by the Realtime API,
not by ``/audio/speech``. A turn opens one Realtime WebSocket, through the official SDK's
``client.realtime.connect()``, while the child's words are still being transcribed, so its
handshake is off the critical path. Each sentence is an *out-of-band* response
(``conversation: "none"``, its own ``input``): OpenAI keeps no conversation for us, and our
DynamoDB history stays the one record of what was said.

Failures are retried as the SDK retries its HTTP requests (``PROVIDER_MAX_RETRIES``): a refused
or failed handshake, and a sentence that failed or went quiet (``PROVIDER_TIMEOUT_S`` between
two events) before any of its audio came; a socket that dropped is opened again for the next
sentence. A sentence that has started to play is never retried: the child would hear it twice.

Several sentences may be in flight on the socket at once (the next is synthesized while the
current one is posted). One reader task routes the server's events to the sentence they belong
to: ``response.created`` carries back the metadata we set, and every later event carries its
``response_id``.

The voice model may reword what it reads. The stream reports the model's own transcript
(:class:`~.base.Spoken` pieces) next to the audio, so the turn can show what was said and stop
a sentence that strays from the moderated text (``kiddolingo.turn``).

Importing this module imports ``openai``; only :func:`.openai_compat.build_openai_providers`
does, when ``SPEECH_API=realtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from .base import DEFAULT_SPEECH_CHUNK_BYTES, Spoken, Usage
from .errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
)
from .realtime_wire import (
    READ_ALOUD_INSTRUCTIONS,
    SentenceItems,
    add_usage,
    error_of,
    response_request,
    session_request,
    speech_error,
)
from .sdk_client import StageClient, websocket_options

__all__ = ["READ_ALOUD_INSTRUCTIONS", "RealtimeSpeechSession", "RealtimeSpeechSynth"]

log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, and the frames carry the tutor's words (and through
# them the child's): never in the logs, whatever level a deployment sets (LOG_TRANSCRIPTS is
# the one switch for conversation text).
logging.getLogger("websockets").setLevel(logging.INFO)


class RealtimeSpeechSynth:
    """:class:`~.base.SpeechSynth` over the Realtime API (``SPEECH_API=realtime``)."""

    reports_transcript = True

    def __init__(
        self,
        client: StageClient,
        *,
        reasoning_effort: str = "minimal",
        max_chunk_bytes: int = DEFAULT_SPEECH_CHUNK_BYTES,
    ) -> None:
        if max_chunk_bytes < 2:
            raise ValueError("max_chunk_bytes must be at least 2")
        self._client = client
        self._effort = reasoning_effort
        self._max_chunk = max_chunk_bytes - max_chunk_bytes % 2

    @property
    def model(self) -> str:
        return self._client.model

    def open(self, *, voice: str, usage: Usage | None = None) -> RealtimeSpeechSession:
        return RealtimeSpeechSession(self._client, voice, usage, self._effort, self._max_chunk)

    async def stream(
        self, text: str, *, voice: str, usage: Usage | None = None
    ) -> AsyncGenerator[bytes | Spoken, None]:
        """One sentence on a connection of its own (outside a turn)."""
        session = self.open(voice=voice, usage=usage)
        try:
            async with contextlib.aclosing(session.stream(text)) as stream:
                async for item in stream:
                    yield item
        finally:
            await session.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


class RealtimeSpeechSession:
    """One turn's Realtime connection: opened at once in the background, closed by
    :meth:`aclose`, which also stops every sentence still being spoken."""

    reports_transcript = True

    def __init__(
        self,
        client: StageClient,
        voice: str,
        usage: Usage | None,
        reasoning_effort: str,
        max_chunk: int,
    ) -> None:
        self._client = client
        self._voice = voice
        self._usage = usage
        self._effort = reasoning_effort
        self._max_chunk = max_chunk
        self._keys = itertools.count(1)
        #: Our key (in the response's metadata) → the queue of its events.
        self._queues: dict[str, asyncio.Queue[Any]] = {}
        #: OpenAI's response id → our key, from ``response.created``.
        self._keys_by_id: dict[str, str] = {}
        #: Keys whose stream was closed before OpenAI named the response: cancel on creation.
        self._abandoned: set[str] = set()
        self._pending: set[asyncio.Future[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        #: Set by :meth:`aclose`: nothing is opened or sent any more.
        self._closed = False
        #: The socket of ``_connection`` is gone (it dropped): the next sentence reopens.
        self._dropped = False
        #: The last error event that named no sentence (the session's own).
        self._last_error: ProviderError | None = None
        self._connection = self._open()

    def _open(self) -> asyncio.Task[Any]:
        self._dropped = False
        task: asyncio.Task[Any] = asyncio.ensure_future(self._connect_with_retries())
        # Retrieved even if no sentence ever waits for it (a turn that ends before speaking).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _connection_now(self) -> Any:
        """The open socket, reopened if it dropped since."""
        if self._dropped and self._connection.done():
            self._connection = self._open()
        return await self._connection

    async def _connect_with_retries(self) -> Any:
        for attempt in range(self._client.max_retries + 1):
            try:
                return await self._connect()
            except ProviderError as exc:
                if not exc.retryable or attempt == self._client.max_retries:
                    raise
                log.info("Realtime handshake failed (%s), retrying", exc.kind)
                await asyncio.sleep(min(0.25 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    async def _connect(self) -> Any:
        try:
            client = self._client.get()
            manager = client.realtime.connect(
                model=self._client.model,
                websocket_connection_options=cast(Any, websocket_options(client)),
            )
            conn = await manager.enter()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise speech_error(exc) from exc
        try:
            await conn.session.update(session=session_request(self._voice))
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                await conn.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise speech_error(exc) from exc
        self._reader = asyncio.create_task(self._read(conn))
        return conn

    async def _read(self, conn: Any) -> None:
        """Route every server event to the sentence it belongs to, until the socket closes."""
        failure: ProviderError
        try:
            async for event in conn:
                self._route(conn, event)
            # A socket the server closes after an error (a refused key) fails with that error.
            failure = self._last_error or ProviderConnectionError(
                "speech", message="the Realtime socket closed"
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            failure = speech_error(exc)
        self._dropped = True
        for queue in self._queues.values():
            queue.put_nowait(failure)

    def _route(self, conn: Any, event: Any) -> None:
        etype = getattr(event, "type", "")
        if etype == "response.created":
            response = event.response
            key = str((response.metadata or {}).get("sentence", ""))
            self._keys_by_id[response.id] = key
            if key in self._abandoned:
                self._abandoned.discard(key)
                task = asyncio.ensure_future(self._cancel(conn, response.id))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            return
        if etype == "error":
            if getattr(event.error, "code", None) == "response_cancel_not_active":
                return  # we cancelled a response that had just finished: nothing to stop
            error = error_of(event)
            key = str(getattr(event.error, "event_id", "") or "").removeprefix("create-")
            targets = [self._queues[key]] if key in self._queues else list(self._queues.values())
            if key not in self._queues:
                self._last_error = error
            log.warning("Realtime speech error: %s", error)
            for queue in targets:
                queue.put_nowait(error)
            return
        response_id = getattr(event, "response_id", None)
        if response_id is None and etype == "response.done":
            response_id = event.response.id
        target = self._queues.get(self._keys_by_id.get(response_id or "", ""))
        if target is not None:
            target.put_nowait(event)

    @staticmethod
    async def _cancel(conn: Any, response_id: str) -> None:
        with contextlib.suppress(Exception):
            await conn.response.cancel(response_id=response_id)

    async def stream(self, text: str) -> AsyncGenerator[bytes | Spoken, None]:
        if not text.strip():
            return
        for attempt in range(self._client.max_retries + 1):
            started = False
            try:
                async with contextlib.aclosing(self._respond(text)) as items:
                    async for item in items:
                        started = True
                        yield item
                return
            except ProviderError as exc:
                if started or not exc.retryable or attempt == self._client.max_retries:
                    raise
                log.info("speech response failed before its audio (%s), retrying", exc.kind)

    async def _respond(self, text: str) -> AsyncGenerator[bytes | Spoken, None]:
        """One out-of-band response for ``text``."""
        if self._closed:
            raise ProviderConnectionError("speech", message="the speech session is closed")
        conn = await self._connection_now()
        key = str(next(self._keys))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[key] = queue
        finished = False
        sentence = SentenceItems(self._max_chunk)
        try:
            try:
                await conn.response.create(
                    event_id=f"create-{key}",
                    response=response_request(text, key, self._voice, self._effort),
                )
            except Exception as exc:
                raise speech_error(exc) from exc
            while True:
                event = await self._next_event(queue)
                etype = event.type
                if etype == "response.output_audio.delta":
                    for item in sentence.audio(event.delta):
                        yield item
                elif etype == "response.output_audio_transcript.delta":
                    for item in sentence.transcript(event.delta):
                        yield item
                elif etype == "response.done":
                    finished = True
                    for spoken in sentence.held():
                        yield spoken
                    self._done(event.response)
                    return
        finally:
            self._queues.pop(key, None)
            if not finished and not self._closed and not self._dropped:
                # Stopped early (barge-in, a reworded sentence, an error): stop paying for it.
                await self._abandon(conn, key)

    async def _next_event(self, queue: asyncio.Queue[Any]) -> Any:
        """The sentence's next event; raises what failed it, or a timeout if it went quiet."""
        try:
            event = await asyncio.wait_for(queue.get(), self._client.timeout_s)
        except TimeoutError:
            raise ProviderTimeoutError("speech", message="the voice model went quiet") from None
        if isinstance(event, BaseException):
            raise event
        return event

    def _done(self, response: Any) -> None:
        """Account a finished response; raises if it failed."""
        reported = getattr(response, "usage", None)
        if self._usage is not None and reported is not None:
            add_usage(self._usage, self._client.model, reported)
        status = response.status
        if status == "failed":
            error = getattr(response.status_details, "error", None)
            raise ProviderServerError(
                "speech", message=str(getattr(error, "message", "") or "failed")
            )
        if status == "incomplete":
            log.info("speech response incomplete: %s", response.status_details)

    async def _abandon(self, conn: Any, key: str) -> None:
        """Cancel the response of ``key``, or mark it to be cancelled once OpenAI names it."""
        response_id = next((r for r, k in self._keys_by_id.items() if k == key), None)
        if response_id is None:
            self._abandoned.add(key)
        else:
            await self._cancel(conn, response_id)

    async def aclose(self) -> None:
        """Close the socket: OpenAI stops every response still in flight on it."""
        self._closed = True
        if not self._connection.done():
            self._connection.cancel()
            with contextlib.suppress(BaseException):
                await self._connection
            return
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._connection.cancelled() or self._connection.exception() is not None:
            return
        with contextlib.suppress(Exception):
            await self._connection.result().close()
