"""The fake in a process of its own, driven through a ``multiprocessing`` manager, so that its
CPU is not the measured code's (``make bench``)."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from infra.fake_openai.server import FakeOpenAI

__all__ = ["RemoteFakeOpenAI", "fake_openai_process"]


class _ServedFakeOpenAI(FakeOpenAI):
    """What a manager's proxy can reach: methods only, results pickled back."""

    def serve(self) -> str:
        """Start serving; the base URL (``start`` returns the server itself)."""
        self.start()
        return self.base_url


def _public_methods(cls: type) -> tuple[str, ...]:
    """The public methods of ``cls``, its mixins' included (properties are not callable)."""
    return tuple(n for n in dir(cls) if n[0] != "_" and callable(getattr(cls, n)))


class _FakeManager(BaseManager):
    pass


_FakeManager.register(
    "FakeOpenAI",
    _ServedFakeOpenAI,
    # Named here: the manager would otherwise look up every attribute, properties included.
    exposed=(*_public_methods(FakeOpenAI), "serve"),
)


class RemoteFakeOpenAI:
    """A ``FakeOpenAI`` in another process, driven through a ``multiprocessing`` proxy: the
    same methods (their results pickled back), and ``base_url``."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy
        self.base_url: str = proxy.serve()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)


@contextlib.contextmanager
def fake_openai_process(**kwargs: Any) -> Iterator[RemoteFakeOpenAI]:
    """``FakeOpenAI(**kwargs)`` serving from a process of its own.

    A real provider's CPU is not the client's: in one process the fake's request parsing and
    streaming would compete with the code being measured under one GIL (``make bench``). The
    child is started with ``-m`` (as ``infra.moto_process``), not by ``multiprocessing``'s
    spawn, which would import the caller's main module again."""
    authkey = secrets.token_bytes(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.fake_openai", "--manager"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],  # where ``-m infra.fake_openai`` is found
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(authkey.hex().encode() + b"\n")
        proc.stdin.flush()
        port = int(proc.stdout.readline().strip())
        manager = _FakeManager(address=("127.0.0.1", port), authkey=authkey)
        manager.connect()
        proxy = manager.FakeOpenAI(**kwargs)  # type: ignore[attr-defined]
        try:
            yield RemoteFakeOpenAI(proxy)
        finally:
            proxy.stop()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_manager() -> None:
    """The child of ``fake_openai_process``: reads the auth key from stdin, prints its port,
    serves until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    server = _FakeManager(address=("127.0.0.1", 0), authkey=authkey).get_server()
    print(server.address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
