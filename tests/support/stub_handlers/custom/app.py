"""Stub for a custom route: posts ``{"type": "stub.custom", "routeKey": …}`` back."""

from tests.support.stub_handlers.common import post


def lambda_handler(event, context):
    post(
        event,
        {
            "type": "stub.custom",
            "routeKey": event["requestContext"]["routeKey"],
            "module": __name__,
        },
    )
    return {"statusCode": 200}
