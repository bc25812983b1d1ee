"""S3 adapter for the audio of the utterance being spoken.

Keys are ``audio/<session>/<utterance>/<seq:09d>.pcm``: deterministic, so a retried write of
the same run of chunks overwrites itself instead of doubling audio. The turn reads exactly the
keys recorded in the connection's audio state, in order, and deletes the utterance's prefix
when it is done (the bucket's one-day lifecycle rule is the backstop).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError


class MissingChunkError(Exception):
    """A chunk recorded for an utterance is not in S3 (deleted, expired or never written)."""


def utterance_prefix(session_id: str, utterance_id: str) -> str:
    return f"audio/{session_id}/{utterance_id}/"


def chunk_key(session_id: str, utterance_id: str, seq: int) -> str:
    return f"{utterance_prefix(session_id, utterance_id)}{seq:09d}.pcm"


class ChunkStore:
    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client

    def put(self, key: str, pcm: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=pcm)

    def _get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingChunkError(key) from None
            raise

    def read(self, keys: list[str]) -> bytes:
        """The concatenated audio of ``keys``, fetched in parallel, joined in order."""
        if not keys:
            return b""
        if len(keys) == 1:
            return self._get(keys[0])
        # One wave of GETs for a whole utterance (~10 chunks a second of speech).
        with ThreadPoolExecutor(max_workers=min(32, len(keys))) as pool:
            return b"".join(pool.map(self._get, keys))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
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
