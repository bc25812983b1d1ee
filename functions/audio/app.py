"""``$default``: every client event of the Realtime subset (``kiddolingo.protocol``).

This is the audio-chunk path: it imports no ``openai`` and no Powertools data classes (the
provider SDK loads only when a turn runs), to stay inside the cold-start budget (300 ms of imports).
"""

from __future__ import annotations

import os
from typing import Any

from kiddolingo.coldstart import long_lived

# What the container loads once: no collector passes meanwhile, frozen after in Lambda.
with long_lived():
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from kiddolingo import aws, tracing
    from kiddolingo.messenger import ConnectionGoneError
    from kiddolingo.service import Tutor
    from kiddolingo.settings import get_settings

    logger = Logger(service="kiddolingo-audio")
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        # The INIT of a SnapStart snapshot (template.yaml): run once when a version is
        # published, never on a child's request. Loading the provider SDK here makes every
        # container's first turn as quick as its next ones; an on-demand INIT skips it, to keep
        # the SDK off the cold start of the audio-chunk path.
        from kiddolingo.providers import preload_providers

        preload_providers(get_settings())
    # The shared package logs through module loggers: give them this Logger's JSON format, level
    # and correlation keys.
    copy_config_to_registered_loggers(source_logger=logger, include={"kiddolingo"})


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ctx = event["requestContext"]
    connection_id = ctx["connectionId"]
    settings = get_settings()
    logger.append_keys(connection_id=connection_id, session_id=None)
    tutor = Tutor(
        settings,
        aws.session_store(settings),
        aws.chunk_store(settings),
        aws.messenger(ctx["domainName"], ctx["stage"], connection_id),
        correlate=lambda session_id: logger.append_keys(session_id=session_id),
    )
    try:
        # The gateway's receipt stamp orders the connection's un-numbered events.
        tutor.handle_message(event.get("body"), ctx.get("requestTimeEpoch"))
    except ConnectionGoneError:
        # 410: this connection is gone; clean up *this* connection, nobody else's.
        logger.info("connection gone", extra={"connection_id": connection_id})
        tutor.disconnect()
    return {"statusCode": 200}


lambda_handler = tracing.traced(lambda_handler, "kiddolingo-audio")
