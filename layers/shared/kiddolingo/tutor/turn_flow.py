"""The body of one turn: read and transcribe the child's audio, then reply through
``kiddolingo.turn.TurnRunner``; the apology for a turn that failed before its reply, and the
metrics of a speculation discarded before it spoke.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import ingest as ingestlib
from ..conversation import Segment, chat_messages, load_history, transcription_languages
from ..messenger import ConnectionGoneError
from ..protocol import error_event, new_id, server_event
from ..session import SessionConfig
from .responses import ResponseSlot

if TYPE_CHECKING:
    # Only a turn needs these (imported where it runs): asyncio alone is ~15-20 ms of the chunk
    # path's cold start, which never runs a turn's loop.
    import asyncio

    from ..turn_io import MessengerPoster, WriteVerdict

log = logging.getLogger(__name__)


class TurnFlow(ResponseSlot):
    """What a turn does, from the audio read to the history write."""

    async def _turn_body(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        poster: MessengerPoster,
        exits: contextlib.AsyncExitStack,
        verdict: WriteVerdict | None,
        ids: tuple[str, str],
    ) -> None:
        """The turn: read and transcribe the audio, then reply. ``exits`` closes what the turn
        opened (the speech connection) when the turn ends, whatever ended it."""
        import asyncio

        from ..audio import pcm16_to_wav
        from ..providers.base import Usage
        from ..turn import TurnRequest, TurnRunner
        from ..turn_io import GatedPoster, StoreResponseControl

        providers = self._providers()
        sid = conn["sid"]
        settings = self.settings
        user_text: str | None = None
        #: The child's words as the client is to see them: posted by the reply, once moderated.
        user_event: dict[str, Any] | None = None
        t0 = time.monotonic()
        transcription_ms: float | None = None
        session_task: asyncio.Future[dict[str, Any] | None] | None = None

        def session_read() -> asyncio.Future[dict[str, Any] | None]:
            """The session read, started on first use."""
            nonlocal session_task
            if session_task is None:
                session_task = asyncio.ensure_future(asyncio.to_thread(self.store.get_session, sid))
            return session_task

        response_id, item_id = ids
        claim: asyncio.Future[None] | None = None
        usage = Usage()
        speech: Any = None

        def open_speech() -> Any:
            """The turn's speech session, opened on first use."""
            nonlocal speech
            if speech is None:
                # A session stored before the speech API changed may name a voice it lacks.
                voice = cfg.voice if cfg.voice in settings.speech_voices else settings.speech_voice
                speech = providers.speech.open(voice=voice, usage=usage)
                exits.push_async_callback(speech.aclose)
            return speech

        def begin() -> None:
            nonlocal claim
            if claim is None and not isinstance(poster, GatedPoster):
                # Claimed while the child's words are transcribed (a speculation claims the
                # response slot only once released).
                claim = asyncio.ensure_future(
                    asyncio.to_thread(self._begin_response, sid, response_id, item_id)
                )
                # Retrieved even when the turn ends before awaiting it (a 410 at a post).
                claim.add_done_callback(lambda f: f.cancelled() or f.exception())

        async def unclaim() -> None:
            if isinstance(poster, GatedPoster):
                # A speculation's slot is taken by the write that releases it, if it comes.
                if not await poster.settle():
                    return
            elif claim is None:
                return
            else:
                with contextlib.suppress(Exception):
                    await claim
            await asyncio.to_thread(self._drop_response, sid, response_id)

        async def landed() -> None:
            """Wait for the write committing this turn (if it started before): raises
            ``WriteLost`` if it lost; else posts the append's events, first (once)."""
            if verdict is not None and not verdict.announced:
                for event in await verdict.wait():
                    await poster.post(event)
                verdict.announced = True

        # Turns per minute: asked while the audio is read; no provider is reached before.
        admission = asyncio.ensure_future(asyncio.to_thread(self._admit_turn, sid))
        admission.add_done_callback(lambda f: f.cancelled() or f.exception())

        async def admitted() -> bool:
            if await admission:
                return True
            await landed()  # the refusal follows the append's events
            await self._refuse_turn(
                poster, poster.gate if isinstance(poster, GatedPoster) else None
            )
            return False

        if utt is None:
            await landed()
            if not await admitted():
                return
        else:
            try:
                pcm = await asyncio.to_thread(self.chunks.read, list(utt.keys))
            except Exception:
                await landed()  # a failed read is only ours to report if the write landed
                raise
            pcm += utt.tail  # the newest audio never went to S3: it came along in memory
            wav = pcm16_to_wav(pcm, cfg.input_rate)
            if not await admitted():
                return
            from ..providers.errors import ProviderError

            transcription = asyncio.ensure_future(
                providers.transcriber.transcribe(
                    wav, languages=transcription_languages(cfg.target_language), usage=usage
                )
            )
            try:
                await landed()
            except BaseException:
                transcription.cancel()  # the write lost: stop paying for it
                raise
            # The speech connection opens while the child's words are transcribed: its
            # handshake is off the critical path.
            open_speech()
            # The history is read while the child's words are transcribed, not beside the audio
            # read: only the audio is on the critical path, and the two would share the CPU.
            session_read()
            begin()
            try:
                user_text = (await transcription).strip()
            except ProviderError as exc:
                await poster.post(
                    error_event(
                        "transcription_failed",
                        "I couldn't hear that clearly; please try again.",
                        error_type="server_error",
                    )
                )
                log.warning("transcription failed: %s", exc, extra={"kind": exc.kind})
                # The child still hears a friendly apology; nothing enters the history.
                await unclaim()
                await self._apologize_for(exc, cfg, providers, poster, open_speech())
                return
            except BaseException:
                transcription.cancel()
                await asyncio.shield(unclaim())
                raise
            transcription_ms = (time.monotonic() - t0) * 1000
            if isinstance(poster, GatedPoster) and await poster.gate.poll() is False:
                # The child went on speaking while this pause was transcribed: stop before
                # paying for the chat and the speech (nothing was posted or stored).
                self._speculation_missed(response_id, item_id, user_text, transcription_ms)
                return
            user_event = server_event(
                "conversation.item.input_audio_transcription.completed",
                item_id=utt.item_id,
                content_index=0,
                transcript=user_text,
                usage={"type": "duration", "seconds": round(len(pcm) / 2 / cfg.input_rate, 3)},
            )
            if not user_text:
                await poster.post(user_event)
                await unclaim()
                return  # nothing was said (noise): no reply

        session = await session_read()
        history = load_history((session or {}).get("hist"))
        begin()
        if claim is not None:
            await claim
        else:
            # A speculation claims the connection's response slot only once released.
            assert isinstance(poster, GatedPoster)
            # (The append that released it took the connection's slot in that same write.)
            poster.on_release = lambda: self._begin_response(
                sid, response_id, item_id, slot_taken=True
            )

        async def on_segment(seg: Segment) -> None:
            await asyncio.to_thread(
                self.store.add_segment, sid, response_id, seg.text, seg.audio_ms
            )

        control = StoreResponseControl(
            self.store,
            self.connection_id,
            response_id,
            gate=poster.gate if isinstance(poster, GatedPoster) else None,
        )
        runner = TurnRunner(
            chat=providers.chat,
            speech=open_speech(),
            moderator=providers.moderator if settings.moderation_enabled else None,
            poster=poster,
            control=control,
            on_segment=on_segment,
            deadline_s=settings.turn_deadline_s,
        )
        req = TurnRequest(
            response_id=response_id,
            item_id=item_id,
            messages_for=lambda text: chat_messages(
                history,
                text,
                target_language=cfg.target_language,
                learner_age=cfg.learner_age,
                instructions=cfg.instructions or self.settings.lesson_plan,
                max_history=settings.max_history_messages,
            ),
            voice=cfg.voice,
            target_language=cfg.target_language,
            temperature=settings.chat_temperature,
            max_tokens=settings.chat_max_tokens,
            moderation=settings.moderation_enabled,
            user_event=user_event,
        )
        outcome = await runner.respond(req, user_text)
        outcome.usage.merge(usage)
        outcome.timings.transcription_ms = transcription_ms
        outcome.timings.speech_end_at = self._speech_end_at
        self.last_turn = outcome
        from ..metrics import emit_turn_metrics

        speculative = None
        if isinstance(poster, GatedPoster):
            speculative = "miss" if poster.discarded else "hit"
        emit_turn_metrics(outcome, speculative=speculative)
        if getattr(poster, "discarded", False):
            # The child went on speaking: nothing of this reached the child or the history.
            await asyncio.to_thread(self._drop_response, sid, response_id)
            return
        await asyncio.to_thread(self._end_response, sid, response_id, utt, outcome)
        if settings.log_transcripts:  # opt-in only (LOG_TRANSCRIPTS=true): children's words
            log.info(
                "turn %s: the child said %r; the tutor said %r",
                response_id,
                user_text,
                outcome.text,
            )
        if outcome.reason == "connection_gone":
            # What was heard is in the history; now clean up the connection (run_turn).
            raise ConnectionGoneError(self.connection_id)

    async def _apologize_for(
        self, exc: Any, cfg: SessionConfig, providers: Any, poster: MessengerPoster, speech: Any
    ) -> None:
        """A turn that failed before the reply: the apology alone, outside the history."""
        from ..turn import TurnRequest, TurnRunner
        from ..turn_io import StoreResponseControl

        response_id, item_id = new_id("resp"), new_id("item")
        runner = TurnRunner(
            chat=providers.chat,
            speech=speech,
            moderator=None,
            poster=poster,
            control=StoreResponseControl(self.store, self.connection_id, response_id),
            deadline_s=self.settings.turn_deadline_s,
        )
        req = TurnRequest(
            response_id=response_id,
            item_id=item_id,
            messages_for=lambda _text: [],
            voice=cfg.voice,
            target_language=cfg.target_language,
            temperature=self.settings.chat_temperature,
            max_tokens=self.settings.chat_max_tokens,
            moderation=False,
        )
        self.last_turn = await runner.fail(req, exc)
        from ..metrics import emit_turn_metrics

        emit_turn_metrics(self.last_turn)
        if self.last_turn.reason == "connection_gone":
            raise ConnectionGoneError(self.connection_id)

    def _speculation_missed(
        self, response_id: str, item_id: str, user_text: str, transcription_ms: float
    ) -> None:
        """The metrics of a speculation discarded before its reply began."""
        from ..metrics import emit_turn_metrics
        from ..turn import TurnOutcome

        outcome = TurnOutcome(
            response_id, item_id, "cancelled", "speculation_discarded", user_text=user_text
        )
        outcome.timings.transcription_ms = transcription_ms
        outcome.timings.speech_end_at = self._speech_end_at
        self.last_turn = outcome
        emit_turn_metrics(outcome, speculative="miss")
