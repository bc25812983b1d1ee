"""What the fake says: canned tutor replies, the tokens a reply streams as, and what a test
scripts (transcripts, replies, rewordings of Realtime speech)."""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.fake_openai.voices import Rewording

if TYPE_CHECKING:
    from infra.fake_openai.recording import RecordedRequest

__all__ = ["ScriptedContent", "chat_tokens", "demo_reply"]

_DEMO_REPLIES: dict[str, tuple[str, ...]] = {
    "spanish": (
        "¡Hola! 😊 (Hello!) ¿Cómo estás? (How are you?)",
        "¡Muy bien! 👍 (Very good!) ¿Cuál es tu color favorito? (What is your favorite color?)",
        "¡Qué bonito! 🌈 (How pretty!) ¿Te gustan los animales? (Do you like animals?)",
        "¡Genial! 🐶 (Great!) El perro dice guau. (The dog says woof.)",
        "¡Excelente! ⭐ (Excellent!) ¿Cuántos años tienes? (How old are you?)",
    ),
    "french": (
        "Bonjour ! 😊 (Hello!) Comment ça va ? (How are you?)",
        "Très bien ! 👍 (Very good!) Quelle est ta couleur préférée ?"
        " (What is your favorite color?)",
        "Super ! 🐱 (Great!) Le chat dit miaou. (The cat says meow.)",
    ),
    "german": (
        "Hallo! 😊 (Hello!) Wie geht es dir? (How are you?)",
        "Sehr gut! 👍 (Very good!) Was ist deine Lieblingsfarbe? (What is your favorite color?)",
        "Toll! 🐶 (Great!) Der Hund sagt wau. (The dog says woof.)",
    ),
}
_LANGUAGE_HINTS = {
    "spanish": ("spanish", "español"),
    "french": ("french", "français"),
    "german": ("german", "deutsch"),
}


def demo_reply(messages: list[dict[str, Any]]) -> str:
    """A canned, friendly tutor reply in the target language named by the system prompt
    (Spanish, French or German; Spanish otherwise), with English help and an emoji. The n-th
    user turn gets the n-th reply, so a conversation is deterministic."""
    system = " ".join(
        str(m.get("content") or "") for m in messages if m.get("role") in ("system", "developer")
    ).lower()
    language = next(
        (lang for lang, hints in _LANGUAGE_HINTS.items() if any(h in system for h in hints)),
        "spanish",
    )
    replies = _DEMO_REPLIES[language]
    turns = sum(1 for m in messages if m.get("role") == "user")
    return replies[max(0, turns - 1) % len(replies)]


_TOKEN = re.compile(r"\s*[\w']+|\s*[^\w\s]|\s+$", re.UNICODE)


def chat_tokens(text: str) -> list[str]:
    """Split a reply into word-ish tokens the way the fake streams it: words, and each
    punctuation mark or emoji on its own, leading spaces attached. ``"".join`` gives the text."""
    tokens = _TOKEN.findall(text)
    assert "".join(tokens) == text, "tokenizer lost text"
    return tokens


@dataclass
class _Rewording:
    """A scripted rewording: counted down as the responses it matches use it."""

    replacement: Rewording
    times: int | None
    match: str | None


class ScriptedContent:
    """The scripts' part of :class:`~infra.fake_openai.server.FakeOpenAI`: what the next
    transcriptions, chat replies and Realtime responses say. Settable from any thread."""

    _lock: threading.Lock
    _transcripts: deque[str]
    _replies: deque[str]
    _rewordings: list[_Rewording]
    #: What a transcription returns when nothing else says.
    default_transcript: str
    #: Transcribes a request when no transcript is scripted; None (or its None) gives the default.
    transcriber: Callable[[RecordedRequest], str | None] | None
    #: The reply to a conversation when no reply is scripted (``demo_reply`` by default).
    reply_for: Callable[[list[dict[str, Any]]], str]

    def script_transcripts(self, *texts: str) -> None:
        """The next transcriptions return these, in order (then the default)."""
        with self._lock:
            self._transcripts.extend(texts)

    def script_replies(self, *texts: str) -> None:
        """The next chat completions return these, in order (then ``reply_for``)."""
        with self._lock:
            self._replies.extend(texts)

    def reword(
        self, replacement: Rewording, times: int | None = 1, *, match: str | None = None
    ) -> None:
        """Make the next ``times`` Realtime responses (``None``: until reset) speak something
        other than their sentence, as a voice model sometimes does: ``replacement`` is the text
        to speak instead, or a function of the sentence (``voices.contracted`` makes a small
        rewording). With ``match``, only sentences containing it (case-insensitive) are
        reworded and counted. The audio and the transcript both follow the spoken text."""
        if not isinstance(replacement, str) and not callable(replacement):
            raise TypeError("replacement must be a text or a function of the sentence")
        with self._lock:
            self._rewordings.append(_Rewording(replacement, times, match))

    def _spoken_text(self, sentence: str) -> str:
        """What the next Realtime response speaks for ``sentence``: a scripted rewording, or
        the sentence itself."""
        with self._lock:
            for rewording in self._rewordings:
                if rewording.times is not None and rewording.times <= 0:
                    continue
                if rewording.match is not None and rewording.match.lower() not in sentence.lower():
                    continue
                if rewording.times is not None:
                    rewording.times -= 1
                replacement = rewording.replacement
                break
            else:
                return sentence
        return replacement if isinstance(replacement, str) else replacement(sentence)

    def _next_transcript(self, record: RecordedRequest) -> str:
        """A scripted transcript, else the transcriber's, else the default."""
        with self._lock:
            if self._transcripts:
                return self._transcripts.popleft()
            transcriber = self.transcriber
            default = self.default_transcript
        if transcriber is not None:
            text = transcriber(record)
            if text is not None:
                return text
        return default

    def _next_reply(self, messages: list[dict[str, Any]]) -> str:
        """A scripted reply, else ``reply_for``'s."""
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            reply_for = self.reply_for
        return reply_for(messages)
