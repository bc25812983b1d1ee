"""The provider ports: one small async method each (Pipecat style).

The turn logic depends on these, never on an SDK. Implementations: :mod:`.openai_compat`
(any OpenAI-compatible HTTP API); tests may pass their own objects with the same methods.

Streams are async generators. Whoever stops reading one early must close it
(``await stream.aclose()``, or ``async with contextlib.aclosing(stream)``): closing closes the
HTTP response, which is how a cancelled reply stops costing money.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .moderation import ModerationVerdict

__all__ = ["ChatModel", "Moderator", "Providers", "SpeechSynth", "Transcriber"]

#: Speech output format: PCM16 little-endian mono at this rate (DESIGN §3).
SPEECH_SAMPLE_RATE = 24_000


@runtime_checkable
class Transcriber(Protocol):
    async def transcribe(
        self, wav: bytes, *, language: str | None = None, prompt: str | None = None
    ) -> str:
        """The text spoken in ``wav`` (a complete WAV file). ``language`` is an ISO-639-1
        code; ``prompt`` biases the vocabulary (e.g. the previous assistant sentence)."""
        ...


@runtime_checkable
class ChatModel(Protocol):
    def stream(
        self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int
    ) -> AsyncIterator[str]:
        """Text deltas of the assistant's reply to ``messages`` (OpenAI chat format)."""
        ...


@runtime_checkable
class SpeechSynth(Protocol):
    def stream(self, text: str, *, voice: str) -> AsyncIterator[bytes]:
        """Speech for ``text`` as 24 kHz PCM16 LE mono, in chunks of an even number of bytes."""
        ...


@runtime_checkable
class Moderator(Protocol):
    async def check(self, text: str) -> ModerationVerdict:
        """Whether ``text`` is safe for a child, under our own thresholds."""
        ...


@dataclass
class Providers:
    """The four providers of a turn."""

    transcriber: Transcriber
    chat: ChatModel
    speech: SpeechSynth
    moderator: Moderator

    async def aclose(self) -> None:
        """Close the HTTP clients (the ones that have an ``aclose``)."""
        seen: set[int] = set()
        for provider in (self.transcriber, self.chat, self.speech, self.moderator):
            close = getattr(provider, "aclose", None)
            if close is not None and id(provider) not in seen:
                seen.add(id(provider))
                await close()
