"""The local API Gateway (infra/apigw/) against API Gateway's documented behaviour.

Driven with the stub handlers of tests/support/stub_handlers (never the real ones), over real
sockets: a ``websockets`` client on one side, a boto3 ``apigatewaymanagementapi`` client on the
other, like the real handlers use.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from infra.apigw.events import request_time
from infra.apigw.routes import parse_route_selection, select_route
from infra.apigw.server import LocalGateway
from infra.lambda_runtime import FunctionSpec, LambdaFunction, merged_environment
from tests.support.stub_handlers import specs

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
ID_RE = re.compile(r"^[A-Za-z0-9_-]{15}=$")
TIME_RE = re.compile(
    r"^\d\d/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d\d:\d\d:\d\d \+0000$"
)

# The fields of API Gateway's WebSocket Lambda proxy events (developer guide, and the events it
# actually sends, e.g. Powertools' tests/events/apiGatewayWebSocketApi*.json).
COMMON_CONTEXT = {
    "routeKey", "eventType", "extendedRequestId", "requestTime", "messageDirection", "stage",
    "connectedAt", "requestTimeEpoch", "identity", "requestId", "domainName", "connectionId",
    "apiId",
}  # fmt: skip
DOCUMENTED = {
    "CONNECT": (
        {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"},
        COMMON_CONTEXT,
    ),
    "MESSAGE": ({"requestContext", "body", "isBase64Encoded"}, COMMON_CONTEXT | {"messageId"}),
    "DISCONNECT": (
        {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"},
        COMMON_CONTEXT | {"disconnectStatusCode", "disconnectReason"},
    ),
}


def _sample(name: str) -> dict[str, Any] | None:
    path = EVENTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _gateway(**kwargs: Any) -> LocalGateway:
    kwargs.setdefault("stage", "test")
    return LocalGateway(specs(), port=0, environment_overrides=FAKE_AWS, **kwargs)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    web = tmp_path_factory.mktemp("web")
    (web / "index.html").write_text("<!doctype html><title>stub page</title>")
    (web / "app.js").write_text("export const x = 1;\n")
    gateway = _gateway(web_dir=web, page_config={"demo": True, "authRequired": False})
    with gateway.running():
        yield gateway


def _connect(gw: LocalGateway, path: str = "", **kwargs: Any) -> ClientConnection:
    return connect(gw.ws_url + path.lstrip("/"), open_timeout=5, **kwargs)


def _recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def _echo_event(ws: ClientConnection, body: str) -> dict[str, Any]:
    ws.send(body)
    reply = _recv_json(ws)
    assert reply["type"] == "stub.event", reply
    return reply["event"]


def _management(gw: LocalGateway, with_stage: bool = True):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "apigatewaymanagementapi",
        endpoint_url=gw.management_url if with_stage else gw.url.rstrip("/"),
        config=Config(retries={"max_attempts": 1}),
    )


def _closed_code(ws: ClientConnection, timeout: float = 5.0, send: Any = None) -> int:
    """The close code the server sent (1006 if none), after sending ``send`` if given."""
    with pytest.raises(ConnectionClosed) as info:
        if send is not None:
            ws.send(send)
        while True:
            ws.recv(timeout=timeout)
    rcvd = info.value.rcvd
    return rcvd.code if rcvd is not None else 1006


def _disconnect_of(gw: LocalGateway, connection_id: str, timeout: float = 5.0) -> dict[str, Any]:
    found = gw.wait_for_invocations(
        "$disconnect",
        timeout=timeout,
        predicate=lambda inv: inv.connection_id == connection_id,
    )
    return found[0].event


def _assert_shape(event: dict[str, Any], event_type: str, sample: dict[str, Any] | None) -> None:
    top, context = DOCUMENTED[event_type]
    assert top <= set(event), set(event)
    assert context <= set(event["requestContext"])
    assert event["isBase64Encoded"] is False
    if sample is not None:
        # Same keys as the sample events of events/ (query string keys only when there is a query).
        optional = {"queryStringParameters", "multiValueQueryStringParameters"}
        assert set(event) - optional == set(sample) - optional
        assert set(event["requestContext"]) == set(sample["requestContext"])
        for key, value in sample["requestContext"].items():
            assert type(event["requestContext"][key]) is type(value), key
        assert set(event["requestContext"]["identity"]) <= {"sourceIp", "userAgent"}


# --------------------------------------------------------------------------------------------
# Event shapes
# --------------------------------------------------------------------------------------------
def test_connect_event_has_api_gateway_shape(gw: LocalGateway) -> None:
    with _connect(
        gw,
        "/realtime?model=gpt-realtime&session_id=s1&x=1&x=2",
        additional_headers={"Authorization": "Bearer abc", "Origin": "http://127.0.0.1"},
        subprotocols=["kiddolingo.v1"],
    ) as ws:
        ws.send("{}")
        ws.recv(timeout=5)
        inv = gw.wait_for_invocations(
            "$connect", predicate=lambda i: "x" in (i.event.get("queryStringParameters") or {})
        )[-1]
    event = inv.event
    _assert_shape(event, "CONNECT", _sample("connect.json"))
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$connect"
    assert ctx["eventType"] == "CONNECT"
    assert ctx["messageDirection"] == "IN"
    assert ctx["stage"] == "test"
    assert ctx["apiId"] == gw.api_id
    assert ctx["domainName"] == f"127.0.0.1:{gw.port}"
    assert ID_RE.match(ctx["connectionId"]) and ID_RE.match(ctx["requestId"])
    assert ctx["extendedRequestId"] == ctx["requestId"]
    assert TIME_RE.match(ctx["requestTime"])
    assert abs(ctx["requestTimeEpoch"] - time.time() * 1000) < 60_000
    assert ctx["connectedAt"] <= ctx["requestTimeEpoch"]
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userAgent"].startswith("Python/")
    headers = event["headers"]
    assert headers["Host"] == f"127.0.0.1:{gw.port}"
    assert headers["Authorization"] == "Bearer abc"
    assert headers["Sec-WebSocket-Protocol"] == "kiddolingo.v1"
    assert headers["Sec-WebSocket-Version"] == "13" and headers["Sec-WebSocket-Key"]
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert "Connection" not in headers and "Upgrade" not in headers
    assert event["multiValueHeaders"]["Host"] == [headers["Host"]]
    assert set(event["multiValueHeaders"]) == set(headers)
    assert event["queryStringParameters"] == {
        "model": "gpt-realtime", "session_id": "s1", "x": "2"
    }  # fmt: skip
    assert event["multiValueQueryStringParameters"]["x"] == ["1", "2"]


def test_connect_without_query_has_no_query_parameters(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        event = _echo_event(ws, json.dumps({"type": "x"}))
        cid = event["requestContext"]["connectionId"]
    connect_event = gw.wait_for_invocations("$connect", predicate=lambda i: i.connection_id == cid)[
        0
    ].event
    assert "queryStringParameters" not in connect_event
    assert "multiValueQueryStringParameters" not in connect_event


def test_message_event_has_api_gateway_shape(gw: LocalGateway) -> None:
    body = json.dumps({"type": "input_audio_buffer.append", "event_id": "audio#1", "audio": ""})
    with _connect(gw, "?session_id=abc") as ws:
        event = _echo_event(ws, body)
        second = _echo_event(ws, body)
    _assert_shape(event, "MESSAGE", _sample("input_audio_buffer_append.json"))
    ctx = event["requestContext"]
    assert event["body"] == body
    assert ctx["routeKey"] == "$default" and ctx["eventType"] == "MESSAGE"
    assert ID_RE.match(ctx["messageId"])
    assert "headers" not in event and "queryStringParameters" not in event
    # Per connection: same connection id / connectedAt; per message: new ids.
    ctx2 = second["requestContext"]
    assert ctx2["connectionId"] == ctx["connectionId"]
    assert ctx2["connectedAt"] == ctx["connectedAt"]
    assert ctx2["messageId"] != ctx["messageId"] and ctx2["requestId"] != ctx["requestId"]


def test_disconnect_event_has_api_gateway_shape(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        ws.close()  # a normal close (1000)
        event = _disconnect_of(gw, cid)
        _assert_shape(event, "DISCONNECT", _sample("disconnect.json"))
        ctx = event["requestContext"]
        assert ctx["routeKey"] == "$disconnect" and ctx["eventType"] == "DISCONNECT"
        assert ctx["disconnectStatusCode"] == 1000
        assert event["headers"] == {
            "Host": f"127.0.0.1:{gw.port}", "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""
        }  # fmt: skip
        assert event["multiValueHeaders"] == {k: [v] for k, v in event["headers"].items()}
        assert "body" not in event


def test_close_without_status_reports_1005(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        # A close frame without a status code, as some clients send.
        with ws.protocol_mutex:
            ws.protocol.send_close()
            ws.send_data()
        ctx = _disconnect_of(gw, cid)["requestContext"]
        assert ctx["disconnectStatusCode"] == 1005
        assert ctx["disconnectReason"] == "Client-side close frame status not set"
        ws.close()


def test_client_close_code_and_reason_are_reported(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        ws.close(code=4001, reason="bye now")
        ctx = _disconnect_of(gw, cid)["requestContext"]
        assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (4001, "bye now")


# --------------------------------------------------------------------------------------------
# Routing, invocation, concurrency
# --------------------------------------------------------------------------------------------
def test_route_selection_parsing() -> None:
    routes = {"$connect": 1, "$default": 1, "ping": 1, "$disconnect": 1}
    path = parse_route_selection("$request.body.type")
    assert path == ["type"]
    assert parse_route_selection("${request.body.a.b}") == ["a", "b"]
    assert parse_route_selection("$request.header.x") is None
    assert select_route(path, '{"type": "ping"}', routes) == "ping"
    assert select_route(path, '{"type": "session.update"}', routes) == "$default"
    assert select_route(path, '{"type": "$connect"}', routes) == "$default"
    assert select_route(path, '{"type": 5}', routes) == "$default"
    assert select_route(path, "not json", routes) == "$default"
    assert select_route(path, "[1, 2]", routes) == "$default"
    # nested deeper than Python's parser goes (a 32 KB frame holds 16,000 levels)
    assert select_route(path, "[" * 16_000 + "]" * 16_000, routes) == "$default"
    assert select_route(path, '{"type": "x"}', {"ping": 1}) is None


def test_messages_are_routed_on_request_body_type(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        ws.send(json.dumps({"type": "ping"}))
        reply = _recv_json(ws)
        assert reply["type"] == "stub.custom" and reply["routeKey"] == "ping"
        for body in (json.dumps({"type": "session.update"}), "plain text", '{"type": 7}'):
            assert _echo_event(ws, body)["requestContext"]["routeKey"] == "$default"


def test_invocations_of_one_connection_run_concurrently(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        started = time.monotonic()
        for n in (1, 2, 3):
            ws.send(json.dumps({"stub": "sleep", "seconds": 0.6, "n": n}))
        replies = [_recv_json(ws) for _ in range(3)]
        elapsed = time.monotonic() - started
    assert sorted(r["n"] for r in replies) == [1, 2, 3]
    # They overlap: each began before any other ended.
    assert max(r["started"] for r in replies) < min(r["ended"] for r in replies)
    assert elapsed < 1.5, elapsed


def test_handler_module_is_loaded_once_per_function(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        ws.send(json.dumps({"stub": "count"}))
        first = _recv_json(ws)
        ws.send(json.dumps({"stub": "count"}))
        second = _recv_json(ws)
        ws.send(json.dumps({"type": "ping"}))
        custom = _recv_json(ws)
    assert second["count"] == first["count"] + 1
    assert second["loaded_at"] == first["loaded_at"]
    # Every function's app.py lives in its own namespace.
    assert first["module"] != custom["module"]
    assert first["module"].endswith(".app") and custom["module"].endswith(".app")
    assert 0 < first["remaining_ms"] <= 10_000
    assert first["function_name"].endswith("StubDefault")


def test_failing_integration_sends_internal_server_error(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        ws.send(json.dumps({"stub": "raise"}))
        reply = _recv_json(ws)
        assert reply["message"] == "Internal server error"
        assert ID_RE.match(reply["connectionId"]) and ID_RE.match(reply["requestId"])
        # The connection lives on.
        assert _echo_event(ws, "{}")["requestContext"]["eventType"] == "MESSAGE"


# --------------------------------------------------------------------------------------------
# $connect: refusal and subprotocol
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [401, 403, 400])
def test_connect_status_refuses_the_handshake(gw: LocalGateway, status: int) -> None:
    marker = f"refuse-{status}-{time.monotonic_ns()}"
    with pytest.raises(InvalidStatus) as info:
        _connect(gw, f"?status={status}&marker={marker}")
    assert info.value.response.status_code == status
    refused = gw.wait_for_invocations(
        "$connect",
        predicate=lambda i: (i.event.get("queryStringParameters") or {}).get("marker") == marker,
    )[0]
    time.sleep(0.2)
    # A refused connection never existed: no $disconnect, and the Management API says Gone.
    assert not [
        i for i in gw.invocations
        if i.route_key == "$disconnect" and i.connection_id == refused.connection_id
    ]  # fmt: skip
    api = _management(gw)
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId=refused.connection_id)


def test_connect_handler_error_refuses_with_500(gw: LocalGateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        _connect(gw, "?raise=1")
    assert info.value.response.status_code == 500


def test_handshake_waits_for_the_connect_handler(gw: LocalGateway) -> None:
    started = time.monotonic()
    with _connect(gw, "?sleep=0.4") as ws:
        assert time.monotonic() - started >= 0.4
        ws.send("{}")
        ws.recv(timeout=5)


def test_subprotocol_returned_by_connect_is_used(gw: LocalGateway) -> None:
    with _connect(
        gw, "?protocol=kiddolingo.v1", subprotocols=["kiddolingo.v1", "bearer.x.y.z"]
    ) as ws:
        assert ws.subprotocol == "kiddolingo.v1"
    with _connect(
        gw, "?protocol=bearer.x.y.z", subprotocols=["kiddolingo.v1", "bearer.x.y.z"]
    ) as ws:
        assert ws.subprotocol == "bearer.x.y.z"
    # $connect returned none: the handshake carries none (a browser then fails, as with AWS).
    with _connect(gw, subprotocols=["kiddolingo.v1"]) as ws:
        assert ws.subprotocol is None


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------
def test_frame_over_32kb_closes_1009(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        ok = json.dumps({"pad": "x" * (32 * 1024 - 20)})
        assert len(ok) <= 32 * 1024
        assert _echo_event(ws, ok)["body"] == ok
        assert _closed_code(ws, send="x" * (32 * 1024 + 1)) == 1009
        ctx = _disconnect_of(gw, cid)["requestContext"]
        assert ctx["disconnectStatusCode"] == 1009


def test_fragmented_message_up_to_128kb_is_accepted_and_over_closes_1009(
    gw: LocalGateway,
) -> None:
    with _connect(gw) as ws:
        # Four 30 KB frames: one 120 KB message.
        parts = ['{"pad": "', *["y" * (30 * 1024)] * 4, '"}']
        ws.send(iter(parts))
        event = _recv_json(ws)["event"]
        assert len(event["body"]) == sum(map(len, parts))
        cid = event["requestContext"]["connectionId"]
        # 150 KB in 30 KB frames (the server may close while we still send)
        assert _closed_code(ws, send=iter(["z" * (30 * 1024)] * 5)) == 1009
        assert _disconnect_of(gw, cid)["requestContext"]["disconnectStatusCode"] == 1009


def test_binary_frame_closes_1003(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        assert _closed_code(ws, send=b"\x00\x01binary audio") == 1003
        assert _disconnect_of(gw, cid)["requestContext"]["disconnectStatusCode"] == 1003


def test_idle_timeout_closes_and_invokes_disconnect() -> None:
    gateway = _gateway(idle_timeout_s=1.5)
    with gateway.running(), _connect(gateway) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        # Client messages keep it alive (the replies are read later)...
        for _ in range(7):
            time.sleep(0.3)
            ws.send("{}")
        # ...silence does not.
        started = time.monotonic()
        assert _closed_code(ws) == 1001
        assert time.monotonic() - started < 4.0
        ctx = _disconnect_of(gateway, cid)["requestContext"]
        assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (1001, "Going away")
        # Open for the 2.1 s of activity plus (about) the idle timeout.
        assert ctx["requestTimeEpoch"] - ctx["connectedAt"] >= 2100 + 1200


def test_maximum_connection_duration() -> None:
    gateway = _gateway(max_connection_s=1.0)
    with gateway.running(), _connect(gateway) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                _echo_event(ws, "{}")
                time.sleep(0.1)
        assert time.monotonic() - started < 2.0
        assert _disconnect_of(gateway, cid)["requestContext"]["disconnectStatusCode"] == 1001


def test_drop_is_an_abrupt_disconnect(gw: LocalGateway) -> None:
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        assert gw.drop(cid)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is None  # no close frame: the TCP connection just ended
        assert _disconnect_of(gw, cid)["requestContext"]["disconnectStatusCode"] == 1006
        assert not gw.drop(cid)


# --------------------------------------------------------------------------------------------
# Management API through boto3
# --------------------------------------------------------------------------------------------
def test_management_api_round_trip(gw: LocalGateway) -> None:
    api = _management(gw)
    with _connect(gw, additional_headers={"User-Agent": "kiddo-test/1.0"}) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        payload = json.dumps({"type": "session.created", "session": {"id": "sess_1"}, "e": "😊"})
        api.post_to_connection(ConnectionId=cid, Data=payload.encode())
        assert ws.recv(timeout=5) == payload  # exactly that text, one frame
        info = api.get_connection(ConnectionId=cid)
        assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "kiddo-test/1.0"}
        assert info["ConnectedAt"] <= info["LastActiveAt"]
        assert abs(info["ConnectedAt"].timestamp() - time.time()) < 60
        # Without the stage prefix too.
        _management(gw, with_stage=False).post_to_connection(ConnectionId=cid, Data=b'{"n":2}')
        assert ws.recv(timeout=5) == '{"n":2}'
        with pytest.raises(api.exceptions.PayloadTooLargeException):
            api.post_to_connection(ConnectionId=cid, Data=b"x" * (128 * 1024 + 1))
        api.delete_connection(ConnectionId=cid)
        assert _closed_code(ws) == 1000
    ctx = _disconnect_of(gw, cid)["requestContext"]
    assert ctx["disconnectStatusCode"] == 1000
    with pytest.raises(api.exceptions.GoneException):
        api.post_to_connection(ConnectionId=cid, Data=b"{}")
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId=cid)
    with pytest.raises(api.exceptions.GoneException):
        api.delete_connection(ConnectionId=cid)


def test_gone_for_unknown_connection_has_api_gateway_error_shape(gw: LocalGateway) -> None:
    request = urllib.request.Request(
        f"{gw.management_url}/@connections/AAAAAAAAAAAAAAA=", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 410
    assert info.value.headers["x-amzn-ErrorType"] == "GoneException"
    assert json.loads(info.value.read()) == {"message": None}


def test_posts_from_many_threads_arrive_whole(gw: LocalGateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    api = _management(gw)
    with _connect(gw) as ws:
        cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
        messages = [json.dumps({"n": n, "pad": "p" * 20000}) for n in range(40)]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda m: api.post_to_connection(ConnectionId=cid, Data=m.encode()), messages
                )
            )
        received = [ws.recv(timeout=5) for _ in messages]
    assert sorted(received) == sorted(messages)


# --------------------------------------------------------------------------------------------
# The page and its config
# --------------------------------------------------------------------------------------------
def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serves_page_static_files_and_config(gw: LocalGateway) -> None:
    status, _, body = _get(gw.url)
    assert status == 200 and b"stub page" in body
    status, headers, body = _get(gw.url + "app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, _, body = _get(gw.url + "config.json")
    assert status == 200
    assert json.loads(body) == {
        "demo": True, "authRequired": False, "wsUrl": f"ws://127.0.0.1:{gw.port}/"
    }  # fmt: skip
    assert _get(gw.url + "missing.js")[0] == 404
    assert _get(gw.url + "%2e%2e/%2e%2e/etc/passwd")[0] == 404


# --------------------------------------------------------------------------------------------
# The Lambda runtime stand-in
# --------------------------------------------------------------------------------------------
def test_lambda_function_result_and_error_shapes(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "def lambda_handler(event, context):\n"
        "    if event.get('fail'):\n"
        "        raise ValueError('nope')\n"
        "    return {'statusCode': 401, 'headers': {'Sec-WebSocket-Protocol': 'p'},\n"
        "            'arn': context.invoked_function_arn}\n"
    )
    fn = LambdaFunction(FunctionSpec("Fn", tmp_path, timeout_s=3))
    ok = fn.invoke({"a": 1})
    assert ok.ok and ok.status_code() == 401 and ok.headers() == {"Sec-WebSocket-Protocol": "p"}
    assert ok.payload["arn"].endswith(":function:kiddolingo-local-Fn")
    assert ok.init_duration_ms is not None
    bad = fn.invoke({"fail": True})
    assert bad.error is not None
    assert bad.error["errorType"] == "ValueError" and bad.error["errorMessage"] == "nope"
    assert bad.status_code() == 500 and bad.init_duration_ms is None


def test_merged_environment_skips_intrinsics_and_applies_overrides() -> None:
    a = FunctionSpec("A", Path("."), environment={"TABLE_NAME": {"Ref": "T"}, "X": "1", "N": 3})
    b = FunctionSpec("B", Path("."), environment={"X": "1", "Y": "2"})
    env = merged_environment({"$connect": a, "$default": b}, {"TABLE_NAME": "t", "Y": "3"})
    assert env == {"TABLE_NAME": "t", "X": "1", "N": "3", "Y": "3"}


def test_request_time_format() -> None:
    assert request_time(0) == "01/Jan/1970:00:00:00 +0000"
    assert request_time(1731324924.5) == "11/Nov/2024:11:35:24 +0000"


def test_stopping_the_gateway_closes_connections_with_1001_and_disconnects() -> None:
    gateway = _gateway()
    gateway.start_background()
    try:
        with _connect(gateway) as ws:
            cid = _echo_event(ws, "{}")["requestContext"]["connectionId"]
            started = time.monotonic()
            gateway.stop_background()
            assert time.monotonic() - started < 5
            assert _closed_code(ws) == 1001
    finally:
        gateway.stop_background()
    disconnects = [i for i in gateway.invocations if i.route_key == "$disconnect"]
    assert [i.connection_id for i in disconnects] == [cid]
    assert disconnects[0].event["requestContext"]["disconnectStatusCode"] == 1001
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()


def test_stopping_drops_queued_messages_and_waits_for_running_ones() -> None:
    """A backlog at shutdown: the message already running finishes before ``stop`` returns
    (the stores behind it stop next), the ones still queued never start, ``$disconnect`` runs."""
    from infra.apigw.invocations import STOPPING

    gateway = _gateway(max_workers=1)
    gateway.start_background()
    try:
        with _connect(gateway) as ws:
            ws.send(json.dumps({"stub": "sleep", "seconds": 0.8, "n": 1}))
            deadline = time.monotonic() + 5
            while not any(i.route_key == "$default" for i in gateway.invocations):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for n in (2, 3, 4):  # queued behind the one worker
                ws.send(json.dumps({"stub": "sleep", "seconds": 0.8, "n": n}))
            time.sleep(0.1)
            started = time.monotonic()
            gateway.stop_background()
            stopped = time.time()
            assert time.monotonic() - started < 3  # not the three queued sleeps
    finally:
        gateway.stop_background()
    messages = [i for i in gateway.invocations if i.route_key == "$default"]
    assert len(messages) == 4
    first, queued = messages[0], messages[1:]
    # It ran to its end (its post then found the connection closed: 410), before stop returned.
    assert first.result is not None and first.result.duration_ms >= 800
    assert (first.result.error or {}).get("errorType") != STOPPING
    assert first.finished_at is not None and first.finished_at <= stopped
    assert [i.result.error["errorType"] for i in queued if i.result] == [STOPPING] * 3
    assert [i.route_key for i in gateway.invocations].count("$disconnect") == 1


def test_moto_lock_is_granted_first_come_first_served() -> None:
    """The local stack serializes moto with a fair lock: a waiting request is never overtaken
    (an unfair lock let audio appends starve for seconds under load and be skipped as lost)."""
    import threading

    from infra.moto_process import FifoLock

    lock = FifoLock()
    order: list[int] = []
    threads = []
    lock.__enter__()
    for n in range(8):
        thread = threading.Thread(target=lambda n=n: _take(lock, order, n))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while len(lock._waiters) <= n and time.monotonic() < deadline:  # queued in this order
            time.sleep(0.001)
    assert len(lock._waiters) == 8
    lock.__exit__()
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))
    with lock:  # free again, and taken at once
        assert not lock._waiters


def _take(lock: Any, order: list[int], n: int) -> None:
    with lock:
        order.append(n)
        time.sleep(0.002)  # hold it for a moment
