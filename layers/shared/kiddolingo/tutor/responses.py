"""What a turn claims before it speaks: its place under the turns-per-minute limit, and the
connection's response slot (claimed, dropped, or ended into the session's history).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .. import ingest as ingestlib
from ..conversation import (
    assistant_item,
    dump_history,
    load_history,
    trim_history,
    truncate_item,
    user_item,
)
from ..messenger import ConnectionGoneError
from ..protocol import error_event
from ..store import REMOVE, NotFoundError
from .base import TutorBase

if TYPE_CHECKING:
    # For annotations only: the turn's adapters load when a turn runs.
    from ..turn_io import MessengerPoster, SpeculationGate


class ResponseSlot(TutorBase):
    """Turn admission and the response slot's bookkeeping."""

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

        A speculation waits for its pause's verdict first, as any speculation does. Released:
        it is the utterance's turn, and the child is told. Discarded (the child went on): the
        next pause asks the limit again, and nothing is said. It does not withdraw its marker:
        its refusal can come before the write that made the marker has landed, and a marker
        left behind would be released with nobody to answer (no reply, no error)."""
        import asyncio

        if gate is not None:
            from ..turn_io import GatedPoster

            assert isinstance(poster, GatedPoster)
            if not await poster.settle():
                return
            # The write that released it took the response slot for it: free it now.
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
            # A truncation sent while the reply was in flight, kept by item (a newer response
            # may have replaced ``resp`` meanwhile).
            truncs = dict(item.get("truncs") or {})
            trunc = truncs.pop(outcome.item_id, None)
            if outcome.segments:
                assistant = assistant_item(outcome.item_id, outcome.segments)
                if trunc is not None:
                    assistant, _ = truncate_item(assistant, trunc)
                hist.append(assistant)  # an empty text is skipped by the chat context
            updates: dict[str, Any] = {
                "hist": dump_history(trim_history(hist, 2 * self.settings.max_history_messages))
            }
            if trunc is not None:
                updates["truncs"] = truncs or REMOVE
            if resp.get("id") == response_id:
                updates["resp"] = REMOVE
            return updates

        try:
            self.store.mutate_session(sid, change)
        except NotFoundError:
            return
        # A newer response may have taken over the connection, or it is gone: fine either way.
        self.store.release_response(self.connection_id, response_id)


def speculation_response_id(spec_id: str) -> str:
    """The id of the response a speculation gives, once released (``spec_<hex>``)."""
    return "resp_" + spec_id.removeprefix("spec_")
