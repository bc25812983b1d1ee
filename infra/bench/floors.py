"""The floors the figures are measured against: what the profile spends before the first audio
(silence window, transcription, chat to the first sentence, speech first byte), for a plain turn
and a speculative one, and where the overhead over the floor goes, stage by stage."""

from __future__ import annotations

import math
from typing import Any

from .config import CHUNK_MS


def first_sentence_tokens(reply: str) -> int:
    """How many chat tokens of ``reply`` arrive before the first sentence can be released.

    The fake streams ``chat_tokens(reply)`` one by one; the turn's sentence splitter releases a
    sentence once the character after it has arrived, i.e. with token index ``k`` (0-based),
    which arrives ``k / tokens_per_s`` after the first token.
    """
    from infra.fake_openai import chat_tokens
    from kiddolingo.speech_text import SentenceSplitter

    splitter = SentenceSplitter()
    tokens = chat_tokens(reply)
    for index, token in enumerate(tokens):
        if splitter.feed(token):
            return index
    return len(tokens)


def first_sentence_ms(profile: Any, reply: str) -> float:
    """Chat first token + the tokens of the first sentence at the profile's token rate."""
    interval_ms = profile.token_interval_s() * 1000.0
    return profile.chat_first_token_ms + first_sentence_tokens(reply) * interval_ms


def floor_ms(profile: Any, reply: str, silence_ms: float) -> float:
    return (
        silence_ms
        + profile.transcription_ms
        + first_sentence_ms(profile, reply)
        + profile.speech_first_byte_ms
    )


def speculative_floor_ms(
    profile: Any, reply: str, silence_ms: float, fraction: float | None
) -> float:
    """The earliest first audio when transcription, chat and the first sentence's speech start
    once the pause reaches ``fraction`` of the window (seen at the end of the 100 ms chunk that
    crosses it) and nothing may be posted before the window is over."""
    if not fraction or fraction <= 0:
        return floor_ms(profile, reply, silence_ms)
    start = math.ceil(fraction * silence_ms / CHUNK_MS) * CHUNK_MS
    ready = start + profile.transcription_ms + first_sentence_ms(profile, reply)
    return max(float(silence_ms), ready + profile.speech_first_byte_ms)


#: Where the overhead over the floor goes: (name, from post, to post, what the profile spends).
STAGES = (
    (
        "end of speech → speech_stopped posted, past the silence window",
        None,
        "input_audio_buffer.speech_stopped",
        "silence",
    ),
    (
        "speech_stopped → transcript posted, past transcription",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "transcription",
    ),
    (
        "transcript → response.created",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        None,
    ),
    (
        "response.created → first sentence's text posted, past chat to the first sentence",
        "response.created",
        "response.output_audio_transcript.delta",
        "first_sentence",
    ),
    (
        "first sentence's text → first audio delta, past speech first byte",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "speech",
    ),
)


def overhead_breakdown(
    timeline: dict[str, float], profile: Any, reply: str, silence_ms: float
) -> dict[str, float]:
    """The overhead over the floor, stage by stage (the stages add up to the overhead)."""
    spent = {
        "silence": float(silence_ms),
        "transcription": profile.transcription_ms,
        "first_sentence": first_sentence_ms(profile, reply),
        "speech": profile.speech_first_byte_ms,
        None: 0.0,
    }
    out: dict[str, float] = {}
    for name, start, end, budget in STAGES:
        if end not in timeline or (start is not None and start not in timeline):
            continue
        begin = 0.0 if start is None else timeline[start]
        out[name] = round(timeline[end] - begin - spent[budget], 1)
    return out
