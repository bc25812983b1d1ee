"""One connection driven in real time through the handlers: the sender on the 100 ms clock,
a turn (lead silence, speech, silence until the reply is done) and what it saw."""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infra.dynamo_meter import OWN_READ, item_size
from infra.page_chunking import PageSender

from . import config
from .child import noise, to_pcm
from .config import (
    AFTER_REPLY_SILENCE_MS,
    CHUNK_MS,
    CONNECTION_ID,
    LEAD_SILENCE_MS,
    TABLE,
    TURN_TIMEOUT_S,
)
from .events import Events
from .observers import CURRENT, Invocation, Observer


@dataclass
class Turn:
    """One scripted turn: what the child says and the tutor answers, and what was seen of it."""

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
        token = CURRENT.set(inv)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            result = self.functions[route].invoke(event)
            inv.error = result.error
        finally:
            inv.cpu_ms = (time.thread_time() - cpu0) * 1000.0
            inv.wall_ms = (time.perf_counter() - wall0) * 1000.0
            CURRENT.reset(token)
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
                        "format": {"type": "audio/pcm", "rate": config.RATE},
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
        if config.PAGE_CHUNKING:
            td = update["session"]["audio"]["input"]["turn_detection"]  # type: ignore[index]
            self.page = PageSender(config.RATE, td)
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
        return to_pcm(noise(config.CHUNK_SAMPLES, self.rng))

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
            **OWN_READ,  # the meter leaves the benchmark's own reads out of the bill
        )
        if out.get("Item"):
            into.append(item_size(out["Item"]))

    def finish(self) -> None:
        held = self.page.flush() if self.page is not None else None
        if held:
            self._append(held, "silence")
        for future in self.futures:
            future.result(timeout=60)
        self.pool.shutdown(wait=True)
        self.invoke_now("$disconnect", self.events.disconnect(), "disconnect")
