"""The audio-chunk path: one ``input_audio_buffer.append`` ordered, run through the VAD
(``kiddolingo.ingest``), committed, and the turns it ends started.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from .. import ingest as ingestlib
from ..chunk_keys import utterance_prefix
from ..messenger import ConnectionGoneError
from ..protocol import ClientEvent, ProtocolError, decode_audio, error_event, error_from
from ..session import SessionConfig
from ..store import ConflictError
from .appendplan import (
    Append,
    Next,
    Pass,
    Plan,
    closes_by_silence,
    placed,
    speculation_changes,
    speech_end_at,
)
from .base import MAX_APPEND_ATTEMPTS
from .commit import AudioCommit

log = logging.getLogger(__name__)


class ChunkPath(AudioCommit):
    """An append's chunk and the parked chunks that follow it."""

    def _refused_short(self, event: ClientEvent) -> bool:
        """A stream of appends too short to carry is refused before any AWS call, and the
        client told (at most once a second): each append costs an invocation and a write
        whatever its length, and 50 a second sink the local stack and cost five times as much."""
        try:
            nbytes = len(decode_audio(event))
        except ProtocolError:
            return False  # told as bad input by the append itself
        refuse, tell = ingestlib.SHORT_APPENDS.judge(self.connection_id, nbytes, time.monotonic())
        if tell:
            ms = nbytes * 1000 // (2 * 16000)
            self.post(
                error_event(
                    "input_audio_chunk_too_short",
                    f"Appends of {nbytes} bytes (about {ms} ms at 16 kHz, less at 24 kHz) are "
                    f"too short: send at least {ingestlib.MIN_APPEND_BYTES} bytes (40 ms at "
                    "16 kHz) per append, 100 ms recommended. Short appends are dropped.",
                    event_id=event.event_id,
                    param="audio",
                )
            )
        return refuse

    def _on_input_audio_buffer_append(
        self, conn: dict[str, Any], event: ClientEvent, known: bool = False
    ) -> None:
        """Order, run the VAD, store speech; see ``kiddolingo.ingest`` for the sequencing.
        ``known``: ``conn`` is the item this container's last commit left, not one just read
        (``store.KnownConnections``): the first write made from it checks it is still current."""
        pcm = decode_audio(event)
        if not pcm:
            return
        self._process_audio(conn, event, pcm, known=known)

    def _process_audio(
        self,
        conn: dict[str, Any],
        event: ClientEvent | None,
        pcm: bytes | None,
        *,
        known: bool = False,
        before: int | None = None,
        hurry: bool = False,
    ) -> None:
        """Process an append's chunk (``pcm``) and every parked chunk that follows it.

        With no chunk of its own (``pcm`` None) it only processes what is parked at the
        watermark: after a numbered event that held the stream, the chunks that waited for it.
        ``before``: process no chunk numbered ``before`` or later (they come after the event
        that holds the stream). ``hurry``: skip any gap now, the event at ``before`` waited
        for it long enough.

        Each pass places the chunk against the watermark (``_next_pass``), runs the VAD over
        the run (``_run_vad``), plans and starts what the write commits (``_plan``,
        ``_start_early``), writes (``_write``) and hands the outcome on (``_after_write``)."""
        a = Append(conn=conn, event=event, own=pcm, before=before, hurry=hurry, unverified=known)
        while True:
            if a.lost >= MAX_APPEND_ATTEMPTS:
                raise ConflictError("append: too many concurrent writers")
            step = self._next_pass(a)
            if step is Next.GONE:
                return
            if step is Next.RETRY:
                continue
            if step is Next.DONE:
                break
            assert isinstance(step, Pass)
            self._admit_early(a, step)
            plan = self._plan(a, step, self._run_vad(a, step))
            self._start_early(a, step, plan)
            written = self._write(a, step, plan)
            if written is Next.GONE:
                return
            if written is Next.RETRY:
                continue
            assert not isinstance(written, Next)
            self._after_write(a, step, plan)
            if not plan.goes_on:
                break
            # After a skipped gap, or a lenient commit: chunks may wait at the new watermark.
            # The item as our write left it is enough: a chunk parked after it finds the
            # watermark at its own number, and processes itself.
            a.conn = written or {}
            if not a.conn:
                return
        self._finish_append(a)

    def _next_pass(self, a: Append) -> Pass | Next:
        """The pass's read of the item, and where our chunk falls: a run to process, or what
        happened instead (a duplicate, a chunk parked, a race lost while parking)."""
        cfg = SessionConfig.from_item(a.conn.get("cfg"))
        state = ingestlib.AudioState.from_connection(a.conn)
        now_s = int(time.time())
        count = state.rate_count + 1 if state.rate_window == now_s else 1
        seq = 0  # our chunk's number (while ``a.own`` is not None)
        if a.own is not None:
            self._limit_rate(a, count)
            seq = a.hinted if a.hinted is not None else state.next_seq
        order = ingestlib.order_run(state, a.own, seq, self._stamp, before=a.before, hurry=a.hurry)
        if order.verdict is ingestlib.Verdict.PARK:
            assert a.own is not None
            parked, latest = self._park(seq, a.own, now_s, count, state)
            if parked:
                return Next.DONE
            latest = latest or self.store.get_connection(self.connection_id)
            if not latest:
                return Next.GONE  # the connection is gone
            a.conn, a.retried, a.lost = latest, True, a.lost + 1
            return Next.RETRY
        if order.verdict is not ingestlib.Verdict.RUN:
            return Next.DONE  # a duplicate delivery, or nothing to process yet
        return Pass(cfg, order.state, now_s, count, seq, order.run, order.own_in_run)

    def _admit_early(self, a: Append, p: Pass) -> None:
        """Count the turn this pass is expected to start (``closes_by_silence``) while its VAD
        runs and its write is on its way, so the turn's transcription does not wait for the
        count: the turn still has its place under the limit before it reaches a provider.
        (A speculation, as deployed, is counted when it starts, long before.)"""
        if a.admission is not None or self.settings.max_turns_per_minute <= 0:
            return
        if not closes_by_silence(p.state, p.run, p.cfg, a.conn.get("spec")):
            return
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        sid = a.conn["sid"]

        def count() -> None:
            try:
                future.set_result(self._admit_turn(sid))
            except BaseException as exc:  # the turn that takes it raises it
                future.set_exception(exc)

        threading.Thread(target=count, name="turn-admission", daemon=True).start()
        a.admission = future

    def _limit_rate(self, a: Append, count: int) -> None:
        """Refuse our chunk's audio past the appends-per-second limit (``count`` with ours)."""
        if not a.own or count <= self.settings.max_appends_per_second:
            return
        a.limited = ProtocolError(
            "rate_limited",
            f"Too much audio: at most {self.settings.max_appends_per_second} appends "
            "per second. Send about one append every 100 ms.",
            event_id=a.event.event_id if a.event is not None else None,
            error_type="rate_limit_error",
        )
        if a.hinted is None:
            raise a.limited
        # A numbered append keeps its place in the sequence with its audio dropped:
        # otherwise every later chunk would wait for it forever.
        a.own = b""

    def _run_vad(self, a: Append, p: Pass) -> ingestlib.IngestResult:
        """The run through the VAD (``kiddolingo.ingest``), and its audio written to S3."""
        if p.own_in_run and a.own is not None:
            p.state, a.told = placed(p.state, self._stamp, a.hinted is None, a.event)
        cfg = p.cfg
        vad_cfg = (
            ingestlib.vad_config(
                cfg.turn_detection, cfg.input_rate, self.settings.speculative_fraction
            )
            if cfg.turn_detection
            else None
        )
        result = ingestlib.ingest(
            p.state,
            list(p.run),
            session_id=a.conn["sid"],
            sample_rate=cfg.input_rate,
            vad_cfg=vad_cfg,
            max_utterance_ms=self.settings.max_utterance_ms,
            may_write=not a.retried,
        )
        for key, data in result.writes:
            self.chunks.put(key, data)
        return result

    def _plan(self, a: Append, p: Pass, result: ingestlib.IngestResult) -> Plan:
        """What the write of ``result`` commits: the speculation's changes, a barge-in, the
        turns it admits, and whether the loop goes on after it."""
        cfg = p.cfg
        extra_sets, extra_removes, released, spec_start = speculation_changes(
            a.conn.get("spec") or {}, result, cfg.create_response, self.settings.lease_s
        )
        # A speculation released by this write holds the response slot from this write on.
        # Speech that started again after it, in this same run, interrupts it at once.
        live = extra_sets.get("resp") or (
            a.conn.get("resp") if a.conn.get("cancel") != a.conn.get("resp") else None
        )
        barge_in = result.speech_started and cfg.interrupt_response and live
        # In manual mode, an utterance the server committed because it reached its longest
        # gets its turn, as a client's commit does.
        answers = bool(cfg.create_response or not cfg.turn_detection)
        turns = [u for u in result.committed if u.id not in released] if answers else []
        # The loop goes on after this write when our chunk is still ahead after a skip, or
        # when chunks may wait at the new watermark (a lenient commit). The write returns
        # the item in those cases, so the next pass needs no read.
        goes_on = a.lenient or (a.own is not None and not p.own_in_run)
        return Plan(
            result=result,
            extra_sets=extra_sets,
            extra_removes=extra_removes,
            released=released,
            spec_start=spec_start,
            cancel=live if barge_in else None,
            answers=answers,
            turns=turns,
            goes_on=goes_on,
        )

    def _start_early(self, a: Append, p: Pass, plan: Plan) -> None:
        """Start the turns that may begin before the write lands: they read and transcribe
        while it is on its way, post nothing before its verdict, and a lost write calls them
        off."""
        result = plan.result
        if plan.spec_start is not None and result.speculate is not None:
            plan.prestarted = self.start_turn(
                a.conn,
                p.cfg,
                result.speculate,
                speculative=plan.spec_start,
                speech_end_at=speech_end_at(result, result.speculate),
            )
        if len(plan.turns) == 1 and not plan.goes_on and not a.to_run:
            # The turn that this write commits takes a DynamoDB round trip off the child's
            # wait. Only the common case starts early: one utterance, and no turn of this
            # invocation before it.
            from ..turn_io import WriteVerdict

            plan.precommit = self.start_turn(
                a.conn,
                p.cfg,
                plan.turns[0],
                speech_end_at=speech_end_at(result, plan.turns[0]),
                verdict=WriteVerdict(),
                admission=a.take_admission(),
            )

    def _write(self, a: Append, p: Pass, plan: Plan) -> dict[str, Any] | Next | None:
        """The commit of the pass: the item as it left it (``None`` unless the loop goes on
        or the container keeps it), or, after a lost race, whether to go again."""
        try:
            written = self._commit_audio(
                p.state,
                plan.result,
                p.now_s,
                p.count,
                cancel=plan.cancel,
                extra_sets=plan.extra_sets,
                extra_removes=plan.extra_removes,
                strict=not a.lenient,
                return_item=plan.goes_on,
                known=a.conn if a.unverified else None,
                releases=(a.conn.get("spec") or {}).get("id") if plan.released else None,
            )
        except BaseException as exc:
            # Whatever went wrong, the turns started before this write are called off.
            self.cancel_turn(plan.prestarted)
            self.cancel_turn(plan.precommit)
            if not isinstance(exc, ConflictError):
                raise
            return self._lost_race(a, p, plan, exc)
        a.unverified = False
        return written

    def _lost_race(self, a: Append, p: Pass, plan: Plan, exc: ConflictError) -> Next:
        # The item comes with the lost race (re-read only if the store did not send it).
        latest = exc.item or self.store.get_connection(self.connection_id)
        if not latest:
            # The connection is gone: nobody else knows the audio this pass wrote
            # ($disconnect deleted what the item listed before it).
            self._delete_written(plan.result.writes)
            return Next.GONE
        withdrawn = bool(plan.released) and (latest.get("spec") or {}).get("id") != (
            a.conn.get("spec") or {}
        ).get("id")
        if int(latest.get("aver", 0)) == p.state.version and not (a.unverified or withdrawn):
            # Only a chunk parked at our new watermark made us lose. When writes are slower
            # than chunks arrive, waiting for those chunks would never end, so from now on we
            # commit without them and then process them ourselves. After a commit from a kept
            # item, any write since may have made us lose, so the retry stays strict; so it
            # does when the speculation it released was withdrawn meanwhile (its turn gets
            # asked for again).
            a.lenient = True
        a.conn, a.retried, a.lost, a.unverified = latest, True, a.lost + 1, False
        return Next.RETRY

    def _after_write(self, a: Append, p: Pass, plan: Plan) -> None:
        """Hand the landed write's events and utterances on: to the turn started early, to
        the turns still to run, to the client, or to the list waiting for response.create."""
        result = plan.result
        if p.own_in_run:
            a.own = None  # ours is in; what follows only closes gaps behind it
        self._hand_over_events(a, plan)
        if plan.answers:
            if plan.precommit is None:  # (a turn started before the write is running already)
                a.to_run += [(a.conn, p.cfg, u) for u in plan.turns]
        elif result.committed:
            # With no automatic reply, the committed audio waits in S3 for the client's
            # response.create, so the tail still held in memory is written now.
            waiting = []
            for u in result.committed:
                u, writes = u.tail_write(a.conn["sid"])
                for key, data in writes:
                    self.chunks.put(key, data)
                waiting.append(u.to_item())
            self._wait_for_response_create(a.conn, waiting)
        a.end_at.update((u.id, speech_end_at(result, u)) for u in result.committed)
        if plan.prestarted is not None:
            self.cancel_turn(a.speculation)  # a newer pause of this invocation took over
            a.speculation = plan.prestarted

    def _hand_over_events(self, a: Append, plan: Plan) -> None:
        result = plan.result
        if plan.precommit is not None:
            assert plan.precommit.verdict is not None
            plan.precommit.verdict.landed(tuple(result.events))  # it posts them first
            a.early = plan.precommit
        elif plan.turns or a.deferred:
            a.deferred += result.events  # posted by the turn, while it reads the audio
        else:
            try:
                for ev in result.events:
                    self.post(ev)
            except ConnectionGoneError:
                # The connection is gone (410), so the utterances ended here will never get
                # their turn. Their audio is deleted now.
                for u in [*result.committed, *(t[2] for t in a.to_run)]:
                    self.chunks.delete_prefix(utterance_prefix(a.conn["sid"], u.id))
                raise

    def _finish_append(self, a: Append) -> None:
        """Run the turns the append committed, wait for those started early, then tell the
        client what was refused."""
        for conn_, cfg_, utt in a.to_run:
            announce, a.deferred = tuple(a.deferred), []
            self.run_turn(
                conn_,
                cfg_,
                utt,
                speech_end_at=a.end_at.get(utt.id),
                announce=announce,
                admission=a.take_admission(),
            )
        self.finish_turn(a.early)
        self.finish_turn(a.speculation)
        # After the turns: a 410 here must not orphan their audio.
        for error in (a.told, a.limited):
            if error is not None:
                self.post(error_from(error))
