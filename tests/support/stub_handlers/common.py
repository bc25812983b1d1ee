"""Shared by the stub handlers: post back through the Management API, like the real ones."""

from __future__ import annotations

import json
from typing import Any

import boto3


def endpoint_url(event: dict[str, Any]) -> str:
    ctx = event["requestContext"]
    return f"http://{ctx['domainName']}/{ctx['stage']}"


def post(event: dict[str, Any], message: Any, connection_id: str | None = None) -> None:
    # A session per call: boto3's default session is not thread-safe, and invocations overlap.
    client = boto3.session.Session().client(
        "apigatewaymanagementapi", endpoint_url=endpoint_url(event), region_name="us-east-1"
    )
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    client.post_to_connection(
        ConnectionId=connection_id or event["requestContext"]["connectionId"], Data=data
    )
