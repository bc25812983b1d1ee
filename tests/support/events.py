"""API Gateway WebSocket events for the tests: the sample connection of ``events/``, built with
``infra.apigw.events`` (the builder the local gateway and the benchmark use).

``sam local invoke -e events/<name>.json`` and the tests share the sample files, and
``tests/test_events.py`` proves the builder makes each of them exactly, so the handlers are always
exercised with the shape API Gateway sends (see ``events/connect.json``).

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
from typing import Any

from infra.apigw import events
from infra.apigw.events import REASON_NO_STATUS
from infra.apigw.samples import EVENTS_DIR, sample_event, sample_headers, sample_peer

__all__ = ["EVENTS_DIR"]

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
    return _merge(sample_event(name), overrides)


_CONNECT = sample_event("connect")
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


def _now_ms(request_time_epoch: int | None) -> int:
    return int(time.time() * 1000) if request_time_epoch is None else int(request_time_epoch)


def connect_event(
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str | None] | None = None,
    connection_id: str = CONNECTION_ID,
    *,
    request_time_epoch: int | None = None,
) -> dict[str, Any]:
    """A ``$connect`` event of the sample connection, with the sample browser's headers.

    ``query`` is the whole query string (None = no query string: API Gateway then omits the
    query keys, and the connect handler starts a new session; pass ``{"session_id": ...}`` to
    resume). ``headers`` are set over the sample headers, case-insensitively; a None value
    removes a header (``{"Authorization": None}`` for an anonymous request).
    """
    changed = {name.lower() for name in headers or {}}
    sent = sample_headers(without=tuple(changed))
    sent += [(name, value) for name, value in (headers or {}).items() if value is not None]
    epoch = _now_ms(request_time_epoch)
    peer = sample_peer("connect", connection_id, connected_at_ms=epoch)
    return events.connect_event(
        peer,
        sent,
        (query or {}).items(),
        port=443,
        proto="https",
        received_ms=epoch,
        request_id=_request_id("R"),
    )


def message_event(
    body: Mapping[str, Any] | str,
    connection_id: str = CONNECTION_ID,
    request_time_epoch: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A ``$default`` MESSAGE event carrying ``body`` (a client event, or raw text as sent).

    ``message_id`` defaults to a fresh unique id, ``request_time_epoch`` (ms) to now.
    """
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return events.message_event(
        _peer("response_create", connection_id, request_time_epoch),
        text,
        message_id=message_id or _request_id("M"),
        received_ms=_now_ms(request_time_epoch),
        request_id=_request_id("R"),
    )


def disconnect_event(
    connection_id: str = CONNECTION_ID,
    *,
    status_code: int = 1005,
    reason: str = REASON_NO_STATUS,
    request_time_epoch: int | None = None,
) -> dict[str, Any]:
    """A ``$disconnect`` event of the sample connection."""
    return events.disconnect_event(
        _peer("disconnect", connection_id, request_time_epoch),
        status_code,
        reason,
        received_ms=_now_ms(request_time_epoch),
        request_id=_request_id("R"),
    )


def _peer(name: str, connection_id: str, request_time_epoch: int | None) -> events.Peer:
    # The sample connection opened before any event of it, however early a test stamps one.
    peer = sample_peer(name, connection_id)
    connected_at = min(peer.connected_at_ms, _now_ms(request_time_epoch))
    return sample_peer(name, connection_id, connected_at_ms=connected_at)


def client_event(event_type: str) -> dict[str, Any]:
    """The parsed body of the sample ``$default`` event for ``event_type``."""
    body: dict[str, Any] = json.loads(load_event(CLIENT_EVENT_FILES[event_type])["body"])
    return body
