"""DynamoDB's attribute-value JSON, both ways, for the values this package stores.

boto3's ``TypeSerializer`` would do, but importing boto3 pulls in s3transfer and costs ~80 ms
on every cold start of the audio-chunk path (the whole path has 300 ms for its
imports), so the
handlers talk to botocore directly and use this instead. Supported: None, bool, int, Decimal,
str, bytes, list/tuple, dict, and sets of str/int/bytes. Floats are refused (DynamoDB has no
binary floats): callers store them as strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def serialize(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"B": bytes(value)}
    if isinstance(value, dict):
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    if isinstance(value, set | frozenset) and value:
        first = next(iter(value))
        if isinstance(first, str):
            return {"SS": sorted(value)}
        if isinstance(first, bytes):
            return {"BS": sorted(value)}
        return {"NS": sorted(str(v) for v in value)}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB: {value!r}")


def _number(text: str) -> int | float:
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)


def deserialize(attr: dict[str, Any]) -> Any:
    ((kind, value),) = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return _number(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "B":
        return bytes(value)
    if kind == "M":
        return {k: deserialize(v) for k, v in value.items()}
    if kind == "L":
        return [deserialize(v) for v in value]
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {_number(v) for v in value}
    if kind == "BS":
        return {bytes(v) for v in value}
    raise TypeError(f"unknown DynamoDB type {kind!r}")
