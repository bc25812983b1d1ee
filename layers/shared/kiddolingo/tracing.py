"""Opt-in X-Ray tracing through Powertools Tracer.

Tracer costs ~0.25 s of imports on a cold start, and the audio-chunk path has a
300 ms budget for all of its imports; so it is loaded only when the deployment turns it on
(``Tracing=Active`` in the template sets ``POWERTOOLS_TRACE_DISABLED=false``).

Only timings and errors are recorded: never a response (see :func:`traced`), never an event.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").strip().lower() == "false"


def traced(handler: F, service: str) -> F:
    """``handler`` wrapped by ``Tracer.capture_lambda_handler`` when tracing is on."""
    if not enabled():
        return handler
    from aws_lambda_powertools import Tracer

    tracer = Tracer(service=service)
    # Tracer records a handler's response as segment metadata by default. The responses carry
    # nothing the trace needs, and $connect's headers are the kind of thing no trace should
    # hold (a subprotocol may be a token), so none is recorded.
    return tracer.capture_lambda_handler(handler, capture_response=False)  # type: ignore[return-value]
