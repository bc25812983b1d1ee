"""Issue 23: a reply's audio in as few messages as carry it (API Gateway bills a message per
started 32 KB).

The poster joins the audio deltas of one response that are queued behind each other when it
gets to post them, and the transcript deltas queued behind one that ends inside a word; it never
waits for more. Through the real handlers (moto, the real ``openai`` SDK over real HTTP and
WebSockets to the fake), with posts slowed to a real Management API round trip so that audio
queues up: the same audio, fewer messages, every one under 32 KB, and what the page's
read-along (``web/read-along.js``, run by Node) keeps of a cut reply is what the server's
history keeps after ``conversation.item.truncate``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from infra.fake_openai import synth_pcm
from kiddolingo.conversation import join_segments, load_history, segments_of, truncate_segments
from kiddolingo.post_joining import AUDIO_DELTA, TRANSCRIPT_DELTA, delta_capacity, next_post
from kiddolingo.protocol import encode_json, server_event
from kiddolingo.speech_text import SentenceSplitter, strip_for_speech
from kiddolingo.turn import POST_DELTA_PCM
from tests.support.events import connect_event, message_event
from tests.support.speech import chunks, speak

ROOT = Path(__file__).resolve().parent.parent
MODULE = (ROOT / "web" / "read-along.js").as_uri()
REPLY = (
    "¡Hola, Ana! 😊 (Hello, Ana!) ¿Te gustan los gatos? 🐱 (Do you like cats?) "
    "Yo tengo un perro muy grande y un gato pequeño. ¡Vamos a contar hasta diez juntos!"
)


def _audio(item: str, pcm: bytes, n: int) -> dict[str, Any]:
    return server_event(
        AUDIO_DELTA,
        response_id="resp_1",
        item_id=item,
        output_index=0,
        content_index=0,
        delta=base64.b64encode(pcm).decode(),
    ) | {"event_id": f"event_{n}"}


def _text(delta: str) -> dict[str, Any]:
    return server_event(
        TRANSCRIPT_DELTA,
        response_id="resp_1",
        item_id="item_1",
        output_index=0,
        content_index=0,
        delta=delta,
    )


def _drain(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pending = deque(events)
    out = []
    while pending:
        out.append(next_post(pending))
    return out


# -------------------------------------------------------------------------- pure: next_post


def test_queued_audio_goes_in_the_fewest_messages_under_32_kb() -> None:
    pieces = [bytes([n]) * size for n, size in enumerate([16384, 2816, 16384, 2816, 9600, 1484])]
    posts = _drain([_audio("item_1", p, n) for n, p in enumerate(pieces)])
    audio = b"".join(base64.b64decode(e["delta"]) for e in posts)
    assert audio == b"".join(pieces)  # same bytes, same order
    cap = delta_capacity(posts[0])
    assert cap >= 24_000 and cap % 2 == 0
    assert [len(base64.b64decode(e["delta"])) for e in posts] == [cap, cap, len(audio) - 2 * cap]
    assert all(len(encode_json(e)) < 32 * 1024 for e in posts)
    assert len({e["event_id"] for e in posts}) == len(posts)


def test_a_lone_delta_goes_as_it_came_and_other_events_are_never_crossed() -> None:
    lone = _audio("item_1", b"\x01\x00" * 50, 0)
    assert _drain([lone]) == [lone]  # not decoded and encoded again
    events = [
        _audio("item_1", b"a" * 100, 1),
        _text(" gatos"),
        _audio("item_1", b"b" * 100, 2),
        _audio("item_2", b"c" * 100, 3),  # another item: never joined
        server_event("response.output_audio.done"),
        _audio("item_2", b"d" * 100, 4),
    ]
    posts = _drain(events)
    assert [e["type"] for e in posts] == [e["type"] for e in events]
    assert [e.get("delta") for e in posts] == [e.get("delta") for e in events]


def test_an_oversized_delta_is_cut_under_32_kb() -> None:
    posts = _drain([_audio("item_1", b"\x02\x00" * 40_000, 0)])
    assert b"".join(base64.b64decode(e["delta"]) for e in posts) == b"\x02\x00" * 40_000
    assert all(len(encode_json(e)) < 32 * 1024 for e in posts) and len(posts) == 4


def test_transcript_deltas_join_only_inside_a_word() -> None:
    # Joined where the text ends with a letter; never after a sentence's end, an emoji or a
    # bracket (where the read-along may open a new sentence).
    words = ["¿Te", " gustan", " los", " gatos?", " 🐱", " (Do", " you", " like", " cats?)", " Yo"]
    posts = _drain([_text(w) for w in words])
    assert [e["delta"] for e in posts] == [
        "¿Te gustan los gatos?",
        " 🐱",
        " (Do you like cats?)",
        " Yo",
    ]


# -------------------------------------------------------------- through the real handlers


def _send(stack: Any, conn: str, body: dict[str, Any]) -> None:
    stack.invoke("$default", message_event(json.dumps(body), connection_id=conn))


def _turn(stack: Any, conn: str, pcm: bytes) -> str:
    assert stack.invoke("$connect", connect_event(connection_id=conn))["statusCode"] == 200
    session = {
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}
        },
        "tutor": {"target_language": "Spanish", "learner_age": 7},
    }
    _send(stack, conn, {"type": "session.update", "session": session})
    for n, chunk in enumerate(chunks(pcm), start=1):
        audio = base64.b64encode(chunk).decode()
        _send(
            stack, conn, {"type": "input_audio_buffer.append", "event_id": f"a#{n}", "audio": audio}
        )
    _send(stack, conn, {"type": "input_audio_buffer.commit"})
    return stack.connection_item(conn)["sid"]


def _reply(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in (AUDIO_DELTA, TRANSCRIPT_DELTA)]


FEED = """
  const r = new ReadAlong();
  for (const [kind, value] of data.events) {
    if (kind === "text") r.addText(value); else r.addAudio(value);
  }
  r.finish();
  return data.ends.map((end) => r.heardText(end));
"""


def _page_keeps(reply: list[dict[str, Any]], ends: list[int]) -> list[str]:
    events = [
        ("text", e["delta"])
        if e["type"] == TRANSCRIPT_DELTA
        else ("audio", len(base64.b64decode(e["delta"])))
        for e in reply
    ]
    script = (
        f"import {{ ReadAlong }} from {json.dumps(MODULE)};\n"
        "const data = JSON.parse(process.argv[1]);\n"
        f"const result = (() => {{ {FEED} }})();\n"
        "process.stdout.write(JSON.stringify(result));\n"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps({"events": events, "ends": ends})],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not shutil.which("node"), reason="node is needed (make deps)")
def test_slow_posts_join_the_queued_audio_and_the_page_keeps_what_the_history_keeps(
    stack, fake_openai
) -> None:
    from kiddolingo import aws

    pcm = speak("Hola, me llamo Ana.")
    fake_openai.script_transcripts("Hola, me llamo Ana.", "Hola, me llamo Ana.")
    fake_openai.script_replies(REPLY, REPLY)
    splitter = SentenceSplitter()
    spoken = b"".join(
        synth_pcm(strip_for_speech(s)) for s in splitter.feed(REPLY) + splitter.flush()
    )

    _turn(stack, "conn-fast=", pcm)
    fast = _reply(stack.recorder.events("conn-fast="))

    def round_trip(**_: Any) -> None:
        time.sleep(0.15)  # a slow Management API round trip

    hook = "before-call.apigatewaymanagementapi.PostToConnection"
    aws._session().events.register_first(hook, round_trip)
    try:
        sid = _turn(stack, "conn-slow=", pcm)
    finally:
        aws._session().events.unregister(hook, round_trip)
    events = stack.recorder.events("conn-slow=")
    slow = _reply(events)
    assert events[-1]["type"] == "response.done" and events[-1]["response"]["status"] == "completed"

    for reply in (fast, slow):  # the same audio, in order, whoever posted it
        assert (
            b"".join(base64.b64decode(e["delta"]) for e in reply if e["type"] == AUDIO_DELTA)
            == spoken
        )
        assert "".join(e["delta"] for e in reply if e["type"] == TRANSCRIPT_DELTA) == "".join(
            e["delta"] for e in fast if e["type"] == TRANSCRIPT_DELTA
        )
    # The turn cuts its audio at POST_DELTA_PCM: a larger delta is audio that queued behind a
    # slow post and went along with it.
    sizes = [len(base64.b64decode(e["delta"])) for e in slow if e["type"] == AUDIO_DELTA]
    assert max(sizes) > POST_DELTA_PCM
    assert max(stack.recorder.sizes) < 32 * 1024

    # The child stops listening anywhere: the page's read-along keeps what the history keeps
    # after the truncate, whatever messages carried the audio.
    (assistant,) = [
        h for h in load_history(stack.session_item(sid)["hist"]) if h["role"] == "assistant"
    ]
    total = len(spoken) // 48
    ends = [0, 1, 333, 700, total // 3, total // 2, total - 250, total, total + 40]
    history = [
        join_segments([s.text for s in truncate_segments(segments_of(assistant), end)[0]])
        for end in ends
    ]
    assert _page_keeps(slow, ends) == history
    assert _page_keeps(fast, ends) == history
    _send(
        stack,
        "conn-slow=",
        {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 0,
            "audio_end_ms": ends[4],
        },
    )
    (kept,) = [h for h in load_history(stack.session_item(sid)["hist"]) if h["role"] == "assistant"]
    assert join_segments([s.text for s in segments_of(kept)]) == history[4]
