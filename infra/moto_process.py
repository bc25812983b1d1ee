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
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """Start the server process; yields its endpoint URL; stops it on exit."""
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.moto_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
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
    from infra.local import serialized_moto_server

    # The parent stops it (by closing stdin): Ctrl-C in a terminal reaches the whole process
    # group, and the parent shuts its gateway down first, with moto still serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # it logs every request at INFO
    server = serialized_moto_server(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()  # until the parent closes it (or exits)
    server.stop()


if __name__ == "__main__":
    main()
