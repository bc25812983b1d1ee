"""``$disconnect``: forget the connection; the session stays (TTL) for a resume.

A response still being produced for this connection sees the connection item gone at its next
check and stops posting.
"""

from __future__ import annotations

from typing import Any

from kiddolingo.coldstart import long_lived

# What the container loads once: no collector passes meanwhile, frozen after in Lambda.
with long_lived():
    from kiddolingo import aws, lambda_entry
    from kiddolingo.messenger import ApiGatewayMessenger
    from kiddolingo.service import Tutor
    from kiddolingo.settings import Settings

    logger = lambda_entry.function_logger("kiddolingo-disconnect")


# The event's headers are those of the connection, where a token may be: never logged whole.
@lambda_entry.connection_handler(logger)
def lambda_handler(ws: lambda_entry.APIGatewayWebSocketEvent, settings: Settings) -> dict[str, Any]:
    # Disconnect never posts: the messenger only carries the connection id.
    messenger = ApiGatewayMessenger(None, ws.request_context.connection_id)
    tutor = Tutor(settings, aws.session_store(settings), aws.chunk_store(settings), messenger)
    tutor.disconnect()
    logger.info("disconnected", extra={"reason": ws.request_context.disconnect_reason})
    return {"statusCode": 200}
