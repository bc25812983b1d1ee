"""Where an utterance's audio lives in S3, as pure code (no AWS SDK): the audio-chunk path
computes keys, and only the S3 adapter (``kiddolingo.chunks``) talks to S3.

Keys are ``audio/<session>/<utterance>/<seq:09d>-<digest>.pcm``: the sequence number of the run's
first chunk, then a digest of the run's bytes. A key names one content and never another, so a
retried write of the same run rewrites the same object, and a run written again with other bytes
(a lost race that took more chunks along, a duplicate delivery, an invocation that failed after
its write) gets a key of its own instead of overwriting the one a committed state lists.
"""

from __future__ import annotations

import hashlib


def utterance_prefix(session_id: str, utterance_id: str) -> str:
    return f"audio/{session_id}/{utterance_id}/"


def chunk_key(session_id: str, utterance_id: str, seq: int, pcm: bytes) -> str:
    """The key of a run of audio starting at chunk ``seq``: it names these bytes only."""
    digest = hashlib.blake2b(pcm, digest_size=8).hexdigest()
    return f"{utterance_prefix(session_id, utterance_id)}{seq:09d}-{digest}.pcm"
