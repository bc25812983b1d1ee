"""A local fake of the OpenAI API: transcriptions, chat completions (streamed as server-sent
events), speech (streamed PCM), moderations, and the Realtime API's WebSocket for speech.

The tests, the benchmark and the demo mode of ``make run`` (no key configured) drive the real
``openai`` SDK over real HTTP and real WebSockets against it. Everything is settable at runtime
from any thread: the latency profile, scripted transcripts and replies, moderation flag words,
rewordings of Realtime speech, injected failures (an HTTP status, a hang past the client's
timeout, a stream aborted midway, a dropped socket, an ``error`` event). Every request is
recorded, parsed, with how many bytes of its response were actually sent, so a test can prove
that a cancelled stream stopped early.

    with FakeOpenAI(latency=LatencyProfile.zero()) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-fake")
        ...
        fake.requests("chat")[-1].messages

**Realtime** (``GET /v1/realtime?model=...``, what ``client.realtime.connect(model=...)``
opens from ``base_url``): GA event names, speech only. The socket answers ``session.created``,
``session.update`` (voice, instructions) with ``session.updated``, and serves *out-of-band*
responses (``response.create`` with ``conversation: "none"`` and the sentence as
``input_text``): ``response.created``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_audio.delta`` (base64 PCM16 24 kHz mono,
``speech_chunk_bytes`` a delta) interleaved with ``response.output_audio_transcript.delta``
(each word just before the audio that speaks it), then the ``.done`` events and
``response.done`` with ``usage``. Several responses may be in flight at once, each event with
its ``response_id``; ``response.cancel`` stops one at once (``response.done`` status
``cancelled``). A bad key gets an ``error`` event (``invalid_api_key``) and a close with code
1008, as the real API answers a wrong key after the upgrade; a malformed or unsupported event
gets an ``error`` event with its ``event_id`` and the socket stays open. The fake's usage rule
(not OpenAI's): a text token per 4 characters, an audio output token per 50 ms of audio sent.
``fake.reword(...)`` makes responses speak (and transcribe) other words than their sentence;
``fake.realtime_responses()`` lists every response: sentence, spoken text, instructions,
voice, metadata, status, audio bytes sent.

**Speech** is deterministic tones by default (exact lengths, fast) or, with
``FakeOpenAI(speech="espeak")``, espeak-ng's real words (the demo mode), on both
``/v1/audio/speech`` and the Realtime socket.

CLI: ``python -m infra.fake_openai --port 0 --profile zero|realistic [--speech espeak]`` prints
its base URL and serves until interrupted.

Where each part lives:

- ``server``: :class:`FakeOpenAI` itself (its app, routes, lifecycle, state and reset), made
  of the parts below;
- ``profile``: :class:`LatencyProfile`; ``faults``: injected failures; ``recording``: the
  request log and :class:`RecordedRequest`; ``content``: canned replies, the chat tokenizer
  and scripted transcripts, replies and rewordings; ``plumbing``: what every HTTP endpoint
  shares (the key check, errors, pacing, the frame of a request);
- one module per endpoint family: ``transcriptions``, ``chat``, ``speech``, ``moderations``,
  and the ``realtime`` package;
- ``voices``: the speech audio (tones, espeak-ng); ``process``: the fake in a process of its
  own (``fake_openai_process``); ``cli``: ``python -m infra.fake_openai``.
"""

from infra.fake_openai.chat import REASONING_TOKENS
from infra.fake_openai.cli import main
from infra.fake_openai.content import chat_tokens, demo_reply
from infra.fake_openai.faults import FAILURE_KINDS, Failure
from infra.fake_openai.moderations import API_FLAG_THRESHOLD, MODERATION_CATEGORIES
from infra.fake_openai.process import RemoteFakeOpenAI, _serve_manager, fake_openai_process
from infra.fake_openai.profile import LatencyProfile
from infra.fake_openai.realtime import RealtimeResponse
from infra.fake_openai.recording import ENDPOINTS, RecordedRequest
from infra.fake_openai.server import FakeOpenAI
from infra.fake_openai.speech import SPEECH_CHUNK_BYTES
from infra.fake_openai.voices import (
    MS_PER_CHAR,
    SPEECH_SAMPLE_RATE,
    contracted,
    espeak_available,
    espeak_pcm,
    speech_pcm,
    synth_pcm,
    word_pieces,
)

__all__ = [
    "API_FLAG_THRESHOLD",
    "ENDPOINTS",
    "FAILURE_KINDS",
    "MODERATION_CATEGORIES",
    "MS_PER_CHAR",
    "REASONING_TOKENS",
    "SPEECH_CHUNK_BYTES",
    "SPEECH_SAMPLE_RATE",
    "Failure",
    "FakeOpenAI",
    "LatencyProfile",
    "RealtimeResponse",
    "RecordedRequest",
    "RemoteFakeOpenAI",
    "_serve_manager",
    "chat_tokens",
    "contracted",
    "demo_reply",
    "espeak_available",
    "espeak_pcm",
    "fake_openai_process",
    "main",
    "speech_pcm",
    "synth_pcm",
    "word_pieces",
]
