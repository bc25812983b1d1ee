"""The application layer: what each WebSocket route does, over the stores and providers.

The handlers in ``functions/`` parse the Lambda event, build a ``Tutor`` from their wired
adapters and call one method. Pure decisions live in ``session``, ``ingest``, ``conversation``
and ``turn``; this module sequences the I/O around them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import ingest as ingestlib
from . import sequencing
from .chunks import ChunkStore, MissingChunkError, utterance_prefix
from .conversation import (
    Segment,
    assistant_item,
    chat_messages,
    dump_history,
    load_history,
    transcription_languages,
    trim_history,
    truncate_item,
    user_item,
)
from .messenger import ConnectionGoneError, Messenger
from .protocol import (
    ClientEvent,
    ProtocolError,
    decode_audio,
    error_event,
    error_from,
    new_id,
    parse_client_event,
    server_event,
)
from .session import LEARNER, SessionConfig, apply_update, session_object, split_update
from .settings import Settings
from .store import (
    REMOVE,
    ConflictError,
    NotFoundError,
    SessionStore,
    known_version_condition,
    lease_until,
    slot_taken,
)

if TYPE_CHECKING:
    # Only a turn needs these (imported where it runs): asyncio alone is ~15-20 ms of the chunk
    # path's cold start, which never runs a turn's loop.
    import asyncio

    from .turn_io import MessengerPoster, SpeculationGate, WriteVerdict

log = logging.getLogger(__name__)

# botocore (and the HTTP stacks under the SDKs) log whole request and response bodies at
# DEBUG: children's transcripts in DynamoDB items and posted events. Capped at INFO unless a
# level was set for them explicitly, so a DEBUG log level never leaks what a child said.
for _name in ("botocore", "urllib3", "openai", "httpx2", "httpcore2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)

#: A lost race means a chunk arrived at our new watermark: each retry takes it along, so
#: retries make progress; the bound only stops a runaway.
MAX_APPEND_ATTEMPTS = 40
#: Audio parked in the connection item while an earlier chunk is missing: bounded in bytes
#: too, so the item stays far below DynamoDB's 400 KB whatever the chunk size.
MAX_PARKED_BYTES = 160 * 1024
#: How long a commit or truncate waits for in-flight appends / the turn to settle.
SETTLE_WAIT_S = 1.5


@dataclass
class StartedTurn:
    """A turn running on the process loop (``Tutor.start_turn``)."""

    future: concurrent.futures.Future[None]
    gate: SpeculationGate | None
    session_id: str
    utterance: ingestlib.Utterance | None
    #: Set for a turn started before the write that commits it (``WriteVerdict``).
    verdict: WriteVerdict | None = None


@dataclass
class ConnectResult:
    status: int
    session_id: str | None = None
    code: str | None = None
    message: str | None = None


class Tutor:
    """One handler invocation's view of a connection."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        chunks: ChunkStore,
        messenger: Messenger,
        providers: Callable[[], Any] | None = None,
        correlate: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Told the session id once it is known (the handler adds it to its log keys).
        self._correlate = correlate
        self.store = store
        self.chunks = chunks
        self.messenger = messenger
        self._providers_factory = providers
        self.connection_id = messenger.connection_id
        #: Figures of the last turn this invocation ran (metrics, the benchmark).
        self.last_turn: Any = None
        self._speech_end_at: float | None = None
        #: When the gateway received this event (``requestTimeEpoch``, ms): its place among the
        #: connection's un-numbered events (``kiddolingo.sequencing``).
        self._stamp = 0
        #: The number of the event that holds the connection's stream (a numbered event other
        #: than an append, while it takes effect); ``None`` once passed on.
        self._holding: int | None = None

    # ------------------------------------------------------------------ posting

    def post(self, event: dict[str, Any]) -> None:
        self.messenger.post(event)

    def post_error(self, exc: ProtocolError) -> None:
        self.post(error_from(exc))

    # ------------------------------------------------------------------ messages

    def handle_message(self, body: str | None, received_ms: int | None = None) -> None:
        """One client event (the ``$default`` route). Never raises for bad input.

        ``received_ms``: when the gateway received it (``requestTimeEpoch``); now if unknown."""
        self._stamp = int(received_ms) if received_ms else int(time.time() * 1000)
        try:
            event: ClientEvent | None = parse_client_event(body)
            bad: ProtocolError | None = None
        except ProtocolError as exc:
            event, bad = None, exc
        if (
            event is not None
            and event.type == "input_audio_buffer.append"
            and self._refused_short(event)
        ):
            return
        # An append goes on from the item this container's previous append left, when that was
        # a moment ago: its commit then checks that nothing else wrote the item since.
        known = None
        if event is not None and event.type == "input_audio_buffer.append":
            known = self.store.known_connection(self.connection_id)
            if known is not None and event.sequence not in (None, known.get("seq")):
                # Not the chunk right after the ones this container processed: another
                # container processed some since, and a commit from this item would only lose
                # (a failed write costs more than a read).
                known = None
        conn = known or self.store.get_connection(self.connection_id)
        if conn is None:
            self.post(
                error_event(
                    "session_not_found",
                    "This connection has no session; reconnect to start one.",
                    error_type="invalid_request_error",
                )
            )
            return
        if self._correlate is not None:
            self._correlate(conn["sid"])
        if not conn.get("greeted") and self.store.mark_greeted(self.connection_id):
            # The server's first message waits for the client's first (DESIGN §3).
            cfg = SessionConfig.from_item(conn.get("cfg"))
            self.post(
                server_event(
                    "session.created",
                    session=session_object(conn["sid"], cfg, self.settings.chat.model),
                )
            )
        try:
            if bad is not None:
                raise bad
            assert event is not None
            number = event.sequence if event.type != "input_audio_buffer.append" else None
            if number is not None:
                # Its place in the client's sequence: it waits for the events before it, and
                # the ones after it wait for it (``_pass_turn``).
                taken = self._take_turn(conn, number)
                if taken is None:
                    return  # a duplicate delivery: it took effect already
                conn = taken
            try:
                if known is not None:
                    self._on_input_audio_buffer_append(conn, event, known=True)
                else:
                    getattr(self, "_on_" + event.type.replace(".", "_"))(conn, event)
            finally:
                self._pass_turn()
        except ProtocolError as exc:
            self.post_error(exc)
        except MissingChunkError as exc:
            log.warning("audio chunk missing: %s", exc)  # the key stays in our logs
            self.post(
                error_event(
                    "audio_missing",
                    "Some of your audio could not be found; please say it again.",
                    error_type="server_error",
                )
            )
        except ConflictError as exc:
            log.warning("gave up after repeated write conflicts: %s", exc)
            self.post(
                error_event(
                    "busy", "Too many events at once; please try again.", error_type="server_error"
                )
            )
        except ConnectionGoneError:
            raise
        except Exception:
            # The schema should leave nothing to fail here; if something still does, the client
            # hears of it as an event (API Gateway would otherwise send a bare "Internal server
            # error" frame, and the local gateway nothing), and the session goes on.
            log.exception("%s failed", event.type if event is not None else "an event")
            self.post(
                error_event(
                    "server_error",
                    "The server could not handle this event; the session goes on.",
                    event_id=event.event_id if event is not None else None,
                    error_type="server_error",
                )
            )

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

    # the stream's order ---------------------------------------------------------------

    def _take_turn(self, conn: dict[str, Any], number: int) -> dict[str, Any] | None:
        """Wait until the connection's stream reaches a numbered event (the events before it
        took effect), and hold it there: the connection item as it is then, or ``None`` for a
        duplicate delivery (or a connection gone). Once the stream has not moved for
        ``sequencing.GAP_TIMEOUT_MS`` (and no event before is taking effect), the events still
        missing before it are skipped: what is parked before it is processed without them."""
        wait_s = sequencing.GAP_TIMEOUT_MS / 1000
        deadline = time.monotonic() + wait_s
        seen: tuple[int, int] | None = None
        hurry = False
        for _ in range(10_000):  # bounded by the deadline; this only stops a runaway
            state = ingestlib.AudioState.from_connection(conn)
            turn = sequencing.numbered_turn(state.next_seq, number)
            if turn is sequencing.Turn.DUPLICATE:
                return None
            if turn is sequencing.Turn.NOW:
                # Marked as taking effect: the events behind it wait, however long it takes.
                try:
                    conn = (
                        self.store.update_connection(
                            self.connection_id,
                            "SET #h = :mine, holdt = :t",
                            {":mine": number, ":t": int(time.time() * 1000)},
                            names={"#h": "hold"},
                            condition="seq = :mine",
                            return_values="ALL_NEW",
                        )
                        or conn
                    )
                except ConflictError:
                    return None  # the stream went on without it meanwhile
                self._holding = number
                return conn
            progress = (state.next_seq, state.version)
            now_ms = int(time.time() * 1000)
            if not hurry and progress != seen:
                seen, deadline = progress, time.monotonic() + wait_s  # it moves: wait on
            elif sequencing.held(state.hold, state.hold_since, state.next_seq, now_ms):
                deadline = max(deadline, time.monotonic() + 0.1)  # the event before is running
            if time.monotonic() >= deadline:
                hurry = True
                if any(p < number for p in state.pending):
                    self._process_audio(conn, None, None, before=number, hurry=True)
                    latest = self.store.get_connection(self.connection_id)
                    if latest is None:
                        return None
                    state = ingestlib.AudioState.from_connection(latest)
                if state.next_seq < number and not any(p < number for p in state.pending):
                    log.warning("skipping %d lost event(s)", number - state.next_seq)
                    with contextlib.suppress(ConflictError):
                        self.store.update_connection(
                            self.connection_id,
                            "SET seq = :mine, aver = :n",
                            {":mine": number, ":n": state.version + 1, ":v": state.version},
                            condition="aver = :v",
                        )
            else:
                time.sleep(0.02)
            latest = self.store.get_connection(self.connection_id)
            if latest is None:
                return None
            conn = latest
        raise ConflictError("too many concurrent writers")

    def _pass_turn(self) -> None:
        """Let the stream go on past the numbered event that holds it (once it took effect),
        and process the chunks that waited for it."""
        number, self._holding = self._holding, None
        if number is None:
            return
        try:
            item = self.store.update_connection(
                self.connection_id,
                "SET seq = :next, aver = aver + :one REMOVE #h, holdt",
                {":next": number + 1, ":mine": number, ":one": 1},
                names={"#h": "hold"},
                condition="seq = :mine",
                return_values="ALL_NEW",
            )
        except ConflictError:
            return  # the stream went on without it (or the connection is gone)
        if item and item.get("pend"):
            self._process_audio(item, None, None)

    def _overtaken(self, state: ingestlib.AudioState, what: str, event: ClientEvent) -> None:
        """Tell the client that events sent after this un-numbered one took effect first."""
        if event.sequence is None and state.last_stamp > self._stamp:
            self.post(
                error_from(
                    sequencing.unordered_error(
                        f"Audio sent after this {what} was processed before it.", event.event_id
                    )
                )
            )

    # session.update ------------------------------------------------------------------

    def _on_session_update(self, conn: dict[str, Any], event: ClientEvent) -> None:
        sid = conn["sid"]
        holder: dict[str, SessionConfig] = {}
        session, refused = split_update(event.payload["session"], conn.get("role"), event.event_id)

        def change(item: dict[str, Any]) -> dict[str, Any]:
            cfg = apply_update(
                SessionConfig.from_item(item.get("cfg")),
                session,
                event.event_id,
                self.settings.speech_voices,
            )
            holder["cfg"] = cfg
            return {"cfg": cfg.to_item()}

        try:
            self.store.mutate_session(sid, change)
        except NotFoundError:
            raise ProtocolError(
                "session_not_found", "The session has expired.", event_id=event.event_id
            ) from None
        cfg = holder["cfg"]
        # The audio version moves too: an append processing under the previous settings
        # meanwhile loses its write and goes again under these. The item as the write left it
        # shows the appends processed before it (``_overtaken``).
        conn = (
            self.store.update_connection(
                self.connection_id,
                "SET cfg = :c, aver = aver + :one",
                {":c": cfg.to_item(), ":one": 1},
                return_values="ALL_NEW",
            )
            or conn
        )
        self._pass_turn()
        if refused is not None:
            self.post_error(refused)
        self.post(
            server_event(
                "session.updated", session=session_object(sid, cfg, self.settings.chat.model)
            )
        )
        # Appends stamped after it that were processed under the previous settings.
        self._overtaken(ingestlib.AudioState.from_connection(conn), "session.update", event)

    # input_audio_buffer.append --------------------------------------------------------

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
            # A speculation released by this write holds the response slot from this write on;
            # speech that started again after it (in this same run) interrupts it at once.
            live = extra_sets.get("resp") or (
                conn.get("resp") if conn.get("cancel") != conn.get("resp") else None
            )
            barge_in = result.speech_started and cfg.interrupt_response and live
            prestarted: StartedTurn | None = None
            if spec_start is not None and result.speculate is not None:
                # The speculation starts reading and transcribing while this write is on its
                # way: it posts nothing before its verdict, and a lost write calls it off.
                prestarted = self.start_turn(
                    conn,
                    cfg,
                    result.speculate,
                    speculative=spec_start,
                    speech_end_at=_speech_end_at(result, result.speculate),
                )
            # (Manual mode: an utterance the server committed at its longest gets its turn, as a
            # client's commit does.)
            answers = cfg.create_response or not cfg.turn_detection
            turns = [u for u in result.committed if u.id not in released] if answers else []
            # The loop goes on after this write when our chunk is still ahead (after a skip) or
            # chunks may wait at the new watermark (lenient): the write returns the item then.
            goes_on = lenient or (own is not None and not own_in_run)
            precommit: StartedTurn | None = None
            if len(turns) == 1 and not goes_on and not to_run:
                # The turn that this write commits starts reading and transcribing while the
                # write is on its way (a DynamoDB round trip off the child's wait): it posts and
                # claims nothing before the write has landed, and stops if the write loses.
                # (Only the common case: one utterance, no turn of this invocation before it.)
                from .turn_io import WriteVerdict

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
                    # slower than chunks arrive, waiting for those would never end: from now on
                    # we commit without them and then process what got parked there ourselves.
                    # (From a kept item, any write since may have: the retry stays strict.)
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
                    # 410: the utterances ended here will never get their turn; their audio goes.
                    for u in [*result.committed, *(t[2] for t in to_run)]:
                        self.chunks.delete_prefix(utterance_prefix(conn["sid"], u.id))
                    raise
            if answers:
                if precommit is None:  # (a turn started before the write is running already)
                    to_run += [(conn, cfg, u) for u in turns]
            elif result.committed:
                # No automatic reply: the committed audio waits for the client's response.create
                # (in S3, all of it: the tail held in memory is written now).
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

    def _wait_for_response_create(
        self, conn: dict[str, Any], waiting: list[dict[str, Any]]
    ) -> None:
        """Add committed utterances to those waiting for ``response.create`` (``ready``).

        ``response.create`` answers all of them in one turn (one transcription), so they are
        bounded like one utterance: past ``max_utterance_ms`` of audio the oldest are dropped
        (their audio deleted) and the client is told. The write is conditional on the list as
        read, so a concurrent writer's utterances are never overwritten."""
        before: list[dict[str, Any]] | None = conn.get("ready")
        for _ in range(MAX_APPEND_ATTEMPTS):
            kept = [*(before or []), *waiting]
            dropped = []
            while len(kept) > 1 and _audio_ms(kept) > self.settings.max_utterance_ms:
                dropped.append(kept.pop(0))
            try:
                self.store.put_ready(self.connection_id, before, kept)
            except ConflictError as exc:
                if exc.item is None:  # the connection is gone: nobody else knows this audio
                    for u in waiting:
                        self._delete_audio(conn["sid"], ingestlib.Utterance.from_item(u))
                    raise ConnectionGoneError(self.connection_id) from None
                before = exc.item.get("ready")
                continue
            for u in dropped:
                self._delete_audio(conn["sid"], ingestlib.Utterance.from_item(u))
            if dropped:
                self.post(
                    error_event(
                        "committed_audio_dropped",
                        f"At most {self.settings.max_utterance_ms // 1000} s of committed audio "
                        "waits for response.create: the oldest was dropped. Send "
                        "response.create sooner.",
                    )
                )
            return
        raise ConflictError("ready: too many concurrent writers")

    def _park(
        self, seq: int, pcm: bytes, now_s: int, count: int, read: ingestlib.AudioState
    ) -> tuple[bool, dict[str, Any] | None]:
        """Park a chunk that is ahead of the watermark: (True, None); or (False, the item as
        it is now) when the watermark reached the chunk, the parking filled up or another
        append counted itself meanwhile (the item is ``None``: gone)."""
        try:
            # "Still ahead of the watermark" is checked, not the version: parking never makes
            # the invocation that closes the gap lose its race (no livelock in a burst). And
            # "still room": concurrent parkers cannot grow the item past its bound together
            # (counted in chunks the size of ours, the only bound a condition can check).
            room = max(1, min(ingestlib.MAX_PARKED_CHUNKS, MAX_PARKED_BYTES // max(1, len(pcm))))
            # The append-rate count is written on the count as read (concurrent parkers would
            # otherwise each write their own +1 over the same number, and a burst slip past
            # the limit): in this second's window, the count read; in a new one, no one else
            # has opened it.
            if read.rate_window == now_s:
                counted, values = "rlw = :w AND rln = :prev", {":prev": read.rate_count}
            else:
                counted, values = "(attribute_not_exists(rlw) OR rlw <> :w)", {}
            # ``gap``: since when chunks wait for the one missing at the watermark.
            self.store.update_connection(
                self.connection_id,
                "SET pend.#s = :a, rlw = :w, rln = :c, gap = if_not_exists(gap, :g)",
                {
                    ":a": pcm,
                    ":w": now_s,
                    ":c": count,
                    ":mine": seq,
                    ":room": room,
                    ":g": self._stamp,
                    **values,
                },
                names={"#s": str(seq)},
                condition=f"seq < :mine AND size(pend) < :room AND {counted}",
                item_on_conflict=True,
            )
            return True, None
        except ConflictError as exc:
            return False, exc.item

    def _commit_audio(
        self,
        before: ingestlib.AudioState,
        result: ingestlib.IngestResult,
        now_s: int,
        count: int,
        cancel: str | None = None,
        extra_sets: dict[str, Any] | None = None,
        extra_removes: list[str] | None = None,
        strict: bool = True,
        return_item: bool = False,
        known: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """The conditional write of the audio state (see ``kiddolingo.ingest``). A lost race
        raises ``ConflictError`` carrying the item as it is now (no second read). ``strict``:
        also lose if a chunk was parked at the new watermark since our read (it is ours to
        process); otherwise the caller processes it after the write. ``return_item``: the item
        as the write left it (else ``None``). ``known``: the kept item this write was made
        from, which must still be the item as stored. The item as the write left it is kept
        for this container's next append."""
        st = result.state
        sets = ["seq = :seq", "aver = :n", "timeline_ms = :tl", "rlw = :w", "rln = :c"]
        values: dict[str, Any] = {
            ":seq": st.next_seq,
            ":n": before.version + 1,
            ":v": before.version,
            ":tl": st.audio_ms,
            ":w": now_s,
            ":c": count,
        }
        names: dict[str, str] = {}
        removes: list[str] = []
        audio_sets, audio_removes = st.audio_attributes(before)
        for name, value in audio_sets.items():
            sets.append(f"{name} = :a_{name}")
            values[f":a_{name}"] = value
        removes += audio_removes
        if st.utterance is not None:
            sets.append("utt = :utt")
            values[":utt"] = st.utterance.to_item()
        else:
            removes.append("utt")
        if st.last_item_id:
            sets.append("last_item = :li")
            values[":li"] = st.last_item_id
        if cancel:
            sets.append("cancel = :cx")
            values[":cx"] = cancel
        if st.last_stamp:
            sets.append("lt = :lt")
            values[":lt"] = st.last_stamp
        if st.last_told:
            sets.append("lto = :lto")
            values[":lto"] = st.last_told
        if not st.pending:
            if before.gap_since:
                removes.append("gap")
        elif st.next_seq != before.next_seq:
            sets.append("gap = :gap")  # a gap at the new watermark: waited for from now
            values[":gap"] = self._stamp
        for i, (name, value) in enumerate((extra_sets or {}).items()):
            names[f"#x{i}"] = name
            values[f":x{i}"] = value
            sets.append(f"#x{i} = :x{i}")
        removes += list(extra_removes or [])
        for i, seq in enumerate(s for s in result.processed if s in before.pending):
            names[f"#p{i}"] = str(seq)
            removes.append(f"pend.#p{i}")
        expr = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        # Fails (and we re-read) if the very chunk at the new watermark was parked after our
        # read: it is ours to process. Parkers further ahead never make us lose the race.
        condition = "aver = :v"
        if strict:
            names["#w"] = str(st.next_seq)
            condition += " AND attribute_not_exists(pend.#w)"
        if known:
            kept, kept_values = known_version_condition(known)
            condition += f" AND {kept}"
            values.update(kept_values)
        keep = self.store.known is not None
        return self.store.update_connection(
            self.connection_id,
            expr,
            values,
            names,
            condition=condition,
            return_values="ALL_NEW" if return_item or keep else "NONE",
            item_on_conflict=True,
            keep=keep,
        )

    # input_audio_buffer.commit / clear ------------------------------------------------

    def _settled_audio(
        self, conn: dict[str, Any], event: ClientEvent
    ) -> tuple[dict[str, Any], ingestlib.AudioState]:
        """Wait (briefly) for appends still in flight. A numbered event holds the stream, so
        every append before it is in. For an un-numbered one, a gap means one is on its way;
        and the appends sent just before it may still be running: it waits until the audio
        processing has been quiet for ``QUIET_MS``, or an event sent after it was processed."""
        deadline = time.monotonic() + SETTLE_WAIT_S
        state = ingestlib.AudioState.from_connection(conn)
        if event.sequence is not None:
            return conn, state
        quiet_s = sequencing.QUIET_MS / 1000
        changed = time.monotonic()
        while time.monotonic() < deadline:
            # With no audio yet, the commit waits for it all the settle time: a commit of
            # nothing is an error, and its appends are likely still on their way.
            quiet = time.monotonic() - changed >= quiet_s and state.utterance is not None
            if not state.pending and (state.last_stamp > self._stamp or quiet):
                break
            time.sleep(0.03)
            latest = self.store.get_connection(self.connection_id) or conn
            newer = ingestlib.AudioState.from_connection(latest)
            if newer.version != state.version:
                changed = time.monotonic()
            conn, state = latest, newer
        return conn, state

    def _on_input_audio_buffer_commit(self, conn: dict[str, Any], event: ClientEvent) -> None:
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if attempt == 0:
                conn, state = self._settled_audio(conn, event)
            else:
                state = ingestlib.AudioState.from_connection(conn)
            new_state, utt = ingestlib.commit_manual(state)
            if utt is None:
                hint = "" if event.sequence is not None else " " + sequencing.REMEDY
                raise ProtocolError(
                    "input_audio_buffer_commit_empty",
                    "There is no audio to commit: append audio first." + hint,
                    event_id=event.event_id,
                )
            new_state = replace(new_state, last_stamp=max(state.last_stamp, self._stamp))
            if not self._replace_audio_state(state, new_state):
                conn = self.store.get_connection(self.connection_id) or conn
                continue
            self._pass_turn()  # the appends after the commit start the next utterance
            self._overtaken(state, "commit", event)
            try:
                self.post(
                    server_event(
                        "input_audio_buffer.committed",
                        item_id=utt.item_id,
                        previous_item_id=state.last_item_id,
                    )
                )
            except ConnectionGoneError:
                # 410: this utterance will never get its turn; its audio goes now.
                self.chunks.delete_prefix(utterance_prefix(conn["sid"], utt.id))
                raise
            cfg = SessionConfig.from_item(conn.get("cfg"))
            self.run_turn(conn, cfg, utt)
            return
        raise ConflictError("commit")

    def _on_input_audio_buffer_clear(self, conn: dict[str, Any], event: ClientEvent) -> None:
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if attempt == 0:
                conn, state = self._settled_audio(conn, event)
            else:
                state = ingestlib.AudioState.from_connection(conn)
            new_state, dropped = ingestlib.clear(state)
            new_state = replace(new_state, last_stamp=max(state.last_stamp, self._stamp))
            if not self._replace_audio_state(state, new_state):
                conn = self.store.get_connection(self.connection_id) or conn
                continue
            self._pass_turn()
            self._overtaken(state, "clear", event)
            if dropped is not None:
                self.chunks.delete_prefix(utterance_prefix(conn["sid"], dropped.id))
            self.post(server_event("input_audio_buffer.cleared"))
            return
        raise ConflictError("clear")

    def _replace_audio_state(
        self, before: ingestlib.AudioState, after: ingestlib.AudioState
    ) -> bool:
        """Commit a change of the audio state that processes no audio. False: lost a race."""
        try:
            self._commit_audio(
                before, ingestlib.IngestResult(state=after), before.rate_window, before.rate_count
            )
        except ConflictError:
            return False
        return True

    # responses ------------------------------------------------------------------------

    def _on_response_create(self, conn: dict[str, Any], event: ClientEvent) -> None:
        if slot_taken(conn):
            raise ProtocolError(
                "conversation_already_has_active_response",
                "The tutor is already answering; cancel it first or wait for response.done.",
                event_id=event.event_id,
            )
        cfg = SessionConfig.from_item(conn.get("cfg"))
        stale = conn.get("resp")
        if stale and conn.get("cancel") != stale:
            # The turn that held the slot died without ending its response (its lease ran out:
            # a Lambda timeout, say): end it for the client, which may still show it speaking.
            from .turn_io import failed_response_events

            held = {"object": "realtime.response", "id": stale, "status": "in_progress"}
            self.post(failed_response_events({**held, "output": []}, stale, cfg.voice)[-1])
        self._pass_turn()  # the reply runs for seconds: the audio after it goes on meanwhile
        for _ in range(MAX_APPEND_ATTEMPTS):
            ready = conn.get("ready") or []
            waiting = [u for u in (ingestlib.Utterance.from_item(x) for x in ready) if u]
            if not waiting:
                self.run_turn(conn, cfg, None)
                return
            # The audio committed without a reply (create_response false) is the child's turn
            # now: taken only as read, so an utterance committed meanwhile is not dropped (it
            # is read again and taken along).
            if self.store.take_ready(self.connection_id, ready):
                break
            latest = self.store.get_connection(self.connection_id)
            if latest is None:
                return  # the connection is gone ($disconnect deletes the waiting audio)
            conn = latest
        else:
            raise ConflictError("response.create: the waiting audio kept changing")
        turn = replace(
            waiting[-1],
            start_ms=waiting[0].start_ms,
            keys=tuple(k for u in waiting for k in u.keys),
            nbytes=sum(u.nbytes for u in waiting),
        )
        try:
            self.run_turn(conn, cfg, turn)
        finally:
            for u in waiting[:-1]:
                self.chunks.delete_prefix(utterance_prefix(conn["sid"], u.id))

    def _on_response_cancel(self, conn: dict[str, Any], event: ClientEvent) -> None:
        rid = event.payload.get("response_id")
        cancelled = self.store.cancel_response(
            self.connection_id, rid if isinstance(rid, str) else None
        )
        if cancelled is None:
            raise ProtocolError(
                "response_cancel_not_active",
                "There is no response in progress to cancel.",
                event_id=event.event_id,
            )

    # conversation.item.truncate -------------------------------------------------------

    def _on_conversation_item_truncate(self, conn: dict[str, Any], event: ClientEvent) -> None:
        sid = conn["sid"]
        item_id = event.payload["item_id"]
        end_ms = float(event.payload["audio_end_ms"])
        # It comes with a barge-in, while the child speaks: the audio after it must not wait
        # for the reply it truncates to settle.
        self._pass_turn()
        deadline = time.monotonic() + SETTLE_WAIT_S
        while True:
            session = self.store.get_session(sid)
            if session is None:
                raise ProtocolError(
                    "session_not_found", "The session has expired.", event_id=event.event_id
                )
            in_flight = (session.get("resp") or {}).get("item") == item_id
            if not in_flight or time.monotonic() >= deadline:
                break
            time.sleep(0.05)  # the turn stops within one chunk of a barge-in; let it finish
        result: dict[str, int] = {}

        def change(item: dict[str, Any]) -> dict[str, Any] | None:
            resp = item.get("resp") or {}
            if resp.get("item") == item_id:  # still in flight: applied when it finishes
                resp = dict(resp)
                resp["trunc"] = int(end_ms)
                result["ms"] = int(end_ms)
                return {"resp": resp}
            hist = load_history(item.get("hist"))
            for i, h in enumerate(hist):
                if h.get("id") == item_id and h.get("role") == "assistant":
                    trimmed, clamped = truncate_item(h, end_ms)
                    result["ms"] = clamped
                    hist[i] = trimmed
                    return {"hist": dump_history(hist)}
            return None

        self.store.mutate_session(sid, change)
        if "ms" not in result:
            raise ProtocolError(
                "item_not_found",
                f"No assistant item {item_id!r} in this conversation.",
                event_id=event.event_id,
                param="item_id",
            )
        self.post(
            server_event(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=0,
                audio_end_ms=result["ms"],
            )
        )

    # ------------------------------------------------------------------ the turn

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
    ) -> StartedTurn:
        """Start a turn on the process loop (it asks for its place under the turns-per-minute
        limit itself, before it reaches a provider: ``_admit_turn``).

        ``speculative``: the id of a speculation started in the pause; nothing is posted until
        the append that ends the utterance releases it, and all of it is dropped (streams closed,
        nothing stored) if the child goes on speaking. ``announce``: events of the caller still
        to post first (``speech_stopped``, ``committed``), posted while the audio is read.
        ``verdict``: the turn starts before the caller's write that commits its utterance, and
        waits for it before it posts anything (the events to post first come with it)."""
        from . import runtime

        gate = None
        if speculative:
            from .turn_io import SpeculationGate

            silence_ms = int((cfg.turn_detection or {}).get("silence_duration_ms") or 1200)
            # The verdict cannot come before the window has passed since the last speech sample
            # and the append closing it has landed (a little after): no look before that. (The
            # append that starts a speculation always knows the speech's end.)
            now = time.monotonic()
            end = speech_end_at if speech_end_at is not None else now
            due_in_s = end + silence_ms / 1000 + 0.02 - now
            gate = SpeculationGate(
                self.store, self.connection_id, speculative, silence_ms, due_in_s=due_in_s
            )
        future = runtime.submit(
            self._turn(conn, cfg, utt, gate, speech_end_at or time.monotonic(), announce, verdict)
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

    def _delete_written(self, writes: tuple[tuple[str, bytes], ...]) -> None:
        """Delete the utterances that ``writes`` (S3 keys, audio) went to: their audio."""
        for prefix in {key.rsplit("/", 1)[0] + "/" for key, _ in writes}:  # (chunk_key's)
            try:
                self.chunks.delete_prefix(prefix)
            except Exception:  # the lifecycle rule is the backstop
                log.exception("could not delete the utterance audio")

    def _delete_audio(self, session_id: str, utt: ingestlib.Utterance | None) -> None:
        if utt is None:
            return
        try:
            self.chunks.delete_prefix(utterance_prefix(session_id, utt.id))
        except Exception:  # the lifecycle rule is the backstop
            log.exception("could not delete the utterance audio")

    def _admit_turn(self, session_id: str) -> bool:
        """Turns per minute: count this turn in the session's budget, before it reaches a
        provider. False: over the limit (nothing was counted).

        Counted per session (every connection of it shares one count) and atomically
        (``SessionStore.count_turn``); every turn that reaches a provider counts: a speculation
        too, when it starts, and a speculation the child talks over is not given back (its
        transcription was paid for). A released speculation is its utterance's turn: the
        utterance is not counted again."""
        limit = self.settings.max_turns_per_minute
        return limit <= 0 or self.store.count_turn(session_id, limit)

    async def _refuse_turn(self, poster: MessengerPoster, gate: SpeculationGate | None) -> None:
        """The turn is over the turns-per-minute limit: tell the child, reach no provider.

        A speculation withdraws its marker instead, silently: the utterance then gets its own
        turn when the pause ends, which asks the limit again (and tells the child if it still
        refuses). Only a speculation released meanwhile tells the child itself."""
        import asyncio

        if gate is not None:
            withdrawn = await asyncio.to_thread(
                self.store.withdraw_speculation, self.connection_id, gate.spec_id
            )
            if withdrawn:
                gate.call_off()
                return
            # Released meanwhile: the write that released it took the response slot for it.
            await asyncio.to_thread(
                self.store.release_response,
                self.connection_id,
                speculation_response_id(gate.spec_id),
            )
        await poster.post(
            error_event(
                "rate_limited",
                f"Too many turns: at most {self.settings.max_turns_per_minute} a minute. "
                "Let's take a little break!",
                error_type="rate_limit_error",
            )
        )

    async def _turn(
        self,
        conn: dict[str, Any],
        cfg: SessionConfig,
        utt: ingestlib.Utterance | None,
        gate: SpeculationGate | None = None,
        speech_end_at: float | None = None,
        announce: tuple[dict[str, Any], ...] = (),
        verdict: WriteVerdict | None = None,
    ) -> None:
        import asyncio

        from .turn_io import GatedPoster, MessengerPoster, WriteLost

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
                    self._turn_body(conn, cfg, utt, poster, exits, verdict, ids),
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

        from .audio import pcm16_to_wav
        from .providers.base import Usage
        from .turn import TurnRequest, TurnRunner
        from .turn_io import GatedPoster, StoreResponseControl

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
            from .providers.errors import ProviderError

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
        from .metrics import emit_turn_metrics

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

        from .turn_io import WriteLost, failed_response_events

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

    async def _apologize_for(
        self, exc: Any, cfg: SessionConfig, providers: Any, poster: MessengerPoster, speech: Any
    ) -> None:
        """A turn that failed before the reply: the apology alone, outside the history."""
        from .turn import TurnRequest, TurnRunner
        from .turn_io import StoreResponseControl

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
        from .metrics import emit_turn_metrics

        emit_turn_metrics(self.last_turn)
        if self.last_turn.reason == "connection_gone":
            raise ConnectionGoneError(self.connection_id)

    def _speculation_missed(
        self, response_id: str, item_id: str, user_text: str, transcription_ms: float
    ) -> None:
        """The metrics of a speculation discarded before its reply began."""
        from .metrics import emit_turn_metrics
        from .turn import TurnOutcome

        outcome = TurnOutcome(
            response_id, item_id, "cancelled", "speculation_discarded", user_text=user_text
        )
        outcome.timings.transcription_ms = transcription_ms
        outcome.timings.speech_end_at = self._speech_end_at
        self.last_turn = outcome
        emit_turn_metrics(outcome, speculative="miss")

    def _providers(self) -> Any:
        if self._providers_factory is not None:
            return self._providers_factory()
        from .providers import build_providers

        return build_providers(self.settings)

    def _begin_response(
        self, sid: str, response_id: str, item_id: str, slot_taken: bool = False
    ) -> None:
        """Claim the connection's response slot, under a lease (``slot_taken``: already claimed
        by the write that released a speculation), and record the response in the session."""
        if not slot_taken:
            try:
                self.store.claim_response(self.connection_id, response_id, self.settings.lease_s)
            except NotFoundError:
                raise ConnectionGoneError(self.connection_id) from None
        # One write: the new response replaces whatever the session held (no read needed).
        self.store.set_session_fields(
            sid,
            {"resp": {"id": response_id, "item": item_id, "conn": self.connection_id, "segs": []}},
        )

    def _drop_response(self, sid: str, response_id: str) -> None:
        """Forget a discarded speculative response: no history, no marker left behind."""
        with contextlib.suppress(NotFoundError):
            self.store.mutate_session(
                sid,
                lambda item: (
                    {"resp": REMOVE} if (item.get("resp") or {}).get("id") == response_id else None
                ),
            )
        self.store.release_response(self.connection_id, response_id)

    def _end_response(
        self, sid: str, response_id: str, utt: ingestlib.Utterance | None, outcome: Any
    ) -> None:
        def change(item: dict[str, Any]) -> dict[str, Any]:
            hist = load_history(item.get("hist"))
            if utt is not None and outcome.user_text:
                # A flagged transcript never reaches the history as-is.
                text = (
                    "[something the tutor could not talk about]"
                    if outcome.user_flagged
                    else outcome.user_text
                )
                hist.append(user_item(utt.item_id, text))
            resp = item.get("resp") or {}
            if outcome.segments:
                assistant = assistant_item(outcome.item_id, outcome.segments)
                if resp.get("id") == response_id and resp.get("trunc") is not None:
                    assistant, _ = truncate_item(assistant, resp["trunc"])
                hist.append(assistant)  # an empty text is skipped by the chat context
            updates: dict[str, Any] = {
                "hist": dump_history(trim_history(hist, 2 * self.settings.max_history_messages))
            }
            if resp.get("id") == response_id:
                updates["resp"] = REMOVE
            return updates

        try:
            self.store.mutate_session(sid, change)
        except NotFoundError:
            return
        # A newer response may have taken over the connection, or it is gone: fine either way.
        self.store.release_response(self.connection_id, response_id)

    # ------------------------------------------------------------------ disconnect

    def disconnect(self) -> None:
        old = self.store.delete_connection(self.connection_id)
        if not old:
            return
        state = ingestlib.AudioState.from_connection(old)
        sid = old.get("sid")
        if sid:
            with contextlib.suppress(NotFoundError):
                self.store.mutate_session(sid, lambda item: {"timeline_ms": state.audio_ms})
            # The audio of this connection is the child's voice: none of it outlives it.
            open_ids = [state.utterance.id] if state.utterance is not None else []
            open_ids += [str(u["id"]) for u in old.get("ready") or []]
            for uid in open_ids:
                self.chunks.delete_prefix(utterance_prefix(sid, uid))


def _speculation_changes(
    spec: dict[str, Any], result: ingestlib.IngestResult, create_response: bool, lease_s: float
) -> tuple[dict[str, Any], list[str], set[str], str | None]:
    """What an ingest result does to the speculative turn: (attributes to set, to remove, the
    utterances whose speculation is released, the id of a speculation to start). A release
    takes the connection's response slot for the speculation's response in the same write:
    from then on a barge-in finds it there and cancels it, even before its first post."""
    sets: dict[str, Any] = {}
    removes: list[str] = []
    released: set[str] = set()
    if result.speech_resumed and spec:
        removes.append("spec")  # the child went on: the speculation is void
        spec = {}
    for utt in result.committed:
        if spec.get("utt") == utt.id:
            # The speculative turn for this pause is ready: let it speak.
            sets["spec_rel"] = spec["id"]
            sets["resp"] = speculation_response_id(spec["id"])
            sets["rexp"] = lease_until(lease_s)
            released.add(utt.id)
    start = None
    # The VAD only signals "speculate" when speculation is configured (a fraction > 0).
    if result.speculate is not None and not result.committed and create_response:
        start = new_id("spec")
        sets["spec"] = {"id": start, "utt": result.speculate.id}
        removes = [r for r in removes if r != "spec"] + ["spec_rel"]
    return sets, removes, released, start


def speculation_response_id(spec_id: str) -> str:
    """The id of the response a speculation gives, once released (``spec_<hex>``)."""
    return "resp_" + spec_id.removeprefix("spec_")


def _speech_end_at(result: ingestlib.IngestResult, utt: ingestlib.Utterance) -> float:
    """Where the child's last speech sample of ``utt`` lies in wall time (the metrics)."""
    return time.monotonic() - (result.state.audio_ms - (utt.end_ms or 0)) / 1000


def _audio_ms(utterances: list[dict[str, Any]]) -> int:
    """How much audio stored utterances (``Utterance.to_item``) hold, in ms."""
    return sum(int(u.get("end", u["start"])) - int(u["start"]) for u in utterances)


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


def _parking_full(state: ingestlib.AudioState, pcm: bytes) -> bool:
    parked = sum(len(v) for v in state.pending.values()) + len(pcm)
    return len(state.pending) >= ingestlib.MAX_PARKED_CHUNKS or parked > MAX_PARKED_BYTES


# ---------------------------------------------------------------------- connect


def connect(
    store: SessionStore,
    settings: Settings,
    connection_id: str,
    *,
    learner_id: str,
    session_id: str | None,
    check_owner: Callable[[str | None], None],
    role: str = LEARNER,
) -> ConnectResult:
    """Create a session, or resume ``session_id``, and map the connection to it."""
    if session_id:
        session = store.get_session(session_id)
        if session is None:
            return ConnectResult(
                404, code="session_not_found", message="That session has expired; start a new one."
            )
        check_owner(session.get("learner"))
        # As stored now (an earlier deployment's map is read and rewritten as one string).
        cfg = SessionConfig.from_item(session.get("cfg")).to_item()
        timeline = int(session.get("timeline_ms", 0))
    else:
        session_id = new_id("sess")
        cfg = SessionConfig.default(settings.speech_voice, settings.target_language).to_item()
        store.create_session(session_id, learner_id, cfg)
        timeline = 0
    # The token's role goes with the connection: only a teacher's may set the lesson plan.
    store.bind_connection(connection_id, session_id, learner_id, cfg, timeline, role=role)
    return ConnectResult(200, session_id=session_id)
