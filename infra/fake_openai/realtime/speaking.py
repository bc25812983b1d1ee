"""One Realtime response spoken on its socket: the events from ``response.created`` to
``response.done``, the audio in paced deltas with each word's transcript just before it, and
the injected faults that strike a response (a late first byte, a dropped or stalled socket)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any

from infra.fake_openai.faults import abort_point
from infra.fake_openai.realtime.response import (
    RealtimeResponse,
    item_object,
    new_id,
    response_object,
    response_usage,
)
from infra.fake_openai.voices import word_pieces

if TYPE_CHECKING:
    from infra.fake_openai.faults import Failure
    from infra.fake_openai.profile import LatencyProfile
    from infra.fake_openai.realtime.socket import RealtimeSocket

__all__ = ["Dropped", "SocketGone", "Speaker"]


class SocketGone(Exception):
    """The client went away while a response was being sent."""


class Dropped(Exception):
    """A response dropped the socket on purpose (an injected fault)."""


class Speaker:
    """Speaks one response on ``socket``; :meth:`run` is the response's task, which a
    ``response.cancel`` or the socket's closing cancels."""

    def __init__(
        self,
        socket: RealtimeSocket,
        response: RealtimeResponse,
        failure: Failure | None,
        latency: LatencyProfile,
    ) -> None:
        self.socket = socket
        self.server = socket.server
        self.response = response
        self.failure = failure
        self.latency = latency
        self.item_id = new_id("item")
        where = {"response_id": response.id, "item_id": self.item_id, "output_index": 0}
        #: Where each audio and transcript event belongs.
        self.part = {**where, "content_index": 0}

    async def run(self) -> None:
        """Speak the response to its end, its cancel or its socket's end, and record how."""
        response = self.response
        try:
            status = await self._speak()
            await self.finish(status)
        except (SocketGone, asyncio.CancelledError):
            with self.server._lock:
                response.disconnected = True
        except Dropped:
            with self.server._lock:
                response.disconnected = True
            self.socket.drop(response.failure)
        finally:
            self.socket.active.pop(response.id, None)
            with self.server._lock:
                if response.finished_at is None:
                    response.finished_at = time.monotonic()
                self.server._idle.notify_all()

    async def _speak(self) -> str:
        """The opening events and the audio; ``completed``, or ``cancelled`` when the client
        cancelled midway (a cancel because the socket is closing propagates)."""
        response = self.response
        try:
            await self._open()
            await self.stream_audio()
        except asyncio.CancelledError:
            if response.cancel_requested_at is None:
                raise  # the socket is closing
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return "cancelled"
        # All sent: from here a cancel finds no active response, as on the real API.
        self.socket.active.pop(response.id, None)
        return "completed"

    async def _open(self) -> None:
        response = self.response
        await self.send(
            {"type": "response.created", "response": response_object(response, "in_progress")}
        )
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": item_object(self.item_id, "in_progress", None),
            }
        )
        await self.send(
            {
                "type": "response.content_part.added",
                **self.part,
                "part": {"type": "audio", "transcript": ""},
            }
        )

    async def stream_audio(self) -> None:
        """The audio of the spoken text in deltas of ``speech_chunk_bytes``, each word's
        transcript delta just before the delta where its audio begins (words placed in the
        audio in proportion to their characters)."""
        server, response, failure, latency = self.server, self.response, self.failure, self.latency
        pcm = await server._speech_audio(response.spoken)
        response.bytes_total = len(pcm)
        words = self._word_offsets(response.spoken, len(pcm) // 2)
        abort_at = abort_point(failure, len(pcm))
        await server._sleep_until(response.received_at + latency.realtime_first_byte_ms / 1000)
        if failure is not None and failure.kind == "timeout":
            await server._hang(failure.hang_s)
        size = max(1, int(server.speech_chunk_bytes))
        interval = latency.speech_chunk_interval_s(size)
        next_word = 0
        for start in range(0, len(pcm), size):
            chunk = pcm[start : start + size]
            while next_word < len(words) and words[next_word][1] < start + len(chunk):
                await self.send_transcript(words[next_word][0])
                next_word += 1
            if abort_at is not None and response.bytes_sent + len(chunk) > abort_at:
                await self._cut(chunk, abort_at)
            if start:
                # A sleep per delta, as on /audio/speech: after the first byte only the rate
                # matters, and a fake that fell behind would otherwise send a burst.
                await server._sleep(interval)
            await self.send_audio(chunk)
        for piece, _ in words[next_word:]:
            await self.send_transcript(piece)

    @staticmethod
    def _word_offsets(spoken: str, samples: int) -> list[tuple[str, int]]:
        """Each word piece of ``spoken`` and the byte of the audio where it begins."""
        return [
            (piece, 2 * round(samples * (start + len(piece) - len(piece.lstrip())) / len(spoken)))
            for piece, start in word_pieces(spoken)
        ]

    async def _cut(self, chunk: bytes, abort_at: int) -> None:
        """Send the audio up to ``abort_at``, then drop the socket (a stall hangs first)."""
        head = abort_at - self.response.bytes_sent
        if head > 0:
            await self.send_audio(chunk[:head])
        failure = self.failure
        assert failure is not None
        if failure.kind == "stall":
            await self.server._hang(failure.hang_s)
        raise Dropped

    async def send(self, event: dict[str, Any]) -> None:
        await self.socket.send(event)

    async def send_transcript(self, delta: str) -> None:
        await self.send(
            {"type": "response.output_audio_transcript.delta", **self.part, "delta": delta}
        )
        self.response.transcript_sent += delta

    async def send_audio(self, data: bytes) -> None:
        response, record = self.response, self.socket.record
        delta = base64.b64encode(data).decode("ascii")
        await self.send({"type": "response.output_audio.delta", **self.part, "delta": delta})
        now = time.monotonic()
        if response.first_byte_at is None:
            response.first_byte_at = now
        if record.first_byte_at is None:
            record.first_byte_at = now
        response.bytes_sent += len(data)
        record.bytes_sent += len(data)

    async def finish(self, status: str) -> None:
        """The closing events: the audio, transcript, part and item are done, then
        ``response.done`` with the usage of what was actually sent."""
        response, part = self.response, self.part
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
        item = item_object(self.item_id, item_status, transcript)
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        await self._done(status, item, transcript)

    async def _done(self, status: str, item: dict[str, Any], transcript: str) -> None:
        response = self.response
        usage = response_usage(response, transcript)
        body = response_object(response, status)
        body["output"] = [item]
        body["usage"] = usage
        if status == "cancelled":
            body["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        await self.send({"type": "response.done", "response": body})
        with self.server._lock:
            response.usage = usage
            response.status = status
            response.finished_at = time.monotonic()
