"""The connection's audio state and event stream (``seq``, ``aver``, ``pend``, ``hold``;
``kiddolingo.ingest`` says what they mean): every expression that writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .connections import Connections
from .known import known_version_condition

if TYPE_CHECKING:
    from ..ingest import AudioState


class AudioWrites(Connections):
    """The chunk path's and the stream's writes of the connection item."""

    def park(
        self,
        connection_id: str,
        seq: int,
        pcm: bytes,
        *,
        room: int,
        read: AudioState,
        now_s: int,
        count: int,
        stamp: int,
    ) -> None:
        """Park chunk ``seq`` in the item (``pend``) while it is still ahead of the watermark and
        fewer than ``room`` chunks are parked, counting it as append ``count`` of second
        ``now_s``. ``read`` is the audio state the count was made from; ``stamp`` is when the
        chunks started to wait for the gap, if they did not already. ``ConflictError`` (with
        the item as it is now, ``None`` if the connection is gone) when it cannot be parked.

        The write checks the watermark, not the audio version. Parking then never makes the
        invocation that closes the gap lose its race, so a burst of chunks cannot livelock."""
        # The append-rate count is written on the count as read: concurrent parkers would
        # otherwise each write their own +1 over the same number, and a burst would slip
        # past the limit. In this second's window the count must be as read; in a new
        # second, no other append may have opened the window yet.
        if read.rate_window == now_s:
            counted, values = "rlw = :w AND rln = :prev", {":prev": read.rate_count}
        else:
            counted, values = "(attribute_not_exists(rlw) OR rlw <> :w)", {}
        # ``gap`` records since when chunks have waited for the one missing at the watermark.
        self.update_connection(
            connection_id,
            "SET pend.#s = :a, rlw = :w, rln = :c, gap = if_not_exists(gap, :g)",
            {
                ":a": pcm,
                ":w": now_s,
                ":c": count,
                ":mine": seq,
                ":room": room,
                ":g": stamp,
                **values,
            },
            names={"#s": str(seq)},
            condition=f"seq < :mine AND size(pend) < :room AND {counted}",
            item_on_conflict=True,
        )

    def commit_audio(
        self,
        connection_id: str,
        before: AudioState,
        after: AudioState,
        change: AudioCommitChange,
    ) -> dict[str, Any] | None:
        """The conditional write of the audio state ``after``, computed from ``before`` (as
        read). See ``AudioCommitChange`` for what else it writes and checks.

        A lost race raises ``ConflictError``, which carries the item as it is now. The item as
        the write left it is returned with ``change.return_item`` (else ``None``), and kept for
        this container's next append."""
        update = _audio_update(before, after, change)
        # Fails (and the caller re-reads) if the very chunk at the new watermark was parked
        # after the read: it is the caller's to process. Parkers further ahead never make it
        # lose the race.
        condition = "aver = :v"
        if change.strict:
            update.names["#w"] = str(after.next_seq)
            condition += " AND attribute_not_exists(pend.#w)"
        if change.releases:
            condition += " AND spec.id = :rel"
            update.values[":rel"] = change.releases
        if change.known:
            kept, kept_values = known_version_condition(change.known)
            condition += f" AND {kept}"
            update.values.update(kept_values)
        keep = self.known is not None
        return self.update_connection(
            connection_id,
            update.expression(),
            update.values,
            update.names,
            condition=condition,
            return_values="ALL_NEW" if change.return_item or keep else "NONE",
            item_on_conflict=True,
            keep=keep,
        )

    def hold_stream(self, connection_id: str, number: int, now_ms: int) -> dict[str, Any] | None:
        """Mark the numbered event ``number`` as taking effect, so the events after it wait:
        the item as the write left it. ``ConflictError`` if the stream is no longer at it."""
        return self.update_connection(
            connection_id,
            "SET #h = :mine, holdt = :t",
            {":mine": number, ":t": now_ms},
            names={"#h": "hold"},
            condition="seq = :mine",
            return_values="ALL_NEW",
        )

    def pass_stream(self, connection_id: str, number: int) -> dict[str, Any] | None:
        """Move the stream past the numbered event that held it, and let the audio version move
        on: the item as the write left it. ``ConflictError`` if the stream went on without it."""
        return self.update_connection(
            connection_id,
            "SET seq = :next, aver = aver + :one REMOVE #h, holdt",
            {":next": number + 1, ":mine": number, ":one": 1},
            names={"#h": "hold"},
            condition="seq = :mine",
            return_values="ALL_NEW",
        )

    def skip_to(self, connection_id: str, number: int, version: int) -> None:
        """Skip the events still missing before ``number``, if the audio state is still at
        ``version``. ``ConflictError`` otherwise."""
        self.update_connection(
            connection_id,
            "SET seq = :mine, aver = :n",
            {":mine": number, ":n": version + 1, ":v": version},
            condition="aver = :v",
        )

    def set_audio_config(self, connection_id: str, config: str) -> dict[str, Any] | None:
        """Store a connection's new settings and move its audio version, so an append still
        processing under the previous settings loses its write and goes again under these:
        the item as the write left it."""
        return self.update_connection(
            connection_id,
            "SET cfg = :c, aver = aver + :one",
            {":c": config, ":one": 1},
            return_values="ALL_NEW",
        )


@dataclass(frozen=True)
class AudioCommitChange:
    """What an audio commit writes besides the new audio state, and what it checks."""

    #: The append-rate window (epoch second) and the count of appends in it.
    now_s: int
    count: int
    #: The gateway stamp (ms) from which a gap at the new watermark is waited for.
    stamp: int
    #: A response id that must stop (a barge-in).
    cancel: str | None = None
    #: The parked chunks this write processed: removed from ``pend``.
    processed: tuple[int, ...] = ()
    #: Other attributes to set (the speculation's) and to remove.
    extra_sets: dict[str, Any] = field(default_factory=dict)
    extra_removes: tuple[str, ...] = ()
    #: Lose when a chunk was parked at the new watermark since the read.
    strict: bool = True
    #: Return the item as the write left it.
    return_item: bool = False
    #: The kept item the write was made from: it must still be the item as stored.
    known: dict[str, Any] | None = None
    #: The speculation this write releases: it must still be the connection's.
    releases: str | None = None


@dataclass
class _Update:
    """An UpdateExpression being built: its SET and REMOVE clauses, values and names."""

    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def set(self, attr: str, placeholder: str, value: Any) -> None:
        self.sets.append(f"{attr} = {placeholder}")
        self.values[placeholder] = value

    def expression(self) -> str:
        removes = " REMOVE " + ", ".join(self.removes) if self.removes else ""
        return "SET " + ", ".join(self.sets) + removes


def _audio_update(before: AudioState, st: AudioState, change: AudioCommitChange) -> _Update:
    """The SET and REMOVE clauses that store ``st`` over ``before`` with ``change``."""
    update = _Update(values={":v": before.version})
    update.set("seq", ":seq", st.next_seq)
    update.set("aver", ":n", before.version + 1)
    update.set("timeline_ms", ":tl", st.audio_ms)
    update.set("rlw", ":w", change.now_s)
    update.set("rln", ":c", change.count)
    audio_sets, audio_removes = st.audio_attributes(before)
    for name, value in audio_sets.items():
        update.set(name, f":a_{name}", value)
    update.removes += audio_removes
    if st.utterance is not None:
        update.set("utt", ":utt", st.utterance.to_item())
    else:
        update.removes.append("utt")
    if st.last_item_id:
        update.set("last_item", ":li", st.last_item_id)
    if change.cancel:
        update.set("cancel", ":cx", change.cancel)
    if st.last_stamp:
        update.set("lt", ":lt", st.last_stamp)
    if st.last_told:
        update.set("lto", ":lto", st.last_told)
    if not st.pending:
        if before.gap_since:
            update.removes.append("gap")
    elif st.next_seq != before.next_seq:
        update.set("gap", ":gap", change.stamp)  # a gap at the new watermark: from now
    for i, (name, value) in enumerate(change.extra_sets.items()):
        update.names[f"#x{i}"] = name
        update.set(f"#x{i}", f":x{i}", value)
    update.removes += list(change.extra_removes)
    for i, seq in enumerate(s for s in change.processed if s in before.pending):
        update.names[f"#p{i}"] = str(seq)
        update.removes.append(f"pend.#p{i}")
    return update
