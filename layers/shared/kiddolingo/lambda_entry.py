"""What the handlers of a connection's ``$connect`` and ``$disconnect`` share.

Each function has its own Powertools ``Logger``, and the shared package logs through it. Each
reads its event as API Gateway's WebSocket event, with the settings, keys its logs by the
connection, never logs the whole event (the connection's headers may carry a token, even when
``POWERTOOLS_LOGGER_LOG_EVENT`` says to log events), and is traced when tracing is on.

The audio-chunk handler does not use this module: it keeps the Powertools data classes off its
cold start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.data_classes.api_gateway_websocket_event import (
    APIGatewayWebSocketEvent,
)

from kiddolingo import tracing
from kiddolingo.settings import Settings, get_settings

__all__ = ["APIGatewayWebSocketEvent", "connection_handler", "function_logger"]

Response = dict[str, Any]
LambdaHandler = Callable[[dict[str, Any], Any], Response]


def function_logger(service: str) -> Logger:
    """The function's Logger; the ``kiddolingo`` module loggers imported so far take its JSON
    format, level and correlation keys, so call it after the handler module's imports."""
    logger = Logger(service=service)
    copy_config_to_registered_loggers(source_logger=logger, include={"kiddolingo"})
    return logger


def connection_handler(
    logger: Logger,
) -> Callable[[Callable[[APIGatewayWebSocketEvent, Settings], Response]], LambdaHandler]:
    """Make ``handle(ws, settings)`` the Lambda handler of a connection route, traced under the
    logger's service name, as the module doc says."""

    def wrap(handle: Callable[[APIGatewayWebSocketEvent, Settings], Response]) -> LambdaHandler:
        @logger.inject_lambda_context(clear_state=True, log_event=False)
        def lambda_handler(event: dict[str, Any], context: Any) -> Response:
            ws = APIGatewayWebSocketEvent(event)
            logger.append_keys(connection_id=ws.request_context.connection_id)
            return handle(ws, get_settings())

        return tracing.traced(lambda_handler, logger.service)

    return wrap
