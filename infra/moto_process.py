"""moto's S3 and DynamoDB in a process of their own, for ``make run`` and ``make bench``.

In Lambda, S3 and DynamoDB are network services: a call is a wait, not CPU in the handler's
process, and the other invocations of a connection run in other containers. Emulated inside
the benchmark's process (``mock_aws``), every call of every concurrent append costs CPU under
the same GIL as the turn being measured (and, in the local stack, as the gateway and every
handler). Here moto serves the calls from its own process, one request at a time.

    python -m infra.moto_process     # prints the port, serves until its stdin closes
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Set (to a file) in its environment, the process meters DynamoDB (``infra.dynamo_meter``).
METER_ENV = "BENCH_DYNAMODB_METER"


class FifoLock:
    """A lock granted in the order it was asked for.

    ``threading.Lock`` is not fair: under load a thread that just released it often takes it
    again, and one waiting request can starve for seconds while others pass (an audio append
    held back that long is skipped as lost). The standard library has no fair lock, hence this
    one: each waiter sleeps on a lock of its own, and a release hands ownership to the oldest.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: deque[threading.Lock] = deque()

    def __enter__(self) -> None:
        with self._mutex:
            if not self._locked:
                self._locked = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        try:
            waiter.acquire()  # released by __exit__ when ownership is handed to us
        except BaseException:
            with self._mutex:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            self.__exit__()  # ownership reached us as we gave up: pass it on
            raise

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # stays locked: the oldest waiter owns it
            else:
                self._locked = False


def _serialized(app: Any) -> Any:
    """A WSGI wrapper that lets one request at a time into ``app``, first come first served."""
    lock = FifoLock()

    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if callable(close):
                    close()

    return wsgi


def serialized_moto_server(**kwargs: Any) -> Any:
    """moto's ``ThreadedMotoServer`` (``kwargs``), processing one AWS request at a time.

    moto's backends are not thread-safe (two concurrent ``UpdateItem`` calls on one item can
    fail inside moto, or both pass a condition only one should), while the handlers run
    concurrently like Lambda. Serializing moto keeps DynamoDB's atomic conditional writes
    atomic; each request takes a few milliseconds, so nothing waits long.
    """
    from moto.server import ThreadedMotoServer

    class Serialized(ThreadedMotoServer):
        def _server_entry(self) -> None:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            app = _serialized(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return Serialized(**kwargs)


@contextlib.contextmanager
def moto_process(meter_file: str | None = None) -> Iterator[str]:
    """Start the server process; yields its endpoint URL; stops it on exit. ``meter_file``:
    what DynamoDB would bill for each request goes there (``infra.dynamo_meter``)."""
    env = {**os.environ, METER_ENV: meter_file} if meter_file else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.moto_process"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,  # where ``-m infra.moto_process`` is found
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    # The parent stops it (by closing stdin): Ctrl-C in a terminal reaches the whole process
    # group, and the parent shuts its gateway down first, with moto still serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # it logs every request at INFO
    meter: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if os.environ.get(METER_ENV):  # the benchmark's cost model: what DynamoDB would bill
        from infra.dynamo_meter import DynamoMeter, file_sink

        meter = DynamoMeter(file_sink(os.environ[METER_ENV])).installed()
    with meter:
        server = serialized_moto_server(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        print(server.get_host_and_port()[1], flush=True)
        sys.stdin.read()  # until the parent closes it (or exits)
        server.stop()


if __name__ == "__main__":
    main()
