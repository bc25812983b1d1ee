"""The connection's response slot (``resp``, ``rexp``, ``cancel``), its speculation marker
(``spec``, ``spec_rel``) and the utterances waiting for ``response.create`` (``ready``)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .connections import Connections
from .table import ConflictError, NotFoundError, conn_key


class Responses(Connections):
    """Who answers the child on a connection, and what waits to be answered."""

    def response_state(self, connection_id: str, response_id: str) -> str:
        """``active``, ``cancelled`` or ``gone`` (the connection closed)."""
        # pk is projected too: without it, a live connection with neither attribute would come
        # back as an empty item and read as "gone".
        item = self._get(
            conn_key(connection_id),
            projection="pk, #c, #r",
            names={"#c": "cancel", "#r": "resp"},
        )
        if item is None:
            return "gone"
        if item.get("cancel") == response_id:
            return "cancelled"
        if item.get("resp") not in (None, response_id):
            return "cancelled"  # a newer response took over this connection
        return "active"

    def claim_response(self, connection_id: str, response_id: str, lease_s: float) -> None:
        """Take the connection's response slot for ``response_id`` until ``lease_s`` from now.

        The slot is taken over, never waited for: a newer response replaces an older one, which
        then reads as cancelled (``response_state``). The lease is what frees a slot whose turn
        died without releasing it (a Lambda timeout): ``response_create_blocked`` ignores an
        expired one. Raises ``NotFoundError`` when the connection is gone."""
        try:
            self.update_connection(
                connection_id,
                "SET resp = :r, rexp = :until",
                {":r": response_id, ":until": lease_until(lease_s)},
            )
        except ConflictError:  # only the connection's existence is a condition
            raise NotFoundError(f"connection {connection_id} not found") from None

    def release_response(self, connection_id: str, response_id: str) -> None:
        """Free the slot if ``response_id`` still holds it (a newer response may have taken it
        over, or the connection is gone: nothing to do then)."""
        with contextlib.suppress(ConflictError):
            self.update_connection(
                connection_id,
                "REMOVE resp, cancel, rexp",
                {":r": response_id},
                condition="resp = :r",
            )

    def take_ready(self, connection_id: str, ready: list[Any]) -> bool:
        """Empty the list of committed utterances waiting for ``response.create``, if it is
        still exactly ``ready`` (as read). False: it changed meanwhile (an utterance was
        committed since: read it again, so that its words are not lost)."""
        try:
            self.update_connection(
                connection_id, "REMOVE ready", {":old": ready}, condition="ready = :old"
            )
        except ConflictError:
            return False
        return True

    def put_ready(self, connection_id: str, before: list[Any] | None, after: list[Any]) -> None:
        """Replace the waiting utterances ``before`` (as read; ``None``: there were none) by
        ``after``. Raises ``ConflictError`` with the item as it is now when the list changed
        meanwhile (``item`` ``None``: the connection is gone)."""
        values: dict[str, Any] = {":new": after}
        if before is None:
            condition = "attribute_not_exists(ready)"
        else:
            condition, values[":old"] = "ready = :old", before
        self.update_connection(
            connection_id, "SET ready = :new", values, condition=condition, item_on_conflict=True
        )

    def cancel_response(self, connection_id: str, response_id: str | None = None) -> str | None:
        """Flag the connection's response in flight (or exactly ``response_id``) as cancelled.

        Returns the cancelled response id, or ``None`` when there was nothing to cancel.
        """
        try:
            if response_id:
                item = self.update_connection(
                    connection_id,
                    "SET cancel = :r",
                    {":r": response_id},
                    condition="resp = :r",
                    return_values="ALL_NEW",
                )
            else:
                item = self.update_connection(
                    connection_id,
                    "SET cancel = resp",
                    None,
                    condition="attribute_exists(resp)",
                    return_values="ALL_NEW",
                )
        except ConflictError:
            return None
        return item.get("cancel") if item else None

    def speculation_state(self, connection_id: str) -> dict[str, Any] | None:
        return self._get(
            conn_key(connection_id),
            projection="#s, #r",
            names={"#s": "spec", "#r": "spec_rel"},
        )

    def withdraw_speculation(self, connection_id: str, spec_id: str) -> bool:
        """Remove our speculation marker unless it was released meanwhile. True: withdrawn."""
        try:
            self.update_connection(
                connection_id,
                "REMOVE spec",
                {":s": spec_id},
                condition="spec.id = :s AND attribute_not_exists(spec_rel)",
            )
            return True
        except ConflictError:
            item = self.speculation_state(connection_id) or {}
            return item.get("spec_rel") != spec_id


def lease_until(lease_s: float) -> int:
    """The epoch second a response slot taken now for ``lease_s`` expires (``rexp``)."""
    return int(time.time() + lease_s) + 1


def slot_taken(item: dict[str, Any], now: float | None = None) -> bool:
    """Whether a connection item's response slot holds a live response: one that was neither
    cancelled nor left behind past its lease by a turn that died. (A slot written before
    leases existed has no ``rexp``: it counts as free, so it cannot stay taken either.)"""
    resp = item.get("resp")
    if not resp or item.get("cancel") == resp:
        return False
    until = item.get("rexp")
    return until is not None and int(until) > (time.time() if now is None else now)
