"""The connection items this container's last audio commits left, kept for its next append
instead of a read, and the condition that a kept item is still the one stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

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
