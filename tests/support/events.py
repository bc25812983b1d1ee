"""API Gateway WebSocket events for the tests, built from the files in ``events/``.

``sam local invoke -e events/<name>.json`` and the tests share these files, so the handlers are
always exercised with the exact shape API Gateway sends (see ``events/connect.json``).

* :func:`load_event` - one file, deep-copied, with optional (deep-merged) overrides;
* :func:`connect_event`, :func:`message_event`, :func:`disconnect_event` - the three routes,
  for any connection, query string, headers or body.

The ``Authorization`` header of ``events/connect.json`` carries a long-lived token for learner
:data:`DEV_LEARNER_ID` signed with the public local-dev secret
(``infra.token.LOCAL_DEV_AUTH_SECRET``): set ``AUTH_SECRET`` to that to accept it.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"

#: Every client event type of the wire contract (``protocol.CLIENT_EVENT_TYPES``) and the file
#: holding its sample ``$default`` event.
CLIENT_EVENT_FILES: dict[str, str] = {
    "session.update": "session_update",
    "input_audio_buffer.append": "input_audio_buffer_append",
    "input_audio_buffer.commit": "input_audio_buffer_commit",
    "input_audio_buffer.clear": "input_audio_buffer_clear",
    "conversation.item.truncate": "conversation_item_truncate",
    "response.create": "response_create",
    "response.cancel": "response_cancel",
}


@cache
def _raw(name: str) -> dict[str, Any]:
    stem = name[:-5] if name.endswith(".json") else name
    path = EVENTS_DIR / f"{stem}.json"
    if not path.is_file():
        known = sorted(p.stem for p in EVENTS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no event file {path} (known: {', '.join(known)})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _merge(target: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of ``events/<name>.json``.

    Keyword overrides replace top-level keys; a mapping given for a key that holds a mapping is
    merged recursively, e.g. ``load_event("disconnect", requestContext={"connectionId": "c2"})``.
    """
    return _merge(copy.deepcopy(_raw(name)), overrides)


_CONNECT = _raw("connect")
CONNECTION_ID: str = _CONNECT["requestContext"]["connectionId"]
DOMAIN_NAME: str = _CONNECT["requestContext"]["domainName"]
STAGE: str = _CONNECT["requestContext"]["stage"]
API_ID: str = _CONNECT["requestContext"]["apiId"]
SESSION_ID: str = _CONNECT["queryStringParameters"]["session_id"]
#: The bearer token in ``events/connect.json`` (learner :data:`DEV_LEARNER_ID`, expires 2100).
DEV_TOKEN: str = _CONNECT["headers"]["Authorization"].split(" ", 1)[1]
DEV_LEARNER_ID = "dev-learner"

_ids = itertools.count(1)


def _request_id(prefix: str) -> str:
    # API Gateway ids look like 16 base64 characters ending in "=".
    return f"{prefix}{next(_ids):014d}="[-16:]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _request_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def _stamp(
    event: dict[str, Any], connection_id: str, request_time_epoch: int | None
) -> dict[str, Any]:
    context = event["requestContext"]
    epoch = _now_ms() if request_time_epoch is None else int(request_time_epoch)
    request_id = _request_id("R")
    context.update(
        connectionId=connection_id,
        requestTimeEpoch=epoch,
        requestTime=_request_time(epoch),
        requestId=request_id,
        extendedRequestId=request_id,
    )
    context["connectedAt"] = min(context["connectedAt"], epoch)
    return event


def connect_event(
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str | None] | None = None,
    connection_id: str = CONNECTION_ID,
    *,
    request_time_epoch: int | None = None,
) -> dict[str, Any]:
    """A ``$connect`` event from ``events/connect.json``.

    ``query`` is the whole query string (None = no query string: API Gateway then omits the
    query keys, and the connect handler starts a new session; pass ``{"session_id": ...}`` to
    resume). ``headers`` are set over the file's headers, case-insensitively; a None value
    removes a header (``{"Authorization": None}`` for an anonymous request).
    """
    event = load_event("connect")
    if query:
        event["queryStringParameters"] = dict(query)
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    else:
        event.pop("queryStringParameters", None)
        event.pop("multiValueQueryStringParameters", None)
    for name, value in (headers or {}).items():
        for existing in [k for k in event["headers"] if k.lower() == name.lower()]:
            del event["headers"][existing]
            del event["multiValueHeaders"][existing]
        if value is not None:
            event["headers"][name] = value
            event["multiValueHeaders"][name] = [value]
    _stamp(event, connection_id, request_time_epoch)
    event["requestContext"]["connectedAt"] = event["requestContext"]["requestTimeEpoch"]
    return event


def message_event(
    body: Mapping[str, Any] | str,
    connection_id: str = CONNECTION_ID,
    request_time_epoch: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A ``$default`` MESSAGE event carrying ``body`` (a client event, or raw text as sent).

    ``message_id`` defaults to a fresh unique id, ``request_time_epoch`` (ms) to now.
    """
    event = load_event("response_create")
    event["body"] = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    _stamp(event, connection_id, request_time_epoch)
    event["requestContext"]["messageId"] = message_id or _request_id("M")
    return event


def disconnect_event(
    connection_id: str = CONNECTION_ID,
    *,
    status_code: int = 1005,
    reason: str = "Client-side close frame status not set",
    request_time_epoch: int | None = None,
) -> dict[str, Any]:
    """A ``$disconnect`` event from ``events/disconnect.json``."""
    event = load_event("disconnect")
    _stamp(event, connection_id, request_time_epoch)
    event["requestContext"].update(disconnectStatusCode=status_code, disconnectReason=reason)
    return event


def client_event(event_type: str) -> dict[str, Any]:
    """The parsed body of the sample ``$default`` event for ``event_type``."""
    body: dict[str, Any] = json.loads(load_event(CLIENT_EVENT_FILES[event_type])["body"])
    return body
