"""The S3 chunk store: content-addressed keys, and the audio a container keeps of what it wrote."""

from __future__ import annotations

from typing import Any

import pytest

from kiddolingo import aws
from kiddolingo.chunks import ChunkStore, MissingChunkError, RecentChunks, chunk_key
from tests.support.aws_stack import BUCKET


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gets(stack: Any) -> list[str]:
    """The keys of every S3 GetObject from here on."""
    seen: list[str] = []
    aws._client("s3").meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: seen.append(params["Key"])
    )
    return seen


def test_a_key_names_its_bytes_and_no_others() -> None:
    a = chunk_key("sess", "utt", 7, b"\x01\x02" * 800)
    assert a == chunk_key("sess", "utt", 7, b"\x01\x02" * 800)  # a retry rewrites its object
    assert a.startswith("audio/sess/utt/000000007-") and a.endswith(".pcm")
    # the same run written again with other bytes (a lost race, a duplicate) gets its own key
    assert chunk_key("sess", "utt", 7, b"\x01\x02" * 801) != a
    assert chunk_key("sess", "utt", 7, b"\x02\x01" * 800) != a


def test_recent_chunks_are_bounded_in_bytes_oldest_out_first() -> None:
    recent = RecentChunks(max_bytes=3000, ttl_s=60, clock=Clock())
    for i in range(4):
        recent.add(f"k{i}", bytes([i]) * 1000)
    assert recent.stored() == ["k1", "k2", "k3"] and recent.nbytes == 3000
    assert recent.get("k0") is None and recent.get("k3") == b"\x03" * 1000
    recent.add("huge", b"\x00" * 3001)  # larger than the bound: not kept, nothing evicted
    assert recent.stored() == ["k1", "k2", "k3"]


def test_recent_chunks_expire() -> None:
    clock = Clock()
    recent = RecentChunks(max_bytes=10_000, ttl_s=120, clock=clock)
    recent.add("old", b"a" * 10)
    clock.now += 60
    recent.add("new", b"b" * 10)
    clock.now += 61
    assert recent.get("old") is None and recent.get("new") == b"b" * 10
    assert recent.stored() == ["new"] and recent.nbytes == 10
    clock.now += 60
    assert recent.stored() == [] and recent.nbytes == 0


def test_what_a_container_wrote_is_read_from_memory_the_rest_from_s3(stack) -> None:
    mine = ChunkStore(BUCKET, aws._client("s3"), RecentChunks())
    other = ChunkStore(BUCKET, aws._client("s3"), RecentChunks())  # another container
    runs = [bytes([i]) * (1000 + i) for i in range(5)]
    keys = [chunk_key("s", "u", i * 10, run) for i, run in enumerate(runs)]
    for i, (key, run) in enumerate(zip(keys, runs, strict=True)):
        (mine if i % 2 == 0 else other).put(key, run)
    seen = gets(stack)
    assert mine.read(keys) == b"".join(runs)  # in order, wherever each part came from
    assert sorted(seen) == [keys[1], keys[3]]  # only what another container wrote (in parallel)
    seen.clear()
    assert mine.read([keys[0], keys[2]]) == runs[0] + runs[2] and seen == []
    assert mine.read([]) == b""


def test_deleting_an_utterance_forgets_it_in_memory_too(stack) -> None:
    recent = RecentChunks()
    store = ChunkStore(BUCKET, aws._client("s3"), recent)
    store.put(chunk_key("s", "u1", 1, b"one"), b"one")
    store.put(chunk_key("s", "u2", 1, b"two"), b"two")
    assert store.delete_prefix("audio/s/u1/") == 1
    assert recent.stored() == [chunk_key("s", "u2", 1, b"two")]
    with pytest.raises(MissingChunkError):
        store.read([chunk_key("s", "u1", 1, b"one")])


def test_a_kept_chunk_does_not_change_with_the_writers_buffer() -> None:
    recent = RecentChunks()
    buf = bytearray(b"\x01" * 8)
    recent.add("k", buf)  # type: ignore[arg-type]
    buf[:] = b"\x00" * 8
    assert recent.get("k") == b"\x01" * 8
