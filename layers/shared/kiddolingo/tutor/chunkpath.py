"""The audio-chunk path: one ``input_audio_buffer.append`` ordered, run through the VAD
(``kiddolingo.ingest``), committed, and the turns it ends started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from .. import ingest as ingestlib
from .. import sequencing
from ..chunk_keys import utterance_prefix
from ..messenger import ConnectionGoneError
from ..protocol import ClientEvent, ProtocolError, decode_audio, error_event, error_from
from ..session import SessionConfig
from ..store import ConflictError
from .base import MAX_APPEND_ATTEMPTS, StartedTurn
from .commit import AudioCommit, _parking_full, _speculation_changes

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
        for it long enough."""
        hinted = event.sequence if event is not None else None
        stamp = self._stamp
        own: bytes | None = pcm  # None once our chunk is processed (we may go on closing gaps)
        limited: ProtocolError | None = None
        told: ProtocolError | None = None
        to_run: list[tuple[dict[str, Any], SessionConfig, ingestlib.Utterance]] = []
        #: The turn started before the write committing its utterance (see below).
        early: StartedTurn | None = None
        speculation: StartedTurn | None = None
        end_at: dict[str, float] = {}
        #: Events held back for the turn to post while it reads the audio (order kept).
        deferred: list[dict[str, Any]] = []
        retried = False  # a lost race costs a call: the retry writes no S3 object
        #: Commit without waiting for chunks parked at the new watermark (see ``lenient``).
        lenient = False
        lost = 0  # races lost; passes that commit progress do not count
        #: ``conn`` is a kept item: the commit made from it must find the item unchanged.
        unverified = known
        while True:
            if lost >= MAX_APPEND_ATTEMPTS:
                raise ConflictError("append: too many concurrent writers")
            cfg = SessionConfig.from_item(conn.get("cfg"))
            state = ingestlib.AudioState.from_connection(conn)
            now_s = int(time.time())
            count = state.rate_count + 1 if state.rate_window == now_s else 1
            run: list[tuple[int, bytes]] = []
            seq = 0  # our chunk's number (while ``own`` is not None)
            own_in_run = False
            if own is not None:
                if own and count > self.settings.max_appends_per_second:
                    limited = ProtocolError(
                        "rate_limited",
                        f"Too much audio: at most {self.settings.max_appends_per_second} appends "
                        "per second. Send about one append every 100 ms.",
                        event_id=event.event_id if event is not None else None,
                        error_type="rate_limit_error",
                    )
                    if hinted is None:
                        raise limited
                    # A numbered append keeps its place in the sequence with its audio dropped:
                    # otherwise every later chunk would wait for it forever.
                    own = b""
                seq = hinted if hinted is not None else state.next_seq
                if seq < state.next_seq or seq in state.pending:
                    break  # a duplicate delivery: already processed or parked
                if (
                    seq > state.next_seq
                    and not sequencing.held(state.hold, state.hold_since, state.next_seq, stamp)
                    and (
                        _parking_full(state, own) or sequencing.gap_expired(state.gap_since, stamp)
                    )
                ):
                    # The missing event is not coming (its invocation failed): skip the gap
                    # rather than stall the session, and go on from the oldest parked chunk
                    # (or ours, if it is older); ours joins the run when the run reaches it.
                    first = min([*state.pending, seq])
                    log.warning("skipping %d lost event(s)", first - state.next_seq)
                    state = replace(state, next_seq=first)
                elif seq > state.next_seq:
                    parked, latest = self._park(seq, own, now_s, count, state)
                    if parked:
                        break
                    latest = latest or self.store.get_connection(self.connection_id)
                    if not latest:
                        return  # the connection is gone
                    conn, retried, lost = latest, True, lost + 1
                    continue
                else:
                    run.append((seq, own))
                    own_in_run = True
            elif state.pending and state.next_seq not in state.pending:
                # Nothing of our own: a gap at the watermark is skipped once it waited too long.
                behind = [p for p in state.pending if before is None or p < before]
                if (
                    behind
                    and (hurry or sequencing.gap_expired(state.gap_since, stamp))
                    and not sequencing.held(state.hold, state.hold_since, state.next_seq, stamp)
                ):
                    log.warning("skipping %d lost event(s)", min(behind) - state.next_seq)
                    state = replace(state, next_seq=min(behind))
            ahead = state.pending
            if own is not None and not own_in_run:
                ahead = {**ahead, seq: own}  # after a skip: ours joins the run if it reaches it
            nxt = state.next_seq + len(run)
            while nxt in ahead and (before is None or nxt < before):
                run.append((nxt, ahead[nxt]))
                own_in_run = own_in_run or nxt == seq
                nxt += 1
            if not run:
                break
            if own_in_run and own is not None:
                state, told = _placed(state, stamp, hinted is None, event)
            vad_cfg = (
                ingestlib.vad_config(
                    cfg.turn_detection, cfg.input_rate, self.settings.speculative_fraction
                )
                if cfg.turn_detection
                else None
            )
            result = ingestlib.ingest(
                state,
                run,
                session_id=conn["sid"],
                sample_rate=cfg.input_rate,
                vad_cfg=vad_cfg,
                max_utterance_ms=self.settings.max_utterance_ms,
                may_write=not retried,
            )
            for key, data in result.writes:
                self.chunks.put(key, data)
            extra_sets, extra_removes, released, spec_start = _speculation_changes(
                conn.get("spec") or {}, result, cfg.create_response, self.settings.lease_s
            )
            # A speculation released by this write holds the response slot from this write on.
            # Speech that started again after it, in this same run, interrupts it at once.
            live = extra_sets.get("resp") or (
                conn.get("resp") if conn.get("cancel") != conn.get("resp") else None
            )
            barge_in = result.speech_started and cfg.interrupt_response and live
            prestarted: StartedTurn | None = None
            if spec_start is not None and result.speculate is not None:
                # The speculation starts reading and transcribing while this write is on its
                # way. It posts nothing before its verdict, and a lost write calls it off.
                prestarted = self.start_turn(
                    conn,
                    cfg,
                    result.speculate,
                    speculative=spec_start,
                    speech_end_at=_speech_end_at(result, result.speculate),
                )
            # In manual mode, an utterance the server committed because it reached its longest
            # gets its turn, as a client's commit does.
            answers = cfg.create_response or not cfg.turn_detection
            turns = [u for u in result.committed if u.id not in released] if answers else []
            # The loop goes on after this write when our chunk is still ahead after a skip, or
            # when chunks may wait at the new watermark (a lenient commit). The write returns
            # the item in those cases, so the next pass needs no read.
            goes_on = lenient or (own is not None and not own_in_run)
            precommit: StartedTurn | None = None
            if len(turns) == 1 and not goes_on and not to_run:
                # The turn that this write commits starts reading and transcribing while the
                # write is on its way, which takes a DynamoDB round trip off the child's wait.
                # It posts and claims nothing before the write has landed, and stops if the
                # write loses. Only the common case starts early: one utterance, and no turn of
                # this invocation before it.
                from ..turn_io import WriteVerdict

                precommit = self.start_turn(
                    conn,
                    cfg,
                    turns[0],
                    speech_end_at=_speech_end_at(result, turns[0]),
                    verdict=WriteVerdict(),
                )
            try:
                written = self._commit_audio(
                    state,
                    result,
                    now_s,
                    count,
                    cancel=live if barge_in else None,
                    extra_sets=extra_sets,
                    extra_removes=extra_removes,
                    strict=not lenient,
                    return_item=goes_on,
                    known=conn if unverified else None,
                )
            except BaseException as exc:
                # Whatever went wrong, the turns started before this write are called off.
                self.cancel_turn(prestarted)
                self.cancel_turn(precommit)
                if not isinstance(exc, ConflictError):
                    raise
                # The item comes with the lost race (re-read only if the store did not send it).
                latest = exc.item or self.store.get_connection(self.connection_id)
                if not latest:
                    # The connection is gone: nobody else knows the audio this pass wrote
                    # ($disconnect deleted what the item listed before it).
                    self._delete_written(result.writes)
                    return
                if int(latest.get("aver", 0)) == state.version and not unverified:
                    # Only a chunk parked at our new watermark made us lose. When writes are
                    # slower than chunks arrive, waiting for those chunks would never end, so
                    # from now on we commit without them and then process them ourselves. After
                    # a commit from a kept item, any write since may have made us lose, so the
                    # retry stays strict.
                    lenient = True
                conn, retried, lost, unverified = latest, True, lost + 1, False
                continue
            unverified = False
            if own_in_run:
                own = None  # ours is in; what follows only closes gaps behind it
            if precommit is not None:
                assert precommit.verdict is not None
                precommit.verdict.landed(tuple(result.events))  # it posts them first
                early = precommit
            elif turns or deferred:
                deferred += result.events  # posted by the turn, while it reads the audio
            else:
                try:
                    for ev in result.events:
                        self.post(ev)
                except ConnectionGoneError:
                    # The connection is gone (410), so the utterances ended here will never get
                    # their turn. Their audio is deleted now.
                    for u in [*result.committed, *(t[2] for t in to_run)]:
                        self.chunks.delete_prefix(utterance_prefix(conn["sid"], u.id))
                    raise
            if answers:
                if precommit is None:  # (a turn started before the write is running already)
                    to_run += [(conn, cfg, u) for u in turns]
            elif result.committed:
                # With no automatic reply, the committed audio waits in S3 for the client's
                # response.create, so the tail still held in memory is written now.
                waiting = []
                for u in result.committed:
                    u, writes = u.tail_write(conn["sid"])
                    for key, data in writes:
                        self.chunks.put(key, data)
                    waiting.append(u.to_item())
                self._wait_for_response_create(conn, waiting)
            end_at.update((u.id, _speech_end_at(result, u)) for u in result.committed)
            if prestarted is not None:
                self.cancel_turn(speculation)  # a newer pause of this invocation took over
                speculation = prestarted
            if not goes_on:
                break
            # After a skipped gap, or a lenient commit: chunks may wait at the new watermark.
            # The item as our write left it is enough: a chunk parked after it finds the
            # watermark at its own number, and processes itself.
            conn = written or {}
            if not conn:
                return
        for conn_, cfg_, utt in to_run:
            announce, deferred = tuple(deferred), []
            self.run_turn(conn_, cfg_, utt, speech_end_at=end_at.get(utt.id), announce=announce)
        self.finish_turn(early)
        self.finish_turn(speculation)
        # After the turns: a 410 here must not orphan their audio.
        for error in (told, limited):
            if error is not None:
                self.post(error_from(error))


def _speech_end_at(result: ingestlib.IngestResult, utt: ingestlib.Utterance) -> float:
    """Where the child's last speech sample of ``utt`` lies in wall time (the metrics)."""
    return time.monotonic() - (result.state.audio_ms - (utt.end_ms or 0)) / 1000


def _placed(
    state: ingestlib.AudioState, stamp: int, unnumbered: bool, event: ClientEvent | None
) -> tuple[ingestlib.AudioState, ProtocolError | None]:
    """An append's chunk joins the stream: the newest stamp applied moves on to its own. An
    un-numbered chunk stamped at or before that stamp may be applied out of order: the error
    that tells the client (at most once a second), or ``None``."""
    told = None
    last_told = state.last_told
    if unnumbered:
        placement = sequencing.place(state.last_stamp, stamp)
        if placement is not sequencing.Placement.IN_ORDER and sequencing.should_tell(
            state.last_told, stamp
        ):
            told = sequencing.unordered_error(
                sequencing.append_placement_message(placement),
                event.event_id if event is not None else None,
            )
            last_told = stamp
    return replace(state, last_stamp=max(state.last_stamp, stamp), last_told=last_told), told
