"""The chunk path's bounds: how much audio the connection item holds, and the shortest
append taken in a steady stream (``ShortAppends``)."""

from __future__ import annotations

#: The largest start of an utterance held in the item for the next append to write.
MAX_HELD_BYTES = 48 * 1024
#: An utterance's audio is held in the item until it exceeds this (250 ms at 16 kHz). Each KB
#: held is a write unit on every append until it goes out, and one S3 PUT costs what 8 write
#: units do: with the prefix ring no longer stored in speech (``vad.trim_ring``), the benchmark's
#: audio costs least between 4 and 8 KB (16 KB was the optimum while the ring, as large, stayed
#: in the item anyway). The larger end: fewer objects for a turn to read.
HOLD_BYTES = 8 * 1024

#: Bounded so a runaway client cannot grow the connection item toward DynamoDB's 400 KB.
MAX_PARKED_CHUNKS = 40

#: Audio parked in the connection item while an earlier chunk is missing: bounded in bytes
#: too, so the item stays far below DynamoDB's 400 KB whatever the chunk size.
MAX_PARKED_BYTES = 160 * 1024

#: The shortest append the service takes in a steady stream: 40 ms at 16 kHz (about 27 ms at
#: 24 kHz). Every append is an invocation and a write of the connection item, whatever its
#: length: 20 ms chunks cost five times what 100 ms chunks cost, and the local stack falls
#: behind them. One short append now and then (the end of a recording) is taken.
MIN_APPEND_BYTES = 1280


class ShortAppends:
    """Which connections stream appends shorter than ``MIN_APPEND_BYTES`` (in a container's
    memory, so that refusing one costs no AWS call: the point is to stay cheap)."""

    def __init__(self, window_s: float = 1.0, max_connections: int = 4096) -> None:
        self.window_s = window_s
        self.max_connections = max_connections
        #: connection id → (when its last short append came, when it was last told).
        self._seen: dict[str, tuple[float, float]] = {}

    def judge(self, connection_id: str, nbytes: int, now: float) -> tuple[bool, bool]:
        """(refuse it, tell the client now) for an append of ``nbytes``. A short append is
        refused when another came from the connection less than ``window_s`` before; the
        client is told at most once per ``window_s``."""
        if nbytes >= MIN_APPEND_BYTES:
            return False, False
        last, told = self._seen.get(connection_id, (float("-inf"), float("-inf")))
        refuse = now - last < self.window_s
        tell = refuse and now - told >= self.window_s
        if len(self._seen) >= self.max_connections and connection_id not in self._seen:
            self._seen.clear()  # a crude bound: forgetting only lets one more short append in
        self._seen[connection_id] = (now, now if tell else told)
        return refuse, tell

    def clear(self) -> None:
        self._seen.clear()


SHORT_APPENDS = ShortAppends()
