"""``$connect``: authenticate, create or resume a session, map the connection to it.

It cannot post (API Gateway refuses posts before the handshake completes): the
first server message, ``session.created``, goes out with the reply to the client's first event.
"""

from __future__ import annotations

import json
from typing import Any

from kiddolingo.coldstart import long_lived

# What the container loads once: no collector passes meanwhile, frozen after in Lambda.
with long_lived():
    from kiddolingo import aws, lambda_entry, service
    from kiddolingo.auth import AuthError, authenticate, check_resume
    from kiddolingo.settings import Settings

    logger = lambda_entry.function_logger("kiddolingo-connect")


# The event carries the token (a header, the query or a subprotocol): never logged whole.
@lambda_entry.connection_handler(logger)
def lambda_handler(ws: lambda_entry.APIGatewayWebSocketEvent, settings: Settings) -> dict[str, Any]:
    connection_id = ws.request_context.connection_id
    query = ws.query_string_parameters or {}
    try:
        auth = authenticate(ws.headers, query, settings)
        learner = auth.claims.learner_id if auth.claims else "anonymous"
        result = service.connect(
            aws.session_store(settings),
            settings,
            connection_id,
            learner_id=learner,
            session_id=(query.get("session_id") or None),
            check_owner=lambda owner: check_resume(auth.claims, owner),
            role=auth.claims.role if auth.claims else "learner",
        )
    except AuthError as exc:
        logger.info("connect refused", extra={"status": exc.status, "code": exc.code})
        return exc.to_response()
    if result.status != 200:
        logger.info("connect refused", extra={"status": result.status, "code": result.code})
        error = {"code": result.code, "message": result.message}
        return {
            "statusCode": result.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": error}),
        }
    logger.info("connected", extra={"session_id": result.session_id})
    response: dict[str, Any] = {"statusCode": 200}
    if auth.subprotocol:
        # Browsers require one offered subprotocol to be echoed; never a token (kiddolingo.auth).
        response["headers"] = {"Sec-WebSocket-Protocol": auth.subprotocol}
    return response
