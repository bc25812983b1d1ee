"""End to end in a real browser: the page, the local stack, the REAL handlers, real speech.

Headless Debian Chromium driven by Playwright (``executable_path=/usr/bin/chromium``; never
``playwright install``). Its fake microphone plays a WAV of real speech made with ``espeak-ng``
(resampled to 48 kHz by ``sox`` and padded with silence; Chromium loops the file, so the child
"speaks" again every loop). Behind the page: ``tests/support/local_stack.py`` — the local
gateway, moto with the template's table and bucket, and the fake OpenAI server at zero latency.

Also here, without a browser: ``python -m infra.local`` (``make run``) starts and stops cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_stack import local_stack

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SPOKEN = "Hola, me llamo Ana. ¿Cómo estás?"
#: What the fake transcription returns whatever the audio (see infra/fake_openai/content.py).
HEARD = "Hola, me llamo Ana."

HANDLERS_READY = all(
    (ROOT / "functions" / name / "app.py").is_file() for name in ("connect", "audio", "disconnect")
)
needs_handlers = pytest.mark.skipif(
    not HANDLERS_READY, reason="the real handlers (functions/*/app.py) are not there yet"
)


def _chromium_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def make_speech_wav(path: Path, text: str = SPOKEN, *, silence_after_s: float = 6.0) -> Path:
    """Real speech (espeak-ng, Spanish voice, a higher child-like pitch) → 48 kHz mono PCM16 WAV
    with 0.5 s of silence before and ``silence_after_s`` after (the loop's gap)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", "es", "-s", "140", "-p", "70", "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(path),
            "gain", "-n", "-3", "pad", "0.5", str(silence_after_s),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    raw.unlink()
    return path


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed (make deps installs them)")
    return make_speech_wav(tmp_path_factory.mktemp("speech") / "ana.wav")


@pytest.fixture(scope="module")
def live_stack() -> Iterator[Any]:
    with local_stack(auth_required=True) as stack:
        yield stack


def _launch(playwright: Any, wav: Path) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=_chromium_args(wav), headless=True
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """One Playwright driver for the module (its sync API allows one at a time)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (make deps installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Any, speech_wav: Path) -> Iterator[Any]:
    browser = _launch(playwright, speech_wav)
    try:
        yield browser
    finally:
        browser.close()


def _open_page(browser: Any, url: str, *, init_script: str | None = None) -> Any:
    context = browser.new_context(viewport={"width": 900, "height": 780})
    page = context.new_page()
    page.on("pageerror", lambda exc: print(f"[page error] {exc}"))
    if init_script:
        page.add_init_script(init_script)
    page.goto(url)
    page.wait_for_function("() => window.kiddo !== undefined", timeout=10_000)
    # Keep every UI state the page goes through.
    page.evaluate(
        "() => { window.__states = [kiddo.state];"
        " kiddo.client.addEventListener('state', (e) => window.__states.push(e.detail.state)); }"
    )
    return page


def _snapshot(page: Any) -> dict[str, Any]:
    return page.evaluate(
        "() => ({state: kiddo.state, connection: kiddo.connectionState, sessionId: kiddo.sessionId,"
        " reconnects: kiddo.reconnects, playedMs: kiddo.playedMs, appends: kiddo.appendsSent,"
        " transcript: kiddo.transcript, errors: kiddo.errors, states: window.__states})"
    )


def _wait(page: Any, predicate_js: str, timeout_s: float, what: str) -> None:
    try:
        page.wait_for_function(predicate_js, timeout=timeout_s * 1000, polling=100)
    except Exception as exc:  # show where the page got stuck
        raise AssertionError(f"timed out waiting for {what}: {_snapshot(page)}") from exc


FIRST_EXCHANGE_DONE = """() => {
  const t = kiddo.transcript;
  const user = t.findIndex((i) => i.role === 'user' && i.done && i.text);
  const tutor = t.findIndex((i, n) => n > user && i.role === 'assistant' && i.done && i.text);
  return user >= 0 && tutor > user && kiddo.playedMs > 0
    && document.querySelectorAll('.bubble.child').length > 0
    && document.querySelectorAll('.bubble.tutor').length > 0
    && kiddo.state !== 'speaking';
}"""


def _normalize(text: str) -> str:
    kept = [c for c in text if unicodedata.category(c)[0] in "LNP" or c.isspace()]
    return re.sub(r"\s+", " ", "".join(kept)).strip()


# --------------------------------------------------------------------------------------------
# the page, without a microphone
# --------------------------------------------------------------------------------------------
@pytest.mark.browser
def test_page_asks_for_the_link_with_a_token(browser: Any, live_stack: Any) -> None:
    page = _open_page(browser, live_stack.page_url)
    try:
        page.locator("#demo-banner").wait_for(state="visible", timeout=5000)
        assert "canned demo replies" in page.locator("#demo-banner").inner_text()
        page.click("#talk")
        error = page.locator("#error")
        error.wait_for(state="visible", timeout=5000)
        page.wait_for_function(
            "document.querySelector('#error').innerText.includes('special link')", timeout=5000
        )
        assert "special link" in error.inner_text()
        assert page.evaluate("kiddo.connectionState") == "closed"
    finally:
        page.context.close()


TONE_THROUGH_THE_WORKLET = """async ([freq, targetRate]) => {
  // One second of a sine at 48 kHz through the capture worklet, offline: the RMS it reports.
  const ctx = new OfflineAudioContext(1, 48000, 48000);
  await ctx.audioWorklet.addModule(new URL("/pcm-worklet.js", location.href));
  const node = new AudioWorkletNode(ctx, "kiddolingo-pcm-capture", {
    processorOptions: { targetRate, chunkMs: 100 },
  });
  const rms = [];
  node.port.onmessage = (e) => e.data.type === "audio" && rms.push(e.data.rms);
  const tone = new OscillatorNode(ctx, { frequency: freq });
  const gain = new GainNode(ctx, { gain: 0.5 });
  tone.connect(gain).connect(node).connect(ctx.destination);
  tone.start();
  await ctx.startRendering();
  await new Promise((r) => setTimeout(r, 300));
  const steady = rms.slice(1); // past the filter's first milliseconds
  return steady.reduce((a, b) => a + b, 0) / steady.length;
}"""


@pytest.mark.browser
def test_the_capture_worklet_keeps_speech_and_stops_aliasing(browser: Any, live_stack: Any) -> None:
    """Downsampling 48 kHz to the client's 16 kHz: a 1 kHz or 6 kHz tone passes, a 12 kHz tone
    (it would fold to 4 kHz, into the speech band) is at least 30 dB down."""
    page = _open_page(browser, live_stack.page_url)
    try:
        level = {
            f: page.evaluate(TONE_THROUGH_THE_WORKLET, [f, 16000]) for f in (1000, 6000, 12000)
        }
    finally:
        page.context.close()
    assert 0.3 < level[1000] < 0.4, level  # 0.5 / sqrt(2)
    assert level[6000] > 0.8 * level[1000], level
    assert level[12000] < level[1000] * 10 ** (-30 / 20), level


@pytest.mark.browser
def test_microphone_refused_gives_a_friendly_error(browser: Any, live_stack: Any) -> None:
    deny = (
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    page = _open_page(browser, live_stack.ready_url, init_script=deny)
    try:
        page.click("#talk")
        error = page.locator("#error")
        error.wait_for(state="visible", timeout=5000)
        # the text may land a moment after the box shows: wait for it rather than race it
        page.wait_for_function(
            "document.querySelector('#error').innerText.includes('allow the microphone')",
            timeout=5000,
        )
        assert "allow the microphone" in error.inner_text()
        assert page.evaluate("kiddo.errors.map((e) => e.code)") == ["microphone_denied"]
        assert page.evaluate("kiddo.micActive") is False
    finally:
        page.context.close()


@pytest.mark.browser
def test_reconnection_backoff_doubles_from_one_second_up_to_ten(
    browser: Any, live_stack: Any
) -> None:
    page = _open_page(browser, live_stack.page_url)
    try:
        delays = page.evaluate(
            """async () => {
              const m = await import('./kiddolingo-client.js');
              return [0, 1, 2, 3, 4, 5, 6].map((n) => m.backoffDelayMs(n));
            }"""
        )
        assert delays == [1000, 2000, 4000, 8000, 10000, 10000, 10000]
    finally:
        page.context.close()


# --------------------------------------------------------------------------------------------
# a spoken conversation
# --------------------------------------------------------------------------------------------
@pytest.mark.browser
@needs_handlers
def test_child_talks_and_the_tutor_answers_out_loud(
    browser: Any, live_stack: Any, tmp_path: Path
) -> None:
    fake = live_stack.fake_openai
    fake.reset()
    seen = len(live_stack.gateway.invocations)
    page = _open_page(browser, live_stack.ready_url)
    try:
        # The token left the address bar; the demo banner is on.
        assert "token=" not in page.url
        assert page.locator("#demo-banner").is_visible()
        page.click("#talk")
        _wait(page, "() => kiddo.connectionState === 'open' && !!kiddo.sessionId", 15, "session")
        _wait(page, FIRST_EXCHANGE_DONE, 45, "the first exchange")
        snap = _snapshot(page)

        # Both sides of the conversation are on the page.
        child = page.locator(".bubble.child .text").first.inner_text()
        tutor = page.locator(".bubble.tutor .text").first.inner_text()
        assert child == HEARD
        assert tutor and tutor == snap["transcript"][1]["text"]
        # The tutor's reply played out loud, and the page went through each state.
        assert snap["playedMs"] > 500, snap
        for state in ("listening", "thinking", "speaking"):
            assert state in snap["states"], snap["states"]
        assert snap["errors"] == []

        # What went over the wire: session.update first (children's VAD, the language), then
        # the appends, every event numbered in one sequence (evt#1 the update, then evt#2…),
        # each far under API Gateway's 32 KB frame limit.
        mine = [
            inv
            for inv in list(live_stack.gateway.invocations)[seen:]
            if inv.route_key == "$default"
        ]
        bodies = [json.loads(inv.event["body"]) for inv in mine]
        first = bodies[0]
        assert first["type"] == "session.update" and first["event_id"] == "evt#1"
        td = first["session"]["audio"]["input"]["turn_detection"]
        assert td == {
            "type": "server_vad", "threshold": 0.3, "prefix_padding_ms": 300,
            "silence_duration_ms": 1200, "create_response": True, "interrupt_response": True,
        }  # fmt: skip
        assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
        assert first["session"]["tutor"] == {"target_language": "Spanish"}
        appends = [b for b in bodies if b["type"] == "input_audio_buffer.append"]
        assert [a["event_id"] for a in appends[:3]] == ["evt#2", "evt#3", "evt#4"]
        assert max(len(inv.event["body"]) for inv in mine) < 32 * 1024
        # Whole 100 ms blocks of 16 kHz PCM16: one per append where the server decides from
        # timing, up to seven (700 ms, one 32 KB message) where nothing waits on them.
        import base64

        sizes = [len(base64.b64decode(a["audio"])) for a in appends]
        assert all(n % 3200 == 0 and 3200 <= n <= 7 * 3200 for n in sizes), sizes
        assert 3200 in sizes and max(sizes) > 3200, sizes
        assert page.evaluate("kiddo.client.blocksSent") >= sum(sizes) // 3200 > len(sizes)

        # The provider saw the child's audio as a 16 kHz WAV, and answered.
        # (A speculation on a pause inside the phrase may have sent its first words before.)
        transcriptions = fake.requests("transcriptions")
        assert {t.sample_rate for t in transcriptions} == {16000}
        assert max(len(t.pcm or b"") for t in transcriptions) > 16000  # more than 0.5 s of speech
        assert fake.requests("chat")[0].messages[-1]["content"] == HEARD

        # A calm moment (reply finished) renders whole. (The README's screenshot, a reply half
        # spoken, comes from tests/test_web_read_along.py.)
        _wait(page, "() => kiddo.state === 'listening'", 20, "listening again")
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        page.context.close()


@pytest.mark.browser
@needs_handlers
def test_page_reconnects_by_itself_and_the_session_goes_on(browser: Any, live_stack: Any) -> None:
    fake = live_stack.fake_openai
    fake.reset()
    gateway = live_stack.gateway
    before = set(gateway.connections)
    page = _open_page(browser, live_stack.ready_url)
    try:
        page.click("#talk")
        _wait(page, FIRST_EXCHANGE_DONE, 45, "the first exchange")
        session_id = page.evaluate("kiddo.sessionId")
        first_reply = page.evaluate("kiddo.transcript.find((i) => i.role === 'assistant').text")
        (connection_id,) = set(gateway.connections) - before
        chats_before = len(fake.requests("chat"))

        page.evaluate(
            "() => { window.__backoff = []; kiddo.client.addEventListener("
            "'reconnecting', (e) => window.__backoff.push(e.detail)); }"
        )
        # The network drops the connection mid-session.
        assert gateway.drop(connection_id)
        _wait(page, "() => kiddo.reconnects === 1 && kiddo.connectionState === 'open'", 20,
              "the reconnection")  # fmt: skip
        assert page.evaluate("kiddo.sessionId") == session_id
        # One attempt, after the first backoff step (1 s); audio captured meanwhile was dropped.
        assert page.evaluate("window.__backoff") == [{"attempt": 1, "delayMs": 1000}]
        assert page.evaluate("kiddo.client.chunksDropped") >= 5
        (new_id,) = set(gateway.connections) - before - {connection_id}

        # The new connection resumed the session...
        connect = gateway.wait_for_invocations(
            "$connect", predicate=lambda inv: inv.connection_id == new_id
        )[0]
        assert connect.event["queryStringParameters"]["session_id"] == session_id
        assert connect.result is not None and connect.result.status_code() == 200
        # ...its events count from evt#1 again (the session.update first), and nothing captured
        # offline was sent late.
        received = gateway.wait_for_invocations(
            "$default",
            count=3,
            finished=False,
            timeout=10,
            predicate=lambda inv: inv.connection_id == new_id and "append" in inv.event["body"],
        )
        appends = [json.loads(inv.event["body"]) for inv in received]
        assert [a["event_id"] for a in appends[:3]] == ["evt#2", "evt#3", "evt#4"]

        # The next turn continues the same conversation: its chat request carries the history.
        deadline = time.monotonic() + 45
        while len(fake.requests("chat")) <= chats_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(fake.requests("chat")) > chats_before, _snapshot(page)
        messages = fake.requests("chat")[chats_before].messages
        history = [(m["role"], _normalize(str(m.get("content") or ""))) for m in messages]
        assert ("user", _normalize(HEARD)) in history
        assert ("assistant", _normalize(first_reply)) in history, history
        assert messages[-1]["role"] == "user"
        _wait(page, "() => document.querySelectorAll('.bubble.tutor').length >= 2", 30,
              "the second reply on the page")  # fmt: skip
        snap = _snapshot(page)
        assert snap["reconnects"] == 1
        assert "reconnecting" in snap["states"]
        assert any(e["code"] == "connection_lost" for e in snap["errors"])
        assert page.locator("#error").is_hidden()  # cleared once back
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def barge_in_browser(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A browser whose child speaks again 1.8 s after finishing: while the tutor answers."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed (make deps installs them)")
    wav = make_speech_wav(tmp_path_factory.mktemp("barge") / "ana.wav", silence_after_s=1.5)
    browser = _launch(playwright, wav)
    try:
        yield browser
    finally:
        browser.close()


@pytest.mark.browser
@needs_handlers
def test_child_interrupts_and_only_what_was_heard_is_kept(
    barge_in_browser: Any, live_stack: Any
) -> None:
    fake = live_stack.fake_openai
    fake.reset()
    gateway = live_stack.gateway
    page = _open_page(barge_in_browser, live_stack.ready_url)
    try:
        page.evaluate(
            """() => {
              window.__interrupts = []; window.__events = [];
              const c = kiddo.client;
              c.addEventListener('interrupted', (e) => window.__interrupts.push(e.detail));
              c.addEventListener('server-event', (e) => window.__events.push(e.detail.event.type));
            }"""
        )
        page.click("#talk")
        _wait(page, "() => window.__interrupts.length > 0", 45, "a barge-in")
        interrupt = page.evaluate("window.__interrupts[0]")
        item_id, played = interrupt["itemId"], interrupt["playedMs"]
        scheduled = page.evaluate(f"kiddo.client.player.scheduledMs({json.dumps(item_id)})")
        # Playback stopped at once: at most what had arrived was played (all of it when the
        # next sentence's audio was still on its way, as on a loaded machine). That this was
        # part-way through the reply is checked below, on the text the server kept.
        assert 0 < played <= scheduled, (played, scheduled)
        assert page.evaluate(f"kiddo.client.player.playedMs({json.dumps(item_id)})") == played
        # What had arrived of the reply's text; the whole reply is what the model answered
        # (on a loaded machine only its first words may have arrived before the barge-in).
        arrived = _normalize(
            page.evaluate(
                f"kiddo.client.items.find((i) => i.itemId === {json.dumps(item_id)}).text"
            )
        )
        full_reply = next(
            r.response_text
            for r in reversed(fake.requests("chat"))
            if r.response_text and _normalize(r.response_text).startswith(arrived)
        )
        earlier = {
            _normalize(text)
            for text in page.evaluate(
                f"""kiddo.client.items
                  .slice(0, kiddo.client.items.findIndex((i) => i.itemId === {json.dumps(item_id)}))
                  .filter((i) => i.role === 'assistant').map((i) => i.text)"""
            )
        }
        assert page.locator(f'.bubble.interrupted[data-item-id="{item_id}"]').count() == 1

        # The client told the server exactly how much it played...
        truncates = gateway.wait_for_invocations(
            "$default",
            # This item's: an earlier test's page may have cut a reply of its own.
            predicate=lambda inv: (
                "conversation.item.truncate" in inv.event["body"] and item_id in inv.event["body"]
            ),
            timeout=10,
        )
        body = json.loads(truncates[0].event["body"])
        assert body.pop("event_id").startswith("evt#")
        assert body == {
            "type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": played,
        }  # fmt: skip
        # ...and the server confirmed.
        _wait(page, "() => window.__events.includes('conversation.item.truncated')", 10,
              "conversation.item.truncated")  # fmt: skip

        # The next chat request holds only what the child heard of that reply.
        chats_at_truncate = len(fake.requests("chat"))
        deadline = time.monotonic() + 45
        while len(fake.requests("chat")) <= chats_at_truncate and time.monotonic() < deadline:
            time.sleep(0.1)
        later = fake.requests("chat")[chats_at_truncate:]
        assert later, "no chat request after the barge-in"
        assistant = [
            _normalize(str(m.get("content") or ""))
            for m in later[0].messages
            if m["role"] == "assistant"
        ]
        full = _normalize(full_reply)
        assert full not in assistant, (full, assistant)
        # Earlier replies were heard whole; the interrupted one only up to where it stopped.
        cut = [text for text in assistant if text not in earlier]
        assert len(cut) <= 1, assistant
        for text in cut:
            heard = text.rstrip("…").rstrip(".").rstrip()  # the server marks the cut with "…"
            assert heard and full.startswith(heard) and len(heard) < len(full), (text, full)
    finally:
        page.context.close()


@needs_handlers
def test_openai_sdk_realtime_client_talks_through_the_local_gateway(live_stack: Any) -> None:
    """The official SDK's ``client.realtime.connect()`` appends ``/realtime?model=…`` and sends
    the token as ``Authorization: Bearer``: the gateway takes any path and passes both on."""
    import asyncio

    from openai import AsyncOpenAI

    async def talk() -> list[str]:
        client = AsyncOpenAI(
            api_key=live_stack.token,
            base_url="http://127.0.0.1:9/v1",  # never used: only the WebSocket is
            websocket_base_url=live_stack.ws_url.rstrip("/"),
        )
        types = []
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(
                session={"type": "realtime", "audio": {"input": {"format": {
                    "type": "audio/pcm", "rate": 24000}}}}
            )  # fmt: skip
            async for event in conn:
                types.append(event.type)
                if len(types) == 2:
                    break
        return types

    seen = len(live_stack.gateway.invocations)
    # In a thread of its own: Playwright's sync API may own this thread's event loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        types = pool.submit(lambda: asyncio.run(talk())).result(timeout=30)
    assert types == ["session.created", "session.updated"]
    connect = next(
        inv for inv in list(live_stack.gateway.invocations)[seen:] if inv.route_key == "$connect"
    )
    assert connect.event["queryStringParameters"] == {"model": "gpt-realtime"}
    assert connect.event["headers"]["Authorization"] == f"Bearer {live_stack.token}"


# --------------------------------------------------------------------------------------------
# make run
# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_make_run_starts_prints_urls_and_stops_cleanly(sig: signal.Signals, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OPENAI_")) and not k.endswith("_API_KEY")
    }
    env.update({"PORT": str(port), "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(
        # A developer's .env (say, with a real OPENAI_API_KEY) must not leak into the test.
        [sys.executable, "-m", "infra.local", "--env-file", str(tmp_path / "none.env")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "DEMO MODE: no OPENAI_API_KEY" in out, out
        assert f"http://127.0.0.1:{port}/?token=" in out, out
        assert f"ws://127.0.0.1:{port}/" in out, out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config.json", timeout=5) as r:
            assert json.loads(r.read()) == {
                "demo": True, "authRequired": True, "wsUrl": f"ws://127.0.0.1:{port}/"
            }  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"KiddoLingo" in r.read()
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        rest = proc.stdout.read() if proc.stdout else ""
        assert "Stopped." in rest
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
