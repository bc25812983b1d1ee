"""The chunk path's writes to the connection item: parking a chunk that came early, the
conditional commit of the audio state, and the list of utterances waiting for
``response.create``. What the item holds is described in ``kiddolingo.store``.
"""

from __future__ import annotations

from typing import Any

from .. import ingest as ingestlib
from ..messenger import ConnectionGoneError
from ..protocol import error_event
from ..store import AudioCommitChange, ConflictError
from .base import MAX_APPEND_ATTEMPTS, MAX_PARKED_BYTES
from .turns import Turns


class AudioCommit(Turns):
    """The audio state's writes (``kiddolingo.ingest`` decides what they hold)."""

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
        """Park a chunk that is ahead of the watermark in the connection item.

        Returns ``(True, None)`` once it is parked. Returns ``(False, item)`` when the watermark
        reached the chunk, the parking filled up or another append counted itself meanwhile;
        ``item`` is the connection item as it is now, or ``None`` if the connection is gone."""
        # The write checks that there is still room, so concurrent parkers cannot grow the item
        # past its bound together. The room is counted in chunks the size of ours, the only
        # bound a condition can check.
        room = max(1, min(ingestlib.MAX_PARKED_CHUNKS, MAX_PARKED_BYTES // max(1, len(pcm))))
        try:
            self.store.park(
                self.connection_id,
                seq,
                pcm,
                room=room,
                read=read,
                now_s=now_s,
                count=count,
                stamp=self._stamp,
            )
        except ConflictError as exc:
            return False, exc.item
        return True, None

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
        releases: str | None = None,
    ) -> dict[str, Any] | None:
        """The conditional write of the audio state that ``kiddolingo.ingest`` computed.

        A lost race raises ``ConflictError``, which carries the item as it is now, so the caller
        need not read it again. With ``strict``, the write also loses when a chunk was parked
        at the new watermark since our read, because that chunk is ours to process; without
        it, the caller processes such a chunk after the write. With ``return_item`` the item as
        the write left it is returned, else ``None``. ``known`` is the kept item this write was
        made from, and the write checks that it is still the item as stored. ``releases``: the
        id of the speculation this write releases, which must still be the connection's (its
        turn may have withdrawn it since our read, and then nobody would answer)."""
        change = AudioCommitChange(
            now_s=now_s,
            count=count,
            stamp=self._stamp,
            cancel=cancel,
            processed=result.processed,
            extra_sets=extra_sets or {},
            extra_removes=tuple(extra_removes or ()),
            strict=strict,
            return_item=return_item,
            known=known,
            releases=releases,
        )
        return self.store.commit_audio(self.connection_id, before, result.state, change)

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


def _audio_ms(utterances: list[dict[str, Any]]) -> int:
    """How much audio stored utterances (``Utterance.to_item``) hold, in ms."""
    return sum(int(u.get("end", u["start"])) - int(u["start"]) for u in utterances)
