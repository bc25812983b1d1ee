"""What moto's DynamoDB would bill: item sizes before and after every write, and every read.

DynamoDB bills a write by the larger of the item before and after it, and a read by the item's
size (not what a projection returns). The handlers' own view cannot see either without extra
reads, so the meter sits inside moto's DynamoDB request handler: around each GetItem, PutItem,
UpdateItem, DeleteItem and BatchGetItem it looks the item up in moto's table before and after
the request and records an ``infra.cost.DynamoCall``. It works where moto runs: in the
benchmark's process (``mock_aws``) or in ``infra.moto_process`` (its ``meter_file``: the records go
there, one JSON line each).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from infra.cost import DynamoCall


def attribute_size(value: Any) -> int:
    """The billed size of one attribute value: moto's ``DynamoType`` or a low-level dict
    (``{"S": …}``). Numbers count about half their digits plus one; lists and maps 3 bytes
    plus one per element; binary its raw bytes (moto may hold them base64-encoded)."""
    if hasattr(value, "type") and hasattr(value, "value"):
        kind, x = value.type, value.value
    else:
        ((kind, x),) = value.items()
    if kind == "S":
        return len(str(x).encode())
    if kind == "N":
        return len(str(x).lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        if isinstance(x, str):
            return len(base64.b64decode(x))
        return len(x)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in x.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in x)
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: e}) for e in x)
    return 0


def item_size(attrs: dict[str, Any] | None) -> int:
    """The billed size of an item (its attribute names and values), 0 for no item."""
    if not attrs:
        return 0
    return sum(len(name.encode()) + attribute_size(v) for name, v in attrs.items())


def _kind(key: dict[str, Any]) -> str:
    """``conn``, ``session``… from a key's ``pk`` value (``conn#<id>``)."""
    for value in key.values():
        text = str(next(iter(value.values())))
        return text.split("#", 1)[0]
    return ""


class DynamoMeter:
    """Records every metered call; ``sink`` gets each record as it is made."""

    def __init__(self, sink: Callable[[DynamoCall], None] | None = None) -> None:
        self.calls: list[DynamoCall] = []
        self.sink = sink
        self._lock = threading.Lock()

    def record(self, call: DynamoCall) -> None:
        with self._lock:
            self.calls.append(call)
        if self.sink is not None:
            self.sink(call)

    @contextlib.contextmanager
    def installed(self) -> Iterator[DynamoMeter]:
        """Wrap moto's DynamoDB request handler for as long as the context lasts."""
        from moto.dynamodb.responses import DynamoHandler

        saved = {name: getattr(DynamoHandler, name) for name in _HANDLERS}
        for name, original in saved.items():
            setattr(DynamoHandler, name, _HANDLERS[name](self, original))
        try:
            yield self
        finally:
            for name, original in saved.items():
                setattr(DynamoHandler, name, original)


def _size_of(handler: Any, table: str, key: dict[str, Any]) -> int:
    try:
        item = handler.dynamodb_backend.get_item(table, key)
    except Exception:  # a missing table or a malformed key: the request fails on its own
        return 0
    return item_size(item.attrs) if item is not None else 0


def _write(meter: DynamoMeter, op: str, original: Any) -> Any:
    def wrapped(handler: Any) -> Any:
        body = handler.body
        table = body["TableName"]
        key = body.get("Key")
        if key is None:  # PutItem: the key is in the item
            table_obj = handler.dynamodb_backend.get_table(table)
            key = {k: body["Item"][k] for k in table_obj.table_key_attrs if k in body["Item"]}
        before = _size_of(handler, table, key)
        failed = True
        try:
            out = original(handler)
            failed = False
            return out
        finally:
            after = _size_of(handler, table, key) if not failed else before
            meter.record(DynamoCall(op, _kind(key), before=before, after=after, failed=failed))

    return wrapped


#: A read that asks for its consumed capacity is the benchmark's own (the handlers never ask):
#: it is left out of the bill. The benchmark adds these parameters to its reads.
OWN_READ = {"ReturnConsumedCapacity": "TOTAL"}


def _get_item(meter: DynamoMeter, original: Any) -> Any:
    def wrapped(handler: Any) -> Any:
        body = handler.body
        if all(body.get(name) == value for name, value in OWN_READ.items()):
            return original(handler)
        size = _size_of(handler, body["TableName"], body["Key"])
        meter.record(
            DynamoCall(
                "GetItem",
                _kind(body["Key"]),
                size=size,
                consistent=bool(body.get("ConsistentRead", False)),
            )
        )
        return original(handler)

    return wrapped


def _batch_get_item(meter: DynamoMeter, original: Any) -> Any:
    def wrapped(handler: Any) -> Any:
        for table, request in (handler.body.get("RequestItems") or {}).items():
            for key in request.get("Keys", []):
                meter.record(
                    DynamoCall(
                        "BatchGetItem",
                        _kind(key),
                        size=_size_of(handler, table, key),
                        consistent=bool(request.get("ConsistentRead", False)),
                    )
                )
        return original(handler)

    return wrapped


_HANDLERS: dict[str, Callable[[DynamoMeter, Any], Any]] = {
    "get_item": _get_item,
    "batch_get_item": _batch_get_item,
    "put_item": lambda m, o: _write(m, "PutItem", o),
    "update_item": lambda m, o: _write(m, "UpdateItem", o),
    "delete_item": lambda m, o: _write(m, "DeleteItem", o),
}


def file_sink(path: str) -> Callable[[DynamoCall], None]:
    """A sink that appends each record to ``path`` as a JSON line (the moto process's)."""
    lock = threading.Lock()

    def sink(call: DynamoCall) -> None:
        line = json.dumps(asdict(call)) + "\n"
        with lock, open(path, "a", encoding="utf-8") as f:
            f.write(line)

    return sink


def read_records(path: str) -> list[DynamoCall]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [DynamoCall(**json.loads(line)) for line in f if line.strip()]
