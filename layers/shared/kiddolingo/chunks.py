"""S3 adapter for the audio of the utterance being spoken.

Keys come from ``kiddolingo.chunk_keys`` (pure: the chunk path computes them without
botocore), and a key names one content and never another. The turn reads exactly the keys
recorded in the connection's audio state, in order, and deletes the utterance's prefix when it
is done (the bucket's one-day lifecycle rule is the backstop).

Because a key's bytes never change, the container that wrote a chunk keeps it in memory for a
while (``RecentChunks``) and reads it from there, not from S3: the appends of one child come
one at a time, so Lambda mostly hands them, and the one that ends the utterance or speculates on
its pause, to the same warm container. A key it did not write (another container's, or one
evicted) is read from S3 as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from .chunk_keys import chunk_key, utterance_prefix

#: What a container keeps of the audio it wrote: ~2 minutes of 16 kHz speech (the audio
#: function has 1 GB), and for no longer than an utterance can last plus its turn.
RECENT_MAX_BYTES = 4 * 1024 * 1024
RECENT_TTL_S = 120.0


class MissingChunkError(Exception):
    """A chunk recorded for an utterance is not in S3 (deleted, expired or never written)."""


__all__ = [
    "RECENT",
    "ChunkStore",
    "MissingChunkError",
    "RecentChunks",
    "chunk_key",
    "utterance_prefix",
]


class RecentChunks:
    """The audio this container wrote lately, by key: bounded in bytes and in age, oldest out
    first. Safe across threads (the turn reads from a worker thread while appends write).

    Hand-written rather than ``cachetools.TTLCache``: that would be a new layer dependency, is
    not thread-safe on its own, and has no way to forget an utterance's keys by prefix.
    """

    def __init__(
        self,
        max_bytes: int = RECENT_MAX_BYTES,
        ttl_s: float = RECENT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        # Insertion order is age order: a key is dropped before it is stored again.
        self._items: dict[str, tuple[float, bytes]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def stored(self) -> list[str]:
        """The keys kept, oldest first."""
        with self._lock:
            self._expire(self.clock())
            return list(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def add(self, key: str, pcm: bytes) -> None:
        if len(pcm) > self.max_bytes:
            return
        pcm = bytes(pcm)  # a caller's buffer may change later (the same object if it is bytes)
        with self._lock:
            self._drop(key)
            now = self.clock()
            self._items[key] = (now, pcm)
            self._bytes += len(pcm)
            self._expire(now)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._expire(self.clock())
            hit = self._items.get(key)
            return hit[1] if hit is not None else None

    def forget_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.startswith(prefix)]:
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])

    def _expire(self, now: float) -> None:
        while self._items:
            key, (stored_at, _pcm) = next(iter(self._items.items()))
            if now - stored_at <= self.ttl_s:
                return
            self._drop(key)


#: One per container (module state lives as long as the Lambda execution environment).
RECENT = RecentChunks()


class ChunkStore:
    def __init__(self, bucket: str, client: Any, recent: RecentChunks | None = None) -> None:
        self.bucket = bucket
        self.client = client
        self.recent = RECENT if recent is None else recent

    def put(self, key: str, pcm: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=pcm)
        self.recent.add(key, pcm)  # only once S3 has it: the two never disagree

    def _get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingChunkError(key) from None
            raise

    def read(self, keys: list[str]) -> bytes:
        """The concatenated audio of ``keys``, joined in order: what this container wrote
        lately from memory, the rest fetched from S3 in parallel."""
        parts: list[bytes | None] = [self.recent.get(key) for key in keys]
        missing = [i for i, part in enumerate(parts) if part is None]
        if len(missing) == 1:
            parts[missing[0]] = self._get(keys[missing[0]])
        elif missing:
            # One wave of GETs for a whole utterance (~10 chunks a second of speech).
            with ThreadPoolExecutor(max_workers=min(32, len(missing))) as pool:
                fetched = list(pool.map(self._get, [keys[i] for i in missing]))
            for i, data in zip(missing, fetched, strict=True):
                parts[i] = data
        return b"".join(part for part in parts if part is not None)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (and forget what this container kept of it);
        returns how many were deleted."""
        self.recent.forget_prefix(prefix)
        deleted = 0
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.client.list_objects_v2(**kwargs)
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
                deleted += len(objects)
            if not page.get("IsTruncated"):
                return deleted
            token = page.get("NextContinuationToken")
