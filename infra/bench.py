"""``make bench``: voice-to-voice latency and the cost of the audio-chunk path, measured.

A simulated child holds scripted conversations with the tutor through the **real handlers**
(``infra.template.functions()`` loaded by ``infra.lambda_runtime.LambdaFunction``, the code
Lambda runs), over S3 and DynamoDB under moto's ``mock_aws`` (built by
``infra.template.create_resources``), against the fake OpenAI-compatible server
(``infra.fake_openai``, in a process of its own: a remote provider's CPU is not the handlers')
with a fixed latency profile, through the real ``openai`` SDK. Two
conversations: ``streaming`` (the speculative turn off, ``SPECULATIVE_FRACTION=0``) and
``speculative`` (the deployed setting).

The child speaks real speech (espeak-ng when installed, else a synthetic voiced signal) in
100 ms blocks **in real time**, with server VAD on (children's defaults, ``silence_duration_ms``
1200), then keeps streaming room noise as a microphone does, until the tutor's reply is done.
It sends them as the page does (``web/chunk-policy.js``, the same policy in
``infra/page_chunking.py``): one ``input_audio_buffer.append`` per block where the server decides
from timing, several blocks in one where nothing waits on them (``--chunking fixed``: one per
block). Every append is its own invocation, started from a worker thread on the 100 ms clock,
so the sender keeps its pace while the invocation that ends the utterance (or prepares the
answer during the pause) runs the turn inline. Posts are captured
message by message by a botocore ``before-call`` hook (moto concatenates them), which also
counts every AWS call of every invocation; ``kiddolingo.runtime.submit`` is watched to know which
invocations ran a turn. The container is warm (the provider SDK loaded, its connections open);
what the first turn of a fresh container pays on top is measured on its own.

Figures (p50 and p95 over the turns):

* ``speech_stopped`` delay: the ``input_audio_buffer.speech_stopped`` post minus the wall time
  the last speech chunk was sent (its last sample is the last speech sample);
* voice-to-voice: last speech sample sent → first ``response.output_audio.delta`` posted;
* floor: silence window + transcription + time to the first sentence (chat first token + the
  tokens of the first sentence / tokens per second) + speech first byte, per turn from its
  reply; the overhead over it, stage by stage; for the speculative turn, the target (silence
  window + speech first byte + 150 ms) and the physical floor at the configured fraction;
* the brief's sequential design as the baseline, on the same fake server and profile through
  the real SDK (whole transcription, non-streamed chat completion, whole speech with the
  non-streaming ``audio.speech.create``, then "send"): silence window + that pipeline; the ratio;
* AWS calls (DynamoDB + S3 + posts) per append that neither ends the utterance nor runs a
  turn, and per turn (every invocation of the turn, discarded speculations included);
* CPU per 100 ms of audio on that chunk path: ``time.thread_time()`` around the invocation,
  minus the CPU moto spends emulating AWS in that thread (Lambda does not pay it);
* cold-start import time of each handler module in fresh interpreters (best of N, median too),
  whether the chunk path imports ``openai``; the first turn's SDK imports;
* S3 writes per minute of conversation; provider requests per turn;
* the cost of an hour of one child (``infra.cost``): AWS from the measured calls and sizes
  (DynamoDB through ``infra.dynamo_meter``), the providers from the usage they report, times the
  dated price tables (``infra.prices``, ``kiddolingo.prices``); and the quotas that bind first.

moto's backends are not thread-safe (concurrent ``UpdateItem`` calls on one item can crash
inside moto), so moto's request processing is serialized; the handlers still run concurrently.
Under ``mock_aws`` every AWS call costs CPU in this process; latencies include it.

The per-turn server figures come from ``kiddolingo.metrics.turn_figures`` of each turn's outcome:
the numbers the EMF metrics emit. Prints a table; ``BENCH_JSON=path`` writes the figures as JSON.

``--containers N`` runs every invocation in one of N container processes instead
(``infra.containers``: one invocation at a time each, as Lambda isolates them; moto in its own
process), handed to the most recently used idle one (``--routing random``: to any idle one).

    python -m infra.bench [--turns N] [--transcription-ms MS] [--chat-first-token-ms MS]
                          [--tokens-per-s N] [--speech-first-byte-ms MS] [--mode M] [--quick]
                          [--aws inprocess|process] [--containers N] [--routing mru|random]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import contextvars
import copy
import datetime as dt
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from infra.containers import capture_post, warm_providers
from infra.page_chunking import PageSender

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = ROOT / "events"

TABLE = "kiddolingo-bench-sessions"
BUCKET = "kiddolingo-bench-audio"
#: The microphone's rate, as web/kiddolingo-client.js sends it (``--input-rate`` changes it).
RATE = 16_000
CHUNK_MS = 100
CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
CHUNK_BYTES = CHUNK_SAMPLES * 2


#: Settings of the speech stage over the template's (``--speech-api``).
SPEECH_ENV: dict[str, str | None] = {}


#: The child sends as the page does (``web/chunk-policy.js``: larger appends where nothing
#: waits on them); ``--chunking fixed`` sends every 100 ms block as an append of its own.
PAGE_CHUNKING = True


def _set_input_rate(rate: int) -> None:
    global RATE, CHUNK_SAMPLES, CHUNK_BYTES
    RATE = rate
    CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
    CHUNK_BYTES = CHUNK_SAMPLES * 2


CONNECTION_ID = "BenchConnAAAAA="
#: Room noise under everything the microphone sends (dBFS-ish RMS of the Gaussian noise).
NOISE_RMS = 20.0
LEAD_SILENCE_MS = 600
AFTER_REPLY_SILENCE_MS = 300
#: Give up on a turn whose first audio has not arrived this long after the speech ended.
TURN_TIMEOUT_S = 20.0
SPECULATIVE_SLACK_MS = 150.0
FLOOR_SLACK_MS = 60.0
AWS_USD_PER_HOUR_TARGET = 0.05

#: What the child says (espeak-ng speaks it) and what the tutor answers, turn by turn.
CHILD_PHRASES = (
    "Hello, my name is Ana.",
    "I am fine, thank you.",
    "My favorite color is blue.",
    "Yes, I have a little dog.",
    "I am seven years old.",
    "Can we play a game?",
    "I like apples and bananas.",
    "Goodbye, see you tomorrow.",
)
TUTOR_REPLIES = (
    "¡Hola, Ana! 😊 (Hello, Ana!) ¿Cómo estás hoy? (How are you today?)",
    "¡Muy bien! 👍 (Very good!) ¿Cuál es tu color favorito? (What is your favorite color?)",
    "¡El azul es precioso! 💙 (Blue is lovely!) ¿Tienes una mascota? (Do you have a pet?)",
    "¡Un perrito! 🐶 (A little dog!) El perro dice guau. (The dog says woof.)",
    "¡Siete años! ⭐ (Seven years old!) ¡Eres muy lista! (You are very clever!)",
    "¡Sí, vamos a jugar! 🎲 (Yes, let's play!) ¿Qué animal es este? (What animal is this?)",
    "¡Qué rico! 🍎 (Yummy!) La manzana es roja. (The apple is red.)",
    "¡Adiós, Ana! 👋 (Goodbye, Ana!) ¡Hasta mañana! (See you tomorrow!)",
)

#: Every top-level key of the JSON output that is a figure (the test checks them all).
FIGURE_KEYS = (
    "speech_stopped_delay_p50_ms",
    "speech_stopped_delay_p95_ms",
    "voice_to_voice_p50_ms",
    "voice_to_voice_p95_ms",
    "floor_p50_ms",
    "floor_p95_ms",
    "overhead_p50_ms",
    "overhead_p95_ms",
    "speculative_voice_to_voice_p50_ms",
    "speculative_voice_to_voice_p95_ms",
    "speculative_target_ms",
    "speculative_floor_p50_ms",
    "sequential_p50_ms",
    "sequential_p95_ms",
    "speedup_vs_sequential",
    "streaming_speedup_vs_sequential",
    "aws_calls_per_append_mean",
    "aws_calls_per_append_p95",
    "aws_calls_per_append_max",
    "aws_calls_per_turn_mean",
    "aws_calls_per_turn_max",
    "cpu_ms_per_100ms_audio",
    "cpu_ms_per_100ms_audio_with_moto",
    "import_ms_audio",
    "import_ms_connect",
    "import_ms_disconnect",
    "turn_cold_start_ms",
    "first_turn_extra_ms_on_demand",
    "first_turn_extra_ms_snapstart",
    "s3_writes_per_minute",
    "aws_usd_per_child_hour",
)


# ------------------------------------------------------------------------------ the profile


def _profile(args: argparse.Namespace) -> Any:
    from infra.fake_openai import LatencyProfile

    base = LatencyProfile.zero() if args.quick else LatencyProfile.realistic()
    changes = {
        name: value
        for name, value in (
            ("transcription_ms", args.transcription_ms),
            ("chat_first_token_ms", args.chat_first_token_ms),
            ("chat_tokens_per_s", args.tokens_per_s),
            ("speech_first_byte_ms", args.speech_first_byte_ms),
            ("speech_realtime_factor", args.speech_realtime_factor),
            ("moderation_ms", args.moderation_ms),
            # Speech's first byte is the same on both speech paths unless said otherwise.
            ("realtime_first_byte_ms", args.realtime_first_byte_ms or args.speech_first_byte_ms),
            ("realtime_connect_ms", args.realtime_connect_ms),
        )
        if value is not None
    }
    return replace(base, **changes)


def _profile_dict(profile: Any) -> dict[str, float | None]:
    return {
        k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in vars(profile).items()
    }


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


# ------------------------------------------------------------------------------ the child


def _noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, NOISE_RMS, n_samples)


def _to_pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError("espeak-ng wrote a WAV that is not 16-bit")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        n_out = round(len(samples) * RATE / rate)
        samples = np.interp(np.arange(n_out) * rate / RATE, np.arange(len(samples)), samples)
    return samples


def _espeak(text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        done = subprocess.run(
            [exe, "-v", "en+f3", "-p", "70", "-s", "140", "-w", str(path), text],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0 or not path.exists():
            return None
        return _read_wav(path)


def _synthetic_voice(text: str) -> np.ndarray:
    """A child-like voiced signal: ~260 Hz harmonics, four syllables a second."""
    seconds = max(1.0, 0.07 * len(text))
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 260.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    return 6000.0 * voice * syllables


def speech_chunks(text: str, rng: np.random.Generator) -> tuple[list[bytes], bytes, str]:
    """The phrase as 100 ms chunks whose last chunk ends with the last speech sample.

    Returns the chunks (speech plus room noise, padded at the front to whole chunks), the
    utterance audio (for the sequential baseline) and where the speech came from.
    """
    voice = _espeak(text)
    source = "espeak-ng"
    if voice is None:
        voice, source = _synthetic_voice(text), "synthetic"
    loud = np.flatnonzero(np.abs(voice) > 300.0)  # trim espeak's own leading/trailing silence
    if len(loud):
        voice = voice[loud[0] : loud[-1] + 1]
    pad = (-len(voice)) % CHUNK_SAMPLES
    signal = np.concatenate([np.zeros(pad), voice])
    pcm = _to_pcm(signal + _noise(len(signal), rng))
    chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
    return chunks, pcm, source


# ------------------------------------------------------------------------------ events


def _event_file(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    return data


class Events:
    """API Gateway WebSocket events from ``events/`` (the files ``sam local invoke`` uses)."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self._connect = _event_file("connect")
        self._message = _event_file("response_create")
        self._disconnect = _event_file("disconnect")
        self._n = 0
        #: Sizes of the client's messages (API Gateway bills them in 32 KB units).
        self.sizes: list[int] = []

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        ctx = event["requestContext"]
        now_ms = int(time.time() * 1000)
        rid = f"B{self._n:014d}="[-16:]
        ctx.update(
            connectionId=self.connection_id,
            requestTimeEpoch=now_ms,
            requestId=rid,
            extendedRequestId=rid,
        )
        if "messageId" in ctx:
            ctx["messageId"] = rid
        return event

    def connect(self) -> dict[str, Any]:
        event = copy.deepcopy(self._connect)
        event.pop("queryStringParameters", None)
        event.pop("multiValueQueryStringParameters", None)
        for key in ("headers", "multiValueHeaders"):
            (event.get(key) or {}).pop("Authorization", None)
        event = self._stamp(event)
        event["requestContext"]["connectedAt"] = event["requestContext"]["requestTimeEpoch"]
        return event

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        event = copy.deepcopy(self._message)
        event["body"] = json.dumps(body, separators=(",", ":"))
        self.sizes.append(len(event["body"].encode()))
        return self._stamp(event)

    def disconnect(self) -> dict[str, Any]:
        return self._stamp(copy.deepcopy(self._disconnect))


# ------------------------------------------------------------------------------ observation


@dataclass
class Invocation:
    """One handler invocation: its AWS calls, posts and CPU."""

    kind: str  # connect | control | speech | silence | disconnect
    seq: int = 0
    #: Milliseconds of audio in the append (the page sends 100 ms blocks, or several as one).
    audio_ms: int = 0
    sent_at: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    posts: list[str] = field(default_factory=list)
    cpu_ms: float = 0.0
    moto_cpu_ms: float = 0.0
    wall_ms: float = 0.0
    error: Any = None
    #: It ran a turn (``kiddolingo.runtime.submit``): an ordinary or a speculative one.
    ran_turn: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ended_utterance(self) -> bool:
        return any(
            p in ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed")
            for p in self.posts
        )

    @property
    def chunk_path(self) -> bool:
        """An append that neither ended the utterance nor ran a turn."""
        return (
            self.kind in ("speech", "silence")
            and not self.ran_turn
            and not self.ended_utterance
            and not self.error
        )

    @property
    def answered(self) -> bool:
        return any(p.startswith("response.") for p in self.posts)

    @property
    def n_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class Post:
    at: float
    type: str
    invocation: Invocation | None
    fields: dict[str, Any]
    #: The message's size in bytes (0: not known, a container's post; each is under 32 KB).
    nbytes: int = 0


_CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "bench_invocation", default=None
)


class Observer:
    """botocore hooks on the handlers' session: counts calls per invocation, captures posts.

    Calls made where the invocation's context does not reach (a thread pool inside a turn)
    are kept as orphans with their time, and assigned to the turn running then.
    """

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.orphans: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def install(self, events: Any) -> None:
        events.register("before-call", self._before_call)

    def _before_call(self, model: Any, params: dict[str, Any], **kwargs: Any) -> Any:
        service = model.service_model.service_name
        op = f"{service}.{model.name}"
        inv = _CURRENT.get()
        if inv is None:
            with self.lock:
                self.orphans.append((time.perf_counter(), op))
        else:
            with inv.lock:
                inv.calls[op] += 1
        if model.name != "PostToConnection":
            return None
        nbytes = len(params.get("body") or b"")
        return capture_post(
            params, lambda at, etype, fields: self.record(inv, at, etype, fields, nbytes)
        )

    def record(
        self,
        inv: Invocation | None,
        at: float,
        etype: str,
        fields: dict[str, Any],
        nbytes: int = 0,
    ) -> None:
        """One post to the connection (here, or reported by a container)."""
        if inv is not None:
            with inv.lock:
                inv.posts.append(etype)
        with self.lock:
            self.posts.append(Post(at, etype, inv, fields, nbytes))

    def mark(self) -> int:
        with self.lock:
            return len(self.posts)

    def first(self, since: int, etype: str) -> Post | None:
        with self.lock:
            for post in self.posts[since:]:
                if post.type == etype:
                    return post
        return None


_MOTO_LOCK = threading.RLock()


@contextlib.contextmanager
def _serialized_moto() -> Iterator[None]:
    """Make moto's in-process AWS one request at a time, and account for its CPU.

    moto's backends are not thread-safe: two concurrent ``UpdateItem`` calls on one item can
    fail inside moto ("dictionary changed size during iteration"), which real DynamoDB never
    does. Serializing moto's request processing keeps the handlers' concurrency intact (they
    still run in parallel threads; DynamoDB itself applies one write to an item at a time).
    The CPU moto spends emulating AWS is charged to the invocation, to be subtracted: Lambda
    does not pay it.
    """
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.process_request

    def process_request(self: Any, request: Any) -> Any:
        with _MOTO_LOCK:
            started = time.thread_time()
            try:
                return original(self, request)
            finally:
                inv = _CURRENT.get()
                if inv is not None:
                    with inv.lock:
                        inv.moto_cpu_ms += (time.thread_time() - started) * 1000.0

    BotocoreStubber.process_request = process_request  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.process_request = original  # type: ignore[method-assign]


class _LastTurnTap:
    """A data descriptor put on ``Tutor.last_turn``: hands each turn's outcome to the bench."""

    def __init__(self, sink: Callable[[Any], None]) -> None:
        self.sink = sink

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get("last_turn")

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["last_turn"] = value
        if value is not None:
            self.sink(value)


@contextlib.contextmanager
def tap_turns(sink: Callable[[Any], None]) -> Iterator[None]:
    """Hand every turn's outcome (``Tutor.last_turn``) to ``sink`` (here, or in a container)."""
    from kiddolingo import service

    missing = object()
    old = service.Tutor.__dict__.get("last_turn", missing)
    setattr(service.Tutor, "last_turn", _LastTurnTap(sink))  # noqa: B010
    try:
        yield
    finally:
        if old is missing:
            delattr(service.Tutor, "last_turn")
        else:
            setattr(service.Tutor, "last_turn", old)  # noqa: B010


def _mark_turn() -> None:
    """The invocation running now (this thread's) starts a turn."""
    inv = _CURRENT.get()
    if inv is not None:
        inv.ran_turn = True


@contextlib.contextmanager
def tap_submit(on_submit: Callable[[], None]) -> Iterator[None]:
    """Call ``on_submit`` whenever a turn starts (``kiddolingo.runtime.submit`` is its only way
    onto the process loop): it marks the invocation that runs the turn (here, or in a
    container)."""
    from kiddolingo import runtime

    original = runtime.submit

    def submit(coro: Any) -> Any:
        on_submit()
        return original(coro)

    runtime.submit = submit
    try:
        yield
    finally:
        runtime.submit = original


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _reset_process_caches() -> None:
    from infra.lambda_runtime import reset_shared_caches

    reset_shared_caches()


# ------------------------------------------------------------------------------ the conversation


@dataclass
class Turn:
    index: int
    phrase: str
    reply: str
    floor_ms: float
    source: str = ""
    speech_chunks: int = 0
    last_speech_at: float | None = None
    speech_stopped_at: float | None = None
    first_delta_at: float | None = None
    done_at: float | None = None
    status: str | None = None
    figures: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    #: First post of each type, in ms after the last speech sample was sent.
    timeline: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    mode: str = ""
    #: The answer was prepared during the pause: its response.created was posted by another
    #: invocation than the one that saw the end of speech.
    speculative: bool | None = None
    speculative_floor_ms: float | None = None
    #: The turn's own invocations (they ran it, or ended the utterance) and discarded
    #: speculations, and the AWS calls of them all.
    turn_invocations: list[Invocation] = field(default_factory=list)
    discarded: list[Invocation] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.last_speech_at is not None and self.first_delta_at is not None

    @property
    def voice_to_voice_ms(self) -> float | None:
        if not self.ok:
            return None
        assert self.first_delta_at is not None and self.last_speech_at is not None
        return (self.first_delta_at - self.last_speech_at) * 1000.0

    @property
    def speech_stopped_delay_ms(self) -> float | None:
        if self.speech_stopped_at is None or self.last_speech_at is None:
            return None
        return (self.speech_stopped_at - self.last_speech_at) * 1000.0


#: The benchmark's own reads of the connection item ask for their consumed capacity (the
#: handlers never do): the DynamoDB meter leaves them out of the bill.
BENCH_OWN_READ = {"ReturnConsumedCapacity": "TOTAL"}


def dynamodb_item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it (low-level attribute values), approximately:
    names + values, numbers at about half their digits, 3 bytes per map or list entry."""

    def value(v: dict[str, Any]) -> int:
        (kind, x), *_ = v.items()
        if kind == "S":
            return len(x.encode())
        if kind == "B":
            return len(x)
        if kind == "N":
            return len(str(x)) // 2 + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + value(e) + 1 for k, e in x.items())
        if kind == "L":
            return 3 + sum(value(e) + 1 for e in x)
        if kind in ("SS", "NS", "BS"):
            return sum(len(str(e)) for e in x)
        return 0

    return sum(len(k.encode()) + value(v) for k, v in item.items())


class Conversation:
    """One connection, driven in real time through the handlers."""

    def __init__(
        self,
        functions: dict[str, Any],
        observer: Observer,
        silence_ms: int,
        ddb: Any = None,
        *,
        containers: Any = None,
        emf: io.StringIO | None = None,
    ) -> None:
        self.ddb = ddb
        #: ``infra.containers.ContainerPool``: each invocation in a container process of its own.
        self.containers = containers
        self.emf = emf
        #: Sizes of the connection item (bytes): at the end of each phrase (the held speech)
        #: and in the pause before it (the VAD's prefix ring).
        self.item_sizes: list[int] = []
        self.item_sizes_silence: list[int] = []
        self.functions = functions
        self.observer = observer
        self.silence_ms = silence_ms
        self.events = Events(CONNECTION_ID)
        self.invocations: list[Invocation] = []
        self.pool = ThreadPoolExecutor(max_workers=12, thread_name_prefix="bench-append")
        self.futures: list[Future[Invocation]] = []
        self.seq = 0
        self.audio_ms = 0
        #: What the page holds back for a larger append (``None``: every block at once).
        self.page: PageSender | None = None
        self._held_ms = 0
        self.rng = np.random.default_rng(7)
        self._next_at = 0.0

    # -- invoking --------------------------------------------------------------------------

    def _invoke(self, route: str, event: dict[str, Any], inv: Invocation) -> Invocation:
        if self.containers is not None:
            inv.error, emf = self.containers.invoke(route, event, inv)
            if emf and self.emf is not None:
                self.emf.write(emf)
            return inv
        token = _CURRENT.set(inv)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            result = self.functions[route].invoke(event)
            inv.error = result.error
        finally:
            inv.cpu_ms = (time.thread_time() - cpu0) * 1000.0
            inv.wall_ms = (time.perf_counter() - wall0) * 1000.0
            _CURRENT.reset(token)
        return inv

    def invoke_now(self, route: str, event: dict[str, Any], kind: str) -> Invocation:
        inv = Invocation(kind, sent_at=time.perf_counter())
        self.invocations.append(inv)
        self._invoke(route, event, inv)
        if inv.error:
            raise RuntimeError(f"{route} failed: {inv.error}")
        return inv

    def start(self) -> None:
        out = self.invoke_now("$connect", self.events.connect(), "connect")
        del out
        update = {
            "type": "session.update",
            "event_id": "bench-update",
            "session": {
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": RATE},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.3,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": self.silence_ms,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {"voice": "coral"},
                },
                "tutor": {"target_language": "Spanish", "learner_age": 7},
            },
        }
        self.invoke_now("$default", self.events.message(update), "control")
        if PAGE_CHUNKING:
            td = update["session"]["audio"]["input"]["turn_detection"]  # type: ignore[index]
            self.page = PageSender(RATE, td)
        self._next_at = time.perf_counter() + 0.05

    def send(self, pcm: bytes, kind: str) -> float:
        """One 100 ms block on the real-time clock, sent as the page sends it (at once, or held
        for a larger append); returns the wall time the block was complete."""
        delay = self._next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self._next_at = max(self._next_at + CHUNK_MS / 1000.0, time.perf_counter() - 0.5)
        self.audio_ms += CHUNK_MS
        self._held_ms += CHUNK_MS
        if self.page is not None:
            out = self.page.push(pcm)
            if out is None:
                return time.perf_counter()
            pcm = out
        return self._append(pcm, kind)

    def _append(self, pcm: bytes, kind: str) -> float:
        self.seq += 1
        audio_ms, self._held_ms = self._held_ms, 0
        body = {
            "type": "input_audio_buffer.append",
            "event_id": f"audio#{self.seq}",
            "audio": base64.b64encode(pcm).decode("ascii"),
        }
        event = self.events.message(body)
        sent_at = time.perf_counter()
        inv = Invocation(kind, seq=self.seq, sent_at=sent_at, audio_ms=audio_ms)
        self.invocations.append(inv)
        self.futures.append(self.pool.submit(self._invoke, "$default", event, inv))
        return sent_at

    def silence(self) -> bytes:
        return _to_pcm(_noise(CHUNK_SAMPLES, self.rng))

    # -- a turn ----------------------------------------------------------------------------

    def turn(self, turn: Turn, chunks: list[bytes], fake: Any) -> None:
        fake.script_transcripts(turn.phrase)
        fake.script_replies(turn.reply)
        start = time.perf_counter()
        mark = self.observer.mark()
        for _ in range(LEAD_SILENCE_MS // CHUNK_MS):
            self.send(self.silence(), "silence")
        self.sample_item(self.item_sizes_silence, settle=True)
        for chunk in chunks:
            turn.last_speech_at = self.send(chunk, "speech")
        self.sample_item(self.item_sizes)
        turn.speech_chunks = len(chunks)
        deadline = time.perf_counter() + TURN_TIMEOUT_S + self.silence_ms / 1000.0
        # Silence until the tutor's first audio, then on until its reply is done.
        while time.perf_counter() < deadline:
            if self.observer.first(mark, "response.done") is not None:
                break
            if self.observer.first(mark, "error") is not None:
                break  # the session cannot go on as scripted: reported, not waited out
            self.send(self.silence(), "silence")
        for _ in range(AFTER_REPLY_SILENCE_MS // CHUNK_MS):
            self.send(self.silence(), "silence")
        stopped = self.observer.first(mark, "input_audio_buffer.speech_stopped")
        created = self.observer.first(mark, "response.created")
        delta = self.observer.first(mark, "response.output_audio.delta")
        done = self.observer.first(mark, "response.done")
        turn.speech_stopped_at = stopped.at if stopped else None
        turn.first_delta_at = delta.at if delta else None
        turn.done_at = done.at if done else None
        turn.status = (done.fields.get("response") or {}).get("status") if done else None
        if stopped is not None and created is not None:
            turn.speculative = created.invocation is not stopped.invocation
        turn.window = (start, time.perf_counter())
        with self.observer.lock:
            posts = list(self.observer.posts[mark:])
        turn.errors = [
            str((p.fields.get("error") or {}).get("code")) for p in posts if p.type == "error"
        ]
        if turn.last_speech_at is not None:
            for post in posts:
                if post.type not in turn.timeline:
                    turn.timeline[post.type] = round((post.at - turn.last_speech_at) * 1000.0, 1)

    def sample_item(self, into: list[int], settle: bool = False) -> None:
        """The connection item's size; ``settle``: once the appends sent so far are done (in a
        pause, before speech: a chunk parked by an append still in flight, 3 KB at 16 kHz, is
        not what the item holds at rest; right after speech the next chunk must not wait)."""
        if self.ddb is None:
            return
        if settle:
            wait([f for f in self.futures if not f.done()], timeout=5.0)
        out = self.ddb.get_item(
            TableName=TABLE,
            Key={"pk": {"S": f"conn#{CONNECTION_ID}"}},
            ConsistentRead=True,
            **BENCH_OWN_READ,
        )
        if out.get("Item"):
            into.append(dynamodb_item_size(out["Item"]))

    def finish(self) -> None:
        held = self.page.flush() if self.page is not None else None
        if held:
            self._append(held, "silence")
        for future in self.futures:
            future.result(timeout=60)
        self.pool.shutdown(wait=True)
        self.invoke_now("$disconnect", self.events.disconnect(), "disconnect")


@contextlib.contextmanager
def _warming(fake: Any, profile: Any) -> Iterator[None]:
    """The providers' warm-up: without the profile's latency, and left out of the request log."""
    from infra.fake_openai import LatencyProfile

    fake.set_latency(LatencyProfile.zero())
    try:
        yield
    finally:
        fake.reset()
        fake.set_latency(profile)


def run_conversation(
    profile: Any,
    n_turns: int,
    silence_ms: int,
    fake: Any,
    *,
    mode: str,
    first_turn: int = 0,
    aws_mode: str = "inprocess",
    containers: int = 0,
    routing: str = "mru",
) -> dict[str, Any]:
    """One scripted conversation; ``mode`` ``streaming`` turns the speculative turn off
    (``SPECULATIVE_FRACTION=0``), ``speculative`` keeps the deployed setting. ``aws_mode``
    ``process``: moto in its own process (``infra.moto_process``); ``inprocess``: ``mock_aws``
    in this one. ``containers``: run every invocation in one of that many container processes
    (``infra.containers``; needs ``aws_mode`` ``process``) instead of threads of this one,
    an idle one chosen by ``routing`` (``mru`` or ``random``)."""
    if containers and aws_mode != "process":
        raise ValueError("containers share AWS through moto's own process: aws_mode='process'")
    import boto3
    from moto import mock_aws

    from infra import template as tpl
    from infra.lambda_runtime import LambdaFunction
    from kiddolingo import aws, runtime
    from kiddolingo.metrics import parse_emf, turn_figures
    from kiddolingo.settings import Settings

    specs = tpl.functions({"TABLE_NAME": TABLE, "BUCKET_NAME": BUCKET})
    env: dict[str, str | None] = {}
    for spec in specs.values():
        env.update({k: v for k, v in spec.environment.items() if isinstance(v, str)})
    env.update(
        {
            "TABLE_NAME": TABLE,
            "BUCKET_NAME": BUCKET,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-bench-fake",
            "AUTH_REQUIRED": "false",
            "POWERTOOLS_METRICS_NAMESPACE": "KiddoLingoBench",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": None,
            "AWS_PROFILE": None,
            "AWS_ENDPOINT_URL": None,
            "OPENAI_API_KEY_PARAMETER": None,
            "AUTH_SECRET_PARAMETER": None,
        }
    )
    env.update(SPEECH_ENV)
    if mode == "streaming":
        env["SPECULATIVE_FRACTION"] = "0"
    for stage in ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION"):
        for suffix in ("BASE_URL", "API_KEY", "API_KEY_PARAMETER"):
            env[f"{stage}_{suffix}"] = None

    #: (when, status, turn_figures) of every turn's outcome.
    outcomes: list[tuple[float, str, dict[str, float]]] = []
    emf_out = io.StringIO()
    rng = np.random.default_rng(11 + first_turn)
    turns = []
    for i in range(first_turn, first_turn + n_turns):
        reply = TUTOR_REPLIES[i % len(TUTOR_REPLIES)]
        turns.append(
            Turn(
                i + 1,
                CHILD_PHRASES[i % len(CHILD_PHRASES)],
                reply,
                floor_ms(profile, reply, silence_ms),
                mode=mode,
            )
        )
    audio = [speech_chunks(t.phrase, rng) for t in turns]
    fake.reset()
    fake.set_latency(profile)

    from infra.dynamo_meter import DynamoMeter, read_records

    aws_context = contextlib.ExitStack()
    meter = DynamoMeter()
    meter_dir = aws_context.enter_context(tempfile.TemporaryDirectory(prefix="bench-meter-"))
    meter_file = os.path.join(meter_dir, "dynamodb.jsonl")
    if aws_mode == "process":
        from infra.moto_process import moto_process

        env["AWS_ENDPOINT_URL"] = aws_context.enter_context(moto_process(meter_file))
    else:
        aws_context.enter_context(mock_aws())
        aws_context.enter_context(_serialized_moto())
        aws_context.enter_context(meter.installed())
    with aws_context, _environment(env):
        fraction = Settings.from_env().speculative_fraction
        for turn in turns:
            turn.speculative_floor_ms = speculative_floor_ms(
                profile, turn.reply, silence_ms, fraction
            )
        _reset_process_caches()
        # The handlers' clients are built from this session after the hooks are on it (a
        # client copies the session's hooks when it is created).
        observer = Observer()
        observer.install(aws._session().events)
        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")  # not the handlers' session
        tpl.create_resources(ddb, s3, TABLE, BUCKET)
        functions: dict[str, Any] = {}
        pool: Any = None
        if containers:
            from infra.containers import ContainerPool

            # Warm containers: each one's SDK loaded and connections open by one request per
            # endpoint.
            with _warming(fake, profile):
                pool = aws_context.enter_context(
                    ContainerPool(
                        containers,
                        dict(os.environ),
                        on_post=observer.record,
                        on_outcome=lambda at, status, figures: outcomes.append(
                            (at, status, figures)
                        ),
                        routing=routing,
                    )
                )
        else:
            functions = {route: LambdaFunction(cast(Any, spec)) for route, spec in specs.items()}
            for fn in functions.values():
                fn.load()  # the INIT phase is measured in a fresh process, below
            # A warm container, one that has served a turn before: the provider SDK is loaded
            # and its connections open. What the first turn of a fresh container pays on top
            # is measured on its own (turn_cold_start_ms).
            with _warming(fake, profile):
                runtime.run(warm_providers(RATE))
        conversation = Conversation(
            functions, observer, silence_ms, ddb, containers=pool, emf=emf_out
        )
        tap = tap_turns(
            lambda outcome: outcomes.append(
                (time.perf_counter(), outcome.status, turn_figures(outcome))
            )
        )
        with tap, tap_submit(_mark_turn), contextlib.redirect_stdout(emf_out):
            conversation.start()
            for turn, (chunks, _pcm, source) in zip(turns, audio, strict=True):
                turn.source = source
                conversation.turn(turn, chunks, fake)
            conversation.finish()
        containers_busy_max = pool.busy_max if pool is not None else 0
        left = s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        _reset_process_caches()
        # (moto's process writes its records as it goes: all there once the run is over.)
        dynamodb_calls = meter.calls if aws_mode != "process" else read_records(meter_file)
    fake.wait_idle(5.0)
    log = fake.requests()
    provider_requests = Counter(r.endpoint for r in log)

    for turn in turns:
        lo, hi = turn.window
        for at, status, figures in outcomes:
            if lo <= at <= hi and status != "cancelled":
                turn.figures = figures
        mine = [i for i in conversation.invocations if lo <= i.sent_at <= hi]
        turn.turn_invocations = [i for i in mine if i.ran_turn or i.ended_utterance]
        turn.discarded = [i for i in mine if i.ran_turn and not i.answered]
        for inv in turn.turn_invocations:
            turn.calls.update(inv.calls)
        turn.calls.update(op for at, op in observer.orphans if lo <= at <= hi)
    return {
        "mode": mode,
        "speculative_fraction": fraction,
        "turns": turns,
        "utterances": [pcm for _chunks, pcm, _source in audio],
        "invocations": conversation.invocations,
        "observer": observer,
        "audio_ms": conversation.audio_ms,
        "emf": parse_emf(emf_out.getvalue()),
        "objects_left": left,
        "provider_requests": dict(provider_requests),
        "provider_lateness_ms": provider_lateness(log, profile),
        "connection_item_sizes": conversation.item_sizes,
        "connection_item_sizes_silence": conversation.item_sizes_silence,
        "containers_busy_max": containers_busy_max,
        "dynamodb_calls": dynamodb_calls,
        "memory_mb": {route: spec.memory_mb for route, spec in specs.items()},
        "messages_in": list(conversation.events.sizes),
        "provider_log": log,
    }


def provider_lateness(log: list[Any], profile: Any) -> dict[str, list[float]]:
    """How late the fake answered, by endpoint: its first byte (the whole answer for the
    unstreamed ones) after the request had been read, minus the profile's latency. The floors
    take the profile as exact, so this part of an overhead is the harness's, not ours."""
    due = {
        "transcriptions": profile.transcription_ms,
        "chat": profile.chat_first_token_ms,
        "speech": profile.speech_first_byte_ms,
        "moderations": profile.moderation_ms,
    }
    late: dict[str, list[float]] = {}
    for r in log:
        answered = r.first_byte_at if r.endpoint in ("chat", "speech") else r.finished_at
        if r.endpoint in due and r.status == 200 and r.read_at is not None and answered:
            late.setdefault(r.endpoint, []).append((answered - r.read_at) * 1000 - due[r.endpoint])
    return late


# ------------------------------------------------------------------------------ the baseline


def run_sequential(
    profile: Any, utterances: list[bytes], turns: list[Turn], silence_ms: int, fake: Any
) -> list[float]:
    """The brief's design: whole transcription → whole completion → whole speech → send."""
    import openai

    from kiddolingo.audio import pcm16_to_wav
    from kiddolingo.conversation import chat_messages
    from kiddolingo.speech_text import strip_for_speech

    fake.reset()
    fake.set_latency(profile)
    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench-fake", max_retries=0)
    out: list[float] = []
    history: list[dict[str, Any]] = []
    try:
        for turn, pcm in zip(turns, utterances, strict=True):
            fake.script_transcripts(turn.phrase)
            fake.script_replies(turn.reply)
            wav = pcm16_to_wav(pcm, RATE)
            started = time.perf_counter()
            text = client.audio.transcriptions.create(
                model="whisper-1", file=("turn.wav", wav, "audio/wav")
            ).text
            messages = chat_messages(
                history,
                text,
                target_language="Spanish",
                learner_age=7,
                instructions=None,
                max_history=20,
            )
            completion = client.chat.completions.create(
                model="gpt-4o",
                messages=messages,  # type: ignore[arg-type]
                temperature=0.7,
                max_tokens=150,
            )
            reply = completion.choices[0].message.content or ""
            speech = client.audio.speech.create(
                model="tts-1-hd", voice="nova", input=strip_for_speech(reply), response_format="pcm"
            )
            first = speech.content[:16_384]
            json.dumps(
                {
                    "type": "response.output_audio.delta",
                    "delta": base64.b64encode(first).decode("ascii"),
                }
            )  # "send"
            out.append(silence_ms + (time.perf_counter() - started) * 1000.0)
            history += [{"role": "user", "text": text}, {"role": "assistant", "text": reply}]
    finally:
        client.close()
    return out


# ------------------------------------------------------------------------------ imports


_IMPORT_PROBE = r"""
import json, sys, time, importlib.util
path, code_dir = sys.argv[1], sys.argv[2]
started = time.perf_counter()
sys.path.append(code_dir)
spec = importlib.util.spec_from_file_location("handler_app", path)
module = importlib.util.module_from_spec(spec)
sys.modules["handler_app"] = module
spec.loader.exec_module(module)
elapsed = (time.perf_counter() - started) * 1000.0
print(json.dumps({"ms": elapsed, "openai": "openai" in sys.modules,
                  "tracer": "aws_lambda_powertools.tracing" in sys.modules}))
"""


_TURN_PROBE = r"""
import json, sys, time
started = time.perf_counter()
from kiddolingo.providers import build_providers
from kiddolingo.settings import Settings
providers = build_providers(Settings())
import openai
client = openai.AsyncOpenAI(api_key="sk-probe", base_url="http://127.0.0.1:9/v1")
for resource in (client.audio.transcriptions, client.chat.completions, client.audio.speech,
                 client.moderations):
    pass
import kiddolingo.turn, kiddolingo.audio, kiddolingo.conversation
print(json.dumps({"ms": (time.perf_counter() - started) * 1000.0}))
"""


_FIRST_TURN_PROBE = r"""
import asyncio, json, os, sys, time
from kiddolingo.settings import Settings
# What the audio handler's INIT loads either way (the chunk path needs it).
import kiddolingo.service, kiddolingo.audio, kiddolingo.vad
from kiddolingo.audio import pcm16_to_wav
from kiddolingo.providers import build_providers
settings = Settings.from_env()
if sys.argv[1] == "snapstart":  # the INIT of a snapshot (functions/audio/app.py)
    from kiddolingo.providers import preload_providers
    preload_providers(settings)

async def turn():
    # What a turn asks of the providers, to the first byte of speech (no AWS).
    started = time.perf_counter()
    providers = build_providers(settings)
    speech = providers.speech.open(voice=settings.speech_voice)
    await providers.transcriber.transcribe(pcm16_to_wav(bytes(9600), 24000), languages=["es"])
    async for _ in providers.chat.stream([{"role": "user", "content": "hola"}],
                                         temperature=0.7, max_tokens=20):
        break
    async for item in speech.stream("Hola amigo."):
        if isinstance(item, bytes):
            break
    await speech.aclose()
    return (time.perf_counter() - started) * 1000.0

async def main():
    return [await turn() for _ in range(4)]

times = asyncio.run(main())
print(json.dumps({"first_ms": times[0], "warm_ms": min(times[1:])}))
"""


def measure_first_turn(runs: int) -> dict[str, Any]:
    """What the first turn of a fresh container pays over a warm one, on its way to the first
    byte of speech (no AWS, a provider with no latency of its own): with an on-demand INIT
    (the SDK loads in that turn) and from a SnapStart snapshot (its INIT loaded it)."""
    from infra.fake_openai import LatencyProfile, fake_openai_process

    out: dict[str, Any] = {}
    with fake_openai_process(latency=LatencyProfile.zero()) as fake:
        env = {
            **os.environ,
            **_LAMBDA_PROCESS,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-bench-fake",
        }
        # The fake's own first requests are slower too (it is a process of its own): one run
        # first, not counted, so only the client's first turn is measured.
        subprocess.run(
            [sys.executable, "-c", _FIRST_TURN_PROBE, "snapstart"],
            capture_output=True,
            cwd=ROOT,
            env=env,
            check=False,
        )
        for init in ("on_demand", "snapstart"):
            extra, first, warm = [], [], []
            for _ in range(max(1, runs)):
                done = subprocess.run(
                    [sys.executable, "-c", _FIRST_TURN_PROBE, init],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    env=env,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"the first-turn probe failed:\n{done.stderr[-2000:]}")
                got = json.loads(done.stdout.strip().splitlines()[-1])
                first.append(got["first_ms"])
                warm.append(got["warm_ms"])
                extra.append(got["first_ms"] - got["warm_ms"])
            out[init] = {
                "extra_ms": round(float(np.median(extra)), 1),
                "first_ms": round(float(np.median(first)), 1),
                "warm_ms": round(float(np.median(warm)), 1),
            }
    return out


#: A probe's fresh interpreter is one Lambda container, and says so as Lambda does (see
#: ``kiddolingo.coldstart``: what a container loads once is frozen there).
_LAMBDA_PROCESS = {"AWS_LAMBDA_FUNCTION_NAME": "kiddolingo-bench-probe"}


def measure_turn_cold_start(runs: int) -> dict[str, Any]:
    """What the first turn of a fresh container pays before its first request: importing the
    provider SDK and the turn's modules, building the clients (median of ``runs``)."""
    times = []
    for _ in range(max(1, runs)):
        done = subprocess.run(
            [sys.executable, "-c", _TURN_PROBE],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **_LAMBDA_PROCESS},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the cold-turn probe failed:\n{done.stderr[-2000:]}")
        times.append(float(json.loads(done.stdout.strip().splitlines()[-1])["ms"]))
    return {
        "ms": min(times),
        "median_ms": round(float(np.median(times)), 1),
        "runs": [round(t, 1) for t in times],
    }


def _import_env(spec: Any) -> dict[str, str]:
    env = {**os.environ, **_LAMBDA_PROCESS}
    env.update({k: v for k, v in spec.environment.items() if isinstance(v, str)})
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def measure_imports(runs: int) -> dict[str, Any]:
    """Cold-start imports of each handler module, in fresh interpreters (median of ``runs``)."""
    from infra import template as tpl

    specs = tpl.functions({"TABLE_NAME": TABLE, "BUCKET_NAME": BUCKET})
    out: dict[str, Any] = {}
    for route, spec in specs.items():
        name = Path(spec.code_dir).name
        module_path = Path(spec.code_dir) / (spec.handler.rpartition(".")[0] + ".py")
        times: list[float] = []
        info: dict[str, Any] = {}
        for _ in range(max(1, runs)):
            done = subprocess.run(
                [sys.executable, "-c", _IMPORT_PROBE, str(module_path), str(spec.code_dir)],
                capture_output=True,
                text=True,
                env=_import_env(spec),
                cwd=ROOT,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"importing {module_path} failed:\n{done.stderr[-2000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            times.append(float(info["ms"]))
        out[name] = {
            "route": route,
            # The best of N fresh interpreters: the code's own import cost, without what other
            # processes on the machine add to some of the runs (the median is kept too).
            "ms": min(times),
            "median_ms": round(float(np.median(times)), 1),
            "runs": [round(t, 1) for t in times],
            "imports_openai": bool(info.get("openai")),
            "imports_tracer": bool(info.get("tracer")),
        }
    audio = specs.get("$default")
    if audio is not None:
        out["audio"]["heaviest"] = _importtime_breakdown(audio)
    return out


def _importtime_breakdown(spec: Any, top: int = 6) -> list[dict[str, Any]]:
    """The heaviest top-level imports of a handler module (``python -X importtime``)."""
    module_path = Path(spec.code_dir) / (spec.handler.rpartition(".")[0] + ".py")
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            _IMPORT_PROBE,
            str(module_path),
            str(spec.code_dir),
        ],
        capture_output=True,
        text=True,
        env=_import_env(spec),
        cwd=ROOT,
        check=False,
    )
    probe_start = False
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if name.strip() == "importlib.util":
            probe_start = True  # everything before is the probe's own imports
            continue
        if probe_start and depth == 0:
            rows.append({"module": name.strip(), "ms": int(parts[1]) / 1000.0})
    rows.sort(key=lambda r: r["ms"], reverse=True)
    return [{"module": r["module"], "ms": round(r["ms"], 1)} for r in rows[:top]]


# ------------------------------------------------------------------------------ figures


def _pct(values: list[float] | list[float | None], q: float) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return None
    return float(np.percentile(clean, q))


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _per_call(counters: list[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    n = max(1, len(counters))
    return {op: round(count / n, 2) for op, count in sorted(total.items())}


def _mean(values: list[float] | list[int], digits: int = 2) -> float | None:
    return round(float(np.mean(values)), digits) if values else None


def _mode_figures(run: dict[str, Any], profile: Any, silence_ms: int) -> dict[str, Any]:
    """Voice-to-voice and its floors, for the turns of one conversation."""
    turns: list[Turn] = run["turns"]
    ok = [t for t in turns if t.voice_to_voice_ms is not None]
    for t in turns:
        if not t.speculative:
            t.breakdown = overhead_breakdown(t.timeline, profile, t.reply, silence_ms)
    v2v = [t.voice_to_voice_ms for t in ok if t.voice_to_voice_ms is not None]
    over = [v - t.floor_ms for t, v in zip(ok, v2v, strict=True)]
    spec_floor = [t.speculative_floor_ms or t.floor_ms for t in ok]
    spec_over = [v - f for v, f in zip(v2v, spec_floor, strict=True)]
    release = [
        t.timeline["response.output_audio.delta"] - t.timeline["input_audio_buffer.speech_stopped"]
        for t in ok
        if "input_audio_buffer.speech_stopped" in t.timeline
    ]
    plain = [t for t in ok if not t.speculative]
    breakdown = {
        name: _r(_pct([t.breakdown[name] for t in plain if name in t.breakdown], 50))
        for name, *_rest in STAGES
    }
    discarded = [i for t in turns for i in t.discarded]
    return {
        "turns": len(turns),
        "turns_answered": len(ok),
        "speculative_fraction": run["speculative_fraction"],
        "speculative_turns": sum(1 for t in turns if t.speculative),
        "voice_to_voice_p50_ms": _r(_pct(v2v, 50)),
        "voice_to_voice_p95_ms": _r(_pct(v2v, 95)),
        "floor_p50_ms": _r(_pct([t.floor_ms for t in ok], 50)),
        "floor_p95_ms": _r(_pct([t.floor_ms for t in ok], 95)),
        "overhead_p50_ms": _r(_pct(over, 50)),
        "overhead_p95_ms": _r(_pct(over, 95)),
        "speculative_floor_p50_ms": _r(_pct(spec_floor, 50)),
        "overhead_over_speculative_floor_p50_ms": _r(_pct(spec_over, 50)),
        "release_to_first_audio_p50_ms": _r(_pct(release, 50)),
        "overhead_breakdown_p50_ms": breakdown,
        "aws_calls_per_turn_mean": _mean([sum(t.calls.values()) for t in ok], 1),
        "aws_calls_per_turn_max": max((sum(t.calls.values()) for t in ok), default=None),
        "aws_calls_per_turn_by_call": _per_call([t.calls for t in ok]),
        "discarded_speculations": len(discarded),
        "provider_requests_per_turn": {
            k: round(v / max(1, len(turns)), 2) for k, v in sorted(run["provider_requests"].items())
        },
        "aws_calls_per_discarded_speculation": _mean([i.n_calls for i in discarded], 1),
        "provider_lateness_p50_ms": {
            k: _r(_pct(v, 50), 2) for k, v in sorted(run["provider_lateness_ms"].items())
        },
    }


# ------------------------------------------------------------------------------ cost


def _route_of(inv: Invocation) -> str:
    return {"connect": "$connect", "disconnect": "$disconnect"}.get(inv.kind, "$default")


def aws_usage(run: dict[str, Any]) -> Any:
    """What one conversation made AWS do, for ``infra.cost``: DynamoDB as the meter saw it,
    S3 and Lambda from every invocation's calls and duration, API Gateway from the messages."""
    from infra.cost import AwsUsage

    seconds = run["audio_ms"] / 1000.0
    invocations: list[Invocation] = run["invocations"]
    calls: Counter[str] = Counter()
    for inv in invocations:
        calls.update(inv.calls)
    calls.update(op for _at, op in run["observer"].orphans)
    memory = run["memory_mb"]
    usage = AwsUsage(
        seconds=seconds,
        dynamodb=list(run["dynamodb_calls"]),
        messages_in=list(run["messages_in"]),
        messages_out=[p.nbytes for p in run["observer"].posts],
        connection_minutes=seconds / 60.0,
        lambda_invocations=[(inv.wall_ms, memory[_route_of(inv)]) for inv in invocations],
        s3_put_class=sum(
            n
            for op, n in calls.items()
            if op in ("s3.PutObject", "s3.DeleteObjects", "s3.ListObjectsV2", "s3.CopyObject")
        ),
        s3_get_class=sum(n for op, n in calls.items() if op in ("s3.GetObject", "s3.HeadObject")),
    )
    return usage


def provider_usage(run: dict[str, Any]) -> Any:
    """What one conversation asked of the providers. As they reported it, when they did: the
    turns' EMF records carry it (``TranscribedSeconds``, ``ChatInputTokens``,
    ``ChatOutputTokens``, ``SpeechAudioTokens``, ``SpeechCharacters``: the usage
    ``kiddolingo.metrics`` emits). What no provider reports is estimated from the fake's request
    log: the characters a ``/audio/speech`` model would have read (the Realtime model's text
    input, about four characters a token) and moderation requests; without any reported usage
    (code before it), all of it: transcribed seconds from the uploaded audio, chat input tokens
    from the request's text, output tokens as streamed."""
    from infra.cost import ProviderUsage, estimate_tokens
    from kiddolingo.speech_text import strip_for_speech

    usage = ProviderUsage(seconds=run["audio_ms"] / 1000.0)
    emf: list[dict[str, float]] = run["emf"]
    reported = any("TranscribedSeconds" in r or "ChatInputTokens" in r for r in emf)
    for r in run["provider_log"]:
        if r.status not in (200, 101, None):
            continue
        body = r.json or {}
        if r.endpoint == "moderations":
            usage.moderation_requests += 1
        if reported:
            continue
        if r.endpoint == "transcriptions" and r.pcm is not None:
            usage.transcription_s += len(r.pcm) / 2 / (r.sample_rate or RATE)
        elif r.endpoint == "chat":
            messages = body.get("messages") or []
            text = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            usage.chat_input_tokens += estimate_tokens(text)
            usage.chat_output_tokens += r.tokens_sent
        elif r.endpoint == "speech":
            usage.speech_audio_s += (r.bytes_total or r.bytes_sent) / 2 / 24_000
    # What the speech stage read out: the answered turns' replies, as the child hears them.
    spoken = "".join(
        strip_for_speech(t.reply) for t in run["turns"] if t.first_delta_at is not None
    )
    usage.speech_characters = len(spoken)
    usage.speech_text_tokens = estimate_tokens(spoken)
    if reported:
        usage.source = "reported by the providers (EMF usage metrics)"
        usage.transcription_s = sum(r.get("TranscribedSeconds", 0.0) for r in emf)
        usage.chat_input_tokens = sum(r.get("ChatInputTokens", 0.0) for r in emf)
        usage.chat_output_tokens = sum(r.get("ChatOutputTokens", 0.0) for r in emf)
        if any("SpeechAudioTokens" in r for r in emf):
            usage.realtime_audio_tokens = sum(r.get("SpeechAudioTokens", 0.0) for r in emf)
        if any("SpeechCharacters" in r for r in emf):
            usage.speech_characters = int(sum(r.get("SpeechCharacters", 0.0) for r in emf))
    else:
        usage.source = "estimated from the fake's request log"
    if usage.realtime_audio_tokens is None and not usage.speech_audio_s:
        # Realtime speech without reported tokens: the seconds the fake would speak the replies.
        from infra.fake_openai import MS_PER_CHAR

        usage.speech_audio_s = usage.speech_characters * MS_PER_CHAR / 1000.0
    return usage


def cost_figures(run: dict[str, Any]) -> dict[str, Any]:
    """The conversation's bill per child-hour: AWS line by line, and the providers' for each
    model set of ``infra.prices.MODEL_SETS``."""
    from infra import cost, prices

    aws = aws_usage(run)
    provider = provider_usage(run)

    def hourly(lines: list[Any], seconds: float) -> list[dict[str, Any]]:
        return [
            {
                "name": line.name,
                "per_hour": round(line.quantity * 3600.0 / seconds, 2) if seconds else None,
                "unit": line.unit,
                "usd_per_hour": round(cost.per_hour(line.usd, seconds), 5),
                **({"note": line.note} if line.note else {}),
            }
            for line in lines
        ]

    aws_lines = cost.aws_lines(aws)
    conn_writes = [c for c in aws.dynamodb if c.is_write and c.item == "conn"]
    out: dict[str, Any] = {
        "prices_date": prices.PRICES_DATE,
        "region": prices.REGION,
        "conversation_s": round(aws.seconds, 1),
        "aws_usd_per_hour": round(cost.per_hour(cost.total(aws_lines), aws.seconds), 4),
        "aws_lines": hourly(aws_lines, aws.seconds),
        "dynamodb_by_call": _dynamodb_breakdown(aws.dynamodb, aws.seconds),
        "connection_item_write_wru_mean": _mean([c.wru for c in conn_writes]),
        "connection_item_write_kb_mean": _mean(
            [max(c.before, c.after) / 1024.0 for c in conn_writes]
        ),
        "provider_usage_source": provider.source,
        "provider": {},
        "child_rates": {k: round(v, 3) for k, v in asdict(cost.child_rates(aws)).items()},
        "quotas": [
            {
                "quota": q.name,
                "limit": q.limit,
                "unit": q.unit,
                "children": None if math.isinf(n) else math.floor(n),
            }
            for q, n in cost.children_per_quota(cost.child_rates(aws))
        ],
    }
    for label, models in prices.MODEL_SETS.items():
        lines = cost.provider_lines(provider, models)
        out["provider"][label] = {
            "models": list(models),
            "usd_per_hour": round(cost.per_hour(cost.total(lines), provider.seconds), 3),
            "lines": hourly(lines, provider.seconds),
        }
    return out


def _dynamodb_breakdown(calls: list[Any], seconds: float) -> dict[str, dict[str, float]]:
    """Per operation and kind of item: calls, request units and dollars per hour."""
    from infra import prices

    groups: dict[str, list[Any]] = {}
    for c in calls:
        groups.setdefault(f"{c.op} {c.item}".strip(), []).append(c)
    out = {}
    for name, group in sorted(groups.items()):
        wru = sum(c.wru for c in group)
        rru = sum(c.rru for c in group)
        usd = wru * prices.AWS["dynamodb_wru"].usd + rru * prices.AWS["dynamodb_rru"].usd
        out[name] = {
            "calls_per_hour": round(len(group) * 3600.0 / seconds) if seconds else 0,
            "units_per_call": round((wru + rru) / len(group), 2),
            "usd_per_hour": round(usd * 3600.0 / seconds, 4) if seconds else 0.0,
        }
    return out


def figures(
    args: argparse.Namespace,
    profile: Any,
    runs: dict[str, dict[str, Any]],
    sequential: list[float],
    imports: dict[str, Any],
) -> dict[str, Any]:
    turns: list[Turn] = [t for run in runs.values() for t in run["turns"]]
    modes = {mode: _mode_figures(run, profile, args.silence_ms) for mode, run in runs.items()}
    streaming = modes.get("streaming", {})
    spec = modes.get("speculative", {})
    stopped = [t.speech_stopped_delay_ms for t in turns if t.speech_stopped_delay_ms is not None]

    invocations: list[Invocation] = [i for run in runs.values() for i in run["invocations"]]
    chunk = [i for i in invocations if i.chunk_path]
    calls_per_append = [i.n_calls for i in chunk]
    by_kind: dict[str, dict[str, float | None]] = {}
    for kind in ("speech", "silence"):
        group = [i for i in chunk if i.kind == kind]
        by_kind[kind] = {
            "appends": len(group),
            "calls_mean": _mean([i.n_calls for i in group]),
            "cpu_ms_mean": _mean([i.cpu_ms - i.moto_cpu_ms for i in group]),
        }
    heavy = [
        {"kind": i.kind, "seq": i.seq, "calls": dict(i.calls), "posts": i.posts}
        for i in chunk
        if i.n_calls > 3
    ]
    # Per 100 ms of the audio each append carried (the page sends 100-700 ms in one).
    cpu_net = [
        max(0.0, i.cpu_ms - i.moto_cpu_ms) * CHUNK_MS / (i.audio_ms or CHUNK_MS) for i in chunk
    ]
    s3_puts = sum(i.calls.get("s3.PutObject", 0) for i in invocations)
    s3_puts += sum(
        1 for run in runs.values() for _at, op in run["observer"].orphans if op == "s3.PutObject"
    )
    minutes = sum(run["audio_ms"] for run in runs.values()) / 60_000.0
    emf = [r for run in runs.values() for r in run["emf"]]
    server: dict[str, dict[str, float | None]] = {}
    for name in ("TranscriptionMs", "ChatFirstTokenMs", "SpeechFirstByteMs", "VoiceToVoiceMs"):
        for mode, run in runs.items():
            values = [t.figures[name] for t in run["turns"] if name in t.figures]
            if values:
                server.setdefault(name, {})[mode] = _r(_pct(values, 50))

    seq_p50 = _pct(sequential, 50)
    best = spec.get("voice_to_voice_p50_ms") or streaming.get("voice_to_voice_p50_ms")
    stream_p50 = streaming.get("voice_to_voice_p50_ms")
    spec_target = args.silence_ms + profile.speech_first_byte_ms + SPECULATIVE_SLACK_MS

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    def largest_kb(sizes: str) -> float | None:
        """The largest connection item sampled into ``sizes`` in any conversation, in KB."""
        return _r(max((n for run in runs.values() for n in run[sizes]), default=0) / 1024.0)

    out: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "command": "python -m infra.bench " + " ".join(sys.argv[1:]),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in getattr(args, "load_start", ())],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "quick": bool(args.quick),
        "aws": args.aws,
        "containers": args.containers,
        "routing": args.routing if args.containers else None,
        "containers_busy_max": max(run["containers_busy_max"] for run in runs.values()),
        "provider": args.provider,
        "input_rate": RATE,
        "profile": _profile_dict(profile),
        "silence_ms": args.silence_ms,
        "speech_source": sorted({t.source for t in turns}),
        "turns": len(turns),
        "turns_measured": sum(1 for t in turns if t.ok),
        "turn_statuses": [t.status for t in turns],
        "errors_posted": [e for t in turns for e in t.errors],
        "failed_invocations": sum(1 for i in invocations if i.error),
        "speech_stopped_delay_p50_ms": _r(_pct(stopped, 50)),
        "speech_stopped_delay_p95_ms": _r(_pct(stopped, 95)),
        # streaming: the speculative turn off
        "voice_to_voice_p50_ms": stream_p50,
        "voice_to_voice_p95_ms": streaming.get("voice_to_voice_p95_ms"),
        "floor_p50_ms": streaming.get("floor_p50_ms"),
        "floor_p95_ms": streaming.get("floor_p95_ms"),
        "overhead_p50_ms": streaming.get("overhead_p50_ms"),
        "overhead_p95_ms": streaming.get("overhead_p95_ms"),
        "overhead_breakdown_p50_ms": streaming.get("overhead_breakdown_p50_ms", {}),
        # speculative: as deployed
        "speculative_fraction": spec.get("speculative_fraction"),
        "speculative_turns": spec.get("speculative_turns"),
        "speculative_voice_to_voice_p50_ms": spec.get("voice_to_voice_p50_ms"),
        "speculative_voice_to_voice_p95_ms": spec.get("voice_to_voice_p95_ms"),
        "speculative_target_ms": spec_target,
        "speculative_floor_p50_ms": spec.get("speculative_floor_p50_ms"),
        "speculative_overhead_p50_ms": spec.get("overhead_over_speculative_floor_p50_ms"),
        "speculative_release_to_first_audio_p50_ms": spec.get("release_to_first_audio_p50_ms"),
        "sequential_p50_ms": _r(seq_p50),
        "sequential_p95_ms": _r(_pct(sequential, 95)),
        "speedup_vs_sequential": ratio(seq_p50, best),
        "streaming_speedup_vs_sequential": ratio(seq_p50, stream_p50),
        "aws_calls_per_append_mean": _mean(calls_per_append),
        "aws_calls_per_append_p95": _r(_pct([float(c) for c in calls_per_append], 95)),
        "aws_calls_per_append_max": max(calls_per_append) if calls_per_append else None,
        "aws_calls_per_append_distribution": {
            str(k): v for k, v in sorted(Counter(calls_per_append).items())
        },
        "aws_calls_per_append_by_call": _per_call([i.calls for i in chunk]),
        "appends_over_3_calls": heavy,
        "appends_by_kind": by_kind,
        "appends_measured": len(chunk),
        "aws_calls_per_turn_mean": spec.get("aws_calls_per_turn_mean")
        or streaming.get("aws_calls_per_turn_mean"),
        "aws_calls_per_turn_max": spec.get("aws_calls_per_turn_max")
        or streaming.get("aws_calls_per_turn_max"),
        "cpu_ms_per_100ms_audio": _mean(cpu_net),
        "cpu_ms_per_100ms_audio_p95": _r(_pct(cpu_net, 95), 2),
        "cpu_ms_per_100ms_audio_with_moto": _mean(
            [i.cpu_ms * CHUNK_MS / (i.audio_ms or CHUNK_MS) for i in chunk]
        ),
        "cpu_ms_per_append": _mean([max(0.0, i.cpu_ms - i.moto_cpu_ms) for i in chunk]),
        "audio_ms_per_append": _mean([i.audio_ms for i in chunk]),
        "chunking": "page" if PAGE_CHUNKING else "fixed 100 ms",
        "append_wall_p50_ms": _r(_pct([i.wall_ms for i in chunk], 50)),
        "connection_item_kb_max": largest_kb("connection_item_sizes"),
        # In a pause the item holds the VAD's prefix ring: what most appends read and write.
        "connection_item_kb_silence": largest_kb("connection_item_sizes_silence"),
        "import_ms_audio": _r(imports.get("audio", {}).get("ms")),
        "import_ms_audio_median": imports.get("audio", {}).get("median_ms"),
        "import_ms_connect": _r(imports.get("connect", {}).get("ms")),
        "import_ms_disconnect": _r(imports.get("disconnect", {}).get("ms")),
        "chunk_path_imports_openai": imports.get("audio", {}).get("imports_openai"),
        "turn_cold_start_ms": _r(imports.get("turn_cold_start", {}).get("ms")),
        "first_turn_extra_ms_on_demand": imports.get("first_turn", {})
        .get("on_demand", {})
        .get("extra_ms"),
        "first_turn_extra_ms_snapstart": imports.get("first_turn", {})
        .get("snapstart", {})
        .get("extra_ms"),
        "imports": imports,
        "s3_writes": s3_puts,
        "s3_writes_per_minute": _r(s3_puts / minutes if minutes else None),
        "conversation_minutes": round(minutes, 3),
        "audio_objects_left": sum(run["objects_left"] for run in runs.values()),
        "server_figures_p50_ms": server,
        "emf_records": len(emf),
        "modes": modes,
        "per_turn": [
            {
                "mode": t.mode,
                "turn": t.index,
                "phrase": t.phrase,
                "status": t.status,
                "speculative": t.speculative,
                "speech_stopped_delay_ms": _r(t.speech_stopped_delay_ms),
                "voice_to_voice_ms": _r(t.voice_to_voice_ms),
                "floor_ms": _r(t.floor_ms),
                "speculative_floor_ms": _r(t.speculative_floor_ms),
                "aws_calls": sum(t.calls.values()),
                "discarded_speculations": len(t.discarded),
                "figures": t.figures,
                "timeline_ms": t.timeline,
                "overhead_breakdown_ms": t.breakdown,
                "errors": t.errors,
            }
            for t in turns
        ],
        "sequential_ms": [_r(v) for v in sequential],
    }
    # The bill: per conversation, and the headline from the deployed one (speculative).
    costs = {mode: cost_figures(run) for mode, run in runs.items()}
    headline = costs.get("speculative") or next(iter(costs.values()))
    out["cost"] = costs
    out["prices_date"] = headline["prices_date"]
    out["aws_usd_per_child_hour"] = headline["aws_usd_per_hour"]
    out["provider_usd_per_child_hour"] = {
        label: v["usd_per_hour"] for label, v in headline["provider"].items()
    }
    out["usd_per_conversation_minute"] = {
        "aws": headline["aws_usd_per_hour"] / 60,
        **{label: usd / 60 for label, usd in out["provider_usd_per_child_hour"].items()},
    }
    out["targets"] = _targets(out)
    return out


def _targets(f: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def check(value: Any, limit: Any, le: bool = True) -> bool | None:
        if value is None or limit is None:
            return None
        return bool(value <= limit) if le else bool(value >= limit)

    openai_loaded = f["chunk_path_imports_openai"]
    return {
        "streaming: voice-to-voice p50 <= floor + 60 ms": {
            "value": f["overhead_p50_ms"],
            "target": FLOOR_SLACK_MS,
            "ok": check(f["overhead_p50_ms"], FLOOR_SLACK_MS),
        },
        ">= 2x faster than sequential": {
            "value": f["speedup_vs_sequential"],
            "target": 2.0,
            "ok": check(f["speedup_vs_sequential"], 2.0, le=False),
        },
        "speculative: voice-to-voice <= silence + speech first byte + 150 ms": {
            "value": f["speculative_voice_to_voice_p50_ms"],
            "target": f["speculative_target_ms"],
            "ok": check(f["speculative_voice_to_voice_p50_ms"], f["speculative_target_ms"]),
        },
        "<= 3 AWS calls per append": {
            "value": f["aws_calls_per_append_max"],
            "target": 3,
            "ok": check(f["aws_calls_per_append_max"], 3),
        },
        "<= 5 ms CPU per 100 ms of audio": {
            "value": f["cpu_ms_per_100ms_audio"],
            "target": 5.0,
            "ok": check(f["cpu_ms_per_100ms_audio"], 5.0),
        },
        "no openai import on the chunk path": {
            "value": openai_loaded,
            "target": False,
            "ok": None if openai_loaded is None else not openai_loaded,
        },
        "<= 300 ms of imports (chunk path cold start)": {
            "value": f["import_ms_audio"],
            "target": 300.0,
            "ok": check(f["import_ms_audio"], 300.0),
        },
        "AWS <= $0.05 per child-hour": {
            "value": f.get("aws_usd_per_child_hour"),
            "target": AWS_USD_PER_HOUR_TARGET,
            "ok": check(f.get("aws_usd_per_child_hour"), AWS_USD_PER_HOUR_TARGET),
        },
    }


# ------------------------------------------------------------------------------ output


def _fmt(value: Any, unit: str = "ms") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "ms2":
        return f"{value:.2f} ms"
    return f"{value:g}{unit}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def table(f: dict[str, Any]) -> str:
    p = f["profile"]
    tps = p["chat_tokens_per_s"]
    rt = p["speech_realtime_factor"]
    tgt = f["targets"]
    invocations = (
        f"invocations in {f['containers']} container processes "
        f"(up to {f['containers_busy_max']} busy, {f['routing'] or 'mru'} routing)"
        if f["containers"]
        else "invocations in threads of this process"
    )
    head = (
        f"KiddoLingo Voice benchmark · {f['date']} · {f['turns_measured']}/{f['turns']} turns · "
        f"speech: {', '.join(f['speech_source'])} · load {f['load_average_start'][:1]} · "
        f"AWS: moto {'in this process' if f['aws'] == 'inprocess' else 'in its own process'} · "
        f"{invocations} · "
        f"fake OpenAI {'in this process' if f['provider'] == 'inprocess' else 'in its own process'}"
        f" · input {f['input_rate'] // 1000} kHz PCM16"
        f" · tutor's speech: {SPEECH_ENV.get('SPEECH_API') or 'realtime'} API\n"
        f"profile: transcription {p['transcription_ms']:g} ms, chat first token "
        f"{p['chat_first_token_ms']:g} ms then {('∞' if tps is None else f'{tps:g}')} tok/s, "
        f"speech first byte {p['speech_first_byte_ms']:g} ms "
        f"(Realtime {p.get('realtime_first_byte_ms', 0):g} ms, handshake "
        f"{p.get('realtime_connect_ms', 0):g} ms; "
        f"{'∞' if rt is None else f'{rt:g}'}× real time), moderation {p['moderation_ms']:g} ms; "
        f"silence window {f['silence_ms']} ms; speculative_fraction "
        f"{f['speculative_fraction']}\n"
    )
    stream_ok = tgt["streaming: voice-to-voice p50 <= floor + 60 ms"]["ok"]
    spec_ok = tgt["speculative: voice-to-voice <= silence + speech first byte + 150 ms"]["ok"]
    rows: list[tuple[str, str, str, str, str]] = [
        ("figure", "p50", "p95", "target", ""),
        (
            "speech_stopped after the last speech sample",
            _fmt(f["speech_stopped_delay_p50_ms"]),
            _fmt(f["speech_stopped_delay_p95_ms"]),
            f"≈ silence window ({f['silence_ms']} ms)",
            "",
        ),
        (
            "voice-to-voice, streaming (speculation off)",
            _fmt(f["voice_to_voice_p50_ms"]),
            _fmt(f["voice_to_voice_p95_ms"]),
            "",
            "",
        ),
        (
            "  floor (silence + STT + 1st sentence + TTS TTFB)",
            _fmt(f["floor_p50_ms"]),
            _fmt(f["floor_p95_ms"]),
            "",
            "",
        ),
        (
            "  overhead over the floor",
            _fmt(f["overhead_p50_ms"]),
            _fmt(f["overhead_p95_ms"]),
            "≤ 60 ms",
            _verdict(stream_ok),
        ),
        (
            "voice-to-voice, speculative (as deployed)",
            _fmt(f["speculative_voice_to_voice_p50_ms"]),
            _fmt(f["speculative_voice_to_voice_p95_ms"]),
            f"≤ {_fmt(f['speculative_target_ms'])}",
            _verdict(spec_ok),
        ),
        (
            "  its physical floor at this fraction",
            _fmt(f["speculative_floor_p50_ms"]),
            "",
            "",
            "",
        ),
        (
            "  speech_stopped (release) → first audio",
            _fmt(f["speculative_release_to_first_audio_p50_ms"]),
            "",
            "",
            "",
        ),
        (
            "sequential baseline (the brief's design)",
            _fmt(f["sequential_p50_ms"]),
            _fmt(f["sequential_p95_ms"]),
            "",
            "",
        ),
        (
            "speedup vs sequential (best mode, p50)",
            _fmt(f["speedup_vs_sequential"], "x"),
            "",
            "≥ 2×",
            _verdict(tgt[">= 2x faster than sequential"]["ok"]),
        ),
        (
            "  streaming alone",
            _fmt(f["streaming_speedup_vs_sequential"], "x"),
            "",
            "",
            "",
        ),
        (
            "AWS calls per append (not ending a turn)",
            f"{_fmt(f['aws_calls_per_append_mean'], '')} mean",
            f"{_fmt(f['aws_calls_per_append_p95'], '')} / {_fmt(f['aws_calls_per_append_max'], '')}"
            " max",
            "≤ 3",
            _verdict(tgt["<= 3 AWS calls per append"]["ok"]),
        ),
        (
            "AWS calls per turn",
            f"{_fmt(f['aws_calls_per_turn_mean'], '')} mean",
            f"{_fmt(f['aws_calls_per_turn_max'], '')} max",
            "",
            "",
        ),
        (
            "CPU per 100 ms of audio (chunk path, excl. moto)",
            _fmt(f["cpu_ms_per_100ms_audio"], "ms2"),
            _fmt(f["cpu_ms_per_100ms_audio_p95"], "ms2"),
            "≤ 5 ms",
            _verdict(tgt["<= 5 ms CPU per 100 ms of audio"]["ok"]),
        ),
        (
            "  … including moto's AWS emulation",
            _fmt(f["cpu_ms_per_100ms_audio_with_moto"], "ms2"),
            "",
            "",
            "",
        ),
        (
            "cold-start imports: audio ($default), best of N",
            _fmt(f["import_ms_audio"]),
            f"{_fmt(f['import_ms_audio_median'])} median",
            "≤ 300 ms",
            _verdict(tgt["<= 300 ms of imports (chunk path cold start)"]["ok"]),
        ),
        (
            "  openai imported on the chunk path",
            _fmt(f["chunk_path_imports_openai"]),
            "",
            "no",
            _verdict(tgt["no openai import on the chunk path"]["ok"]),
        ),
        ("cold-start imports: connect", _fmt(f["import_ms_connect"]), "", "", ""),
        ("cold-start imports: disconnect", _fmt(f["import_ms_disconnect"]), "", "", ""),
        (
            "first turn of a fresh container: SDK imports",
            _fmt(f["turn_cold_start_ms"]),
            "",
            "",
            "",
        ),
        (
            "first turn over a warm one: on-demand INIT",
            _fmt(f["first_turn_extra_ms_on_demand"]),
            "",
            "",
            "",
        ),
        (
            "  … from a SnapStart snapshot (as deployed)",
            _fmt(f["first_turn_extra_ms_snapstart"]),
            "",
            "≈ 0",
            "",
        ),
        (
            "S3 writes per conversation minute",
            _fmt(f["s3_writes_per_minute"], ""),
            "",
            "speech + prefix only",
            "",
        ),
        (
            f"AWS $ per child-hour (prices of {f['prices_date']})",
            f"${f['aws_usd_per_child_hour']:.4f}",
            "",
            f"≤ ${AWS_USD_PER_HOUR_TARGET:.2f}",
            _verdict(tgt["AWS <= $0.05 per child-hour"]["ok"]),
        ),
        *(
            (f"provider $ per child-hour, {label}", f"${usd:.3f}", "", "", "")
            for label, usd in f["provider_usd_per_child_hour"].items()
        ),
        (
            "$ per conversation-minute: AWS + providers (successors)",
            f"${f['aws_usd_per_child_hour'] / 60:.4f} + "
            f"${f['provider_usd_per_child_hour'].get('successors', 0.0) / 60:.4f}",
            "",
            "",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [head]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    extra = ["streaming overhead over the floor, by stage (p50):"]
    extra += [
        f"  {value:>6.0f} ms  {name}"
        for name, value in f["overhead_breakdown_p50_ms"].items()
        if value is not None
    ]
    modes = f["modes"]
    extra.append(
        "speculative turns: "
        + ", ".join(
            f"{m}: {v['speculative_turns']}/{v['turns']} prepared in the pause, "
            f"{v['discarded_speculations']} discarded"
            for m, v in modes.items()
        )
    )
    for mode, v in modes.items():
        extra.append(
            f"provider requests per turn, {mode}: "
            + ", ".join(f"{k} {n:g}" for k, n in v["provider_requests_per_turn"].items())
        )
    for mode, v in modes.items():
        extra.append(
            f"the fake provider's lateness over its profile (p50), {mode}: "
            + ", ".join(f"{k} {_fmt(n, 'ms2')}" for k, n in v["provider_lateness_p50_ms"].items())
        )
    kinds = f["appends_by_kind"]
    extra.append(
        "chunk path by kind: "
        + "; ".join(
            f"{k} {v['appends']} appends, {_fmt(v['calls_mean'], '')} calls, "
            f"{_fmt(v['cpu_ms_mean'], 'ms2')} CPU"
            for k, v in kinds.items()
        )
    )
    heavy = f["appends_over_3_calls"]
    if heavy:
        # A lost race costs one more call; a closer that falls behind slow writes (the lenient
        # pass of kiddolingo.ingest) takes over the chunks parked meanwhile, an UpdateItem per
        # pass.
        extra.append(
            f"appends over 3 calls: {len(heavy)} of {f['appends_measured']} ("
            + ", ".join(f"#{a['seq']} {a['kind']}: {sum(a['calls'].values())}" for a in heavy)
            + ")"
        )
    size_kb = f["connection_item_kb_max"] or 0.0
    pause_kb = f["connection_item_kb_silence"] or 0.0
    extra.append(
        f"connection item (written by every append, read by those whose container did not "
        f"leave it a moment ago): {pause_kb:.1f} KB in a pause "
        f"({math.ceil(pause_kb / 4)} RCU per strongly consistent read, {math.ceil(pause_kb)} WCU "
        f"per update), up to {size_kb:.1f} KB at the end of a phrase ({math.ceil(size_kb / 4)} "
        f"RCU, {math.ceil(size_kb)} WCU)"
    )
    extra.append(
        "calls per append (mean): "
        + ", ".join(f"{k} {v:g}" for k, v in f["aws_calls_per_append_by_call"].items())
        + f"; distribution {f['aws_calls_per_append_distribution']}"
    )
    for mode, v in modes.items():
        extra.append(
            f"calls per turn, {mode} (mean): "
            + ", ".join(f"{k} {n:g}" for k, n in v["aws_calls_per_turn_by_call"].items())
        )
    if f["server_figures_p50_ms"]:
        extra.append(
            "server figures (turn_figures = the EMF metrics; p50 by mode, ms from the reply "
            "start): "
            + "; ".join(
                f"{name} " + ", ".join(f"{m} {v:g}" for m, v in by_mode.items() if v is not None)
                for name, by_mode in f["server_figures_p50_ms"].items()
            )
        )
    heaviest = f["imports"].get("audio", {}).get("heaviest") or []
    if heaviest:
        extra.append(
            "heaviest imports of the audio handler: "
            + ", ".join(f"{h['module']} {h['ms']:g} ms" for h in heaviest)
        )
    extra.append(
        f"EMF records captured: {f['emf_records']}; audio objects left in S3: "
        f"{f['audio_objects_left']}; errors posted: {f['errors_posted'] or 'none'}"
    )
    extra += cost_table(f)
    return "\n".join([*lines, "", *extra])


def cost_table(f: dict[str, Any]) -> list[str]:
    """The bill per child-hour, line by line, of each conversation."""
    out = []
    for mode, c in f.get("cost", {}).items():
        out.append("")
        out.append(
            f"cost per child-hour, {mode} conversation ({c['conversation_s']:g} s scaled to an "
            f"hour; {c['region']} on-demand list prices of {c['prices_date']}, infra/prices.py, "
            "not checked online): "
            f"AWS ${c['aws_usd_per_hour']:.4f}"
        )
        for line in c["aws_lines"]:
            out.append(
                f"  ${line['usd_per_hour']:.4f}  {line['name']}: {line['per_hour']:,.0f} "
                f"{line['unit']}/h"
            )
        out.append(
            "  DynamoDB by call (per hour: calls, units per call, $): "
            + "; ".join(
                f"{name} {v['calls_per_hour']:,}, {v['units_per_call']:g}, ${v['usd_per_hour']:.4f}"
                for name, v in c["dynamodb_by_call"].items()
            )
        )
        out.append(
            f"  connection item writes: {_fmt(c['connection_item_write_kb_mean'], ' KB')} "
            f"(the larger of before and after), {_fmt(c['connection_item_write_wru_mean'], '')} "
            "WRU each, mean"
        )
        rates = c["child_rates"]
        out.append(
            f"  one child: {rates['messages_in_per_s']:g} messages/s in, "
            f"{rates['lambda_concurrency']:g} Lambda executions at once, "
            f"{rates['wru_per_s']:g} WRU/s ({rates['hot_item_wru_per_s']:g} on its connection "
            f"item), {rates['rru_per_s']:g} RRU/s; quotas on paper, first to bind first: "
            + "; ".join(
                f"{q['quota']} {q['limit']:,.0f} {q['unit']}: "
                + ("never" if q["children"] is None else f"{q['children']:,} children")
                for q in c["quotas"]
            )
        )
        for label, v in c["provider"].items():
            out.append(
                f"  provider, {label} ({', '.join(v['models'])}): ${v['usd_per_hour']:.3f} "
                f"(usage {c['provider_usage_source']})"
            )
            for line in v["lines"]:
                note = f" ({line['note']})" if line.get("note") else ""
                out.append(
                    f"    ${line['usd_per_hour']:.4f}  {line['name']}: "
                    f"{line['per_hour']:,.1f} {line['unit']}/h{note}"
                )
    return out


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--turns", type=int, default=None, help="turns per mode (default 6, quick 2)"
    )
    parser.add_argument("--transcription-ms", type=float, default=None)
    parser.add_argument("--chat-first-token-ms", type=float, default=None)
    parser.add_argument("--tokens-per-s", type=float, default=None)
    parser.add_argument("--speech-first-byte-ms", type=float, default=None)
    parser.add_argument("--speech-realtime-factor", type=float, default=None)
    parser.add_argument("--moderation-ms", type=float, default=None)
    parser.add_argument("--realtime-first-byte-ms", type=float, default=None)
    parser.add_argument("--realtime-connect-ms", type=float, default=None)
    parser.add_argument("--silence-ms", type=int, default=1200, help="VAD silence_duration_ms")
    parser.add_argument(
        "--chunking",
        choices=("page", "fixed"),
        default="page",
        help="page: the child sends as web/chunk-policy.js does (larger appends where nothing "
        "waits on them); fixed: every 100 ms block as an append of its own",
    )
    parser.add_argument(
        "--mode",
        choices=("both", "streaming", "speculative"),
        default="both",
        help="streaming: SPECULATIVE_FRACTION=0; speculative: the deployed setting",
    )
    parser.add_argument(
        "--aws",
        choices=("inprocess", "process"),
        default="inprocess",
        help="mock_aws in the benchmark's process (every AWS call costs CPU under its GIL; "
        "the CPU figure subtracts it), or moto in its own process (AWS calls are waits, as "
        "Lambda sees them; the CPU figure then includes botocore's HTTP path)",
    )
    parser.add_argument(
        "--containers",
        type=int,
        default=0,
        metavar="N",
        help="run every invocation in one of N container processes, one invocation at a time "
        "each, as Lambda does (implies --aws process); 0: in threads of this process",
    )
    parser.add_argument(
        "--routing",
        choices=("mru", "random"),
        default="mru",
        help="with --containers: an invocation goes to the most recently used idle container "
        "(as Lambda reuses warm ones) or to any idle one at random (Lambda does not say which)",
    )
    parser.add_argument("--import-runs", type=int, default=None, help="fresh interpreters each")
    parser.add_argument(
        "--provider",
        choices=("process", "inprocess"),
        default="process",
        help="the fake OpenAI server in a process of its own (as a remote provider: its CPU is "
        "not the handlers'), or in the benchmark's process",
    )
    parser.add_argument(
        "--input-rate",
        type=int,
        choices=(16000, 24000),
        default=16000,
        help="the child's audio: 16 kHz as the browser client sends it, or 24 kHz (the "
        "Realtime API's default, also accepted)",
    )
    parser.add_argument(
        "--speech-api",
        choices=("realtime", "http"),
        default="realtime",
        help="the tutor's speech: a Realtime API voice model (the default) or /audio/speech "
        "(tts-1-hd, the old default), both on the fake with the same first byte",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 turns, no provider latency (for the tests)"
    )
    args = parser.parse_args(argv)
    if args.turns is None:
        args.turns = 2 if args.quick else 6
    if args.import_runs is None:
        args.import_runs = 1 if args.quick else 5
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    if args.containers < 0:
        parser.error("--containers must be 0 or more")
    if args.containers:
        args.aws = "process"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _set_input_rate(args.input_rate)
    global PAGE_CHUNKING
    PAGE_CHUNKING = args.chunking == "page"
    if args.speech_api == "http":
        SPEECH_ENV.update(SPEECH_API="http", SPEECH_MODEL="tts-1-hd", SPEECH_VOICE="nova")
    from infra.fake_openai import FakeOpenAI, fake_openai_process

    profile = _profile(args)
    args.load_start = os.getloadavg()
    imports = measure_imports(args.import_runs)
    imports["turn_cold_start"] = measure_turn_cold_start(args.import_runs)
    imports["first_turn"] = measure_first_turn(args.import_runs)
    modes = ("streaming", "speculative") if args.mode == "both" else (args.mode,)
    runs: dict[str, dict[str, Any]] = {}
    provider = (
        fake_openai_process(latency=profile)
        if args.provider == "process"
        else FakeOpenAI(latency=profile)
    )
    with provider as fake:
        for n, mode in enumerate(modes):
            runs[mode] = run_conversation(
                profile,
                args.turns,
                args.silence_ms,
                fake,
                mode=mode,
                first_turn=n * args.turns,
                aws_mode=args.aws,
                containers=args.containers,
                routing=args.routing,
            )
        # The baseline replays the first conversation's utterances and replies.
        first = runs[modes[0]]
        sequential = run_sequential(
            profile, first["utterances"], first["turns"], args.silence_ms, fake
        )
    result = figures(args, profile, runs, sequential, imports)
    print(table(result))
    target = os.environ.get("BENCH_JSON")
    if target:
        Path(target).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0 if result["turns_measured"] == result["turns"] else 1


if __name__ == "__main__":
    sys.exit(main())
