"""Posting server events to a WebSocket connection through the Management API.

Every posted message stays under API Gateway's 32 KB frame limit: the turn cuts
audio into deltas well below it, and anything larger is refused here rather than closing the
child's socket. A 410 becomes ``ConnectionGoneError`` so the caller stops work for *that*
connection (and cleans up that connection, never the sender's by mistake).

The turn imports ``ConnectionGoneError`` from here, so botocore loads only when a post is made:
the pure core never pulls in the AWS SDK.
"""

from __future__ import annotations

from typing import Any, Protocol

from .protocol import MAX_EVENT_BYTES, encode_json
from .turn.ports import ConnectionGoneError


class MessageTooLargeError(ValueError):
    pass


class Messenger(Protocol):
    connection_id: str

    def post(self, event: dict[str, Any]) -> None: ...


def endpoint_from_event(domain_name: str, stage: str) -> str:
    """The Management API endpoint of the API that sent the event.

    Loopback hosts (the local stack in ``infra/``) speak plain HTTP; API Gateway speaks HTTPS.
    """
    host = domain_name.split(":")[0]
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{domain_name}/{stage}"


class ApiGatewayMessenger:
    def __init__(self, client: Any, connection_id: str) -> None:
        self.client = client
        self.connection_id = connection_id

    def post(self, event: dict[str, Any]) -> None:
        data = encode_json(event)
        if len(data) > MAX_EVENT_BYTES:
            raise MessageTooLargeError(
                f"{event.get('type')} is {len(data)} bytes; posts must stay under {MAX_EVENT_BYTES}"
            )
        from botocore.exceptions import ClientError  # loaded already by the client that posts

        try:
            self.client.post_to_connection(ConnectionId=self.connection_id, Data=data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "GoneException" or status == 410:
                raise ConnectionGoneError(self.connection_id) from None
            raise
