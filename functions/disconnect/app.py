"""``$disconnect``: forget the connection; the session stays (TTL) for a resume.

A response still being produced for this connection sees the connection item gone at its next
check and stops posting.
"""

from __future__ import annotations

from typing import Any

from kiddolingo.coldstart import long_lived

# What the container loads once: no collector passes meanwhile, frozen after in Lambda.
with long_lived():
    from kiddolingo import aws
    from kiddolingo.lambda_entry import (
        APIGatewayWebSocketEvent,
        connection_handler,
        function_logger,
    )
    from kiddolingo.messenger import ApiGatewayMessenger
    from kiddolingo.service import Tutor
    from kiddolingo.settings import get_settings

    logger = function_logger("kiddolingo-disconnect")


# The event's headers are those of the connection, where a token may be: never logged whole.
@connection_handler(logger, "kiddolingo-disconnect")
def lambda_handler(ws: APIGatewayWebSocketEvent) -> dict[str, Any]:
    connection_id = ws.request_context.connection_id
    settings = get_settings()
    # Disconnect never posts: the messenger only carries the connection id.
    tutor = Tutor(
        settings,
        aws.session_store(settings),
        aws.chunk_store(settings),
        ApiGatewayMessenger(None, connection_id),
    )
    tutor.disconnect()
    logger.info("disconnected", extra={"reason": ws.request_context.disconnect_reason})
    return {"statusCode": 200}
