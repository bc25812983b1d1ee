"""The sample events in ``events/`` (what ``sam local invoke -e`` reads) and the facts they hold.

The files are the sample connection: its id, API, stage, domain, client address and the
``$connect`` headers of a browser. Tests and the benchmark take those facts from here and build
their events with :mod:`infra.apigw.events`, which ``tests/test_events.py`` proves builds each
file exactly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from infra.apigw.events import Peer

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


@cache
def _raw(name: str) -> dict[str, Any]:
    stem = name.removesuffix(".json")
    path = EVENTS_DIR / f"{stem}.json"
    if not path.is_file():
        known = sorted(p.stem for p in EVENTS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no event file {path} (known: {', '.join(known)})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def sample_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/<name>.json`` (``name`` with or without ``.json``)."""
    return copy.deepcopy(_raw(name))


def sample_peer(name: str, connection_id: str | None = None, **changes: Any) -> Peer:
    """The connection ``events/<name>.json`` was stamped for, with another id or other facts."""
    peer = Peer.of(_raw(name))
    if connection_id is not None:
        changes["connection_id"] = connection_id
    return replace(peer, **changes)


def sample_headers(*, without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The browser's handshake headers of ``events/connect.json``, less the names ``without``."""
    drop = {name.lower() for name in without}
    headers: dict[str, str] = _raw("connect")["headers"]
    return [(k, v) for k, v in headers.items() if k.lower() not in drop]
