"""``$disconnect``: forget the connection; the session stays (TTL) for a resume.

A response still being produced for this connection sees the connection item gone at its next
check and stops posting.
"""

from __future__ import annotations

from typing import Any

from kiddolingo.coldstart import long_lived

# What the container loads once: no collector passes meanwhile, frozen after in Lambda.
with long_lived():
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
    from aws_lambda_powertools.utilities.data_classes.api_gateway_websocket_event import (
        APIGatewayWebSocketEvent,
    )

    from kiddolingo import aws, tracing
    from kiddolingo.messenger import ApiGatewayMessenger
    from kiddolingo.service import Tutor
    from kiddolingo.settings import get_settings

    logger = Logger(service="kiddolingo-disconnect")
    # The shared package logs through module loggers: give them this Logger's JSON format, level
    # and correlation keys.
    copy_config_to_registered_loggers(source_logger=logger, include={"kiddolingo"})


# Never the whole event, even when POWERTOOLS_LOGGER_LOG_EVENT says so: its headers are those
# of the connection, where a token may be.
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ws = APIGatewayWebSocketEvent(event)
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
    logger.info(
        "disconnected",
        extra={"connection_id": connection_id, "reason": ws.request_context.disconnect_reason},
    )
    return {"statusCode": 200}


lambda_handler = tracing.traced(lambda_handler, "kiddolingo-disconnect")
