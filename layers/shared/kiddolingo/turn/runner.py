"""The turn's reply: the chat streamed into sentences, each spoken and posted in order, under
the moderation and the barge-in checks (:class:`TurnRunner`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..conversation import Segment, apology, safe_redirect
from ..protocol import server_event
from ..providers.errors import ProviderError
from ..speech_text import SentenceSplitter, strip_for_speech
from .events import done_details, part_event, response_object
from .outcome import Cancelled, TurnOutcome, TurnRequest, ms_since
from .ports import ConnectionGoneError, Poster, ResponseControl
from .speech import SentencePost, SpeechJob

log = logging.getLogger(__name__)

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


class _SpeechAhead:
    """Sentences turned into speech jobs one sentence ahead of the poster: the next sentence
    is synthesized (and, for a reply, moderated) while the current one is posted.

    ``jobs`` yields each job, then ``None``; ``error`` holds what ended the sentences early."""

    def __init__(
        self,
        runner: TurnRunner,
        req: TurnRequest,
        outcome: TurnOutcome,
        sentences: AsyncGenerator[str, None],
        gate: Callable[[], Awaitable[bool]] | None,
        moderate: bool,
    ) -> None:
        self.runner, self.req, self.outcome = runner, req, outcome
        self.moderate = moderate
        self.jobs: asyncio.Queue[SpeechJob | None] = asyncio.Queue(maxsize=1)
        self.error: list[BaseException] = []
        self.live: list[SpeechJob] = []
        self.task = asyncio.create_task(self._produce(sentences, gate))

    async def _produce(
        self, sentences: AsyncGenerator[str, None], gate: Callable[[], Awaitable[bool]] | None
    ) -> None:
        try:
            async with contextlib.aclosing(sentences):
                async for sentence in sentences:
                    if not sentence.strip():
                        continue
                    if not self.live and gate is not None and not await gate():
                        break  # the child's words were flagged: this reply is never voiced
                    job = self._job(sentence)
                    self.live.append(job)
                    await self.jobs.put(job)  # blocks while one sentence is already waiting
        except asyncio.CancelledError:
            # The poster stopped (cancel, 410, a failure): nobody waits for the end marker,
            # and putting it into a full queue would hang here until the turn deadline.
            raise
        except BaseException as exc:
            self.error.append(exc)
        await self.jobs.put(None)

    def _job(self, sentence: str) -> SpeechJob:
        runner, req = self.runner, self.req
        job = SpeechJob(runner.speech, sentence, self.outcome.timings)
        if (
            self.moderate
            and req.moderation
            and runner.moderator is not None
            and strip_for_speech(sentence).strip()
        ):
            # Checked while its speech is synthesized (no added latency); the
            # sentence is posted only once the verdict says it is safe.
            job.verdict = asyncio.create_task(runner.moderator.check(sentence))
        return job

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        for job in self.live:
            await job.cancel()


@dataclass(kw_only=True, eq=False)
class TurnRunner:
    """Replies for one turn over the provider ports (``chat``, ``speech``, ``moderator``),
    posting through ``poster`` while ``control`` says the response may still post."""

    chat: Any
    speech: Any
    moderator: Any | None
    poster: Poster
    control: ResponseControl
    on_segment: Callable[[Segment], Awaitable[None]] | None = None
    deadline_s: float = 20.0

    async def check(self) -> None:
        """Raise :class:`Cancelled` when the response may no longer post."""
        state = await self.control.state()
        if state == "cancelled":
            raise Cancelled("turn_detected")
        if state == "gone":
            raise Cancelled("connection_gone")

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
            server_event("response.created", response=response_object(req, "in_progress"))
        )

    async def fail(self, req: TurnRequest, error: ProviderError) -> TurnOutcome:
        """A turn that failed before there was anything to answer (transcription): the child
        hears the apology and ``response.done`` says ``failed``."""
        outcome = TurnOutcome(req.response_id, req.item_id, "failed", error=error)
        try:
            await self.poster.post(
                server_event("response.created", response=response_object(req, "in_progress"))
            )
            await self._apologize(req, outcome)
            await self._finish(req, outcome)
        except ConnectionGoneError:
            outcome.status, outcome.reason = "cancelled", "connection_gone"
        return outcome

    async def _finish(self, req: TurnRequest, outcome: TurnOutcome) -> None:
        if outcome.reason == "connection_gone":
            return
        await self.poster.post(part_event(req, "response.output_audio.done"))
        await self.poster.post(
            part_event(req, "response.output_audio_transcript.done", transcript=outcome.text)
        )
        details = done_details(outcome)
        status = "incomplete" if details and details["type"] == "incomplete" else outcome.status
        await self.poster.post(
            server_event("response.done", response=response_object(req, status, outcome, details))
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
                part_event(req, "response.output_audio_transcript.delta", delta=text)
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
                        t.chat_first_token_ms = ms_since(t.started)
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
        ahead = _SpeechAhead(self, req, outcome, sentences, gate, moderate)
        gated = gate is None
        try:
            while True:
                job = await ahead.jobs.get()
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
                await self.check()
                await SentencePost(self, req, job, outcome).run()
            if ahead.error:
                raise ahead.error[0]
            return True
        finally:
            await ahead.close()
