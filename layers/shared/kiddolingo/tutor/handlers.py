"""The client events other than an append (``session.update``, the buffer's commit and clear,
``response.create`` / ``cancel``, ``conversation.item.truncate``) and ``$disconnect``. The route
table that names them is ``kiddolingo.service.ROUTES``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import ingest as ingestlib
from .. import sequencing
from ..chunk_keys import utterance_prefix
from ..conversation import dump_history, load_history, truncate_item
from ..messenger import ConnectionGoneError
from ..protocol import ClientEvent, ProtocolError, server_event
from ..session import SessionConfig, apply_update, session_object, split_update
from ..store import ConflictError, NotFoundError, slot_taken
from .base import MAX_APPEND_ATTEMPTS, SETTLE_WAIT_S
from .stream import StreamOrder


class EventHandlers(StreamOrder):
    """One method per client event type."""

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
        conn = self.store.set_audio_config(self.connection_id, cfg.to_item()) or conn
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

    def _on_input_audio_buffer_commit(self, conn: dict[str, Any], event: ClientEvent) -> None:
        def commit(
            state: ingestlib.AudioState,
        ) -> tuple[ingestlib.AudioState, ingestlib.Utterance | None]:
            new_state, utt = ingestlib.commit_manual(state)
            if utt is None:
                hint = "" if event.sequence is not None else " " + sequencing.REMEDY
                raise ProtocolError(
                    "input_audio_buffer_commit_empty",
                    "There is no audio to commit: append audio first." + hint,
                    event_id=event.event_id,
                )
            return new_state, utt

        conn, state, utt = self._change_audio(conn, event, commit, "commit")
        assert utt is not None
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

    def _on_input_audio_buffer_clear(self, conn: dict[str, Any], event: ClientEvent) -> None:
        conn, _state, dropped = self._change_audio(conn, event, ingestlib.clear, "clear")
        if dropped is not None:
            self.chunks.delete_prefix(utterance_prefix(conn["sid"], dropped.id))
        self.post(server_event("input_audio_buffer.cleared"))

    def _change_audio(
        self,
        conn: dict[str, Any],
        event: ClientEvent,
        change: Callable[
            [ingestlib.AudioState], tuple[ingestlib.AudioState, ingestlib.Utterance | None]
        ],
        what: str,
    ) -> tuple[dict[str, Any], ingestlib.AudioState, ingestlib.Utterance | None]:
        """Write ``change`` of the audio state once the appends before ``event`` settled,
        going again from the item after each lost race, then pass the stream on. Returns the
        item, the state as it was before the change, and the utterance ``change`` returned."""
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if attempt == 0:
                conn, state = self._settled_audio(conn, event)
            else:
                state = ingestlib.AudioState.from_connection(conn)
            new_state, utt = change(state)
            new_state = replace(new_state, last_stamp=max(state.last_stamp, self._stamp))
            if not self._replace_audio_state(state, new_state):
                conn = self.store.get_connection(self.connection_id) or conn
                continue
            self._pass_turn()
            self._overtaken(state, what, event)
            return conn, state, utt
        raise ConflictError(what)

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
            from ..turn_io import failed_response_events

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
            if resp.get("item") == item_id:
                # Still in flight: the turn stops posting (``resp.trunc``) and applies it when
                # it ends. It is kept by item too: the child's next turn may replace ``resp``
                # before this reply has ended, and the truncation must outlive that.
                result["ms"] = int(end_ms)
                truncs = {**(item.get("truncs") or {}), item_id: int(end_ms)}
                return {"resp": {**resp, "trunc": int(end_ms)}, "truncs": truncs}
            hist = load_history(item.get("hist"))
            for i, h in enumerate(hist):
                if h.get("id") == item_id and h.get("role") == "assistant":
                    trimmed, clamped = truncate_item(h, end_ms)
                    result["ms"] = clamped
                    hist[i] = trimmed
                    return {"hist": dump_history(hist)}
            return None

        while True:
            self.store.mutate_session(sid, change)
            if "ms" in result or time.monotonic() >= deadline:
                break
            # Neither in flight nor in the history yet: the child's next turn took ``resp``
            # while this reply was still ending; it reaches the history within the wait.
            time.sleep(0.05)
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
