"""The audio-chunk path as pure code: the connection's audio state and chunks in, the new
state, the audio to store, and what happened (speech started / stopped, a turn to run) out.

``order`` places a chunk against the watermark (the sequencing below), ``run`` runs the VAD
over a run of chunks (``ingest``), ``state`` reads and packs the audio state of the connection
item, ``limits`` holds the bounds. None of it imports the AWS SDK.

Sequencing under Lambda concurrency
-----------------------------------
Every ``input_audio_buffer.append`` is its own Lambda invocation, and API Gateway may run a
connection's invocations concurrently and finish them in any order. The VAD is a state machine
over the audio *in order*, so order is restored before it runs:

* each append has a sequence number ``n``: the client numbers them (``event_id`` ending in
  ``#<n>``, counting from 1 per connection, as ``web/`` does); an un-numbered append takes the
  next free number when it is processed (arrival order, the best a server can do);
* the connection item holds a watermark ``seq`` (the next number to process) and a version
  ``aver`` that only the processing writes bump (and ``cver``, which every write bumps: an
  append that starts from the item its container's previous commit left, instead of reading
  it, commits on that too; ``store.KnownConnections``);
* an invocation whose ``n`` is the watermark processes its chunk *and every parked chunk that
  follows it contiguously* (it closes the gap), then advances the watermark with a write
  conditional on the version it read **and** on no chunk being parked at the new watermark;
* an invocation whose ``n`` is ahead of the watermark parks its chunk in the item (``pend``),
  conditional on the watermark still being below ``n``, and returns: whoever closes the gap will
  process it;
* an ``n`` below the watermark, or already parked, is a duplicate delivery and is dropped;
* so the two races resolve themselves: a chunk parked at the new watermark while the gap was
  being closed makes that commit fail (the closer re-reads and takes the chunk along); a
  watermark that reached ``n`` before the park makes the park fail (the parker re-reads and
  processes its own chunk). Parkers further ahead never make the closer lose, so a burst
  cannot livelock it;
* when writes are slower than chunks arrive (a loaded local stack), a chunk is parked at the
  new watermark during every write, and the closer would lose forever while the parked pile
  grows. So once it lost only to a parker (the version is unchanged), it commits *without* the
  "nothing parked at the new watermark" condition and processes what was parked there itself,
  for as long as there is some: progress is committed every pass, and only lost races count
  towards ``MAX_APPEND_ATTEMPTS``. Each pass goes on from the item its own write returns (a
  chunk parked after that write finds the watermark at its number and processes itself), so
  a pass costs one UpdateItem, no read;
* a gap that never fills (the invocation of a chunk failed) is skipped once parking is full
  (``MAX_PARKED_CHUNKS`` or its byte bound), so a lost chunk cannot stall a session. The park's
  write checks the room too (in chunks the size of its own), so racing parkers cannot push the
  item past DynamoDB's 400 KB together.

The S3 write of a processed run happens *before* the conditional commit, under a key derived
from the run's first sequence number and its bytes: a retry of the same run overwrites it, a
run written again with other bytes gets another key, and the turn only reads the keys the
committed state lists. So a burst, a duplicate or swapped neighbours give exactly the VAD
decisions and the utterance audio of in-order delivery, with no chunk lost or doubled.

Storage: only speech and its prefix padding (plus pauses inside an utterance) reaches S3; the
prefix padding waits in the VAD's ring buffer inside the connection item until speech starts.
The utterance's newest audio is *held* in the item (``hbuf``) and written as one object once
more than ``HOLD_BYTES`` has gathered: one S3 PUT per ~250-300 ms of speech instead of one per
append, and a turn reads a few objects instead of one per 100 ms. In an utterance the VAD's
ring is the newest audio too, so the item stores the ring only where it is not already the end
of the held audio (``hdup``). Inside an utterance the ring is stored whole only near the end
of the silence window (``vad.trim_ring``): before that only its last frame can still matter, so
a speech append's item carries the held audio and little else. The audio still held when an
utterance ends never goes to S3 at all when its turn runs in the same invocation: it travels in
memory (``Utterance.tail``).
"""

from __future__ import annotations

from .limits import (
    HOLD_BYTES,
    MAX_HELD_BYTES,
    MAX_PARKED_BYTES,
    MAX_PARKED_CHUNKS,
    MIN_APPEND_BYTES,
    SHORT_APPENDS,
    ShortAppends,
)
from .order import RunOrder, Verdict, order_run, parking_full
from .run import IngestResult, clear, commit_manual, ingest, vad_config
from .state import AudioState, Utterance, ring_overlap

__all__ = [
    "HOLD_BYTES",
    "MAX_HELD_BYTES",
    "MAX_PARKED_BYTES",
    "MAX_PARKED_CHUNKS",
    "MIN_APPEND_BYTES",
    "SHORT_APPENDS",
    "AudioState",
    "IngestResult",
    "RunOrder",
    "ShortAppends",
    "Utterance",
    "Verdict",
    "clear",
    "commit_manual",
    "ingest",
    "order_run",
    "parking_full",
    "ring_overlap",
    "vad_config",
]
