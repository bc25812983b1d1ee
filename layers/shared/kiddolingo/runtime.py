"""One event loop per process, kept across invocations.

The provider clients keep HTTP connections alive between turns (a warm Lambda container skips
the TLS handshake on the next turn), and those connections belong to the loop that opened them.
``asyncio.run`` per invocation would close that loop; so coroutines run on one loop in a
background thread, which also lets the local gateway call handlers from many threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="kiddolingo-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the process loop; its future can be waited for from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, _get_loop())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the process loop and wait for its result."""
    return submit(coro).result()
