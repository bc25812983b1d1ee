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
block). Every append is its own invocation, started from a worker
thread on the 100 ms clock, so the sender keeps its pace while the invocation that ends the
utterance (or prepares the answer during the pause) runs the turn inline. Posts are captured
message by message by a botocore ``before-call`` hook (moto concatenates them), which also
counts every AWS call of every invocation; the layer's turn observers (``kiddolingo.observe``)
say which invocations started a turn and hand over every turn's outcome. The container is warm
(the provider SDK loaded, its connections open); what the first turn of a fresh container pays
on top is measured on its own.

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

The package, one part a module:

- ``config``: the script (phrases, replies), the microphone, the resources, ``FIGURE_KEYS``;
- ``child``: the child's speech input (espeak-ng or a synthetic voice over room noise);
- ``events``: API Gateway WebSocket events for the handlers;
- ``observers``: what is seen of each invocation (AWS calls, posts, CPU, a turn started);
- ``conversation``: one connection in real time (the sender, a turn);
- ``driver``: one scripted conversation, set up and run;
- ``baseline``: the brief's sequential design;
- ``probes``: imports, the first turn's SDK, the first turn of a fresh container;
- ``floors``, ``results``, ``costs``, ``stats``: the figures, their floors and the bill;
- ``report``: the table ``make bench`` prints;
- ``cli``: the command line and the run from probes to table.
"""

from __future__ import annotations

from .cli import main, parse_args
from .config import BUCKET, FIGURE_KEYS, TABLE
from .conversation import Conversation, Turn
from .costs import aws_usage, cost_figures, cost_table, provider_usage
from .driver import run_conversation
from .events import Events
from .floors import first_sentence_ms, first_sentence_tokens, floor_ms, overhead_breakdown
from .observers import Invocation, Observer
from .probes import measure_first_turn, measure_imports, measure_turn_cold_start
from .report import table
from .results import figures

__all__ = [
    "BUCKET",
    "FIGURE_KEYS",
    "TABLE",
    "Conversation",
    "Events",
    "Invocation",
    "Observer",
    "Turn",
    "aws_usage",
    "cost_figures",
    "cost_table",
    "figures",
    "first_sentence_ms",
    "first_sentence_tokens",
    "floor_ms",
    "main",
    "measure_first_turn",
    "measure_imports",
    "measure_turn_cold_start",
    "overhead_breakdown",
    "parse_args",
    "provider_usage",
    "run_conversation",
    "table",
]
