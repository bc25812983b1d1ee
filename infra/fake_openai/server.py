"""The fake server itself: its aiohttp app in a background thread, its routes, its state and
how it resets. Each facet lives in a module of its own and is mixed in here: the request log
(``recording``), injected failures (``faults``), scripted content (``content``), the shared
HTTP frame (``plumbing``) and one module per endpoint family (``transcriptions``, ``chat``,
``speech``, ``moderations``, ``realtime``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import replace

from aiohttp import web

from infra.background import start_loop_thread
from infra.fake_openai.chat import ChatEndpoint
from infra.fake_openai.content import _DEMO_REPLIES, ScriptedContent, demo_reply
from infra.fake_openai.faults import FaultInjection
from infra.fake_openai.moderations import MODERATION_CATEGORIES, ModerationsEndpoint
from infra.fake_openai.plumbing import HttpPlumbing
from infra.fake_openai.profile import LatencyProfile
from infra.fake_openai.realtime import RealtimeEndpoint
from infra.fake_openai.recording import RequestLog
from infra.fake_openai.speech import SPEECH_CHUNK_BYTES, SpeechEndpoint, speech_mode
from infra.fake_openai.transcriptions import TranscriptionsEndpoint

# ``MODERATION_CATEGORIES`` and ``_DEMO_REPLIES`` are imported from here by tests written when
# this module held them.
__all__ = ["MODERATION_CATEGORIES", "_DEMO_REPLIES", "FakeOpenAI"]


class FakeOpenAI(
    HttpPlumbing,
    RequestLog,
    FaultInjection,
    ScriptedContent,
    TranscriptionsEndpoint,
    ChatEndpoint,
    SpeechEndpoint,
    ModerationsEndpoint,
):
    """The fake server, running an aiohttp app on ``host`` in a background thread.

    ``start()``/``stop()``, or use it as a (sync or async) context manager. ``base_url`` is
    ``http://127.0.0.1:PORT/v1`` (the Realtime socket is ``ws://127.0.0.1:PORT/v1/realtime``).
    All setters are thread-safe. ``speech`` is what its speech sounds like: ``"tones"``
    (deterministic, fast, exact lengths) or ``"espeak"`` (real words from espeak-ng).
    """

    def __init__(
        self,
        *,
        latency: LatencyProfile | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        default_transcript: str = "Hola, me llamo Ana.",
        speech: str = "tones",
    ) -> None:
        self.host = host
        self._initial_speech = speech_mode(speech)
        self._requested_port = port
        self._initial_latency = latency or LatencyProfile()
        self._initial_transcript = default_transcript
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._wake: asyncio.Event | None = None
        self.port: int | None = None
        #: Open Realtime sockets, closed when the server stops.
        self._sockets: set[web.WebSocketResponse] = set()
        self._reset_state()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeOpenAI is not running")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        if self._thread is not None:
            return self
        self._loop, self._thread = start_loop_thread(
            "fake-openai", self._start_site, cleanup=self._cleanup
        )
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake_hangs)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None
        self.port = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAI:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    async def _cleanup(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    async def _start_site(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/v1/realtime", RealtimeEndpoint(self).handle)
        self._wake = asyncio.Event()
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        server = site._server  # the asyncio server: its socket tells the port we got
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    # -- settings (any thread) ---------------------------------------------------------------

    def _reset_state(self) -> None:
        """Every setting and script at its start; each is described where it is used."""
        self.latency = self._initial_latency
        self.default_transcript = self._initial_transcript
        self.transcriber = None
        self.reply_for = demo_reply
        self.required_api_key = None
        self.speech_chunk_bytes = SPEECH_CHUNK_BYTES
        self.speech = self._initial_speech
        self._transcripts = deque()
        self._rewordings = []
        self._realtime_log = []
        self._replies = deque()
        self._flags = {}
        self._failures = []
        self._log = []

    def reset(self) -> None:
        """Back to the initial state: latency, speech mode, scripts, rewordings, flags,
        failures and the request log. Requests hanging on an injected timeout are released."""
        with self._lock:
            self._reset_state()
            self._idle.notify_all()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_hangs)

    def set_latency(self, profile: LatencyProfile | None = None, **changes: float) -> None:
        """Replace the latency profile, or change some of its fields."""
        with self._lock:
            self.latency = replace(profile or self.latency, **changes)
