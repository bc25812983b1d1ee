"""Stub $connect: ``?status=401`` refuses, ``?protocol=x`` echoes subprotocol x, ``?sleep=s``."""

import time

INVOCATIONS = 0


def lambda_handler(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    query = event.get("queryStringParameters") or {}
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if query.get("raise"):
        raise RuntimeError("stub connect failure")
    status = int(query.get("status", "200"))
    response = {"statusCode": status}
    if "protocol" in query:
        response["headers"] = {"Sec-WebSocket-Protocol": query["protocol"]}
    return response
