"""The moto-backed AWS of the functional tests, built from template.yaml, with every post to a
connection captured message by message (moto's own post_to_connection concatenates them).

Handlers are invoked the way Lambda invokes them: ``infra.lambda_runtime`` loads the code named
by ``template.yaml`` and calls it with a JSON round-tripped event and a context.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import boto3

from infra import template as tpl
from infra.containers import CapturedPost
from infra.lambda_runtime import LambdaFunction

TABLE = "kiddolingo-test-sessions"
BUCKET = "kiddolingo-test-audio"


@dataclass
class PostRecorder:
    """Captures PostToConnection calls; connections in ``gone`` answer 410 like API Gateway."""

    posts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    gone: set[str] = field(default_factory=set)
    sizes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, params: dict[str, Any], **kwargs: Any) -> Any:
        connection_id = params["url_path"].rsplit("/", 1)[-1]
        from urllib.parse import unquote

        connection_id = unquote(connection_id)
        if connection_id in self.gone:
            return CapturedPost(410), {
                "Error": {"Code": "GoneException", "Message": ""},
                "ResponseMetadata": {"HTTPStatusCode": 410},
            }
        body = params["body"]
        data = body if isinstance(body, bytes) else bytes(body)
        with self.lock:
            self.sizes.append(len(data))
            self.posts[connection_id].append(json.loads(data))
        return CapturedPost(200), {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def events(self, connection_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.posts[connection_id])

    def types(self, connection_id: str) -> list[str]:
        return [e["type"] for e in self.events(connection_id)]

    def clear(self) -> None:
        with self.lock:
            self.posts.clear()
            self.sizes.clear()


class Stack:
    """The three handlers over one moto account, plus inspection helpers."""

    def __init__(self, recorder: PostRecorder) -> None:
        self.recorder = recorder
        specs = tpl.functions({"TABLE_NAME": TABLE, "BUCKET_NAME": BUCKET})
        self.functions = {route: LambdaFunction(spec) for route, spec in specs.items()}
        self.ddb = boto3.client("dynamodb")
        self.s3 = boto3.client("s3")

    def invoke(self, route: str, event: dict[str, Any]) -> dict[str, Any]:
        result = self.functions[route].invoke(event)
        if result.error:
            raise AssertionError(f"{route} handler failed: {result.error}")
        return result.payload or {}

    def session_item(self, session_id: str) -> dict[str, Any] | None:
        from kiddolingo.store import from_item

        item = self.ddb.get_item(
            TableName=TABLE, Key={"pk": {"S": f"session#{session_id}"}}, ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def connection_item(self, connection_id: str) -> dict[str, Any] | None:
        from kiddolingo.store import from_item

        item = self.ddb.get_item(
            TableName=TABLE, Key={"pk": {"S": f"conn#{connection_id}"}}, ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def audio_keys(self) -> list[str]:
        out = self.s3.list_objects_v2(Bucket=BUCKET)
        return [o["Key"] for o in out.get("Contents", [])]


def create_resources() -> None:
    tpl.create_resources(boto3.client("dynamodb"), boto3.client("s3"), TABLE, BUCKET)
