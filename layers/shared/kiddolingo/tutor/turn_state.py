"""What the steps of one turn share (``TurnFlow``), and the small acts on it.

A turn starts work early and picks it up later: the admission write beside the audio read, the
speech socket, the history read and the response claim while the child's words are
transcribed. This object holds those pieces of work, so each step finds what the earlier ones
started. It is imported only when a turn runs (it loads asyncio, which the chunk path never
needs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..providers.base import Usage
from ..turn_io import GatedPoster

if TYPE_CHECKING:
    from .. import ingest as ingestlib
    from ..conversation import Segment
    from ..session import SessionConfig
    from ..turn_io import MessengerPoster, SpeculationGate, WriteVerdict
    from .turn_flow import TurnFlow


@dataclass(eq=False)
class TurnState:
    """One turn's inputs (as ``TurnFlow._turn_body`` got them) and the work it has under way."""

    flow: TurnFlow
    conn: dict[str, Any]
    cfg: SessionConfig
    utt: ingestlib.Utterance | None
    poster: MessengerPoster
    exits: contextlib.AsyncExitStack
    verdict: WriteVerdict | None
    ids: tuple[str, str]

    #: The child's words (``None`` for a reply to the history as it stands).
    user_text: str | None = field(init=False, default=None)
    #: The child's words as the client is to see them: posted by the reply, once moderated.
    user_event: dict[str, Any] | None = field(init=False, default=None)
    transcription_ms: float | None = field(init=False, default=None)
    usage: Usage = field(init=False, default_factory=Usage)
    admission: asyncio.Future[bool] | None = field(init=False, default=None)
    claim: asyncio.Future[None] | None = field(init=False, default=None)
    _session: asyncio.Future[dict[str, Any] | None] | None = field(init=False, default=None)
    _speech: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.providers = self.flow._providers()
        self.sid: str = self.conn["sid"]
        self.response_id, self.item_id = self.ids
        #: A speculation's gate: it posts nothing, and claims nothing, until released.
        self.gate: SpeculationGate | None = (
            self.poster.gate if isinstance(self.poster, GatedPoster) else None
        )
        #: When the turn began (after the providers, which the first turn of a process builds).
        self.started = time.monotonic()

    def ask_admission(self, asked: concurrent.futures.Future[bool] | None = None) -> None:
        """Turns per minute: asked while the audio is read (or ``asked`` already, by the
        append that started the turn); no provider is reached before the answer."""
        if asked is not None:
            self.admission = asyncio.wrap_future(asked)
        else:
            self.admission = asyncio.ensure_future(
                asyncio.to_thread(self.flow._admit_turn, self.sid)
            )
        self.admission.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def admitted(self) -> bool:
        """Whether the turn may go on; a refused one is told so, after the append's events."""
        assert self.admission is not None
        if await self.admission:
            return True
        await self.landed()  # the refusal follows the append's events
        await self.flow._refuse_turn(self.poster, self.gate)
        return False

    async def landed(self) -> None:
        """Wait for the write committing this turn (if it started before): raises
        ``WriteLost`` if it lost; else posts the append's events, first (once)."""
        verdict = self.verdict
        if verdict is not None and not verdict.announced:
            for event in await verdict.wait():
                await self.poster.post(event)
            verdict.announced = True

    def session_read(self) -> asyncio.Future[dict[str, Any] | None]:
        """The session read, started on first use."""
        if self._session is None:
            self._session = asyncio.ensure_future(
                asyncio.to_thread(self.flow.store.get_session, self.sid)
            )
        return self._session

    def open_speech(self) -> Any:
        """The turn's speech session, opened on first use."""
        if self._speech is None:
            cfg, settings = self.cfg, self.flow.settings
            # A session stored before the speech API changed may name a voice it lacks.
            voice = cfg.voice if cfg.voice in settings.speech_voices else settings.speech_voice
            self._speech = self.providers.speech.open(voice=voice, usage=self.usage)
            self.exits.push_async_callback(self._speech.aclose)
        return self._speech

    def begin(self) -> None:
        """Claim the response slot in the background (a speculation claims it only once
        released), so the claim runs while the child's words are transcribed."""
        if self.claim is None and self.gate is None:
            self.claim = asyncio.ensure_future(
                asyncio.to_thread(
                    self.flow._begin_response, self.sid, self.response_id, self.item_id
                )
            )
            # Retrieved even when the turn ends before awaiting it (a 410 at a post).
            self.claim.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def unclaim(self) -> None:
        """Give the response slot back, once it is ours."""
        if isinstance(self.poster, GatedPoster):
            # A speculation's slot is taken by the write that releases it, if it comes.
            if not await self.poster.settle():
                return
        elif self.claim is None:
            return
        else:
            with contextlib.suppress(Exception):
                await self.claim
        await asyncio.to_thread(self.flow._drop_response, self.sid, self.response_id)

    async def on_segment(self, seg: Segment) -> None:
        """Store one sentence of the reply as the child heard it."""
        await asyncio.to_thread(
            self.flow.store.add_segment, self.sid, self.response_id, seg.text, seg.audio_ms
        )
