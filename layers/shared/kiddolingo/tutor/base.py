"""What every part of a ``Tutor`` shares: its adapters, posting, deleting an utterance's audio,
and the limits of the chunk path.

``Tutor`` is one class built in layers, one module each, every layer a subclass of the one
below: ``base`` < ``responses`` < ``turn_flow`` < ``turns`` < ``commit`` < ``chunkpath`` <
``stream`` < ``handlers`` < ``kiddolingo.service.Tutor``. A layer calls only what it or the
layers below define, so the chain is also the import order and holds no cycle.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import ingest as ingestlib
from ..chunk_keys import utterance_prefix
from ..chunks import ChunkStore
from ..messenger import Messenger
from ..protocol import ProtocolError, error_from
from ..settings import Settings
from ..store import NotFoundError, SessionStore

if TYPE_CHECKING:
    # For annotations only: the turn's adapters load when a turn runs.
    from ..turn_io import SpeculationGate, WriteVerdict

log = logging.getLogger(__name__)


#: A lost race means a chunk arrived at our new watermark: each retry takes it along, so
#: retries make progress; the bound only stops a runaway.
MAX_APPEND_ATTEMPTS = 40
#: The bound in bytes on parked audio (its home is ``kiddolingo.ingest``).
MAX_PARKED_BYTES = ingestlib.MAX_PARKED_BYTES
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


class TutorBase:
    """One handler invocation's view of a connection: its adapters and settings."""

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

    def post(self, event: dict[str, Any]) -> None:
        self.messenger.post(event)

    def post_error(self, exc: ProtocolError) -> None:
        self.post(error_from(exc))

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

    def _providers(self) -> Any:
        if self._providers_factory is not None:
            return self._providers_factory()
        from ..providers import build_providers

        return build_providers(self.settings)

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
