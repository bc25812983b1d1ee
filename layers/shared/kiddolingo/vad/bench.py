"""``python -m kiddolingo.vad --bench``: µs of CPU the VAD spends per 100 ms chunk."""

from __future__ import annotations

import numpy as np

from . import __doc__ as _PACKAGE_DOC
from .config import VadConfig
from .segmenter import feed
from .state import VadState


def measure(seconds: float = 20.0, chunk_ms: int = 100) -> list[tuple[int, float, float]]:
    """µs of CPU per ``chunk_ms`` chunk: (rate, feed only, feed + state round trip)."""
    import time

    results = []
    for rate in (24000, 16000):
        rng = np.random.default_rng(7)
        t = np.arange(int(seconds * rate)) / rate
        f0 = 260.0
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
        syllables = (np.sin(2 * np.pi * 1.5 * t) > 0.2).astype(np.float64)
        noise = rng.standard_normal(t.size) * 0.01
        audio = np.clip((0.1 * voiced * syllables + noise) * 32767, -32768, 32767).astype("<i2")
        pcm = audio.tobytes()
        config = VadConfig(sample_rate=rate, speculative_fraction=0.15)
        step_bytes = rate * chunk_ms // 1000 * 2
        chunks = [pcm[i : i + step_bytes] for i in range(0, len(pcm), step_bytes)]
        timings = []
        for round_trip in (False, True):
            state = VadState.initial(config)
            started = time.process_time()
            for chunk in chunks:
                if round_trip:
                    state = VadState.from_item(state.to_item())
                state = feed(config, state, chunk).state
            elapsed = time.process_time() - started
            timings.append(elapsed / len(chunks) * 1e6)
        results.append((rate, timings[0], timings[1]))
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kiddolingo.vad", description=_PACKAGE_DOC)
    parser.add_argument("--bench", action="store_true", help="print µs of CPU per 100 ms chunk")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 0
    for rate, feed_us, round_trip_us in measure(args.seconds):
        print(
            f"{rate} Hz: feed {feed_us:.0f} µs per 100 ms chunk; "
            f"with to_item/from_item {round_trip_us:.0f} µs"
        )
    return 0
