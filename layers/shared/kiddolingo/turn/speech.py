"""One sentence of the reply, from its speech to the posts the child hears.

A :class:`SpeechJob` synthesizes a sentence into a queue from the moment it is created (the next
sentence is synthesized while the current one is posted); a :class:`SentencePost` posts that
queue as transcript and audio deltas and keeps the segment of it the child heard.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..audio import bytes_to_ms
from ..conversation import Segment
from ..providers.base import SPEECH_SAMPLE_RATE, Spoken
from ..speech_text import SpokenCheck, emojis_of, strip_for_speech
from .events import part_event
from .outcome import TurnOutcome, TurnRequest, TurnTimings, ms_since

if TYPE_CHECKING:
    from .runner import TurnRunner

log = logging.getLogger(__name__)

#: PCM bytes a delta gathers from the audio already there: 16 KB (~333 ms). The item that
#: crosses it still goes along (a batch is cut only past POST_DELTA_PCM).
MAX_DELTA_PCM = 16 * 1024
#: The most PCM one posted delta carries: 500 ms → 32,000 characters of base64, so the message
#: stays one 32 KB unit (what API Gateway bills per message, and its frame limit). Cutting a
#: batch at 16 KB instead left a ~3 KB piece for a message of its own behind most batches.
POST_DELTA_PCM = 24_000
#: After the first delta, deltas carry at least 200 ms of audio (speech arrives faster than
#: real time, so the child's player never starves while we gather it).
MIN_DELTA_PCM = 9600
#: Used only to place a cut inside a sentence that was cancelled before it was fully posted.
EST_MS_PER_CHAR = 65


class Strayed:
    """Queued in place of the rest of a sentence the voice model strayed from."""


STRAYED = Strayed()


class SpeechJob:
    """Speech for one sentence, streaming into a queue from the moment it is created.

    The queue holds audio (``bytes``), transcript pieces (:class:`Spoken`, when the session
    reports them), then ``None`` at the end, ``STRAYED`` if the speech strayed from the text,
    or the exception that ended it."""

    def __init__(self, speech: Any, text: str, timings: TurnTimings) -> None:
        self.text = text
        self.spoken = strip_for_speech(text)
        self.queue: asyncio.Queue[bytes | Spoken | Strayed | BaseException | None] = asyncio.Queue()
        #: The moderation verdict on the sentence, when it is being checked.
        self.verdict: asyncio.Task[Any] | None = None
        #: The transcript reported so far, when the session reports one.
        self.check = SpokenCheck(self.spoken) if speech.reports_transcript else None
        #: True when the reading left out too much of the text (it was all posted by then).
        self.incomplete = False
        self._speech = speech
        self._timings = timings
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        if not self.spoken.strip():
            await self.queue.put(None)
            return
        stream = self._speech.stream(self.spoken)
        try:
            async for item in stream:
                if isinstance(item, Spoken):
                    if self.check is not None and not self.check.feed(item.text):
                        # Nothing more of this sentence reaches the child (closing the stream
                        # cancels the response).
                        await self.queue.put(STRAYED)
                        return
                elif self._timings.speech_first_byte_ms is None:
                    self._timings.speech_first_byte_ms = ms_since(self._timings.started)
                await self.queue.put(item)
            if self.check is not None and not self.check.finish():
                self.incomplete = True
            await self.queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced to the poster in order
            await self.queue.put(exc)
        finally:
            with contextlib.suppress(BaseException):
                await stream.aclose()

    async def cancel(self) -> None:
        if self.verdict is not None and not self.verdict.done():
            self.verdict.cancel()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


class SentencePost:
    """Posts one :class:`SpeechJob` as deltas, then keeps the segment of it that was heard.

    The text posted for the sentence is the sentence itself or (when the voice model reports
    what it said) its transcript, piece by piece as it arrives."""

    def __init__(
        self, runner: TurnRunner, req: TurnRequest, job: SpeechJob, outcome: TurnOutcome
    ) -> None:
        self.runner = runner
        self.req = req
        self.job = job
        self.outcome = outcome
        self.lead = " " if outcome.segments else ""
        self.shown: list[str] = []
        self.posted = 0
        self.finished = False
        self.strayed = False
        # The first audio goes out on the check the runner made just before this sentence,
        # while its audio was being synthesized (a second look started now would see the same
        # state, for one more read per sentence); every later batch is checked again.
        self.checked = True

    async def show(self, text: str) -> None:
        self.shown.append(text)
        await self.runner.poster.post(
            part_event(self.req, "response.output_audio_transcript.delta", delta=self.lead + text)
        )
        self.lead = ""

    async def run(self) -> None:
        job = self.job
        if job.check is None:
            await self.show(job.text)
        try:
            while not self.finished and not self.strayed:
                await self._post(await self._gather())
            emojis = emojis_of(job.text) if self.finished and job.check is not None else []
            if emojis:
                # Never spoken, so never in the voice model's transcript: the screen still
                # gets them, at the end of their sentence.
                await self.show(" " + " ".join(emojis))
        finally:
            await self._keep()

    async def _gather(self) -> bytearray:
        """The audio of the next delta(s); shows transcript pieces as they come."""
        queue = self.job.queue
        batch = bytearray()
        # The first delta goes out with whatever audio exists (latency first); later
        # ones gather at least MIN_DELTA_PCM so a reply costs few posts and checks.
        want = 1 if self.posted == 0 else MIN_DELTA_PCM
        while len(batch) < want or (not queue.empty() and len(batch) < MAX_DELTA_PCM):
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                self.finished = True
                break
            if item is STRAYED:
                self.strayed = True
                break
            if isinstance(item, Spoken):
                # Shown as soon as it is known: the page places each word on the
                # audio that follows, so the text never runs ahead by more than the
                # batch being gathered.
                await self.show(item.text)
                continue
            assert isinstance(item, bytes)
            batch += item
        return batch

    async def _post(self, batch: bytearray) -> None:
        t = self.outcome.timings
        for i in range(0, len(batch), POST_DELTA_PCM):
            piece = bytes(batch[i : i + POST_DELTA_PCM])
            if not self.checked:
                await self.runner.check()
            self.checked = False
            await self.runner.poster.post(
                part_event(
                    self.req,
                    "response.output_audio.delta",
                    delta=base64.b64encode(piece).decode("ascii"),
                )
            )
            if t.first_audio_ms is None:
                t.first_audio_ms = ms_since(t.started)
            self.posted += len(piece)

    async def _keep(self) -> None:
        """The segment the child heard of this sentence, into the outcome (and stored)."""
        job, posted, finished, strayed = self.job, self.posted, self.finished, self.strayed
        if strayed or job.incomplete:
            self.outcome.strayed += 1
            log.warning(
                "the voice model strayed from a sentence",
                extra={"stage": "speech", "cut": strayed},
            )
        ms = round(bytes_to_ms(posted, SPEECH_SAMPLE_RATE))
        text = "".join(self.shown).strip()
        if posted or finished or strayed:
            if finished or strayed:
                # All of it was heard, or all that was posted (a strayed sentence stops
                # where its transcript left the text).
                seg = Segment(text, ms)
            else:
                # Cut mid-sentence: keep the words in proportion to an estimate of the
                # sentence's full length, so truncation stays proportional.
                full = max(ms, len(job.spoken) * EST_MS_PER_CHAR)
                keep = int(len(job.text.split()) * ms / full) if full else 0
                words = text.split()[:keep]
                seg = Segment(" ".join(words) + "…", ms) if words else Segment("", ms)
            # Kept even when no whole word was heard: the item exists for a truncate.
            self.outcome.segments.append(seg)
            if self.runner.on_segment is not None:
                await self.runner.on_segment(seg)
