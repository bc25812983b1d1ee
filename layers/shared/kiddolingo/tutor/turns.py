"""Starting, waiting for and calling off turns on the process loop (``kiddolingo.runtime``),
and the frame around a turn's body: its deadline, the posts it owes, and ``response.done``
``failed`` when something it did not expect went wrong.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import ingest as ingestlib
from ..chunks import MissingChunkError
from ..messenger import ConnectionGoneError
from ..protocol import new_id
from ..session import SessionConfig
from ..vad.limits import DEFAULT_SILENCE_DURATION_MS
from .base import StartedTurn
from .responses import speculation_response_id
from .turn_flow import TurnFlow

if TYPE_CHECKING:
    # For annotations only: the turn's adapters load when a turn runs.
    from ..turn_io import MessengerPoster, SpeculationGate, WriteVerdict

log = logging.getLogger(__name__)


class Turns(TurnFlow):
    """The turn's lifecycle around ``TurnFlow._turn_body``."""

    def run_turn(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        **options: Any,
    ) -> None:
        """Run a turn inline: ``start_turn`` (its options) and ``finish_turn``."""
        self.finish_turn(self.start_turn(conn, cfg, utt, **options))

    def start_turn(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        *,
        speculative: str | None = None,
        speech_end_at: float | None = None,
        announce: tuple[dict[str, Any], ...] = (),
        verdict: WriteVerdict | None = None,
        admission: concurrent.futures.Future[bool] | None = None,
    ) -> StartedTurn:
        """Start a turn on the process loop (it asks for its place under the turns-per-minute
        limit itself, before it reaches a provider: ``_admit_turn``).

        ``speculative``: the id of a speculation started in the pause; nothing is posted until
        the append that ends the utterance releases it, and all of it is dropped (streams closed,
        nothing stored) if the child goes on speaking. ``announce``: events of the caller still
        to post first (``speech_stopped``, ``committed``), posted while the audio is read.
        ``verdict``: the turn starts before the caller's write that commits its utterance, and
        waits for it before it posts anything (the events to post first come with it).
        ``admission``: the turn's count under the turns-per-minute limit, asked already by the
        append that started it (``ChunkPath._admit_early``)."""
        from .. import observe, runtime

        gate = None
        if speculative:
            from ..turn_io import SpeculationGate

            silence_ms = int(
                (cfg.turn_detection or {}).get("silence_duration_ms") or DEFAULT_SILENCE_DURATION_MS
            )
            # The verdict cannot come before the window has passed since the last speech sample
            # and the append closing it has landed (a little after): no look before that. (The
            # append that starts a speculation always knows the speech's end.)
            now = time.monotonic()
            end = speech_end_at if speech_end_at is not None else now
            due_in_s = end + silence_ms / 1000 + 0.02 - now
            gate = SpeculationGate(
                self.store, self.connection_id, speculative, silence_ms, due_in_s=due_in_s
            )
        observe.turn_started()
        future = runtime.submit(
            self._turn(
                conn,
                cfg,
                utt,
                gate,
                speech_end_at or time.monotonic(),
                announce,
                verdict,
                admission,
            )
        )
        return StartedTurn(future, gate, conn["sid"], utt, verdict)

    def finish_turn(self, turn: StartedTurn | None) -> None:
        """Wait for a started turn; clean up after it (``run_turn``'s second half)."""
        if turn is None:
            return
        try:
            turn.future.result()
        except ConnectionGoneError:
            # 410 mid-turn: clean up *this* connection (item, open utterance); the session
            # stays for a resume.
            self.disconnect()
        finally:
            # A discarded speculation's utterance goes on: its audio stays.
            if turn.gate is None or turn.gate.released:
                self._delete_audio(turn.session_id, turn.utterance)

    @staticmethod
    def cancel_turn(turn: StartedTurn | None) -> None:
        """Call off a turn started before its append's write, which lost (a speculation's marker,
        or the utterance's commit, never landed): it has posted and stored nothing."""
        if turn is None:
            return
        if turn.gate is not None:
            turn.gate.call_off()
        if turn.verdict is not None:
            turn.verdict.lost()
        turn.future.cancel()

    async def _turn(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        gate: SpeculationGate | None = None,
        speech_end_at: float | None = None,
        announce: tuple[dict[str, Any], ...] = (),
        verdict: WriteVerdict | None = None,
        admission: concurrent.futures.Future[bool] | None = None,
    ) -> None:
        import asyncio

        from ..turn_io import GatedPoster, MessengerPoster, WriteLost

        poster: MessengerPoster = (
            GatedPoster(self.messenger, gate) if gate else MessengerPoster(self.messenger)
        )
        self._speech_end_at = speech_end_at
        # A speculation's response id follows from its id: the append that releases it claims
        # the response slot for it in that same write.
        response_id = speculation_response_id(gate.spec_id) if gate else new_id("resp")
        ids = (response_id, new_id("item"))
        failed = False
        try:
            async with contextlib.AsyncExitStack() as exits:
                for event in announce:
                    await poster.post(event)  # queued: they go out while the audio is read
                # Bounded by the slot's lease: a turn that hangs past it ends here, and its
                # slot is free then anyway.
                await asyncio.wait_for(
                    self._turn_body(conn, cfg, utt, poster, exits, verdict, ids, admission),
                    self.settings.lease_s - 1,
                )
            if isinstance(poster, GatedPoster):
                await poster.settle()
            await poster.flush()
        except WriteLost:
            return  # the append's retry commits the utterance anew: nothing was posted
        except (ConnectionGoneError, MissingChunkError):
            raise  # expected: the caller cleans up the connection, or tells the child
        except Exception:
            failed = True
            log.exception("turn %s failed unexpectedly", response_id)
            await self._fail_turn(poster, conn["sid"], cfg, response_id, verdict)
        finally:
            try:
                if isinstance(poster, GatedPoster):
                    await poster.settle()
                await poster.flush()
            except ConnectionGoneError:
                raise
            except Exception:
                if not failed:  # (else: told to the child in _fail_turn already)
                    raise
            finally:
                await poster.aclose()

    async def _fail_turn(
        self,
        poster: MessengerPoster,
        sid: str,
        cfg: SessionConfig,
        response_id: str,
        verdict: WriteVerdict | None,
    ) -> None:
        """End a turn that failed in a way it does not expect (a post that failed other than
        with a 410, a DynamoDB or S3 error, a hang past the lease): the child still gets
        ``response.done`` ``failed``, and the response slot is freed at once."""
        import asyncio

        from ..turn_io import WriteLost, failed_response_events

        if verdict is not None and not verdict.announced:
            try:
                announce = await verdict.wait()
            except WriteLost:
                return  # the append's write lost: its retry commits the utterance anew
        else:
            announce = ()
        events = [*announce, *failed_response_events(poster.open_response, response_id, cfg.voice)]
        try:
            for event in events:
                await poster.post(event)
            await poster.flush()
        except ConnectionGoneError:
            raise
        except Exception:
            # The poster itself failed (a post refused other than with a 410): one more try,
            # directly, for what ends the turn.
            with contextlib.suppress(Exception):
                for event in events:
                    await asyncio.to_thread(self.messenger.post, event)
        with contextlib.suppress(Exception):  # else the lease frees the slot
            await asyncio.to_thread(self._drop_response, sid, response_id)
