"""Text on its way from the chat model to the speech model.

:class:`SentenceSplitter` cuts the streamed reply into sentences as soon as each one is
certainly complete, so speech for the first sentence can start while the model is still
writing the second. :func:`strip_for_speech` removes what must not be read out (emojis and
other pictographs); the sentence itself keeps them, because the screen shows them to
the child.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["SentenceSplitter", "is_speakable", "strip_for_speech"]

# --- emojis and symbols -----------------------------------------------------------------------

_VS16 = "\ufe0f"
#: Joiners, variation selectors and the keycap mark that glue emoji sequences together.
_EMOJI_GLUE = frozenset("\u200d\ufe0e\ufe0f\u20e3")
#: Symbols (category So) that are read naturally and stay.
_KEEP_SYMBOLS = frozenset("°")
_KEYCAP_BASES = frozenset("0123456789#*")


def _is_pictograph(ch: str) -> bool:
    """True for emojis, pictographs, dingbats, arrows and the pieces of emoji sequences."""
    if ch in _EMOJI_GLUE:
        return True
    cp = ord(ch)
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0000 <= cp <= 0xE007F:  # skin tones, flag tags
        return True
    if 0x2190 <= cp <= 0x21FF or 0x27F0 <= cp <= 0x27FF or 0x2900 <= cp <= 0x297F:  # arrows
        return True
    cat = unicodedata.category(ch)
    if cat == "So":
        return ch not in _KEEP_SYMBOLS
    # Unassigned in this Python's Unicode database: in practice emojis newer than it.
    return cat in ("Cn", "Co", "Cs")


_SPACES = re.compile(r"[ \t\u00a0]+")
_REMOVED = "\x00"
#: A removed emoji right before punctuation leaves no space: "Great job 🎉!" -> "Great job!".
_REMOVED_BEFORE_PUNCT = re.compile(r"[ \t]*\x00[\x00 \t]*(?=[!?.,;:…)\]」』])")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_MARKDOWN = re.compile(r"\*+|`+|^#+\s*", re.MULTILINE)


def strip_for_speech(text: str) -> str:
    """The text to send to speech: emojis, pictographs, dingbats and arrows removed, with the
    emoji sequences' joiners and selectors; markdown emphasis (``*``, backticks, ``#`` headings)
    removed; letters of every script, digits and punctuation kept; whitespace tidied."""
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if _is_pictograph(ch) or (
            # A text character shown as an emoji (``‼️``, ``ℹ️``) goes too; keycaps keep the digit.
            i + 1 < n and text[i + 1] == _VS16 and ch not in _KEYCAP_BASES
        ):
            out.append(_REMOVED)
        else:
            out.append(ch)
    cleaned = _REMOVED_BEFORE_PUNCT.sub("", "".join(out)).replace(_REMOVED, " ")
    cleaned = _MARKDOWN.sub("", cleaned)
    cleaned = _EMPTY_BRACKETS.sub("", cleaned)
    lines = (_SPACES.sub(" ", line).strip() for line in cleaned.splitlines())
    return "\n".join(line for line in lines if line)


def is_speakable(text: str) -> bool:
    """Whether anything in ``text`` would be spoken (a letter or a digit)."""
    return any(ch.isalnum() for ch in text)


# --- sentences --------------------------------------------------------------------------------

#: Characters that can end a sentence (a run of them ends it once: ``?!``, ``...``).
_ENDERS = frozenset(".!?…。！？‼⁇⁈⁉")
#: Enders that are ambiguous (abbreviations, decimals, initials, ellipsis mid-sentence).
_SOFT_ENDERS = frozenset(".…")
#: Words that end with a period without ending the sentence (lower case, without the final dot).
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "sra", "srta", "st", "mt", "vs", "jr",
        "e.g", "i.e", "p.ej", "approx", "cf", "núm", "a.m", "p.m", "u.s", "u.k",
        "mme", "mlle", "hr", "fr", "bzw", "z.b", "d.h", "usw", "ud", "uds", "vd", "vds",
    }
)  # fmt: skip
_WORD_BEFORE = re.compile(r"([^\s(\[{\"'«“¡¿]+)$")
#: Brackets and quotes whose closing mark may follow a sentence's end ("(Hello!)").
_PAIRS = {"(": ")", "[": "]", "{": "}", "«": "»", "“": "”", "‹": "›", "「": "」", "『": "』"}
#: Closing marks that belong to the sentence they follow: the pairs', and straight quotes.
_CLOSERS = frozenset(_PAIRS.values()) | frozenset("\"'’")
#: A straight quote opening a quotation: at the start or after a space or a bracket.
_OPENING_QUOTE = re.compile(r"(?:^|(?<=[\s(\[{«“]))['\"‘]")
_CLOSING_QUOTE = re.compile(r"['\"’](?=[\s)\]}»”.,;:!?…]|$)")


def _ends_for_sure(run: str) -> bool:
    """A run of enders with ``!``, ``?``, ``。`` or friends in it: always a sentence end (only
    ``.`` and ``…`` can be an abbreviation, a decimal or a pause)."""
    return any(c not in _SOFT_ENDERS for c in run)


def _inside_brackets_or_quotes(text: str) -> bool:
    """Whether a bracket or a quotation opened in ``text`` is still open at its end."""
    if any(text.count(o) > text.count(c) for o, c in _PAIRS.items()):
        return True
    return len(_OPENING_QUOTE.findall(text)) > len(_CLOSING_QUOTE.findall(text))


class SentenceSplitter:
    """Incremental sentence splitter for a streamed reply.

    ``feed(delta)`` returns the sentences completed so far, each as soon as it is certain.
    After ``!`` or ``?`` (and friends) outside brackets and quotes, that is the next character
    of any kind: the first sentence's speech is what the child waits for, so an emoji after it
    opens the next sentence instead (the screen shows the same text): ``"¡Hola! 😊 (Hello!)"``
    gives ``["¡Hola!", "😊 (Hello!)"]``. Otherwise a sentence is released once the first
    non-space character *after* its end has arrived (that character decides whether a ``.``
    really ended it), or on :meth:`flush`; closing quotes and brackets and emojis that follow
    its end mark stay with it: ``"(¡Genial! 🎉) Sigue."`` gives ``["(¡Genial! 🎉)", "Sigue."]``.
    Not a sentence end: abbreviations (``e.g.``, ``Mr.``, ``Sra.``), decimals and dotted names
    (``3.5``, ``U.S.``), an ellipsis or period followed by a lower-case word, and list numbers
    (``1.``). Spanish ``¡`` and ``¿`` open the next sentence.
    Newlines end a sentence too.
    """

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        scan_from = 0
        while True:
            cut = self._find_cut(scan_from)
            if cut is None:
                return out
            end, resume = cut
            sentence = self._buf[:end].strip()
            if sentence:
                out.append(sentence)
            self._buf = self._buf[resume:]
            scan_from = 0

    def flush(self) -> list[str]:
        """Release whatever is left (the end of the reply)."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    @property
    def pending(self) -> str:
        """Text received but not yet released."""
        return self._buf

    def _find_cut(self, start: int) -> tuple[int, int] | None:
        """The next sentence boundary as ``(end of sentence, start of the rest)``, or ``None``
        if there is none yet (or it cannot be decided before more text arrives)."""
        buf = self._buf
        n = len(buf)
        i = start
        while i < n:
            ch = buf[i]
            if ch == "\n":
                if not buf[:i].strip():
                    i += 1
                    continue
                j = i + 1
                while j < n and buf[j].isspace():
                    j += 1
                if j == n:
                    return None
                return i, j
            if ch not in _ENDERS:
                i += 1
                continue
            run_end = i
            while run_end < n and buf[run_end] in _ENDERS:
                run_end += 1
            if run_end == n:
                return None  # the run may go on ("?!", "!!")
            if (
                _ends_for_sure(buf[i:run_end])
                and buf[run_end] not in _CLOSERS
                and not _inside_brackets_or_quotes(buf[:i])
            ):
                # "!" or "?" outside brackets and quotes: the sentence is over, and speech
                # for it starts now; an emoji after it opens the next sentence (the screen
                # shows the same text) instead of holding this one for another token.
                return run_end, run_end
            # A run of enders, then closers/emojis/spaces that belong to this sentence.
            j = run_end
            end = run_end
            saw_space = False
            while j < n:
                c = buf[j]
                if c.isspace():
                    saw_space = True
                elif c in _CLOSERS or _is_pictograph(c):
                    end = j + 1
                else:
                    break
                j += 1
            if j == n:
                return None  # the character that decides has not arrived yet
            if self._is_boundary(i, run_end, buf[j], saw_space):
                return end, j
            i = j
        return None

    def _is_boundary(self, start: int, run_end: int, next_char: str, saw_space: bool) -> bool:
        run = self._buf[start:run_end]
        if _ends_for_sure(run):
            return True
        if not saw_space:
            return False  # 3.5, e.g., U.S.A, example.com
        if next_char in "¡¿":
            return True  # Spanish marks the start of the next sentence
        if next_char.islower():
            return False  # "Hmm... let me see", "approx. five"
        before = self._buf[:start]
        match = _WORD_BEFORE.search(before)
        if match is None or run != ".":
            return True
        word = match.group(1)
        if word.lower() in _ABBREVIATIONS:
            return False  # "Mr. Smith", "e.g. Paris"
        if len(word) == 1 and word.isupper():
            return False  # an initial: "J. K. Rowling"
        return not (word.isdigit() and before.strip() == word)  # a list number: "1. Uno"


def _letters(text: str) -> str:
    """The letters and digits of ``text``, case-folded: what a listener hears of it (spacing,
    punctuation and apostrophes are not heard)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


class SpokenCheck:
    """Whether a voice model's transcript of what it said stays close to the text it was asked
    to read (the text that passed moderation).

    The comparison is on letters only, so punctuation, spacing and contractions ("do not" read
    as "don't") cost nothing. Fed the transcript as it streams, it fails as soon as the model has
    said more than ``slack`` + ``tolerance`` × (letters said) letters that are not in the text;
    :meth:`finish` also fails a reading that left out as much of the text. One swapped short
    word usually passes; a reworded clause, an added sentence or an answer instead of a reading
    does not. A number in the text may be read as a word ("3" as "tres"): each one widens the
    slack by the letters of a number word.
    """

    #: Letters a number may take when read out ("diecisiete", "quatorze" are longer, rarer).
    NUMBER_WORD_LETTERS = 7

    def __init__(self, expected: str, *, tolerance: float = 0.1, slack: int = 2) -> None:
        import difflib  # a turn-path import only (this module is also on the chunk path)

        letters = _letters(expected)
        self._matcher = difflib.SequenceMatcher(autojunk=False)
        self._matcher.set_seq1(letters)
        self._expected_len = len(letters)
        self._heard = ""
        self._tolerance = tolerance
        self._slack = slack + self.NUMBER_WORD_LETTERS * len(re.findall(r"\d+", expected))

    def _match(self) -> int:
        self._matcher.set_seq2(self._heard)
        return sum(block.size for block in self._matcher.get_matching_blocks())

    def feed(self, spoken: str) -> bool:
        """Add a transcript piece; False once what was said strays past the tolerance."""
        letters = _letters(spoken)
        if not letters:
            return True
        self._heard += letters
        extra = len(self._heard) - self._match()
        return extra <= self._slack + self._tolerance * len(self._heard)

    def finish(self) -> bool:
        """At the end of the reading: False if too much of the text was left out."""
        missing = self._expected_len - (self._match() if self._heard else 0)
        return missing <= self._slack + self._tolerance * self._expected_len


def emojis_of(text: str) -> list[str]:
    """The emojis of ``text``, in order, each sequence whole (joiners and selectors kept)."""
    runs: list[str] = []
    run = ""
    for ch in text:
        if _is_pictograph(ch):
            run += ch
        elif run:
            runs.append(run)
            run = ""
    if run:
        runs.append(run)
    return runs
