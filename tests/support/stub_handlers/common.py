"""Shared by the stub handlers: post back through the Management API, like the real ones."""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def endpoint_url(event: dict[str, Any]) -> str:
    ctx = event["requestContext"]
    return f"http://{ctx['domainName']}/{ctx['stage']}"


def _client(endpoint: str) -> Any:
    # One client per endpoint, created under a lock (boto3 sessions are not thread-safe, its
    # clients are), as a warm Lambda container would keep it.
    with _lock:
        client = _clients.get(endpoint)
        if client is None:
            client = _clients[endpoint] = boto3.session.Session().client(
                "apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1"
            )
        return client


def post(event: dict[str, Any], message: Any, connection_id: str | None = None) -> None:
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    _client(endpoint_url(event)).post_to_connection(
        ConnectionId=connection_id or event["requestContext"]["connectionId"], Data=data
    )
