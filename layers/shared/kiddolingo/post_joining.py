"""How the poster joins what is queued into fewer messages: the audio deltas of one response
part queued behind each other, and the transcript deltas queued behind one that ends inside a
word, each message under 32 KB. Nothing here waits for more to come.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from typing import Any

from .protocol import MAX_EVENT_BYTES, encode_json

AUDIO_DELTA = "response.output_audio.delta"
TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
#: The fields that say which audio an audio delta continues: only deltas of the same part of
#: the same response are ever joined.
_PART = ("response_id", "item_id", "output_index", "content_index")


def delta_capacity(event: dict[str, Any]) -> int:
    """PCM bytes that the audio delta ``event`` can carry and stay one message under 32 KB.

    API Gateway bills a message per started 32 KB and refuses a frame over it, so this is the
    most audio one billed message holds: the event's JSON without its audio, and the rest as
    base64 (4 characters per 3 bytes), in whole 16-bit samples."""
    room = MAX_EVENT_BYTES - 1 - len(encode_json({**event, "delta": ""}))
    return max(2, room // 4 * 3 // 2 * 2)


def _joins(head: dict[str, Any], event: dict[str, Any]) -> bool:
    return event.get("type") == AUDIO_DELTA and all(head.get(k) == event.get(k) for k in _PART)


def _pcm(event: dict[str, Any]) -> bytes | None:
    try:
        return base64.b64decode(event.get("delta") or "", validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64(pcm: bytes | bytearray) -> str:
    return base64.b64encode(pcm).decode("ascii")


def _join_words(event: dict[str, Any], pending: deque[dict[str, Any]]) -> dict[str, Any]:
    """A transcript delta with the transcript deltas queued right behind it, while the text so
    far ends inside a word.

    The page's read-along opens a new sentence at a delta only when the text before it ends
    like a sentence (web/read-along.js); text that ends with a letter or a digit never does, so
    what comes after it lands in the same sentence whether it comes in this message or the
    next. Past a sentence's end (or an emoji, a bracket) a delta keeps a message of its own."""
    text = event.get("delta") or ""
    joined = False
    while (
        pending
        and text[-1:].isalnum()
        and pending[0].get("type") == TRANSCRIPT_DELTA
        and all(event.get(k) == pending[0].get(k) for k in _PART)
    ):
        more = pending[0].get("delta") or ""
        if len(encode_json({**event, "delta": text + more})) >= MAX_EVENT_BYTES:
            break
        pending.popleft()
        text, joined = text + more, True
    return {**event, "delta": text} if joined else event


def next_post(pending: deque[dict[str, Any]]) -> dict[str, Any]:
    """Take the next message to post from ``pending`` (not empty).

    An audio delta takes along the audio deltas of the same response part queued right behind
    it, up to what one message under 32 KB carries (``delta_capacity``); a delta that does not
    fit whole is cut, and the rest of it stays at the head of the queue, to go with whatever
    audio is queued by the time it is posted. Nothing waits for audio to come: only what is
    already queued is joined, so the first delta of a sentence leaves as it came, and a queue
    that keeps up posts every delta as it is. The audio's bytes, their order and their place
    among the other events (the transcript deltas the page places on the audio that follows
    them) do not change, only how many messages carry them.
    """
    event = pending.popleft()
    if event.get("type") == TRANSCRIPT_DELTA:
        return _join_words(event, pending)
    if event.get("type") != AUDIO_DELTA:
        return event
    cap = delta_capacity(event)
    fits = len(event.get("delta") or "") <= cap // 3 * 4
    if fits and not (pending and _joins(event, pending[0])):
        return event  # posted as it is: nothing decoded or encoded again
    pcm = _pcm(event)
    if pcm is None:
        return event  # not ours to repair (the messenger refuses what is too large)
    audio = bytearray(pcm)
    while pending and len(audio) < cap and _joins(event, pending[0]):
        more = _pcm(pending[0])
        if more is None:
            break
        nxt = pending.popleft()
        room = cap - len(audio)
        if len(more) > room:
            audio += more[:room]
            pending.appendleft({**nxt, "delta": _b64(more[room:])})
            break
        audio += more
    if len(audio) > cap:  # one delta larger than a message holds
        pending.appendleft(
            {**event, "event_id": f"{event.get('event_id', 'event')}-2", "delta": _b64(audio[cap:])}
        )
        del audio[cap:]
    return {**event, "delta": _b64(audio)}
