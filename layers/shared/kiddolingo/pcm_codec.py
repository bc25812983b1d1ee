"""A small lossless packing of PCM16 audio for the connection item.

Every append rewrites the connection item, and DynamoDB bills a write by the item's size in
1 KB units: the VAD's prefix ring and the held audio were most of it (10-16 KB of raw PCM).
Packed, the same samples take about half of that in room noise and a fifth to a quarter in a
quiet room, and come back byte for byte.

How: each sample becomes its difference from the one before (wrapping at 16 bits, so the
inverse is an exact running sum), zigzag-mapped so that small differences of either sign are
small numbers; the low and the high bytes go in two separate runs (the high bytes of quiet audio
are almost all zero) and zlib compresses the lot. Hand-written over ``zlib`` and numpy (both
on the chunk path already) because the lossless audio codecs (FLAC through libsndfile) would add
a native library and cold-start time for 20 lines of arithmetic.

Format: one byte ``PACKED`` (the version), one byte ``1`` when the input had an odd trailing
byte (then that byte follows), then the zlib stream.
"""

from __future__ import annotations

import zlib

import numpy as np

#: The first byte of a packed value (raw PCM or the VAD's own state never start with it where
#: this module reads them: see ``kiddolingo.ingest``).
PACKED = 0xA7
#: zlib's fastest level: ~2× smaller than raw in room noise at a third of level 6's CPU.
LEVEL = 1


def pack(pcm: bytes) -> bytes:
    """``pcm`` (PCM16 little-endian mono) packed; :func:`unpack` gives it back exactly."""
    n = len(pcm) // 2
    odd = pcm[2 * n :]
    samples = np.frombuffer(pcm, dtype="<i2", count=n)
    delta = np.diff(samples, prepend=np.int16(0))  # int16 arithmetic: wraps, exactly invertible
    zigzag = ((delta << 1) ^ (delta >> 15)).astype("<u2")
    planes = zigzag.view(np.uint8).reshape(-1, 2).T.tobytes()  # low bytes, then high bytes
    head = bytes((PACKED, len(odd))) + odd
    return head + zlib.compress(planes, LEVEL)


def unpack(data: bytes) -> bytes:
    """The PCM that :func:`pack` packed into ``data``."""
    if len(data) < 2 or data[0] != PACKED:
        raise ValueError("not packed PCM")
    n_odd = data[1]
    odd = data[2 : 2 + n_odd]
    planes = np.frombuffer(zlib.decompress(data[2 + n_odd :]), dtype=np.uint8)
    zigzag = planes.reshape(2, -1).T.copy().view("<u2").ravel()
    delta = ((zigzag >> 1).astype(np.int16)) ^ -((zigzag & 1).astype(np.int16))
    samples = np.cumsum(delta, dtype=np.int16)
    return samples.astype("<i2").tobytes() + bytes(odd)


def is_packed(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == PACKED
