"""The benchmark's script and fixed settings: the child's phrases, the tutor's replies, the
microphone, the resources and the figures the JSON output must carry.

``RATE``, ``CHUNK_SAMPLES`` and ``CHUNK_BYTES`` change with ``--input-rate``
(:func:`set_input_rate`): read them as ``config.RATE`` at the time of use, not imported by name.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TABLE = "kiddolingo-bench-sessions"
BUCKET = "kiddolingo-bench-audio"
#: The microphone's rate, as web/kiddolingo-client.js sends it (``--input-rate`` changes it).
RATE = 16_000
CHUNK_MS = 100
CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
CHUNK_BYTES = CHUNK_SAMPLES * 2


#: The handlers' settings over the template's and the benchmark's (``--speech-api``, ``--env``).
HANDLER_ENV: dict[str, str | None] = {}


#: The child sends as the page does (``web/chunk-policy.js``: larger appends where nothing
#: waits on them); ``--chunking fixed`` sends every 100 ms block as an append of its own.
PAGE_CHUNKING = True


def set_input_rate(rate: int) -> None:
    """The microphone's rate (``--input-rate``), and the chunk sizes that follow from it."""
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
