"""The DynamoDB table under the store: its keys, errors, and the two calls every write and
read goes through. The low-level client is used with ``kiddolingo.ddbjson`` instead of boto3's
resource API or its ``TypeSerializer``: boto3's import costs the audio-chunk path's cold start
~80 ms.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from ..ddbjson import deserialize, serialize
from .known import KnownConnections

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


class Table:
    """One table, hash key ``pk``, TTL attribute ``expires_at``: what the store's parts share."""

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
