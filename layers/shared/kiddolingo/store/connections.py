"""The connection item (``conn#<id>``): bound on connect, read by every event, and every
write of it bumps ``cver`` (see ``KnownConnections``)."""

from __future__ import annotations

import time
from typing import Any

from .table import ConflictError, Table, conn_key, from_item, to_attr


def _bumped(expr: str, values: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``expr`` that also bumps the connection item's ``cver`` (no expression of ours has an
    ADD clause of its own; ADD creates a missing number)."""
    assert " ADD " not in f" {expr} ", expr
    return f"{expr} ADD cver :cv1", {**(values or {}), ":cv1": 1}


class Connections(Table):
    """A connection's item: bind, read, delete, and the update every other write goes through."""

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
