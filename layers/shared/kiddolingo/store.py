"""DynamoDB adapter: sessions, connections, the audio state of a connection, responses.

One table, hash key ``pk``, TTL attribute ``expires_at`` (both read from ``template.yaml`` by the
tests, so this cannot drift from the deployed table). Three kinds of item:

``session#<id>``
    ``learner``, ``cfg`` (session settings), ``hist`` (the conversation as heard: one JSON
    string), ``resp`` (the response in flight: id, item id, the sentences posted so far, a
    truncation if one came in),
    ``timeline_ms`` (where the session's audio timeline stands), ``ver`` (optimistic lock).
``conn#<id>``
    ``sid``, ``learner``, ``role`` (``teacher`` for a teacher's token; absent for a
    learner's), ``cfg`` (a copy of the session settings: the chunk path then reads one
    item), ``greeted``, the audio state (``seq``, ``aver``, ``vad``, ``pend``, ``utt``; see
    ``kiddolingo.ingest``), ``resp`` (the response this connection is receiving), ``rexp``
    (the epoch second that response's hold on the slot expires: its lease) and ``cancel``
    (a response id that must stop), ``ready`` (utterances committed without a reply, waiting
    for ``response.create``), ``cver`` (bumped by every write of the item: see
    ``KnownConnections``).
``turns#<session id>``
    ``minute``, ``count``: the session's turns in the current clock minute (``count_turn``).

The low-level client is used with ``kiddolingo.ddbjson`` instead of boto3's resource API or
its ``TypeSerializer``: boto3's import costs the audio-chunk path's cold start ~80 ms.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from .conversation import dump_history
from .ddbjson import deserialize, serialize

MAX_CONFLICT_RETRIES = 8


class ConflictError(Exception):
    """A conditional write's condition failed (or an optimistic lock lost too often).

    ``item``: the item as it stood when the condition failed, when the write asked for it
    (``ReturnValuesOnConditionCheckFailure``): the loser re-runs without another read.
    """

    def __init__(self, message: str, item: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.item = item


class NotFoundError(Exception):
    """The session or connection does not exist (or has expired)."""


def to_attr(value: Any) -> dict[str, Any]:
    return serialize(value)


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: deserialize(v) for k, v in item.items()}


def _is_conflict(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in (
        "ConditionalCheckFailedException",
        "TransactionConflictException",
    )


def _live(data: dict[str, Any]) -> dict[str, Any] | None:
    """A TTL'd item can linger until DynamoDB sweeps it: treat it as gone."""
    exp = data.get("expires_at")
    if isinstance(exp, int) and exp < time.time():
        return None
    return data


def session_key(session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"session#{session_id}"}}


def conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"conn#{connection_id}"}}


#: How long the item an append's write left stays worth trying instead of a read: the appends
#: of one child come every 100 ms, and one this old was followed by others elsewhere.
KNOWN_TTL_S = 0.5
KNOWN_MAX_ITEMS = 256


class KnownConnections:
    """The connection items as this container's last audio commits left them, by connection.

    An append needs the whole connection item, and in the common case this container wrote it
    itself a tenth of a second ago (its previous append): the item that write returned is then
    taken instead of a GetItem (one DynamoDB round trip and ~1.5 ms of botocore CPU fewer per
    append). A kept item is never trusted: the commit made from it is conditional on ``cver``,
    which every write of the item bumps, so a write from anywhere else since makes the commit
    lose, and it goes on from the item the lost race returns. Any write of the item from this
    container forgets it first. An item is taken (not shared) by one invocation at a time.

    Hand-written rather than ``cachetools.TTLCache``: a new layer dependency for a dict, a clock
    and a lock (see ``chunks.RecentChunks``).
    """

    def __init__(
        self,
        max_items: int = KNOWN_MAX_ITEMS,
        ttl_s: float = KNOWN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.clock = clock
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}  # insertion order = age
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def keep(self, connection_id: str, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.pop(connection_id, None)
            self._items[connection_id] = (self.clock(), item)
            while len(self._items) > self.max_items:
                self._items.pop(next(iter(self._items)))

    def take(self, connection_id: str) -> dict[str, Any] | None:
        """The kept item (removed: the taker's commit keeps the next one), if recent enough."""
        with self._lock:
            hit = self._items.pop(connection_id, None)
        if hit is None or self.clock() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def forget(self, connection_id: str) -> None:
        with self._lock:
            self._items.pop(connection_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: One per container (module state lives as long as the Lambda execution environment).
KNOWN = KnownConnections()


def known_version_condition(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition that ``item`` is still the connection as stored (``cver`` unchanged)."""
    if "cver" in item:
        return "cver = :kv", {":kv": item["cver"]}
    return "attribute_not_exists(cver)", {}  # an item bound before ``cver`` existed


def _bumped(expr: str, values: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``expr`` that also bumps the connection item's ``cver`` (no expression of ours has an
    ADD clause of its own; ADD creates a missing number)."""
    assert " ADD " not in f" {expr} ", expr
    return f"{expr} ADD cver :cv1", {**(values or {}), ":cv1": 1}


class SessionStore:
    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        ttl_s: int = 24 * 3600,
        known: KnownConnections | None = None,
    ) -> None:
        self.table = table_name
        self.client = client
        self.ttl_s = ttl_s
        #: Connection items this container's commits left (``None``: every append reads).
        self.known = known

    # --- low level ---------------------------------------------------------------------

    def _call(self, op: str, **kwargs: Any) -> Any:
        return getattr(self.client, op)(TableName=self.table, **kwargs)

    def _expires(self) -> int:
        return int(time.time()) + self.ttl_s

    def _get(
        self,
        key: dict[str, Any],
        consistent: bool = True,
        projection: str | None = None,
        names: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Key": key, "ConsistentRead": consistent}
        if projection:
            kwargs["ProjectionExpression"] = projection
        if names:
            kwargs["ExpressionAttributeNames"] = names
        item = self._call("get_item", **kwargs).get("Item")
        return _live(from_item(item)) if item else None

    def _update(
        self,
        key: dict[str, Any],
        expr: str,
        values: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
        condition: str | None = None,
        return_values: str = "NONE",
        item_on_conflict: bool = False,
    ) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": expr,
            "ReturnValues": return_values,
        }
        if item_on_conflict and condition:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        if values:
            kwargs["ExpressionAttributeValues"] = {k: to_attr(v) for k, v in values.items()}
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            out = self._call("update_item", **kwargs)
        except ClientError as exc:
            if _is_conflict(exc):
                raw = exc.response.get("Item")
                raise ConflictError(str(exc), _live(from_item(raw)) if raw else None) from None
            raise
        attrs = out.get("Attributes")
        return from_item(attrs) if attrs else None

    # --- sessions ----------------------------------------------------------------------

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

    # --- connections -------------------------------------------------------------------

    def bind_connection(
        self,
        connection_id: str,
        session_id: str,
        learner_id: str,
        config: str,
        timeline_ms: int,
        role: str = "learner",
    ) -> None:
        item = {
            "pk": f"conn#{connection_id}",
            "sid": session_id,
            "learner": learner_id,
            "cfg": config,
            "seq": 1,
            "aver": 0,
            "cver": 0,
            "pend": {},
            "timeline_ms": timeline_ms,
            "connected_at": int(time.time()),
            "expires_at": int(time.time()) + 3 * 3600,  # API Gateway caps a connection at 2 h
        }
        if role != "learner":  # every append writes the item: a learner's carries no role
            item["role"] = role
        self._forget(connection_id)
        self._call("put_item", Item={k: to_attr(v) for k, v in item.items()})

    def get_connection(self, connection_id: str) -> dict[str, Any] | None:
        return self._get(conn_key(connection_id))

    def known_connection(self, connection_id: str) -> dict[str, Any] | None:
        """The item as this container's last audio commit left it, if that was a moment ago:
        a commit made from it must hold ``known_version_condition`` (see ``KnownConnections``)."""
        return self.known.take(connection_id) if self.known is not None else None

    def _forget(self, connection_id: str) -> None:
        if self.known is not None:
            self.known.forget(connection_id)

    def connection_fields(self, connection_id: str, *fields: str) -> dict[str, Any] | None:
        """Some attributes of a connection (``None``: it is gone)."""
        names = {"#k": "pk", **{f"#f{i}": f for i, f in enumerate(fields)}}
        return self._get(conn_key(connection_id), projection=", ".join(names), names=names)

    def delete_connection(self, connection_id: str) -> dict[str, Any] | None:
        self._forget(connection_id)
        out = self._call("delete_item", Key=conn_key(connection_id), ReturnValues="ALL_OLD")
        attrs = out.get("Attributes")
        return from_item(attrs) if attrs else None

    def mark_greeted(self, connection_id: str) -> bool:
        """True exactly once per connection: who sends ``session.created``."""
        try:
            self.update_connection(
                connection_id,
                "SET greeted = :t",
                {":t": True},
                condition="attribute_not_exists(greeted)",
            )
            return True
        except ConflictError:
            return False

    def set_connection_config(self, connection_id: str, config: str) -> None:
        self.update_connection(connection_id, "SET cfg = :c", {":c": config})

    def update_connection(
        self,
        connection_id: str,
        expr: str,
        values: dict[str, Any] | None,
        names: dict[str, str] | None = None,
        condition: str | None = None,
        return_values: str = "NONE",
        item_on_conflict: bool = False,
        keep: bool = False,
    ) -> dict[str, Any] | None:
        """An update of a live connection (it bumps ``cver``). A failed ``condition`` raises
        ``ConflictError``, carrying the item (``None``: the connection is gone) when
        ``item_on_conflict``. ``keep``: the item as the write left it is kept for this
        container's next append (``return_values`` must be ``ALL_NEW``)."""
        cond = "attribute_exists(pk)" + (f" AND ({condition})" if condition else "")
        expr, values = _bumped(expr, values)
        self._forget(connection_id)
        item = self._update(
            conn_key(connection_id), expr, values, names, cond, return_values, item_on_conflict
        )
        if keep and item is not None and self.known is not None:
            assert return_values == "ALL_NEW", return_values
            self.known.keep(connection_id, item)
        return item

    # --- responses ---------------------------------------------------------------------

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

    def count_turn(self, session_id: str, limit: int, now: float | None = None) -> bool:
        """Count a turn of ``session_id`` against ``limit`` turns per clock minute. False: the
        limit is reached, nothing is counted.

        Every connection of the session counts into one small item (``turns#<id>``), with
        conditional writes, so a reconnect, a second connection or concurrent invocations share
        one budget. One write in the common case; the first turn of a minute costs a second one
        (it starts the minute's count). A fixed window: one write can neither check nor prune a
        list of start times, so across a minute's boundary up to twice the limit can start
        within a few seconds; the cost per minute stays bounded."""
        minute = int((time.time() if now is None else now) // 60)
        key = {"pk": {"S": f"turns#{session_id}"}}
        names = {"#m": "minute", "#n": "count"}
        expires = self._expires()
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                self._update(
                    key,
                    "SET expires_at = :exp ADD #n :one",
                    {":one": 1, ":m": minute, ":lim": limit, ":exp": expires},
                    names,
                    condition="#m = :m AND #n < :lim",
                    item_on_conflict=True,
                )
                return True
            except ConflictError as exc:
                if exc.item is not None and exc.item.get("minute") == minute:
                    return False  # this minute's count is full
            try:
                self._update(
                    key,
                    "SET #m = :m, #n = :one, expires_at = :exp",
                    {":one": 1, ":m": minute, ":exp": expires},
                    names,
                    condition="attribute_not_exists(#m) OR #m <> :m",
                )
                return True
            except ConflictError:
                continue  # another turn started this minute's count first: count into it
        raise ConflictError(f"turns of session {session_id}: too many concurrent updates")

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

    # --- the connection's event stream (``kiddolingo.sequencing``) ----------------------

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
