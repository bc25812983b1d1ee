"""The session item (``session#<id>``) and the session's turn counts (``turns#<id>#<minute>``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..conversation import dump_history
from .table import MAX_CONFLICT_RETRIES, ConflictError, NotFoundError, Table, session_key, to_attr

#: How long a minute's turn count is kept after the minute began (DynamoDB's TTL deletes it
#: some time after; nothing reads an old minute's count).
TURN_COUNT_TTL_S = 3600


class Sessions(Table):
    """Sessions: created on connect, changed under their ``ver`` lock."""

    def create_session(self, session_id: str, learner_id: str, config: str) -> None:
        item = {
            "pk": f"session#{session_id}",
            "learner": learner_id,
            "cfg": config,
            "hist": dump_history([]),
            "timeline_ms": 0,
            "ver": 0,
            "created_at": int(time.time()),
            "expires_at": self._expires(),
        }
        self._call(
            "put_item",
            Item={k: to_attr(v) for k, v in item.items()},
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        return self._get(session_key(session_id))

    def mutate_session(
        self, session_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Read-modify-write of a session under its ``ver`` lock, retried on conflicts.

        ``change`` gets the item and returns the attributes to set (or ``None``: nothing to do).
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            item = self.get_session(session_id)
            if item is None:
                raise NotFoundError(f"session {session_id} not found")
            updates = change(item)
            if not updates:
                return item
            expr, names, values = _update_expression(updates, "ver = :next")
            values[":ver"] = item.get("ver", 0)
            values[":next"] = item.get("ver", 0) + 1
            try:
                self._update(
                    session_key(session_id),
                    expr,
                    {**values, ":exp": self._expires()},
                    names,
                    condition="ver = :ver",
                )
            except ConflictError:
                continue
            for key, value in updates.items():
                if value is _REMOVE:
                    item.pop(key, None)
                else:
                    item[key] = value
            return item
        raise ConflictError(f"session {session_id}: too many concurrent updates")

    def set_session_fields(self, session_id: str, fields: dict[str, Any]) -> None:
        """Set ``fields`` on a session in one write, without reading it first (for values that
        do not depend on the item). ``ver`` is bumped like ``mutate_session`` does, so a
        read-modify-write that read the item before this write retries instead of undoing it."""
        expr, names, values = _update_expression(fields, "ver = if_not_exists(ver, :zero) + :one")
        try:
            self._update(
                session_key(session_id),
                expr,
                {**values, ":zero": 0, ":one": 1, ":exp": self._expires()},
                names,
                condition="attribute_exists(pk)",
            )
        except ConflictError:
            raise NotFoundError(f"session {session_id} not found") from None

    def count_turn(self, session_id: str, limit: int, now: float | None = None) -> bool:
        """Count a turn of ``session_id`` against ``limit`` turns per clock minute. False: the
        limit is reached, nothing is counted.

        Every connection of the session counts into one small item per clock minute
        (``turns#<id>#<minute>``) with one conditional write, so a reconnect, a second
        connection or concurrent invocations share one budget, and the first turn of a minute
        costs no more than the others (the item of a new minute starts from nothing). The item
        expires with the table's TTL. A fixed window: across a minute's boundary up to twice
        the limit can start within a few seconds; the cost per minute stays bounded."""
        minute = int((time.time() if now is None else now) // 60)
        try:
            self._update(
                {"pk": {"S": f"turns#{session_id}#{minute}"}},
                "SET expires_at = :exp ADD #n :one",
                {":one": 1, ":lim": limit, ":exp": minute * 60 + TURN_COUNT_TTL_S},
                {"#n": "count"},
                condition="attribute_not_exists(#n) OR #n < :lim",
            )
        except ConflictError:
            return False  # this minute's count is full
        return True

    def add_segment(self, session_id: str, response_id: str, text: str, audio_ms: int) -> bool:
        """Record a sentence as posted; refused once the item was truncated or replaced."""
        try:
            self._update(
                session_key(session_id),
                "SET resp.segs = list_append(resp.segs, :s)",
                {":s": [{"t": text, "ms": int(audio_ms)}], ":r": response_id},
                condition="resp.id = :r AND attribute_not_exists(resp.trunc)",
            )
            return True
        except ConflictError:
            return False


def _update_expression(
    updates: dict[str, Any], version: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A session write's UpdateExpression: ``version`` (how ``ver`` moves), ``expires_at`` (the
    caller's ``:exp``), then ``updates`` (``REMOVE`` for a value that is ``_REMOVE``), with its
    attribute names and values."""
    set_parts, remove_parts = [version, "expires_at = :exp"], []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for i, (key, value) in enumerate(updates.items()):
        names[f"#a{i}"] = key
        if value is _REMOVE:
            remove_parts.append(f"#a{i}")
        else:
            values[f":v{i}"] = value
            set_parts.append(f"#a{i} = :v{i}")
    expr = "SET " + ", ".join(set_parts)
    if remove_parts:
        expr += " REMOVE " + ", ".join(remove_parts)
    return expr, names, values


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


#: Pass as a value to ``mutate_session`` to remove an attribute.
_REMOVE: Any = _Remove()
REMOVE = _REMOVE
