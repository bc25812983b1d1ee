"""The whole local stack in-process, for tests: ``with local_stack() as stack: ...``.

It is ``infra.local.LocalStack`` — what ``make run`` starts — on free ports: moto's
``ThreadedMotoServer`` with the table and bucket from ``template.yaml``, a ``FakeOpenAI`` with
zero latency (unless ``latency`` says otherwise), and the local gateway running the REAL
handlers named by the template. The process environment is patched while it runs and restored
afterwards.

Handles on the yielded :class:`~infra.local.LocalStack`:

* ``stack.page_url`` / ``stack.ws_url`` / ``stack.ready_url`` (page URL with ``?token=``);
* ``stack.gateway`` (``drop(connection_id)``, ``connections``, ``invocations``,
  ``wait_for_invocations(...)``, ``wait_for_connections(...)``);
* ``stack.fake_openai`` (``requests("chat")``, ``script_transcripts(...)``, ``reset()``);
* ``stack.token``, ``stack.aws_endpoint_url``, ``stack.table_name``, ``stack.bucket_name``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infra.local import LocalStack

_DROPPED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AWS_PROFILE", "LOCAL_AWS", "PORT")


@contextmanager
def local_stack(
    *,
    auth_required: bool = True,
    latency: Any = None,
    env: dict[str, str] | None = None,
    **gateway_kwargs: Any,
) -> Iterator[LocalStack]:
    """Start the local stack on free loopback ports; stop it (and restore the env) on exit.

    ``latency``: a ``LatencyProfile`` for the fake OpenAI server (zero by default).
    ``env``: extra settings (e.g. ``{"TARGET_LANGUAGE": "French"}``) on top of the process
    environment minus anything that would reach real AWS or a real provider.
    """
    from infra.fake_openai import LatencyProfile

    base = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    for name in list(base):
        if name.endswith(("_API_KEY", "_API_KEY_PARAMETER")) or name.startswith("AWS_"):
            base.pop(name)
    base.update(env or {})
    stack = LocalStack(
        env=base,
        port=0,
        openai="fake",
        fake_latency=latency or LatencyProfile.zero(),
        auth_required=auth_required,
        local_aws="moto",
        **gateway_kwargs,
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------
# A quick load check: python -m tests.support.local_stack --sessions 5 --seconds 8
# --------------------------------------------------------------------------------------------
def load_check(sessions: int = 5, seconds: float = 8.0) -> dict[str, Any]:
    """``sessions`` clients each stream ``seconds`` of quiet noise in real time (one 100 ms
    append every 100 ms, numbered audio#n) through the local stack and the real handlers.
    Returns the ``$default`` invocation latencies and every ``error`` event the clients got."""
    import asyncio
    import base64
    import json
    import statistics
    import time

    import numpy as np
    import websockets

    errors: list[dict[str, Any]] = []
    appends = int(seconds * 10)  # per session

    async def client(stack: LocalStack, k: int) -> None:
        from websockets.typing import Subprotocol

        protocols = [Subprotocol("kiddolingo.v1"), Subprotocol(f"bearer.{stack.token}")]
        async with websockets.connect(stack.ws_url, subprotocols=protocols) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": {}}))

            async def read() -> None:
                async for message in ws:
                    event = json.loads(message)
                    if event.get("type") == "error" or "message" in event:
                        errors.append(event)

            reader = asyncio.create_task(read())
            rng = np.random.default_rng(k)
            start = time.monotonic()
            for n in range(1, appends + 1):
                pcm = rng.normal(0, 30, 2400).astype(np.int16).tobytes()
                append = {"type": "input_audio_buffer.append", "event_id": f"audio#{n}"}
                append["audio"] = base64.b64encode(pcm).decode()
                await ws.send(json.dumps(append))
                await asyncio.sleep(max(0.0, start + n * 0.1 - time.monotonic()))
            await asyncio.sleep(2.0)
            reader.cancel()

    with local_stack() as stack:
        seen = len(stack.gateway.invocations)

        async def run() -> None:
            await asyncio.gather(*(client(stack, k) for k in range(sessions)))

        asyncio.run(run())
        done = [
            inv
            for inv in list(stack.gateway.invocations)[seen:]
            if inv.route_key == "$default" and inv.finished_at is not None
        ]
    ms = sorted((inv.finished_at - inv.started_at) * 1000 for inv in done if inv.finished_at)
    return {
        "sessions": sessions,
        # More sent than processed: the local stack fell behind (its moto serves one request at
        # a time); what was still queued when it stopped was dropped, not counted below.
        "appends_sent": sessions * appends,
        "invocations": len(done),
        "failed_invocations": sum(1 for inv in done if inv.result and not inv.result.ok),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(ms[int(len(ms) * 0.95)], 1) if ms else None,
        "max_ms": round(ms[-1], 1) if ms else None,
        "error_events": [e.get("error", e) for e in errors],
    }


if __name__ == "__main__":
    import argparse
    import json as _json

    parser = argparse.ArgumentParser(description=load_check.__doc__)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(_json.dumps(load_check(args.sessions, args.seconds), indent=2, ensure_ascii=False))
