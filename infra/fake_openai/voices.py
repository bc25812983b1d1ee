"""What the fake provider's speech sounds like: deterministic tones (fast, exact lengths, for
tests and benchmarks) or espeak-ng's real words (the demo mode of ``make run``).

Both give 24 kHz PCM16 LE mono whose length depends on the text alone, never on timing, and
both are cached by text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = [
    "MS_PER_CHAR",
    "SPEECH_MODES",
    "SPEECH_SAMPLE_RATE",
    "contracted",
    "espeak_available",
    "espeak_pcm",
    "speech_pcm",
    "synth_pcm",
    "word_pieces",
]

SPEECH_SAMPLE_RATE = 24_000
#: Milliseconds of synthesized tone speech per character of input.
MS_PER_CHAR = 60
SPEECH_MODES = ("tones", "espeak")


@lru_cache(maxsize=256)
def synth_pcm(text: str) -> bytes:
    """Deterministic "speech" for ``text``: 60 ms per character of 24 kHz PCM16 LE mono, a
    short tone whose pitch depends on the character (silence for whitespace), with 5 ms fades
    so the joins do not click."""
    per_char = SPEECH_SAMPLE_RATE * MS_PER_CHAR // 1000
    t = np.arange(per_char, dtype=np.float64) / SPEECH_SAMPLE_RATE
    fade_n = SPEECH_SAMPLE_RATE * 5 // 1000
    envelope = np.ones(per_char)
    ramp = np.linspace(0.0, 1.0, fade_n, endpoint=False)
    envelope[:fade_n] = ramp
    envelope[-fade_n:] = ramp[::-1]
    pieces = []
    for ch in text:
        if ch.isspace():
            pieces.append(np.zeros(per_char))
            continue
        freq = 180.0 + (ord(ch) * 37) % 720
        pieces.append(0.25 * np.sin(2.0 * np.pi * freq * t) * envelope)
    if not pieces:
        return b""
    samples = np.concatenate(pieces) * 32767.0
    return np.rint(samples).astype("<i2").tobytes()


# --- espeak-ng --------------------------------------------------------------------------------

#: A few frequent words per language, to pick the espeak-ng voice for a piece of a reply.
_LANGUAGE_WORDS = {
    "es": "hola muy bien qué que cómo estás es el la los las tu te gusta gustan dice perro gato "
    "y de por favor gracias cuál color favorito años tienes genial excelente bonito sí",
    "fr": "bonjour salut très bien comment ça va est le la les tu ton ta et de merci quelle "
    "couleur préférée chat dit super oui je suis",
    "de": "hallo sehr gut wie geht es dir ist der die das und du deine lieblingsfarbe hund sagt "
    "toll ja ich bin danke",
    "en": "hello hi how are you is the a an and very good what your favorite color do like "
    "great says dog cat yes thank thanks i am old pretty excellent",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _LANGUAGE_WORDS.items()}
_MARKS = {"es": "¡¿ñ", "fr": "çàèêîôûœ", "de": "äöüß"}
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
#: English help goes in brackets in the tutor's replies ("¡Hola! (Hello!)").
_BRACKETED = re.compile(r"(\([^)]*\))")
#: The pause between pieces spoken in different voices.
_GAP_S = 0.15


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def guess_language(text: str) -> str:
    """The espeak-ng voice for ``text`` (es, fr, de or en): its marks and frequent words
    decide, Spanish on a tie (the demo's default language)."""
    lowered = text.lower()
    words = _WORD.findall(lowered)
    scores = {
        lang: sum(w in _WORDS[lang] for w in words)
        + 2 * sum(ch in _MARKS.get(lang, "") for ch in lowered)
        for lang in _WORDS
    }
    best = max(scores.values())
    if best == 0:
        return "es"
    return next(lang for lang in ("es", "fr", "de", "en") if scores[lang] == best)


def _speakable(text: str) -> str:
    """``text`` without emojis and other symbols, which espeak-ng would read out by name."""
    return "".join(
        ch for ch in text if not unicodedata.category(ch).startswith(("S", "C")) or ch in "\n\t"
    ).strip()


@lru_cache(maxsize=512)
def _espeak_piece(text: str, language: str) -> np.ndarray:
    """One piece of text in one espeak-ng voice, as float samples at 24 kHz."""
    result = subprocess.run(
        ["espeak-ng", "--stdout", "-v", f"{language}+f3", "-s", "150", "-p", "60"],
        input=text.encode("utf-8"),
        capture_output=True,
        check=True,
        timeout=30,
    )
    wav = result.stdout
    # espeak-ng writes to a pipe, so its header cannot hold the real sizes: read the rate from
    # the header and take everything after the ``data`` chunk's header as samples.
    rate = int.from_bytes(wav[24:28], "little")
    start = wav.find(b"data") + 8
    if start < 8 or rate <= 0:
        raise RuntimeError("espeak-ng gave no WAV audio")
    raw = wav[start:]
    samples = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.float64)
    if rate == SPEECH_SAMPLE_RATE or samples.size == 0:
        return samples
    n_out = round(samples.size * SPEECH_SAMPLE_RATE / rate)
    positions = np.arange(n_out) * (rate / SPEECH_SAMPLE_RATE)
    return np.interp(positions, np.arange(samples.size), samples)


@lru_cache(maxsize=256)
def espeak_pcm(text: str) -> bytes:
    """``text`` spoken by espeak-ng: 24 kHz PCM16 LE mono. Bracketed parts are read in English,
    the rest in the language its words suggest (Spanish, French, German or English)."""
    pieces: list[np.ndarray] = []
    gap = np.zeros(int(SPEECH_SAMPLE_RATE * _GAP_S))
    for part in _BRACKETED.split(text):
        speakable = _speakable(part.strip("()") if _BRACKETED.fullmatch(part) else part)
        if not _WORD.search(speakable):
            continue
        language = "en" if _BRACKETED.fullmatch(part) else guess_language(speakable)
        if pieces:
            pieces.append(gap)
        pieces.append(_espeak_piece(speakable, language))
    if not pieces:
        return b""
    samples = np.clip(np.rint(np.concatenate(pieces)), -32768, 32767)
    return samples.astype("<i2").tobytes()


def speech_pcm(text: str, mode: str = "tones") -> bytes:
    """The fake's speech for ``text`` in ``mode`` (``tones`` or ``espeak``)."""
    if mode == "espeak":
        return espeak_pcm(text)
    if mode == "tones":
        return synth_pcm(text)
    raise ValueError(f"unknown speech mode {mode!r}; one of {SPEECH_MODES}")


# --- words and rewording ----------------------------------------------------------------------

_PIECE = re.compile(r"\s*\S+|\s+$")


def word_pieces(text: str) -> list[tuple[str, int]]:
    """The Realtime transcript deltas of ``text``: each word with the whitespace before it, and
    the character offset where it starts. ``"".join`` of the pieces gives the text."""
    pieces = [(m.group(0), m.start()) for m in _PIECE.finditer(text)]
    assert "".join(p for p, _ in pieces) == text, "word split lost text"
    return pieces


_CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (r"\bdo not\b", "don't"),
    (r"\bdoes not\b", "doesn't"),
    (r"\bis not\b", "isn't"),
    (r"\bare not\b", "aren't"),
    (r"\bcannot\b", "can't"),
    (r"\bI am\b", "I'm"),
    (r"\byou are\b", "you're"),
    (r"\bit is\b", "it's"),
    (r"\bwhat is\b", "what's"),
    (r"\bde el\b", "del"),
    (r"\ba el\b", "al"),
)


def contracted(text: str) -> str:
    """A small rewording, the kind a voice model makes: English contractions ("do not" ->
    "don't"), the Spanish ones ("de el" -> "del"), and no inverted ``¡``/``¿``. A text with
    nothing to contract loses its final punctuation instead, so it always changes."""
    changed = text
    for pattern, replacement in _CONTRACTIONS:
        changed = re.sub(
            pattern,
            lambda m, r=replacement: r[0].upper() + r[1:] if m.group(0)[0].isupper() else r,
            changed,
            flags=re.IGNORECASE,
        )
    changed = changed.replace("¡", "").replace("¿", "")
    if changed == text:
        changed = text.rstrip(".!?")
    return changed


Rewording = str | Callable[[str], str]
