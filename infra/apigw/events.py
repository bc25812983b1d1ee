"""API Gateway WebSocket events, as API Gateway hands them to a Lambda proxy integration.

The one builder of these events: the local gateway (:mod:`infra.apigw.server`), the benchmark
(``infra.bench``) and the tests (``tests/support/events.py``) all build them here, and the sample
files in ``events/`` (for ``sam local invoke``) are checked against it by ``tests/test_events.py``.

Each event has ``requestContext`` (``routeKey``, ``eventType``, ``extendedRequestId``,
``requestTime``, ``messageDirection``, ``stage``, ``connectedAt``, ``requestTimeEpoch``,
``identity``, ``requestId``, ``domainName``, ``connectionId``, ``apiId``, plus ``messageId`` on
MESSAGE and ``disconnectStatusCode`` / ``disconnectReason`` on DISCONNECT) and
``isBase64Encoded``; CONNECT adds ``headers`` / ``multiValueHeaders`` (and the query string
parameters when there is a query), DISCONNECT the four fixed headers API Gateway sends, MESSAGE
the ``body``. The keys come in the order API Gateway writes them.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Hop-by-hop headers API Gateway does not pass to the $connect integration.
_DROPPED_HEADERS = {"connection", "upgrade"}

#: ``disconnectReason`` texts, as API Gateway words them where we know it.
REASON_NO_STATUS = "Client-side close frame status not set"
REASON_NORMAL = "Connection Closed Normally"
REASON_GOING_AWAY = "Going away"


def aws_id() -> str:
    """An id in API Gateway's style: 16 URL-safe base64 characters ending in ``=``."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def request_time(epoch_s: float) -> str:
    """API Gateway's ``requestTime``: CLF format, English month names, UTC."""
    t = time.gmtime(epoch_s)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def trace_id(epoch_s: float | None = None) -> str:
    """An ``X-Amzn-Trace-Id`` header value for a request received at ``epoch_s`` (now)."""
    epoch = int(time.time() if epoch_s is None else epoch_s)
    return f"Root=1-{epoch:08x}-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Peer:
    """What API Gateway knows of one connection and stamps on every event of it."""

    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str | None
    domain_name: str
    stage: str
    api_id: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Peer:
        """The connection an existing event was stamped for (a sample file's, say)."""
        ctx = event["requestContext"]
        return cls(
            connection_id=ctx["connectionId"],
            connected_at_ms=ctx["connectedAt"],
            source_ip=ctx["identity"]["sourceIp"],
            user_agent=ctx["identity"].get("userAgent"),
            domain_name=ctx["domainName"],
            stage=ctx["stage"],
            api_id=ctx["apiId"],
        )


def request_context(
    peer: Peer,
    route_key: str,
    event_type: str,
    *,
    received_ms: int | None = None,
    request_id: str | None = None,
    message_id: str | None = None,
    disconnect: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """The ``requestContext`` of one event, stamped at ``received_ms`` (epoch ms; now)."""
    now = time.time() if received_ms is None else received_ms / 1000
    request_id = request_id or aws_id()
    ctx: dict[str, Any] = {"routeKey": route_key}
    if message_id is not None:
        ctx["messageId"] = message_id
    if disconnect is not None:
        ctx["disconnectStatusCode"] = disconnect[0]
    ctx["eventType"] = event_type
    ctx["extendedRequestId"] = request_id
    ctx["requestTime"] = request_time(now)
    ctx["messageDirection"] = "IN"
    if disconnect is not None:
        ctx["disconnectReason"] = disconnect[1]
    identity: dict[str, Any] = {"sourceIp": peer.source_ip}
    if peer.user_agent:
        identity["userAgent"] = peer.user_agent
    ctx.update(
        {
            "stage": peer.stage,
            "connectedAt": peer.connected_at_ms,
            "requestTimeEpoch": int(now * 1000) if received_ms is None else received_ms,
            "identity": identity,
            "requestId": request_id,
            "domainName": peer.domain_name,
            "connectionId": peer.connection_id,
            "apiId": peer.api_id,
        }
    )
    return ctx


def connect_event(
    peer: Peer,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]] = (),
    *,
    port: int,
    proto: str = "http",
    trace: str | None = None,
    received_ms: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``$connect`` event of a handshake with these request ``headers`` and ``query`` pairs.

    API Gateway drops the hop-by-hop headers and the client's own ``X-Forwarded-*``, and adds a
    trace id and the ``X-Forwarded-*`` of its own front door (``port``, ``proto``).
    """
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in _DROPPED_HEADERS or lower.startswith("x-forwarded-"):
            continue
        name = names.setdefault(lower, name)
        single[name] = value
        multi.setdefault(name, []).append(value)
    added = {
        "X-Amzn-Trace-Id": trace or trace_id(),
        "X-Forwarded-For": peer.source_ip,
        "X-Forwarded-Port": str(port),
        "X-Forwarded-Proto": proto,
    }
    for name, value in added.items():
        single[name] = value
        multi[name] = [value]
    event: dict[str, Any] = {"headers": single, "multiValueHeaders": multi}
    event.update(_query_parameters(query))
    event["requestContext"] = request_context(
        peer, "$connect", "CONNECT", received_ms=received_ms, request_id=request_id
    )
    event["isBase64Encoded"] = False
    return event


def _query_parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    # Without a query string API Gateway sends neither key (not even empty ones).
    single: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value
        many.setdefault(key, []).append(value)
    if not single:
        return {}
    return {"queryStringParameters": single, "multiValueQueryStringParameters": many}


def message_event(
    peer: Peer,
    body: str,
    *,
    route_key: str = "$default",
    message_id: str | None = None,
    received_ms: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The MESSAGE event of one text message ``body``, received at ``received_ms`` (now)."""
    ctx = request_context(
        peer,
        route_key,
        "MESSAGE",
        received_ms=received_ms,
        request_id=request_id,
        message_id=message_id or aws_id(),
    )
    return {"requestContext": ctx, "body": body, "isBase64Encoded": False}


def disconnect_event(
    peer: Peer,
    code: int,
    reason: str,
    *,
    received_ms: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The ``$disconnect`` event of a connection that ended with ``code`` and ``reason``."""
    # API Gateway sends these four headers on $disconnect, with these (empty) values.
    headers = {"Host": peer.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    ctx = request_context(
        peer,
        "$disconnect",
        "DISCONNECT",
        received_ms=received_ms,
        request_id=request_id,
        disconnect=(code, reason),
    )
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": ctx,
        "isBase64Encoded": False,
    }
