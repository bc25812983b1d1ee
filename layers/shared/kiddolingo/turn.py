"""One tutor turn: the child's audio → transcript → chat (streamed) → speech (streamed) → posts.

The turn is written against small ports (Pipecat style): a ``Transcriber``, a ``ChatModel``, a
``SpeechSynth``, a ``Moderator`` (``kiddolingo.providers``), a ``Messenger`` and a
``ResponseControl`` that answers "may this response still post?". Nothing here builds an AWS or
OpenAI client, so the tests drive it with real providers against the fake server and real
stores under moto, or with anything else that fits.

Latency: sentences are cut as tokens arrive; speech for a sentence starts the moment it is
complete, and the next sentence is synthesized while the current one is posted. Barge-in: the
control is asked before every sentence and every posted batch; on cancel the chat and speech
streams are closed, so a cancelled reply stops costing money.

What the child hears is what was moderated: a voice model that reports what it said
(``SpeechSession.reports_transcript``, the Realtime API) is checked as it speaks
(:class:`~kiddolingo.speech_text.SpokenCheck`); a sentence that strays from its text stops being
posted at once, is counted (``outcome.strayed``), and the reply goes on with the next sentence.
The transcript the model reports is also what the child sees and what the history keeps, so the
text on screen is the text spoken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .audio import bytes_to_ms
from .conversation import Segment, apology, join_segments, safe_redirect
from .messenger import ConnectionGoneError
from .protocol import server_event
from .providers.base import SPEECH_SAMPLE_RATE, Spoken, Usage
from .providers.errors import ProviderError
from .speech_text import SentenceSplitter, SpokenCheck, emojis_of, strip_for_speech

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


class ResponseControl(Protocol):
    async def state(self) -> str:
        """``active``, ``cancelled`` or ``gone``."""
        ...


class Poster(Protocol):
    async def post(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (in order); may raise the failure of an earlier post."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued is posted; raises a failed post's error."""
        ...


@dataclass
class TurnTimings:
    started: float = field(default_factory=time.monotonic)
    transcription_ms: float | None = None
    chat_first_token_ms: float | None = None
    speech_first_byte_ms: float | None = None
    first_audio_ms: float | None = None
    #: Monotonic time of the child's last speech sample (voice-to-voice in the metrics).
    speech_end_at: float | None = None


@dataclass
class TurnOutcome:
    response_id: str
    item_id: str
    status: str  # completed | cancelled | failed
    reason: str | None = None
    user_text: str | None = None
    user_flagged: bool = False
    segments: list[Segment] = field(default_factory=list)
    timings: TurnTimings = field(default_factory=TurnTimings)
    error: ProviderError | None = None
    #: Sentences the voice model strayed from (reworded past the tolerance): cut short.
    strayed: int = 0
    #: What the providers billed for this turn.
    usage: Usage = field(default_factory=Usage)

    @property
    def text(self) -> str:
        return join_segments([s.text for s in self.segments])


class Cancelled(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TurnRequest:
    response_id: str
    item_id: str
    messages_for: Callable[[str | None], list[dict[str, str]]]
    voice: str
    target_language: str
    temperature: float
    max_tokens: int
    moderation: bool = True
    #: ``conversation.item.input_audio_transcription.completed`` of the child's words, posted
    #: first, once the words passed moderation (a placeholder in their place if they did not).
    user_event: dict[str, Any] | None = None


#: What the child sees of their own words when moderation flagged them (or could not check
#: them): never the words themselves.
FLAGGED_PLACEHOLDER = "…"


class _AfterOpening:
    """The turn's poster, holding every post until the events that open the response
    (the child's moderated words, ``response.created``) have gone first."""

    def __init__(self, poster: Poster, opening: asyncio.Future[None]) -> None:
        self.poster = poster
        self.opening = opening

    async def post(self, event: dict[str, Any]) -> None:
        await asyncio.shield(self.opening)
        await self.poster.post(event)

    async def flush(self) -> None:
        if self.opening.done():
            await self.poster.flush()


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
                    self._timings.speech_first_byte_ms = _ms_since(self._timings.started)
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


def _ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


class TurnRunner:
    def __init__(
        self,
        *,
        chat: Any,
        speech: Any,
        moderator: Any | None,
        poster: Poster,
        control: ResponseControl,
        on_segment: Callable[[Segment], Awaitable[None]] | None = None,
        deadline_s: float = 20.0,
    ) -> None:
        self.chat = chat
        self.speech = speech
        self.moderator = moderator
        self.poster = poster
        self.control = control
        self.on_segment = on_segment
        self.deadline_s = deadline_s

    # -- events ------------------------------------------------------------------------

    def _response(
        self,
        req: TurnRequest,
        status: str,
        outcome: TurnOutcome | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        output = []
        if outcome is not None:
            output = [
                {
                    "id": req.item_id,
                    "type": "message",
                    "object": "realtime.item",
                    "role": "assistant",
                    "status": "completed" if status == "completed" else "incomplete",
                    "content": [{"type": "output_audio", "transcript": outcome.text}],
                }
            ]
        resp: dict[str, Any] = {
            "object": "realtime.response",
            "id": req.response_id,
            "status": status,
            "output": output,
            "output_modalities": ["audio"],
            "audio": {
                "output": {
                    "format": {"type": "audio/pcm", "rate": SPEECH_SAMPLE_RATE},
                    "voice": req.voice,
                }
            },
        }
        if details is not None:
            resp["status_details"] = details
        return resp

    def _part(self, req: TurnRequest, etype: str, **fields: Any) -> dict[str, Any]:
        return server_event(
            etype,
            response_id=req.response_id,
            item_id=req.item_id,
            output_index=0,
            content_index=0,
            **fields,
        )

    async def _check(self) -> None:
        state = await self.control.state()
        if state == "cancelled":
            raise Cancelled("turn_detected")
        if state == "gone":
            raise Cancelled("connection_gone")

    # -- the turn ----------------------------------------------------------------------

    async def respond(self, req: TurnRequest, user_text: str | None) -> TurnOutcome:
        """Stream a reply to ``user_text`` (``None``: reply to the history as it stands)."""
        outcome = TurnOutcome(req.response_id, req.item_id, "in_progress", user_text=user_text)
        verdict: asyncio.Task[Any] | None = None
        if req.moderation and self.moderator is not None and user_text:
            # Runs alongside the chat request; the child's words are shown, and the reply
            # posted, only once it has passed them.
            verdict = asyncio.create_task(self.moderator.check(user_text))
        poster = self.poster
        opening = asyncio.ensure_future(self._open(req, verdict, poster))
        self.poster = _AfterOpening(poster, opening)
        try:
            try:
                await asyncio.wait_for(
                    self._stream(req, user_text, outcome, verdict), self.deadline_s
                )
                outcome.status = "completed"
            except Cancelled as exc:
                outcome.status, outcome.reason = "cancelled", exc.reason
            except (ProviderError, TimeoutError) as exc:
                perr = (
                    exc
                    if isinstance(exc, ProviderError)
                    else ProviderError(
                        "turn",
                        "timeout",
                        retryable=False,
                        status=None,
                        message="turn deadline exceeded",
                    )
                )
                outcome.status, outcome.error = "failed", perr
                log.warning("turn failed", extra={"stage": perr.stage, "kind": perr.kind})
                await self._apologize(req, outcome)
            await self._finish(req, outcome)
        except ConnectionGoneError:
            # 410: the child's connection is gone. Stop; the caller keeps what was heard and
            # cleans up that connection (reason ``connection_gone``).
            outcome.status, outcome.reason = "cancelled", "connection_gone"
        finally:
            self.poster = poster
            if not opening.done():
                opening.cancel()
            if verdict is not None and not verdict.done():
                verdict.cancel()
        return outcome

    async def _open(
        self, req: TurnRequest, verdict: asyncio.Task[Any] | None, poster: Poster
    ) -> None:
        """Post the child's words (as moderation allows) and ``response.created``."""
        if req.user_event is not None:
            event = req.user_event
            if verdict is not None:
                try:
                    flagged = (await asyncio.shield(verdict)).flagged
                except Exception:  # moderation is down: the reply fails, the words stay unseen
                    flagged = True
                if flagged:
                    event = {**event, "transcript": FLAGGED_PLACEHOLDER}
            await poster.post(event)
        await poster.post(
            server_event("response.created", response=self._response(req, "in_progress"))
        )

    async def fail(self, req: TurnRequest, error: ProviderError) -> TurnOutcome:
        """A turn that failed before there was anything to answer (transcription): the child
        hears the apology and ``response.done`` says ``failed``."""
        outcome = TurnOutcome(req.response_id, req.item_id, "failed", error=error)
        try:
            await self.poster.post(
                server_event("response.created", response=self._response(req, "in_progress"))
            )
            await self._apologize(req, outcome)
            await self._finish(req, outcome)
        except ConnectionGoneError:
            outcome.status, outcome.reason = "cancelled", "connection_gone"
        return outcome

    async def _finish(self, req: TurnRequest, outcome: TurnOutcome) -> None:
        if outcome.reason == "connection_gone":
            return
        await self.poster.post(self._part(req, "response.output_audio.done"))
        await self.poster.post(
            self._part(req, "response.output_audio_transcript.done", transcript=outcome.text)
        )
        details: dict[str, Any] | None = None
        if outcome.status == "cancelled":
            details = {"type": "cancelled", "reason": outcome.reason or "client_cancelled"}
        elif outcome.status == "failed" and outcome.error is not None:
            details = {
                "type": "failed",
                "error": {
                    "type": outcome.error.kind,
                    "code": f"{outcome.error.stage}_failed",
                    "message": "The tutor could not answer.",
                },
            }
        elif outcome.user_flagged or outcome.reason == "content_filter":
            # As the Realtime API ends a response its content filter stopped.
            details = {"type": "incomplete", "reason": "content_filter"}
        status = "incomplete" if details and details["type"] == "incomplete" else outcome.status
        await self.poster.post(
            server_event("response.done", response=self._response(req, status, outcome, details))
        )
        await self.poster.flush()

    async def _apologize(self, req: TurnRequest, outcome: TurnOutcome) -> None:
        """A short, friendly apology the child hears when a provider fails for good."""
        text = apology(req.target_language)
        try:
            with contextlib.suppress(Cancelled):
                await asyncio.wait_for(self._speak_sentences(req, [text], outcome), 8.0)
        except (ProviderError, TimeoutError):
            # Speech itself is down: the words still reach the screen.
            await self.poster.post(
                self._part(req, "response.output_audio_transcript.delta", delta=text)
            )
            outcome.segments.append(Segment(text, 0))

    async def _speak_sentences(
        self, req: TurnRequest, sentences: list[str], outcome: TurnOutcome
    ) -> None:
        async def gen() -> AsyncGenerator[str, None]:
            for s in sentences:
                yield s

        # Only our own fixed texts come this way (apology, redirect): no moderation round trip.
        await self._speak(req, gen(), outcome, moderate=False)

    async def _stream(
        self,
        req: TurnRequest,
        user_text: str | None,
        outcome: TurnOutcome,
        verdict_task: asyncio.Task[Any] | None,
    ) -> None:
        t = outcome.timings
        messages = req.messages_for(user_text)

        splitter = SentenceSplitter()

        async def sentences() -> AsyncGenerator[str, None]:
            stream = self.chat.stream(
                messages,
                temperature=req.temperature,
                max_tokens=req.max_tokens,
                usage=outcome.usage,
            )
            try:
                async for delta in stream:
                    if t.chat_first_token_ms is None:
                        t.chat_first_token_ms = _ms_since(t.started)
                    for sentence in splitter.feed(delta):
                        yield sentence
                for sentence in splitter.flush():
                    yield sentence
            finally:
                await stream.aclose()

        async def gate() -> bool:
            """Hold the first post until the child's words passed moderation."""
            if verdict_task is None:
                return True
            verdict = await verdict_task
            return not verdict.flagged

        ok = await self._speak(req, sentences(), outcome, gate=gate)
        if not ok:
            await self._redirect(req, outcome)
        elif outcome.reason == "content_filter":
            # A reply sentence was flagged: it and the rest are never spoken; the child hears
            # the gentle redirect after what was already said.
            await self._speak_sentences(req, [safe_redirect(req.target_language)], outcome)

    async def _redirect(self, req: TurnRequest, outcome: TurnOutcome) -> None:
        """The child said something unsafe: a gentle redirect, never the flagged content."""
        outcome.user_flagged = True
        outcome.segments.clear()
        await self._speak_sentences(req, [safe_redirect(req.target_language)], outcome)

    async def _speak(
        self,
        req: TurnRequest,
        sentences: AsyncGenerator[str, None],
        outcome: TurnOutcome,
        gate: Callable[[], Awaitable[bool]] | None = None,
        moderate: bool = True,
    ) -> bool:
        """Synthesize and post sentence by sentence, one sentence ahead. False: gate refused.

        ``moderate=False`` for our own fixed texts (the apology, the redirect): they must reach
        the child even while the moderation endpoint is down."""
        t = outcome.timings
        jobs: asyncio.Queue[SpeechJob | None] = asyncio.Queue(maxsize=1)
        producer_error: list[BaseException] = []
        live: list[SpeechJob] = []

        async def produce() -> None:
            try:
                async with contextlib.aclosing(sentences):
                    async for sentence in sentences:
                        if not sentence.strip():
                            continue
                        if not live and gate is not None and not await gate():
                            break  # the child's words were flagged: this reply is never voiced
                        job = SpeechJob(self.speech, sentence, t)
                        if (
                            moderate
                            and req.moderation
                            and self.moderator is not None
                            and strip_for_speech(sentence).strip()
                        ):
                            # Checked while its speech is synthesized (no added latency); the
                            # sentence is posted only once the verdict says it is safe.
                            job.verdict = asyncio.create_task(self.moderator.check(sentence))
                        live.append(job)
                        await jobs.put(job)  # blocks while one sentence is already waiting
            except asyncio.CancelledError:
                # The poster stopped (cancel, 410, a failure): nobody waits for the end marker,
                # and putting it into a full queue would hang here until the turn deadline.
                raise
            except BaseException as exc:
                producer_error.append(exc)
            await jobs.put(None)

        producer = asyncio.create_task(produce())
        gated = gate is None
        try:
            while True:
                job = await jobs.get()
                if not gated:
                    # Even a reply with nothing to speak (its first sentence flagged, or an
                    # error) waits for the verdict on the child's words.
                    assert gate is not None
                    if not await gate():
                        return False
                    gated = True
                if job is None:
                    break
                if job.verdict is not None and (await job.verdict).flagged:
                    # A flagged reply is never spoken: stop here.
                    outcome.reason = "content_filter"
                    break
                await self._check()
                await self._post_sentence(req, job, outcome)
            if producer_error:
                raise producer_error[0]
            return True
        finally:
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer
            for job in live:
                await job.cancel()

    async def _post_sentence(self, req: TurnRequest, job: SpeechJob, outcome: TurnOutcome) -> None:
        t = outcome.timings
        lead = " " if outcome.segments else ""
        #: The text posted for this sentence: the sentence itself, or (when the voice model
        #: reports what it said) its transcript, piece by piece as it arrives.
        shown: list[str] = []

        async def show(text: str) -> None:
            nonlocal lead
            shown.append(text)
            await self.poster.post(
                self._part(req, "response.output_audio_transcript.delta", delta=lead + text)
            )
            lead = ""

        if job.check is None:
            await show(job.text)
        posted = 0
        finished = strayed = False
        # The first audio goes out on the check ``_speak`` made just before this sentence,
        # while its audio was being synthesized (a second look started now would see the same
        # state, for one more read per sentence); every later batch is checked again.
        checked = True
        try:
            while not finished and not strayed:
                batch = bytearray()
                # The first delta goes out with whatever audio exists (latency first); later
                # ones gather at least MIN_DELTA_PCM so a reply costs few posts and checks.
                want = 1 if posted == 0 else MIN_DELTA_PCM
                while len(batch) < want or (not job.queue.empty() and len(batch) < MAX_DELTA_PCM):
                    item = await job.queue.get()
                    if isinstance(item, BaseException):
                        raise item
                    if item is None:
                        finished = True
                        break
                    if item is STRAYED:
                        strayed = True
                        break
                    if isinstance(item, Spoken):
                        # Shown as soon as it is known: the page places each word on the
                        # audio that follows, so the text never runs ahead by more than the
                        # batch being gathered.
                        await show(item.text)
                        continue
                    assert isinstance(item, bytes)
                    batch += item
                for i in range(0, len(batch), POST_DELTA_PCM):
                    piece = bytes(batch[i : i + POST_DELTA_PCM])
                    if not checked:
                        await self._check()
                    checked = False
                    await self.poster.post(
                        self._part(
                            req,
                            "response.output_audio.delta",
                            delta=base64.b64encode(piece).decode("ascii"),
                        )
                    )
                    if t.first_audio_ms is None:
                        t.first_audio_ms = _ms_since(t.started)
                    posted += len(piece)
            emojis = emojis_of(job.text) if finished and job.check is not None else []
            if emojis:
                # Never spoken, so never in the voice model's transcript: the screen still
                # gets them, at the end of their sentence.
                await show(" " + " ".join(emojis))
        finally:
            if strayed or job.incomplete:
                outcome.strayed += 1
                log.warning(
                    "the voice model strayed from a sentence",
                    extra={"stage": "speech", "cut": strayed},
                )
            ms = round(bytes_to_ms(posted, SPEECH_SAMPLE_RATE))
            text = "".join(shown).strip()
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
                outcome.segments.append(seg)
                if self.on_segment is not None:
                    await self.on_segment(seg)
