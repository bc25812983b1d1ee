"""Stub $default: acts on the message's ``stub`` field.

* ``"echo"`` (default): posts ``{"type": "stub.event", "event": <the event>}`` back;
* ``"sleep"``: sleeps ``seconds`` then posts ``{"type": "stub.slept", "started", "ended"}``;
* ``"raise"``: raises (the gateway then sends API Gateway's internal-error message);
* ``"count"``: posts how many times this module handled a message (one warm module).
"""

import json
import threading
import time

from tests.support.stub_handlers.common import post

LOADED_AT = time.time()
_lock = threading.Lock()
COUNT = 0


def lambda_handler(event, context):
    global COUNT
    with _lock:
        COUNT += 1
        count = COUNT
    try:
        message = json.loads(event["body"])
    except ValueError:
        message = {}
    action = message.get("stub", "echo") if isinstance(message, dict) else "echo"
    if action == "sleep":
        started = time.time()
        time.sleep(float(message.get("seconds", 0.5)))
        post(
            event,
            {"type": "stub.slept", "started": started, "ended": time.time(), "n": message.get("n")},
        )
    elif action == "raise":
        raise RuntimeError("stub failure")
    elif action == "count":
        post(
            event,
            {
                "type": "stub.count",
                "count": count,
                "loaded_at": LOADED_AT,
                "module": __name__,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "function_name": context.function_name,
            },
        )
    else:
        post(event, {"type": "stub.event", "event": event})
    return {"statusCode": 200}
