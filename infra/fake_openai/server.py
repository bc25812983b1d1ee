"""The fake's HTTP endpoints and the server itself (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from infra.background import start_loop_thread
from infra.fake_openai.voices import (
    SPEECH_MODES,
    SPEECH_SAMPLE_RATE,
    Rewording,
    espeak_pcm,
    speech_pcm,
)
from kiddolingo.audio import WavFormatError, wav_to_pcm16

__all__ = [
    "ENDPOINTS",
    "Failure",
    "FakeOpenAI",
    "LatencyProfile",
    "RecordedRequest",
    "RemoteFakeOpenAI",
    "chat_tokens",
    "demo_reply",
    "fake_openai_process",
]

#: Bytes per streamed speech chunk: 100 ms of 24 kHz PCM16.
SPEECH_CHUNK_BYTES = 4_800

ENDPOINTS = ("transcriptions", "chat", "speech", "moderations", "realtime")
_ALIASES = {
    "transcriptions": "transcriptions",
    "transcription": "transcriptions",
    "audio/transcriptions": "transcriptions",
    "chat": "chat",
    "chat/completions": "chat",
    "completions": "chat",
    "speech": "speech",
    "audio/speech": "speech",
    "moderations": "moderations",
    "moderation": "moderations",
    "realtime": "realtime",
}

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
#: The fake endpoint's own ``flagged`` threshold (the real one is lenient like this).
API_FLAG_THRESHOLD = 0.5

#: The fake's rule for the reasoning tokens a chat completion spends at each
#: ``reasoning_effort`` (its own figures, not OpenAI's): they delay the first content token at
#: the profile's token rate and are reported in ``usage.completion_tokens_details``.
REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 64, "medium": 256, "high": 1024, "xhigh": 2048}
#: Models that reason when no ``reasoning_effort`` is given (at ``medium``).
REASONING_MODEL_PREFIXES = ("gpt-6", "gpt-5", "o1", "o3", "o4")


def _endpoint(name: str) -> str:
    try:
        return _ALIASES[name.strip("/").removeprefix("v1/")]
    except KeyError:
        raise ValueError(f"unknown endpoint {name!r}; one of {ENDPOINTS}") from None


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyProfile:
    """How slow the fake provider is. The defaults are the benchmark's realistic profile.

    ``chat_tokens_per_s`` and ``speech_realtime_factor`` of ``inf`` (or ``<= 0``) mean no
    pacing at all. Speech over the Realtime API is paced like ``/audio/speech``
    (``speech_realtime_factor``); its first audio byte after ``response.create`` is
    ``realtime_first_byte_ms``, equal by default to ``speech_first_byte_ms`` so that benchmarks
    compare the two paths on the same footing, and the socket's handshake takes
    ``realtime_connect_ms``.
    """

    transcription_ms: float = 600.0
    chat_first_token_ms: float = 450.0
    chat_tokens_per_s: float = 40.0
    speech_first_byte_ms: float = 200.0
    #: How many times faster than real time speech is streamed after the first byte.
    speech_realtime_factor: float = 4.0
    moderation_ms: float = 120.0
    #: The Realtime WebSocket's handshake: from the upgrade request to the ``101`` answer.
    realtime_connect_ms: float = 300.0
    #: From ``response.create`` to the first ``response.output_audio.delta``.
    realtime_first_byte_ms: float = 200.0

    @classmethod
    def zero(cls) -> LatencyProfile:
        """No latency at all: for fast tests."""
        return cls(
            transcription_ms=0.0,
            chat_first_token_ms=0.0,
            chat_tokens_per_s=math.inf,
            speech_first_byte_ms=0.0,
            speech_realtime_factor=math.inf,
            moderation_ms=0.0,
            realtime_connect_ms=0.0,
            realtime_first_byte_ms=0.0,
        )

    @classmethod
    def realistic(cls) -> LatencyProfile:
        return cls()

    @classmethod
    def named(cls, name: str) -> LatencyProfile:
        if name == "zero":
            return cls.zero()
        if name == "realistic":
            return cls.realistic()
        raise ValueError(f"unknown latency profile {name!r} (zero, realistic)")

    def token_interval_s(self) -> float:
        tps = self.chat_tokens_per_s
        return 0.0 if tps <= 0 or math.isinf(tps) else 1.0 / tps

    def speech_chunk_interval_s(self, chunk_bytes: int) -> float:
        factor = self.speech_realtime_factor
        if factor <= 0 or math.isinf(factor):
            return 0.0
        return chunk_bytes / 2 / SPEECH_SAMPLE_RATE / factor


#: What an injected failure may be, per endpoint. The Realtime endpoint refuses the handshake
#: with ``status``; the others happen to one response on an open socket.
FAILURE_KINDS = ("status", "timeout", "abort", "stall", "error")
REALTIME_RESPONSE_FAILURES = ("timeout", "abort", "stall", "error")


@dataclass
class Failure:
    """An injected failure: ``kind`` is ``status`` (answer with ``status``), ``timeout`` (hang
    for ``hang_s`` before answering, past any sensible client timeout), ``abort`` (close the
    connection: after ``after_bytes`` of a streamed body, half of it by default, or at once
    for a non-streamed endpoint) or ``stall`` (a streamed body stops at that point and hangs
    for ``hang_s``). ``times=None`` fails until :meth:`FakeOpenAI.reset`.

    On the ``realtime`` endpoint: ``status`` refuses the WebSocket handshake with that HTTP
    status; the others strike the next ``response.create``: ``error`` answers it with an
    ``error`` event (``status`` picks its type, ``code`` its code), ``timeout`` holds its first
    audio byte for ``hang_s`` (then it goes on), ``abort`` drops the socket after
    ``after_bytes`` of its audio (half by default), ``stall`` stops there, hangs for ``hang_s``
    and then drops the socket."""

    endpoint: str
    kind: str = "status"
    status: int = 500
    times: int | None = 1
    retry_after_ms: float | None = 10.0
    hang_s: float = 30.0
    after_bytes: int | None = None
    message: str = "injected failure"
    code: str | None = None


@dataclass
class RecordedRequest:
    """One request the fake received, parsed, and what happened to its response."""

    endpoint: str
    path: str
    headers: dict[str, str]
    received_at: float
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    file: bytes | None = None
    filename: str | None = None
    file_content_type: str | None = None
    #: Multipart fields sent as a list (``languages[]``), by name without the brackets.
    form_lists: dict[str, list[str]] = field(default_factory=dict)
    #: Transcription: the uploaded WAV decoded (mono PCM16) and its rate.
    pcm: bytes | None = None
    sample_rate: int | None = None
    status: int | None = None
    failure: str | None = None
    #: Response body bytes written to the connection, and what the whole body would be.
    bytes_sent: int = 0
    bytes_total: int | None = None
    #: Chat: content tokens sent, and in the whole reply.
    tokens_sent: int = 0
    tokens_total: int | None = None
    #: When the request's body had been read: the profile's latencies count from here, so that
    #: the fake's own parsing and scheduling are not added to them.
    read_at: float | None = None
    first_byte_at: float | None = None
    finished_at: float | None = None
    completed: bool = False
    disconnected: bool = False
    response_text: str | None = None
    #: Realtime: the client events received on the socket, parsed, in order; the responses
    #: created on it (:class:`~infra.fake_openai.realtime.RealtimeResponse`); the ``error``
    #: events sent; the close code the client saw from us, if we closed.
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    #: Chat and transcription: what the fake reported as used.
    usage: dict[str, Any] | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages") or [])

    @property
    def input(self) -> Any:
        """Speech: the text to speak. Moderation: the input as sent (string or list)."""
        return (self.json or {}).get("input")

    @property
    def wav(self) -> bytes | None:
        return self.file

    @property
    def model(self) -> str | None:
        if self.json is not None:
            return self.json.get("model")
        return self.form.get("model")

    @property
    def languages(self) -> list[str] | None:
        """Transcription: the ``languages`` list (gpt-transcribe), as sent."""
        return self.form_lists.get("languages")

    @property
    def reasoning_effort(self) -> str | None:
        return (self.json or {}).get("reasoning_effort")

    @property
    def max_completion_tokens(self) -> int | None:
        return (self.json or {}).get("max_completion_tokens")

    @property
    def session(self) -> dict[str, Any]:
        """Realtime: the session's configuration as last sent in ``session.created`` or
        ``session.updated``."""
        return dict(self.json or {})

    @property
    def instructions(self) -> str | None:
        """Realtime: the session's instructions."""
        return (self.json or {}).get("instructions")

    @property
    def voice(self) -> str | None:
        """Speech: the voice asked for. Realtime: the session's voice."""
        body = self.json or {}
        if self.endpoint == "realtime":
            return ((body.get("audio") or {}).get("output") or {}).get("voice")
        return body.get("voice")

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


# --- deterministic content --------------------------------------------------------------------

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


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def _multipart_parts(
    body: bytes, boundary: str
) -> Iterator[tuple[str | None, str | None, str | None, bytes]]:
    """``(name, filename, content type, data)`` of each part of a multipart/form-data body
    (parsed by hand: small, whole bodies, and no dependence on network chunk boundaries)."""
    if not boundary:
        return
    delimiter = b"--" + boundary.encode("latin-1")
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        disposition = headers.get("Content-Disposition", "")
        params = dict(
            (key.strip().lower(), value.strip().strip('"'))
            for key, _, value in (p.partition("=") for p in disposition.split(";")[1:])
        )
        yield params.get("name"), params.get("filename"), headers.get("Content-Type"), data


# --- the server -------------------------------------------------------------------------------


@dataclass
class _Rewording:
    replacement: Rewording
    times: int | None
    match: str | None


class _Aborted(Exception):
    """The handler aborted the connection on purpose."""


class FakeOpenAI:
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
        if speech not in SPEECH_MODES:
            raise ValueError(f"unknown speech mode {speech!r}; one of {SPEECH_MODES}")
        self.host = host
        self._initial_speech = speech
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
        from infra.fake_openai.realtime import RealtimeEndpoint

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

    def _wake_hangs(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = asyncio.Event()

    # -- settings (any thread) ---------------------------------------------------------------

    def _reset_state(self) -> None:
        self.latency = self._initial_latency
        self.default_transcript = self._initial_transcript
        self.transcriber: Callable[[RecordedRequest], str | None] | None = None
        self.reply_for: Callable[[list[dict[str, Any]]], str] = demo_reply
        #: When set, requests must carry ``Authorization: Bearer <required_api_key>``.
        self.required_api_key: str | None = None
        #: Bytes per write of streamed speech (odd values exercise a client's odd-byte carry);
        #: on the Realtime socket, bytes per ``response.output_audio.delta``.
        self.speech_chunk_bytes = SPEECH_CHUNK_BYTES
        #: ``tones`` or ``espeak``: see the class docstring.
        self.speech = self._initial_speech
        self._transcripts: deque[str] = deque()
        self._rewordings: list[_Rewording] = []
        self._realtime_log: list[Any] = []
        self._replies: deque[str] = deque()
        self._flags: dict[str, dict[str, float]] = {}
        self._failures: list[Failure] = []
        self._log: list[RecordedRequest] = []

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

    def script_transcripts(self, *texts: str) -> None:
        """The next transcriptions return these, in order (then the default)."""
        with self._lock:
            self._transcripts.extend(texts)

    def script_replies(self, *texts: str) -> None:
        """The next chat completions return these, in order (then ``reply_for``)."""
        with self._lock:
            self._replies.extend(texts)

    def set_speech(self, mode: str) -> None:
        """``tones`` or ``espeak`` from now on."""
        if mode not in SPEECH_MODES:
            raise ValueError(f"unknown speech mode {mode!r}; one of {SPEECH_MODES}")
        self.speech = mode

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

    async def _speech_audio(self, text: str) -> bytes:
        """The PCM of ``text`` in the current speech mode (espeak-ng runs off the loop)."""
        if self.speech == "espeak":
            return await asyncio.to_thread(espeak_pcm, text)
        return speech_pcm(text, "tones")

    def flag(
        self,
        word: str,
        categories: str | Mapping[str, float] = "violence",
        score: float = 0.9,
    ) -> None:
        """Moderation inputs containing ``word`` (case-insensitive) get these category scores.
        A score at or above 0.5 also sets the endpoint's own ``flagged``; a lower one tests
        thresholds stricter than the endpoint's."""
        scores = {categories: score} if isinstance(categories, str) else dict(categories)
        unknown = set(scores) - set(MODERATION_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown moderation categories {sorted(unknown)}")
        with self._lock:
            self._flags[word.lower()] = scores

    def fail(
        self,
        endpoint: str,
        status: int = 500,
        times: int | None = 1,
        *,
        kind: str = "status",
        retry_after_ms: float | None = 10.0,
        hang_s: float = 30.0,
        after_bytes: int | None = None,
        message: str = "injected failure",
        code: str | None = None,
    ) -> Failure:
        """Make the next ``times`` requests to ``endpoint`` fail (``None``: until reset).

        ``kind="status"`` answers ``status`` with an OpenAI-style error body and, when
        ``retry_after_ms`` is set, a ``retry-after-ms`` header (which keeps the SDK's retries
        fast in tests). ``kind="timeout"`` hangs for ``hang_s`` before answering.
        ``kind="abort"`` breaks the connection midway through a streamed body (after
        ``after_bytes``, half by default) or at once. ``kind="stall"`` stops a streamed body at
        the same point and hangs for ``hang_s`` (a read timeout mid-stream), then aborts.

        On ``realtime`` (see :class:`Failure`): ``status`` refuses the handshake; ``error``,
        ``timeout``, ``abort`` and ``stall`` strike the next ``response.create``."""
        name = _endpoint(endpoint)
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        if kind == "error" and name != "realtime":
            raise ValueError("kind='error' (an error event) is for the realtime endpoint only")
        failure = Failure(
            name,
            kind,
            status,
            times,
            retry_after_ms,
            hang_s,
            after_bytes,
            message,
            code,
        )
        with self._lock:
            self._failures.append(failure)
        return failure

    # -- inspection (any thread) -------------------------------------------------------------

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, oldest first, for one endpoint or all."""
        name = _endpoint(endpoint) if endpoint else None
        with self._lock:
            return [r for r in self._log if name is None or r.endpoint == name]

    def realtime_responses(self) -> list[Any]:
        """Every Realtime response created (on any socket), oldest first: what was asked for,
        what was spoken, how it ended and how many audio bytes it actually sent
        (:class:`~infra.fake_openai.realtime.RealtimeResponse`)."""
        with self._lock:
            return list(self._realtime_log)

    def bytes_streamed(self, endpoint: str | None = None) -> int:
        """Response body bytes actually written, over the recorded requests."""
        return sum(r.bytes_sent for r in self.requests(endpoint))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded request and Realtime response has finished (a stream the
        client closed is finished once the server notices). True if idle before ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(r.finished_at is None for r in (*self._log, *self._realtime_log)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
            return True

    # -- request plumbing --------------------------------------------------------------------

    def _record(
        self, record: RecordedRequest, kinds: Iterable[str] = FAILURE_KINDS
    ) -> tuple[Failure | None, LatencyProfile]:
        """Log ``record`` and take the next injected failure of one of ``kinds`` for it."""
        with self._lock:
            self._log.append(record)
            failure = self._take_failure(record.endpoint, kinds)
            if failure is not None:
                record.failure = failure.kind
            return failure, self.latency

    def _take_failure(self, endpoint: str, kinds: Iterable[str]) -> Failure | None:
        """The next injected failure for ``endpoint`` among ``kinds``, counted down. The
        caller holds the lock."""
        wanted = set(kinds)
        for candidate in self._failures:
            if (
                candidate.endpoint == endpoint
                and candidate.kind in wanted
                and (candidate.times is None or candidate.times > 0)
            ):
                if candidate.times is not None:
                    candidate.times -= 1
                return candidate
        return None

    def _finish(self, record: RecordedRequest, *, completed: bool) -> None:
        with self._lock:
            record.completed = completed
            if record.finished_at is None:
                record.finished_at = time.monotonic()
            self._idle.notify_all()

    def _check_auth(self, request: web.Request) -> web.Response | None:
        problem = self._auth_problem(request)
        return None if problem is None else self._error(401, problem)

    def _auth_problem(self, request: web.Request) -> str | None:
        """Why the request's ``Authorization: Bearer`` key is refused, or None."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return "missing API key"
        required = self.required_api_key
        if required is not None and auth[7:].strip() != required:
            return "incorrect API key provided"
        return None

    @staticmethod
    def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.json_response(_error_body(status, message), status=status, headers=headers)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (``time.monotonic()``). Pacing by deadlines keeps a stream
        at its profile's rate: a sleep per token would add each wake-up's lateness to all the
        tokens after it."""
        await self._sleep(deadline - time.monotonic())

    @staticmethod
    def _read_at(record: RecordedRequest) -> float:
        """The instant the profile counts from: every handler reads the body before it waits."""
        assert record.read_at is not None, f"{record.endpoint}: the body was never read"
        return record.read_at

    async def _hang(self, seconds: float) -> None:
        wake = self._wake
        if wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    async def _before_body(
        self, request: web.Request, record: RecordedRequest, failure: Failure | None
    ) -> web.StreamResponse | None:
        """Apply an injected failure that happens before any body is sent."""
        streamed = record.endpoint in ("chat", "speech")
        if failure is None or (failure.kind in ("abort", "stall") and streamed):
            return None
        if failure.kind in ("timeout", "stall"):
            await self._hang(failure.hang_s)
            return self._error(504, "injected timeout")
        if failure.kind == "abort":
            raise _Aborted
        headers = {}
        if failure.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{failure.retry_after_ms:g}"
        return self._error(failure.status, failure.message, headers)

    async def _handle(
        self,
        request: web.Request,
        record: RecordedRequest,
        failure: Failure | None,
        respond: Callable[[], Any],
    ) -> web.StreamResponse:
        completed = False
        try:
            response = await self._before_body(request, record, failure)
            if response is None:
                response = await respond()
            record.status = response.status
            completed = response.status < 400 and not record.disconnected
            return response
        except _Aborted:
            if request.transport is not None:
                request.transport.abort()
            # Nothing more reaches the client; this only keeps aiohttp from logging an error.
            return web.Response(status=499)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected = True
            raise
        finally:
            self._finish(record, completed=completed)

    async def _parse_json(self, request: web.Request, record: RecordedRequest) -> None:
        raw = await request.read()
        record.read_at = time.monotonic()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record.json = body if isinstance(body, dict) else {}

    def _new_record(self, endpoint: str, request: web.Request) -> RecordedRequest:
        return RecordedRequest(
            endpoint=endpoint,
            path=request.path,
            headers=dict(request.headers),
            received_at=time.monotonic(),
        )

    async def _write(
        self, response: web.StreamResponse, record: RecordedRequest, data: bytes
    ) -> None:
        await response.write(data)
        if record.first_byte_at is None:
            record.first_byte_at = time.monotonic()
        record.bytes_sent += len(data)

    # -- transcriptions ----------------------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record("transcriptions", request)
        denied = self._check_auth(request)
        form: dict[str, str] = {}
        if denied is None and request.content_type == "multipart/form-data":
            match = _BOUNDARY.search(request.headers.get("Content-Type", ""))
            boundary = match.group(1) if match else ""
            raw = await request.read()
            record.read_at = time.monotonic()
            for name, filename, content_type, data in _multipart_parts(raw, boundary):
                if name == "file":
                    record.file, record.filename = data, filename
                    record.file_content_type = content_type
                elif name and name.endswith("[]"):
                    # The SDK sends a list as repeated ``name[]`` fields.
                    record.form_lists.setdefault(name[:-2], []).append(
                        data.decode("utf-8", "replace")
                    )
                elif name:
                    form[name] = data.decode("utf-8", "replace")
        record.form = form
        failure, latency = self._record(record)

        async def respond() -> web.StreamResponse:
            if denied is not None:
                return denied
            if not record.file:
                return self._error(400, "missing file")
            if not form.get("model"):
                return self._error(400, "missing model")
            refused = self._transcription_params_problem(form, record.form_lists)
            if refused is not None:
                return self._error(400, refused)
            try:
                record.pcm, record.sample_rate = wav_to_pcm16(record.file)
            except WavFormatError as exc:
                return self._error(400, f"Invalid file format: {exc}")
            await self._sleep_until(self._read_at(record) + latency.transcription_ms / 1000)
            text = self._next_transcript(record)
            record.response_text = text
            fmt = form.get("response_format", "json")
            if fmt in ("text", "srt", "vtt"):
                body = text.encode()
                response = web.Response(body=body, content_type="text/plain", charset="utf-8")
            elif fmt == "verbose_json":
                duration = len(record.pcm) / 2 / (record.sample_rate or 1)
                payload = {
                    "task": "transcribe",
                    "language": form.get("language", "spanish"),
                    "duration": duration,
                    "text": text,
                    "segments": [],
                }
                body = json.dumps(payload).encode()
                response = web.Response(body=body, content_type="application/json")
            elif fmt == "json":
                # Billed by the second of audio; the fake reports the audio's exact length.
                duration = len(record.pcm) / 2 / (record.sample_rate or 1)
                record.usage = {"type": "duration", "seconds": round(duration, 3)}
                body = json.dumps({"text": text, "usage": record.usage}).encode()
                response = web.Response(body=body, content_type="application/json")
            else:
                return self._error(400, f"unsupported response_format {fmt!r}")
            record.bytes_sent = record.bytes_total = len(body)
            return response

        return await self._handle(request, record, failure, respond)

    @staticmethod
    def _transcription_params_problem(
        form: Mapping[str, str], lists: Mapping[str, list[str]]
    ) -> str | None:
        """Why the request's parameters do not fit its model: the gpt-transcribe family takes
        a ``languages`` list and answers ``json`` or ``text``; the older models take one
        ``language``."""
        model = form.get("model", "")
        languages = lists.get("languages")
        if model.startswith(("gpt-transcribe", "gpt-live-transcribe")):
            if "language" in form:
                return f"{model} takes 'languages' (a list of language codes), not 'language'"
            fmt = form.get("response_format", "json")
            if fmt not in ("json", "text"):
                return f"response_format {fmt!r} is not supported by {model}: use json or text"
            bad = [code for code in languages or [] if not re.fullmatch(r"[a-z]{2,3}", code)]
            if bad:
                return f"languages must be ISO-639-1 codes such as 'es', not {bad}"
        elif languages is not None:
            return f"Unrecognized request argument supplied: languages (model {model})"
        return None

    def _next_transcript(self, record: RecordedRequest) -> str:
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

    # -- chat --------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record("chat", request)
        denied = self._check_auth(request)
        await self._parse_json(request, record)
        failure, latency = self._record(record)
        body = record.json or {}

        async def respond() -> web.StreamResponse:
            if denied is not None:
                return denied
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not body.get("model"):
                return self._error(400, "model and a non-empty messages list are required")
            effort = body.get("reasoning_effort")
            if effort is not None and effort not in REASONING_TOKENS:
                allowed = ", ".join(REASONING_TOKENS)
                return self._error(
                    400, f"Invalid value for reasoning_effort: {effort!r} (one of {allowed})"
                )
            reply = self._next_reply(messages)
            record.response_text = reply
            tokens = chat_tokens(reply)
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            finish = "stop"
            if isinstance(limit, int) and 0 < limit < len(tokens):
                tokens, finish = tokens[:limit], "length"
            record.tokens_total = len(tokens)
            record.usage = self._chat_usage(body, len(tokens))
            if body.get("stream"):
                return await self._stream_chat(request, record, failure, latency, tokens, finish)
            await self._sleep_until(
                self._read_at(record)
                + self._first_token_s(latency, record.usage)
                + latency.token_interval_s() * len(tokens)
            )
            payload = self._completion(body, "".join(tokens), finish, record.usage)
            data = json.dumps(payload).encode()
            record.bytes_sent = record.bytes_total = len(data)
            record.tokens_sent = len(tokens)
            return web.Response(body=data, content_type="application/json")

        return await self._handle(request, record, failure, respond)

    def _next_reply(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            reply_for = self.reply_for
        return reply_for(messages)

    @staticmethod
    def _chat_usage(body: dict[str, Any], n_tokens: int) -> dict[str, Any]:
        """The usage the fake reports: a prompt token per word of the messages, a completion
        token per streamed token, and the reasoning tokens of the effort
        (:data:`REASONING_TOKENS`), which count as completion tokens as OpenAI counts them."""
        prompt_tokens = sum(
            len(str(m.get("content") or "").split()) for m in body.get("messages", [])
        )
        effort = body.get("reasoning_effort")
        model = str(body.get("model") or "")
        if effort is None and model.startswith(REASONING_MODEL_PREFIXES):
            effort = "medium"  # a reasoning model reasons unless told not to
        reasoning = REASONING_TOKENS.get(effort or "none", 0)
        completion = n_tokens + reasoning
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _first_token_s(latency: LatencyProfile, usage: Mapping[str, Any]) -> float:
        """The first content token comes after the profile's first-token time and the reasoning
        tokens, produced at the profile's token rate."""
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        return latency.chat_first_token_ms / 1000 + latency.token_interval_s() * reasoning

    @staticmethod
    def _completion(body: dict[str, Any], text: str, finish: str, usage: dict[str, Any]) -> dict:
        return {
            "id": f"chatcmpl-fake-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    async def _stream_chat(
        self,
        request: web.Request,
        record: RecordedRequest,
        failure: Failure | None,
        latency: LatencyProfile,
        tokens: list[str],
        finish: str,
    ) -> web.StreamResponse:
        body = record.json or {}
        chunk_id = f"chatcmpl-fake-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
            }
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": token}) for token in tokens]
        events.append(event({}, finish))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            # The last chunk before [DONE], with no choices, as OpenAI sends it.
            last = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [],
                "usage": record.usage,
            }
            events.append(f"data: {json.dumps(last)}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        record.bytes_total = sum(len(e) for e in events)
        abort_at = self._abort_point(failure, record.bytes_total)

        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        assert record.usage is not None
        first_token_at = self._read_at(record) + self._first_token_s(latency, record.usage)
        await self._sleep_until(first_token_at)
        interval = latency.token_interval_s()
        for index, data in enumerate(events):
            if abort_at is not None and record.bytes_sent + len(data) > abort_at:
                await self._break_stream(failure)
            if 1 < index <= len(tokens) + 1:
                # content token ``index`` (the first is index 1) is due ``index - 1`` intervals
                # after the first, and the finish event one interval after the last
                await self._sleep_until(first_token_at + interval * (index - 1))
            await self._write(response, record, data)
            if 0 < index <= len(tokens):
                record.tokens_sent += 1
        await response.write_eof()
        return response

    async def _break_stream(self, failure: Failure | None) -> NoReturn:
        if failure is not None and failure.kind == "stall":
            await self._hang(failure.hang_s)
        raise _Aborted

    @staticmethod
    def _abort_point(failure: Failure | None, total: int) -> int | None:
        if failure is None or failure.kind not in ("abort", "stall"):
            return None
        return failure.after_bytes if failure.after_bytes is not None else total // 2

    # -- speech ------------------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record("speech", request)
        denied = self._check_auth(request)
        await self._parse_json(request, record)
        failure, latency = self._record(record)
        body = record.json or {}

        async def respond() -> web.StreamResponse:
            if denied is not None:
                return denied
            text = body.get("input")
            if not isinstance(text, str) or not text.strip():
                return self._error(400, "input must be a non-empty string")
            if len(text) > 4096:
                return self._error(400, "input is longer than 4096 characters")
            if not body.get("model") or not body.get("voice"):
                return self._error(400, "model and voice are required")
            fmt = body.get("response_format", "mp3")
            if fmt != "pcm":
                return self._error(400, f"the fake serves response_format 'pcm' only, not {fmt!r}")
            pcm = await self._speech_audio(text)
            record.bytes_total = len(pcm)
            abort_at = self._abort_point(failure, len(pcm))
            response = web.StreamResponse(
                status=200, headers={"Content-Type": "application/octet-stream"}
            )
            response.content_length = len(pcm)
            await response.prepare(request)
            first_byte_at = self._read_at(record) + latency.speech_first_byte_ms / 1000
            await self._sleep_until(first_byte_at)
            size = max(1, int(self.speech_chunk_bytes))
            interval = latency.speech_chunk_interval_s(size)
            for start in range(0, len(pcm), size):
                chunk = pcm[start : start + size]
                if abort_at is not None and record.bytes_sent + len(chunk) > abort_at:
                    head = abort_at - record.bytes_sent
                    if head > 0:
                        await self._write(response, record, chunk[:head])
                    await self._break_stream(failure)
                if start:
                    # A sleep per chunk, not deadlines: after the first byte only the rate
                    # matters (faster than real time), and a fake that fell behind would catch
                    # up in one burst, merging chunks that are meant to be network reads of
                    # their own.
                    await self._sleep(interval)
                await self._write(response, record, chunk)
            await response.write_eof()
            return response

        return await self._handle(request, record, failure, respond)

    # -- moderations -------------------------------------------------------------------------

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record("moderations", request)
        denied = self._check_auth(request)
        await self._parse_json(request, record)
        failure, latency = self._record(record)
        body = record.json or {}

        async def respond() -> web.StreamResponse:
            if denied is not None:
                return denied
            texts = list(self._moderation_texts(body.get("input")))
            if not texts:
                return self._error(400, "input is required")
            await self._sleep_until(self._read_at(record) + latency.moderation_ms / 1000)
            with self._lock:
                flags = dict(self._flags)
            payload = {
                "id": f"modr-fake-{uuid.uuid4().hex[:12]}",
                "model": body.get("model") or "omni-moderation-latest",
                "results": [self._moderation_result(text, flags) for text in texts],
            }
            data = json.dumps(payload).encode()
            record.bytes_sent = record.bytes_total = len(data)
            return web.Response(body=data, content_type="application/json")

        return await self._handle(request, record, failure, respond)

    @staticmethod
    def _moderation_texts(value: Any) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, dict) and item.get("type") == "text":
                    yield str(item.get("text", ""))

    @staticmethod
    def _moderation_result(text: str, flags: Mapping[str, Mapping[str, float]]) -> dict:
        # Low, distinct, deterministic background scores.
        scores = {c: round(1e-6 * (i + 1), 8) for i, c in enumerate(MODERATION_CATEGORIES)}
        lowered = text.lower()
        for word, word_scores in flags.items():
            if word in lowered:
                for category, score in word_scores.items():
                    scores[category] = max(scores[category], score)
        categories = {c: s >= API_FLAG_THRESHOLD for c, s in scores.items()}
        return {
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        }


# --- in a process of its own ------------------------------------------------------------------


class _ServedFakeOpenAI(FakeOpenAI):
    """What a manager's proxy can reach: methods only, results pickled back."""

    def serve(self) -> str:
        """Start serving; the base URL (``start`` returns the server itself)."""
        self.start()
        return self.base_url


class _FakeManager(BaseManager):
    pass


_FakeManager.register(
    "FakeOpenAI",
    _ServedFakeOpenAI,
    # Named here: the manager would otherwise look up every attribute, properties included.
    exposed=(
        *(n for n, value in vars(FakeOpenAI).items() if callable(value) and n[0] != "_"),
        "serve",
    ),
)


class RemoteFakeOpenAI:
    """A ``FakeOpenAI`` in another process, driven through a ``multiprocessing`` proxy: the
    same methods (their results pickled back), and ``base_url``."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy
        self.base_url: str = proxy.serve()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)


@contextlib.contextmanager
def fake_openai_process(**kwargs: Any) -> Iterator[RemoteFakeOpenAI]:
    """``FakeOpenAI(**kwargs)`` serving from a process of its own.

    A real provider's CPU is not the client's: in one process the fake's request parsing and
    streaming would compete with the code being measured under one GIL (``make bench``). The
    child is started with ``-m`` (as ``infra.moto_process``), not by ``multiprocessing``'s
    spawn, which would import the caller's main module again."""
    authkey = secrets.token_bytes(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.fake_openai", "--manager"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],  # where ``-m infra.fake_openai`` is found
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(authkey.hex().encode() + b"\n")
        proc.stdin.flush()
        port = int(proc.stdout.readline().strip())
        manager = _FakeManager(address=("127.0.0.1", port), authkey=authkey)
        manager.connect()
        proxy = manager.FakeOpenAI(**kwargs)  # type: ignore[attr-defined]
        try:
            yield RemoteFakeOpenAI(proxy)
        finally:
            proxy.stop()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_manager() -> None:
    """The child of ``fake_openai_process``: reads the auth key from stdin, prints its port,
    serves until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    server = _FakeManager(address=("127.0.0.1", 0), authkey=authkey).get_server()
    print(server.address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


# --- CLI --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.fake_openai",
        description="A local fake of the OpenAI API (HTTP endpoints and the Realtime socket).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--profile", choices=("zero", "realistic"), default="realistic")
    for name in LatencyProfile.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    parser.add_argument("--transcript", default=None, help="the default transcript")
    parser.add_argument(
        "--speech", choices=SPEECH_MODES, default="tones", help="tones, or espeak-ng's words"
    )
    parser.add_argument("--manager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.manager:
        _serve_manager()
        return
    profile = LatencyProfile.named(args.profile)
    overrides = {
        name: getattr(args, name)
        for name in LatencyProfile.__dataclass_fields__
        if getattr(args, name) is not None
    }
    profile = replace(profile, **overrides)
    kwargs: dict[str, Any] = {
        "latency": profile,
        "host": args.host,
        "port": args.port,
        "speech": args.speech,
    }
    if args.transcript is not None:
        kwargs["default_transcript"] = args.transcript
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeOpenAI(**kwargs) as fake:
        print(fake.base_url, flush=True)
        while not stop.wait(0.5):
            pass
