"""The body of one turn: read and transcribe the child's audio, then reply through
``kiddolingo.turn.TurnRunner``; the apology for a turn that failed before its reply, and the
metrics of a speculation discarded before it spoke.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import ingest as ingestlib
from ..conversation import chat_messages, load_history, transcription_languages
from ..messenger import ConnectionGoneError
from ..protocol import error_event, new_id, server_event
from ..session import SessionConfig
from .responses import ResponseSlot

if TYPE_CHECKING:
    # Only a turn needs these (imported where it runs): asyncio alone is ~15-20 ms of the chunk
    # path's cold start, which never runs a turn's loop.
    from ..providers.errors import ProviderError
    from ..turn import TurnOutcome
    from ..turn_io import MessengerPoster, WriteVerdict
    from .turn_state import TurnState

log = logging.getLogger(__name__)


class TurnFlow(ResponseSlot):
    """What a turn does, from the audio read to the history write.

    The steps, in order: read the audio (beside the admission write), admit, transcribe (the
    speech socket, the history read and the response claim start meanwhile), show the child's
    words, reply, record. ``TurnState`` carries what they share."""

    async def _turn_body(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        poster: MessengerPoster,
        exits: contextlib.AsyncExitStack,
        verdict: WriteVerdict | None,
        ids: tuple[str, str],
        admission: concurrent.futures.Future[bool] | None = None,
    ) -> None:
        """The turn: read and transcribe the audio, then reply. ``exits`` closes what the turn
        opened (the speech connection) when the turn ends, whatever ended it. ``admission``:
        its count under the turns-per-minute limit, if the append asked for it already."""
        from .turn_state import TurnState

        turn = TurnState(self, conn, cfg, utt, poster, exits, verdict, ids)
        turn.ask_admission(admission)
        if utt is None:
            await turn.landed()
            if not await turn.admitted():
                return
        elif not await self._hear(turn, utt):
            return
        await self._reply(turn)

    async def _hear(self, turn: TurnState, utt: ingestlib.Utterance) -> bool:
        """Read, admit and transcribe the child's words. False: the turn ends here."""
        import asyncio

        from ..audio import pcm16_to_wav

        try:
            pcm = await asyncio.to_thread(self.chunks.read, list(utt.keys))
        except Exception:
            await turn.landed()  # a failed read is only ours to report if the write landed
            raise
        pcm += utt.tail  # the newest audio never went to S3: it came along in memory
        wav = pcm16_to_wav(pcm, turn.cfg.input_rate)
        if not await turn.admitted():
            return False
        text = await self._transcribe(turn, wav)
        if text is None:
            return False
        turn.user_text = text
        turn.transcription_ms = (time.monotonic() - turn.started) * 1000
        return await self._show_words(turn, utt, len(pcm))

    async def _transcribe(self, turn: TurnState, wav: bytes) -> str | None:
        """The child's words; ``None`` when transcription failed (the child was told)."""
        import asyncio

        from ..providers.errors import ProviderError

        cfg = turn.cfg
        transcription = asyncio.ensure_future(
            turn.providers.transcriber.transcribe(
                wav, languages=transcription_languages(cfg.target_language), usage=turn.usage
            )
        )
        try:
            await turn.landed()
        except BaseException:
            transcription.cancel()  # the write lost: stop paying for it
            raise
        # The speech connection opens while the child's words are transcribed: its
        # handshake is off the critical path.
        turn.open_speech()
        # The history is read while the child's words are transcribed, not beside the audio
        # read: only the audio is on the critical path, and the two would share the CPU.
        turn.session_read()
        turn.begin()
        try:
            return (await transcription).strip()
        except ProviderError as exc:
            await self._transcription_failed(turn, exc)
            return None
        except BaseException:
            transcription.cancel()
            await asyncio.shield(turn.unclaim())
            raise

    async def _transcription_failed(self, turn: TurnState, exc: ProviderError) -> None:
        await turn.poster.post(
            error_event(
                "transcription_failed",
                "I couldn't hear that clearly; please try again.",
                error_type="server_error",
            )
        )
        log.warning("transcription failed: %s", exc, extra={"kind": exc.kind})
        # The child still hears a friendly apology; nothing enters the history.
        await turn.unclaim()
        await self._apologize_for(exc, turn.cfg, turn.providers, turn.poster, turn.open_speech())

    async def _show_words(self, turn: TurnState, utt: ingestlib.Utterance, pcm_bytes: int) -> bool:
        """The child's words as the client is to see them (the reply posts them once
        moderated). False: nothing to answer, or the speculation was overtaken."""
        user_text, transcription_ms = turn.user_text or "", turn.transcription_ms or 0.0
        if turn.gate is not None and await turn.gate.poll() is False:
            # The child went on speaking while this pause was transcribed: stop before
            # paying for the chat and the speech (nothing was posted or stored).
            self._speculation_missed(turn.response_id, turn.item_id, user_text, transcription_ms)
            return False
        cfg = turn.cfg
        turn.user_event = server_event(
            "conversation.item.input_audio_transcription.completed",
            item_id=utt.item_id,
            content_index=0,
            transcript=user_text,
            usage={"type": "duration", "seconds": round(pcm_bytes / 2 / cfg.input_rate, 3)},
        )
        if not user_text:
            await turn.poster.post(turn.user_event)
            await turn.unclaim()
            return False  # nothing was said (noise): no reply
        return True

    async def _reply(self, turn: TurnState) -> None:
        """The reply to the child's words (or to the history), then its record."""
        from ..turn import TurnRequest, TurnRunner
        from ..turn_io import GatedPoster, StoreResponseControl

        session = await turn.session_read()
        history = load_history((session or {}).get("hist"))
        turn.begin()
        if turn.claim is not None:
            await turn.claim
        else:
            # A speculation claims the connection's response slot only once released.
            assert isinstance(turn.poster, GatedPoster)
            # (The append that released it took the connection's slot in that same write.)
            sid, response_id, item_id = turn.sid, turn.response_id, turn.item_id
            turn.poster.on_release = lambda: self._begin_response(
                sid, response_id, item_id, slot_taken=True
            )
        cfg, settings = turn.cfg, self.settings
        control = StoreResponseControl(
            self.store, self.connection_id, turn.response_id, gate=turn.gate
        )
        runner = TurnRunner(
            chat=turn.providers.chat,
            speech=turn.open_speech(),
            moderator=turn.providers.moderator if settings.moderation_enabled else None,
            poster=turn.poster,
            control=control,
            on_segment=turn.on_segment,
            deadline_s=settings.turn_deadline_s,
        )
        req = TurnRequest(
            response_id=turn.response_id,
            item_id=turn.item_id,
            messages_for=lambda text: chat_messages(
                history,
                text,
                target_language=cfg.target_language,
                learner_age=cfg.learner_age,
                instructions=cfg.instructions or settings.lesson_plan,
                max_history=settings.max_history_messages,
            ),
            voice=cfg.voice,
            target_language=cfg.target_language,
            temperature=settings.chat_temperature,
            max_tokens=settings.chat_max_tokens,
            moderation=settings.moderation_enabled,
            user_event=turn.user_event,
        )
        await self._record(turn, await runner.respond(req, turn.user_text))

    async def _record(self, turn: TurnState, outcome: TurnOutcome) -> None:
        """The turn's metrics, then what the child heard into the history."""
        import asyncio

        from ..metrics import emit_turn_metrics
        from ..turn_io import GatedPoster

        outcome.usage.merge(turn.usage)
        outcome.timings.transcription_ms = turn.transcription_ms
        outcome.timings.speech_end_at = self._speech_end_at
        self.last_turn = outcome
        poster, sid, response_id = turn.poster, turn.sid, turn.response_id
        speculative = None
        if isinstance(poster, GatedPoster):
            speculative = "miss" if poster.discarded else "hit"
        emit_turn_metrics(outcome, speculative=speculative)
        if getattr(poster, "discarded", False):
            # The child went on speaking: nothing of this reached the child or the history.
            await asyncio.to_thread(self._drop_response, sid, response_id)
            return
        await asyncio.to_thread(self._end_response, sid, response_id, turn.utt, outcome)
        if self.settings.log_transcripts:  # opt-in only (LOG_TRANSCRIPTS=true): children's words
            log.info(
                "turn %s: the child said %r; the tutor said %r",
                response_id,
                turn.user_text,
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
