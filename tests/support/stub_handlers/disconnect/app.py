"""Stub $disconnect: nothing to do (the gateway records every invocation)."""


def lambda_handler(event, context):
    return {"statusCode": 200}
