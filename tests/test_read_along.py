# ruff: noqa: E501  (JavaScript in strings)
"""The page's read-along timing (``web/read-along.js``), pure, run by Node.

* What the page keeps of a cut reply is what the server's history keeps: the JavaScript rule
  against ``kiddolingo.conversation.truncate_segments`` itself, on many generated replies.
* Word timing against the fake provider's speech, whose every character lasts 60 ms: exact once
  a sentence's audio is complete, never ahead of the voice while it is still arriving, whether
  a sentence's text comes as one delta (the server today) or word by word interleaved with its
  audio (a provider that streams what it speaks).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.fake_openai import MS_PER_CHAR
from infra.fake_openai.server import _DEMO_REPLIES
from kiddolingo.audio import bytes_to_ms
from kiddolingo.conversation import Segment, join_segments, truncate_segments
from kiddolingo.speech_text import SentenceSplitter, emojis_of, strip_for_speech

ROOT = Path(__file__).resolve().parent.parent
MODULE = (ROOT / "web" / "read-along.js").as_uri()
BYTES_PER_CHAR = 24000 * 2 * MS_PER_CHAR // 1000

pytestmark = pytest.mark.skipif(not shutil.which("node"), reason="node is needed (make deps)")


def run_js(body: str, data: Any) -> Any:
    """Run ``body`` (an async function body of ``ReadAlong`` and ``data``) in Node: its result."""
    script = (
        f"import * as m from {json.dumps(MODULE)};\n"
        "const data = JSON.parse(process.argv[1]);\n"
        f"const result = await (async ({{ ReadAlong }}) => {{ {body} }})(m);\n"
        "process.stdout.write(JSON.stringify(result));\n"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(data)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def sentences_of(reply: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(reply) + splitter.flush()


def server_kept(sentences: list[tuple[str, int]], audio_end_ms: int) -> str:
    """What the server's history keeps: segments measured as ``turn.py`` measures them."""
    segments = [Segment(text, round(bytes_to_ms(n, 24000))) for text, n in sentences]
    heard, _ = truncate_segments(segments, audio_end_ms)
    return join_segments([s.text for s in heard])


# The server's wire format: one delta per sentence (" " before all but the first), then its audio.
FEED_WHOLE = """
  const out = [];
  for (const c of data) {
    const r = new ReadAlong();
    c.sentences.forEach(([text, bytes], i) => { r.addText((i ? " " : "") + text); r.addAudio(bytes); });
    r.finish();
    out.push(c.ends.map((end) => r.heardText(end)));
  }
  return out;
"""


def test_a_cut_reply_keeps_what_the_servers_history_keeps() -> None:
    rng = random.Random(24)
    words = [
        "hola",
        "amigo",
        "¿cómo",
        "estás?",
        "muy",
        "bien",
        "😊",
        "(Hello!)",
        "perro",
        "gato,",
        "casa.",
        "¡Genial!",
        "🐶",
    ]
    cases = []
    for reply in [r for replies in _DEMO_REPLIES.values() for r in replies]:
        sentences = [(s, len(strip_for_speech(s)) * BYTES_PER_CHAR) for s in sentences_of(reply)]
        total = sum(n for _, n in sentences) // 48
        cases.append({"sentences": sentences, "ends": list(range(0, total + 100, 7))})
    for _ in range(150):
        reply = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        # Sentences as the server cuts them and speaks them (one with nothing to speak, an
        # emoji alone, has no audio and goes with the sentence before it); any even length of
        # audio, odd milliseconds and exact halves (which round to even) included.
        sentences = [
            (s, 2 * rng.randint(0, 60000)) for s in sentences_of(reply) if strip_for_speech(s)
        ]
        total = sum(n for _, n in sentences) // 48
        ends = [rng.randint(0, total + 50) for _ in range(40)] + [0, total, total + 1]
        cases.append({"sentences": sentences, "ends": ends})
    page = run_js(FEED_WHOLE, cases)
    checked = 0
    for case, kept in zip(cases, page, strict=True):
        pairs = [(t, n) for t, n in case["sentences"]]
        for end, text in zip(case["ends"], kept, strict=True):
            assert text == server_kept(pairs, end), (case["sentences"], end)
            checked += 1
    assert checked > 5000


TIMING = """
  const out = [];
  for (const c of data) {
    const r = new ReadAlong();
    const seen = [];  // the words' starts at every step, while the reply arrives
    const look = () => seen.push(r.words().map((w) => [w.text, w.startMs]));
    c.sentences.forEach(([text, bytes], i) => {
      const lead = i ? " " : "";
      if (c.realtime) {
        // The Realtime voice: the spoken words interleaved with the audio, then the
        // sentence's emojis (never spoken) after its audio.
        const words = c.spoken[i].split(" ");
        let sent = 0;
        words.forEach((word, k) => {
          r.addText((k || i ? " " : "") + word); look();
          const upTo = k === words.length - 1 ? bytes : Math.floor(bytes * (k + 1) / words.length / 2) * 2;
          while (sent < upTo) { const n = Math.min(4800, upTo - sent); r.addAudio(n); sent += n; look(); }
        });
        if (c.emojis[i]) { r.addText(" " + c.emojis[i]); look(); }
        return;
      }
      if (!c.interleaved) {
        r.addText(lead + text); look(); r.addAudio(bytes); look();
        return;
      }
      // Word by word, each spoken word's text then its share of the audio, in pieces (an
      // emoji has no audio of its own).
      const words = text.split(" ");
      let sent = 0;
      const send = (upTo) => {
        while (sent < upTo) { const n = Math.min(4800, upTo - sent); r.addAudio(n); sent += n; look(); }
      };
      words.forEach((word, k) => {
        r.addText((k || i ? " " : "") + word); look();
        if (!/[\\p{L}\\p{N}]/u.test(word)) return;
        send(k === words.length - 1 ? bytes : Math.floor(bytes * (k + 1) / words.length / 2) * 2);
      });
      send(bytes);
    });
    r.finish();
    out.push({ final: r.words().map((w) => [w.text, w.startMs]), seen,
               kept: c.ends.map((end) => r.heardText(end)) });
  }
  return out;
"""


def true_starts(sentences: list[str]) -> list[tuple[str, float]]:
    """Where each word starts in the fake's speech: 60 ms per spoken character."""
    out: list[tuple[str, float]] = []
    offset = 0.0
    for sentence in sentences:
        spoken = strip_for_speech(sentence)
        pos = 0
        for word in sentence.split():
            said = strip_for_speech(word)
            if said:
                pos = spoken.index(said, pos)
            out.append((word, offset + pos * MS_PER_CHAR))
            if said:
                pos += len(said)
        offset += len(spoken) * MS_PER_CHAR
    return out


def test_the_realtime_voice_s_emojis_stay_with_their_sentence() -> None:
    """The Realtime voice's transcript: spoken words interleaved with the audio, the sentence's
    emojis after it; the server's segment is the transcript plus the emojis."""
    cases, segments = [], []
    for reply in [r for replies in _DEMO_REPLIES.values() for r in replies]:
        sentences = sentences_of(reply)
        spoken = [strip_for_speech(s) for s in sentences]
        emojis = [" ".join(emojis_of(s)) for s in sentences]
        pairs = [
            ((sp + " " + em).strip(), len(sp) * BYTES_PER_CHAR)
            for sp, em in zip(spoken, emojis, strict=True)
        ]
        total = sum(n for _, n in pairs) // 48
        cases.append(
            {
                "sentences": [(t, n) for t, n in pairs],
                "spoken": spoken,
                "emojis": emojis,
                "realtime": True,
                "ends": list(range(0, total + 100, 11)),
            }
        )
        segments.append(pairs)
    results = run_js(TIMING, cases)
    for case, pairs, result in zip(cases, segments, results, strict=True):
        assert result["kept"] == [server_kept(pairs, end) for end in case["ends"]]


@pytest.mark.parametrize("interleaved", [False, True], ids=["sentence-deltas", "word-deltas"])
def test_words_start_when_the_fake_voice_says_them(interleaved: bool) -> None:
    replies = [r for replies in _DEMO_REPLIES.values() for r in replies]
    cases = []
    for reply in replies:
        sentences = sentences_of(reply)
        cases.append(
            {
                "sentences": [(s, len(strip_for_speech(s)) * BYTES_PER_CHAR) for s in sentences],
                "interleaved": interleaved,
                "ends": [0, 450, 1000, 2222, 4000],
            }
        )
    results = run_js(TIMING, cases)
    for reply, case, result in zip(replies, cases, results, strict=True):
        truth = true_starts(sentences_of(reply))
        # Once the reply is complete: every word exactly where the voice says it.
        assert [w for w, _ in result["final"]] == [w for w, _ in truth]
        for (word, ms), (_, want) in zip(result["final"], truth, strict=True):
            assert ms == pytest.approx(want, abs=1e-6), (reply, word)
        # While it arrives: a word is never placed before its audio (the page would show it
        # ahead of the voice).
        for step in result["seen"]:
            for (word, ms), (_, want) in zip(step, truth, strict=False):
                assert ms >= want - 1e-6, (reply, word, ms, want)
        if not interleaved:
            # The server's format: the same sentences, so the same cut. (Word by word, an emoji
            # that opens a sentence goes with the sentence before: no voice sends that, the
            # Realtime voice's emojis come after their sentence, tested above.)
            pairs = [(t, n) for t, n in case["sentences"]]
            assert result["kept"] == [server_kept(pairs, end) for end in case["ends"]]
