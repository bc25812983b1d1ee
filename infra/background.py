"""An asyncio event loop on a daemon thread, for the local servers (gateway, fake OpenAI)
that tests and ``make run`` drive from synchronous code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


def start_loop_thread(
    name: str,
    startup: Callable[[], Awaitable[Any]],
    cleanup: Callable[[], Awaitable[Any]] | None = None,
    timeout: float | None = 10.0,
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run ``startup()`` on a new loop in a daemon thread and return once it has finished.

    The loop then runs until ``loop.stop()`` is called (thread-safely); ``cleanup()`` runs on
    the way out. An exception from ``startup()`` is raised here and the thread ends.
    """
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        holder.append(loop)
        try:
            loop.run_until_complete(startup())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            if cleanup is not None:
                loop.run_until_complete(cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise RuntimeError(f"{name} did not start within {timeout} s")
    if failure:
        thread.join(1)
        raise failure[0]
    return holder[0], thread
