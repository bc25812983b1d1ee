"""The API Gateway Management API at ``/{stage}/@connections/{id}`` (and ``/@connections/{id}``).

``POST`` sends the body to the client as one text frame (413 PayloadTooLargeException over the
post limit), ``GET`` returns ``connectedAt``/``identity``/``lastActiveAt``, ``DELETE`` closes the
connection (204); an unknown or closed connection gets 410 ``GoneException``. SigV4 is not
checked.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from infra.apigw.connection import Connection

log = logging.getLogger("kiddolingo.local.gateway")

MANAGEMENT_PATH = re.compile(r"^(?:/(?P<stage>[^/@][^/]*))?/@connections/(?P<id>[^/]+)/?$")


async def management(
    request: web.Request,
    conn: Connection | None,
    *,
    max_post_bytes: int,
    close: Callable[[Connection], None],
) -> web.Response:
    """Answer one Management API request about ``conn`` (None: unknown); ``close`` ends it."""
    if request.method not in ("POST", "GET", "DELETE"):
        return json_response({"message": "Method Not Allowed"}, 405)
    if conn is None or conn.closing or conn.ws.closed:
        if request.method == "POST":
            await request.read()
        return _gone()
    if request.method == "GET":
        return web.json_response(
            {
                "connectedAt": _iso(conn.connected_at),
                "identity": {"sourceIp": conn.source_ip, "userAgent": conn.user_agent or ""},
                "lastActiveAt": _iso(conn.last_active_at),
            }
        )
    if request.method == "DELETE":
        close(conn)
        return web.Response(status=204)
    return await _post(request, conn, max_post_bytes)


async def _post(request: web.Request, conn: Connection, max_post_bytes: int) -> web.Response:
    data = await request.read()
    if len(data) > max_post_bytes:
        return json_response(
            {"message": f"Message too long. Max size is {max_post_bytes} bytes"},
            413,
            "PayloadTooLargeException",
        )
    try:
        try:
            await conn.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await conn.ws.send_bytes(data)
    except Exception as exc:  # closed under us
        log.debug("post to %s failed: %s", conn.connection_id, exc)
        return _gone()
    conn.frames_sent += 1
    return web.Response(status=200)


def json_response(body: Any, status: int, error_type: str | None = None) -> web.Response:
    """A JSON answer with the request id (and error type) headers the AWS SDKs read."""
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return web.json_response(body, status=status, headers=headers)


def _gone() -> web.Response:
    return json_response({"message": None}, 410, "GoneException")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
