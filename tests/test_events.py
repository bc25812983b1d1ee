"""events/*.json: the exact API Gateway WebSocket shape, one $default event per client event."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydantic
import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)

from infra.apigw import events
from infra.apigw.events import Peer
from tests.support.events import (
    API_ID,
    CLIENT_EVENT_FILES,
    CONNECTION_ID,
    DOMAIN_NAME,
    EVENTS_DIR,
    SESSION_ID,
    STAGE,
    client_event,
    connect_event,
    disconnect_event,
    load_event,
    message_event,
)

MAX_FRAME_BYTES = 32 * 1024  # API Gateway WebSocket frame limit
EVENT_NAMES = sorted(p.stem for p in EVENTS_DIR.glob("*.json"))
MESSAGE_NAMES = sorted(CLIENT_EVENT_FILES.values())
DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def test_the_expected_files_exist():
    assert set(EVENT_NAMES) == {"connect", "disconnect", *MESSAGE_NAMES}


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_file_is_json_with_the_common_shape(name):
    raw = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    event = load_event(name)
    assert event == raw
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    for key in (
        "routeKey",
        "eventType",
        "extendedRequestId",
        "requestTime",
        "messageDirection",
        "stage",
        "connectedAt",
        "requestTimeEpoch",
        "identity",
        "requestId",
        "domainName",
        "connectionId",
        "apiId",
    ):
        assert key in ctx, f"{name}: requestContext.{key} missing"
    assert ctx["messageDirection"] == "IN"
    assert ctx["connectionId"] == CONNECTION_ID
    assert ctx["domainName"] == DOMAIN_NAME == f"{API_ID}.execute-api.us-east-1.amazonaws.com"
    assert ctx["stage"] == STAGE == "prod"
    assert ctx["apiId"] == API_ID
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", ctx["identity"]["sourceIp"])
    assert ctx["connectedAt"] <= ctx["requestTimeEpoch"]
    when = datetime.fromtimestamp(ctx["requestTimeEpoch"] / 1000, tz=UTC)
    assert ctx["requestTime"] == when.strftime("%d/%b/%Y:%H:%M:%S +0000")
    # The Powertools data class reads it the way the handlers will.
    wrapped = APIGatewayWebSocketEvent(event)
    assert wrapped.request_context.connection_id == CONNECTION_ID
    assert wrapped.request_context.route_key == ctx["routeKey"]


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_the_builder_makes_every_file_exactly(name):
    """Each sample is what ``infra.apigw.events`` builds for its connection, byte for byte.

    The local gateway, the benchmark and the tests build their events there, so the files
    ``sam local invoke`` reads have the very shape the handlers get everywhere else.
    """
    text = (EVENTS_DIR / f"{name}.json").read_text()
    event = json.loads(text)
    ctx = event["requestContext"]
    peer = Peer.of(event)
    stamps = {"received_ms": ctx["requestTimeEpoch"], "request_id": ctx["requestId"]}
    if ctx["eventType"] == "CONNECT":
        headers = event["headers"]
        query = [
            (key, value)
            for key, values in event.get("multiValueQueryStringParameters", {}).items()
            for value in values
        ]
        built = events.connect_event(
            peer,
            headers.items(),
            query,
            port=int(headers["X-Forwarded-Port"]),
            proto=headers["X-Forwarded-Proto"],
            trace=headers["X-Amzn-Trace-Id"],
            **stamps,
        )
    elif ctx["eventType"] == "DISCONNECT":
        code, reason = ctx["disconnectStatusCode"], ctx["disconnectReason"]
        built = events.disconnect_event(peer, code, reason, **stamps)
    else:
        built = events.message_event(
            peer, event["body"], route_key=ctx["routeKey"], message_id=ctx["messageId"], **stamps
        )
    assert json.dumps(built, indent=2) + "\n" == text


def test_the_builder_passes_on_what_api_gateway_passes_on():
    peer = Peer.of(load_event("connect"))
    sent = [("Host", DOMAIN_NAME), ("Connection", "Upgrade"), ("Upgrade", "websocket")]
    sent += [("X-Forwarded-For", "10.0.0.1"), ("Accept", "a"), ("accept", "b")]
    event = events.connect_event(peer, sent, [("k", "1"), ("k", "2")], port=8080)
    assert event["multiValueHeaders"]["Accept"] == ["a", "b"]
    assert event["headers"]["Accept"] == "b"
    assert {"Connection", "Upgrade"}.isdisjoint(event["headers"])
    assert event["headers"]["X-Forwarded-For"] == peer.source_ip
    assert (event["headers"]["X-Forwarded-Port"], event["headers"]["X-Forwarded-Proto"]) == (
        "8080",
        "http",
    )
    assert event["queryStringParameters"] == {"k": "2"}
    assert event["multiValueQueryStringParameters"] == {"k": ["1", "2"]}
    ctx = event["requestContext"]
    assert ctx["requestTimeEpoch"] >= ctx["connectedAt"] == peer.connected_at_ms
    APIGatewayWebSocketConnectEventModel.model_validate(event)


def test_load_event_returns_fresh_copies_and_merges_overrides():
    first = load_event("disconnect")
    first["requestContext"]["connectionId"] = "mutated"
    assert load_event("disconnect")["requestContext"]["connectionId"] == CONNECTION_ID
    merged = load_event("disconnect", requestContext={"connectionId": "c2"}, body=None)
    assert merged["requestContext"]["connectionId"] == "c2"
    assert merged["requestContext"]["eventType"] == "DISCONNECT"
    assert merged["body"] is None
    assert load_event("connect.json")["requestContext"]["routeKey"] == "$connect"
    with pytest.raises(FileNotFoundError):
        load_event("nope")


def test_connect_event_carries_a_dev_token_the_local_secret_accepts():
    """``sam local invoke`` with ``AUTH_SECRET`` set to the public dev secret lets it in."""
    from infra.token import LOCAL_DEV_AUTH_SECRET
    from kiddolingo.auth import verify_token

    token = load_event("connect")["headers"]["Authorization"].removeprefix("Bearer ")
    assert len(LOCAL_DEV_AUTH_SECRET.encode()) >= 32  # RFC 7518: no shorter HS256 key
    assert verify_token(token, LOCAL_DEV_AUTH_SECRET).learner_id == "dev-learner"


def test_connect_event_shape():
    event = load_event("connect")
    APIGatewayWebSocketConnectEventModel.model_validate(event)
    ctx = event["requestContext"]
    assert (ctx["routeKey"], ctx["eventType"]) == ("$connect", "CONNECT")
    assert "messageId" not in ctx and "body" not in event
    assert ctx["identity"]["userAgent"]
    headers = event["headers"]
    for name in (
        "Host",
        "Origin",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Authorization",
    ):
        assert headers.get(name), name
    assert headers["Host"] == DOMAIN_NAME
    assert headers["Sec-WebSocket-Version"] == "13"
    assert len(base64.b64decode(headers["Sec-WebSocket-Key"])) == 16
    assert headers["Authorization"].startswith("Bearer ")
    assert event["multiValueHeaders"] == {k: [v] for k, v in headers.items()}
    assert event["queryStringParameters"] == {"session_id": SESSION_ID}
    assert event["multiValueQueryStringParameters"] == {"session_id": [SESSION_ID]}


def test_disconnect_event_shape():
    event = load_event("disconnect")
    APIGatewayWebSocketDisconnectEventModel.model_validate(event)
    ctx = event["requestContext"]
    assert (ctx["routeKey"], ctx["eventType"]) == ("$disconnect", "DISCONNECT")
    assert isinstance(ctx["disconnectStatusCode"], int)
    assert isinstance(ctx["disconnectReason"], str)


@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_message_events(name):
    event = load_event(name)
    APIGatewayWebSocketMessageEventModel.model_validate(event)
    ctx = event["requestContext"]
    assert (ctx["routeKey"], ctx["eventType"]) == ("$default", "MESSAGE")
    assert ctx["messageId"]
    assert "headers" not in event  # API Gateway sends no headers with messages
    assert isinstance(event["body"], str)
    assert len(event["body"].encode()) < MAX_FRAME_BYTES
    body = json.loads(event["body"])
    assert body["type"].replace(".", "_") == name
    assert isinstance(body.get("event_id"), str) and body["event_id"]


def test_message_ids_and_request_ids_are_unique():
    contexts = [load_event(n)["requestContext"] for n in MESSAGE_NAMES]
    assert len({c["messageId"] for c in contexts}) == len(contexts)
    assert len({c["requestId"] for c in contexts}) == len(contexts)
    assert len({load_event(n)["requestContext"]["connectedAt"] for n in EVENT_NAMES}) == 1


def test_every_client_event_type_has_a_file():
    from kiddolingo.protocol import CLIENT_EVENT_TYPES

    assert set(CLIENT_EVENT_FILES) == set(CLIENT_EVENT_TYPES)


@pytest.mark.skipif(not DESIGN.is_file(), reason="DESIGN.md lives outside the repository")
def test_every_client_event_type_of_the_design_has_a_file():
    text = DESIGN.read_text()
    section = text.split("Client → server", 1)[1].split("Server → client", 1)[0]
    types = set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.MULTILINE))
    assert types and types == set(CLIENT_EVENT_FILES)


@pytest.mark.parametrize("event_type", sorted(CLIENT_EVENT_FILES))
def test_bodies_are_valid_realtime_ga_client_events(event_type):
    from openai.types.realtime import RealtimeClientEvent

    body = client_event(event_type)
    parsed = pydantic.TypeAdapter(RealtimeClientEvent).validate_python(body)
    assert parsed.type == event_type


@pytest.mark.parametrize("event_type", sorted(CLIENT_EVENT_FILES))
def test_bodies_parse_with_our_protocol(event_type):
    from kiddolingo.protocol import parse_client_event

    event = parse_client_event(load_event(CLIENT_EVENT_FILES[event_type])["body"])
    assert event.type == event_type


def test_session_update_is_manual_turns_at_24khz():
    session = client_event("session.update")["session"]
    audio_in = session["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"] is None
    assert session["audio"]["output"]["voice"] == "nova"
    assert session["tutor"]["target_language"]
    assert 6 <= session["tutor"]["learner_age"] <= 12


def test_append_is_100ms_of_a_220hz_tone():
    body = client_event("input_audio_buffer.append")
    assert body["event_id"] == "audio#1"
    pcm = base64.b64decode(body["audio"], validate=True)
    assert len(pcm) == 24000 // 10 * 2  # 100 ms of 16-bit mono at 24 kHz
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(samples**2)))
    assert -30 < rms_dbfs < -6
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 24000 / len(samples)
    assert peak_hz == pytest.approx(220, abs=10)


def test_truncate_fields():
    body = client_event("conversation.item.truncate")
    assert body["item_id"] and body["content_index"] == 0 and body["audio_end_ms"] > 0


@pytest.mark.parametrize("event_type", ["input_audio_buffer.commit", "response.create"])
def test_field_less_events(event_type):
    assert set(client_event(event_type)) == {"type", "event_id"}


# --------------------------------------------------------------------------- the helpers


def test_message_event_helper():
    event = message_event({"type": "response.create"}, connection_id="c9", request_time_epoch=5)
    APIGatewayWebSocketMessageEventModel.model_validate(event)
    ctx = event["requestContext"]
    assert ctx["connectionId"] == "c9"
    assert ctx["requestTimeEpoch"] == 5
    assert json.loads(event["body"]) == {"type": "response.create"}
    other = message_event("not json")
    assert other["body"] == "not json"
    assert other["requestContext"]["messageId"] != ctx["messageId"]
    assert message_event("{}", message_id="m1")["requestContext"]["messageId"] == "m1"


def test_connect_event_helper():
    event = connect_event()
    APIGatewayWebSocketConnectEventModel.model_validate(event)
    assert "queryStringParameters" not in event  # no query string: a new session
    resumed = connect_event(query={"session_id": "s1"}, connection_id="c2")
    assert resumed["queryStringParameters"] == {"session_id": "s1"}
    assert resumed["multiValueQueryStringParameters"] == {"session_id": ["s1"]}
    assert resumed["requestContext"]["connectionId"] == "c2"
    anon = connect_event(headers={"authorization": None, "Sec-WebSocket-Protocol": "a, b"})
    assert "Authorization" not in anon["headers"]
    assert "Authorization" not in anon["multiValueHeaders"]
    assert anon["headers"]["Sec-WebSocket-Protocol"] == "a, b"
    assert anon["multiValueHeaders"]["Sec-WebSocket-Protocol"] == ["a, b"]


def test_disconnect_event_helper():
    event = disconnect_event("c3", status_code=1001, reason="Going away")
    APIGatewayWebSocketDisconnectEventModel.model_validate(event)
    ctx = event["requestContext"]
    assert (ctx["connectionId"], ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (
        "c3",
        1001,
        "Going away",
    )
