"""Issue 6 §1 through the real ``$connect`` handler: who may open a session, who may resume one.

``tests/test_auth.py`` covers ``kiddolingo.auth`` function by function; here every case goes
through ``functions/connect/app.py`` under moto with ``AUTH_REQUIRED=true``, and the test looks
at what API Gateway would get back (status, body, the echoed subprotocol) and at what the
handler wrote to DynamoDB (a refused connection writes nothing).
"""

from __future__ import annotations

import json
import time

import boto3
import jwt
import pytest

from kiddolingo.auth import issue_token
from tests.support import aws_stack
from tests.support.events import connect_event, message_event

SECRET = "connect-auth-test-secret-long-enough-for-hs256"
OTHER = "an-attackers-guess-at-the-secret-for-hs256!!"


def _reset_settings() -> None:
    from kiddolingo.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def auth_stack(stack, monkeypatch):
    """The stack with authentication on and the token secret in AUTH_SECRET."""
    monkeypatch.setenv("AUTH_REQUIRED", "true")
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    _reset_settings()
    yield stack
    _reset_settings()


def connect(stack, *, conn: str = "c-auth=", query=None, headers=None) -> dict:
    # events/connect.json carries a dev token: every test states its own Authorization.
    hdrs = {"Authorization": None, **(headers or {})}
    return stack.invoke("$connect", connect_event(query=query, headers=hdrs, connection_id=conn))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def items(stack) -> list[str]:
    out = stack.ddb.scan(TableName=aws_stack.TABLE, ProjectionExpression="pk")
    return sorted(i["pk"]["S"] for i in out.get("Items", []))


def error_code(response: dict) -> str:
    return json.loads(response["body"])["error"]["code"]


def assert_refused(stack, response: dict, status: int, code: str, before: list[str]) -> None:
    assert response["statusCode"] == status, response
    assert error_code(response) == code
    assert items(stack) == before, "a refused $connect must not write anything"


# --------------------------------------------------------------------------- accepted


def test_valid_token_in_each_place(auth_stack) -> None:
    # Authorization header (server-side clients, the openai SDK)
    out = connect(auth_stack, conn="c-h=", headers=bearer(issue_token(SECRET, "ana")))
    assert out["statusCode"] == 200
    assert "headers" not in out  # no subprotocol offered: nothing to echo
    conn = auth_stack.connection_item("c-h=")
    assert conn["learner"] == "ana"
    assert auth_stack.session_item(conn["sid"])["learner"] == "ana"

    # ?token= (browsers cannot set headers on a WebSocket)
    out = connect(auth_stack, conn="c-q=", query={"token": issue_token(SECRET, "ben")})
    assert out["statusCode"] == 200
    assert auth_stack.connection_item("c-q=")["learner"] == "ben"

    # Sec-WebSocket-Protocol: the browser drops the socket unless an offered protocol is
    # echoed; the echo is the app protocol, never the token
    token = issue_token(SECRET, "cleo")
    out = connect(
        auth_stack,
        conn="c-p=",
        headers={"Sec-WebSocket-Protocol": f"kiddolingo.v1, bearer.{token}"},
    )
    assert out["statusCode"] == 200
    assert out["headers"] == {"Sec-WebSocket-Protocol": "kiddolingo.v1"}
    assert auth_stack.connection_item("c-p=")["learner"] == "cleo"

    # an accepted connection holds a conversation
    auth_stack.invoke(
        "$default", message_event({"type": "session.update", "session": {}}, connection_id="c-p=")
    )
    assert auth_stack.recorder.types("c-p=") == ["session.created", "session.updated"]


# --------------------------------------------------------------------------- refused (401)


def test_missing_expired_and_forged_tokens_are_401(auth_stack) -> None:
    before = items(auth_stack)
    assert_refused(auth_stack, connect(auth_stack), 401, "missing_token", before)
    # a subprotocol without a token is no better
    out = connect(auth_stack, headers={"Sec-WebSocket-Protocol": "kiddolingo.v1"})
    assert_refused(auth_stack, out, 401, "missing_token", before)

    expired = issue_token(SECRET, "ana", ttl_s=60, now=time.time() - 3600)
    assert_refused(
        auth_stack, connect(auth_stack, headers=bearer(expired)), 401, "token_expired", before
    )

    forged = {
        "wrong-secret": (issue_token(OTHER, "ana"), "invalid_signature"),
        "alg-none": (
            jwt.encode({"sub": "ana", "exp": int(time.time()) + 60}, "", algorithm="none"),
            "invalid_token",
        ),
        "tampered": (_tampered(issue_token(SECRET, "ana"), sub="ben"), "invalid_signature"),
        "garbage": ("not.a.jwt", "malformed_token"),
    }
    for name, (token, code) in forged.items():
        out = connect(auth_stack, headers=bearer(token))
        assert out["statusCode"] == 401, name
        assert error_code(out) == code, name
        # through the query string and the subprotocol too
        assert connect(auth_stack, query={"token": token})["statusCode"] == 401, name
        out = connect(auth_stack, headers={"Sec-WebSocket-Protocol": f"v1, bearer.{token}"})
        assert out["statusCode"] == 401, name
    assert items(auth_stack) == before

    # the header wins: a bad header token is refused even if the query holds a good one
    out = connect(
        auth_stack,
        headers=bearer(issue_token(OTHER, "ana")),
        query={"token": issue_token(SECRET, "ana")},
    )
    assert out["statusCode"] == 401
    assert items(auth_stack) == before


def _tampered(token: str, **claims) -> str:
    import base64

    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    body = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


# --------------------------------------------------------------------------- resume (403)


def test_resuming_another_learners_session_is_403(auth_stack) -> None:
    assert (
        connect(auth_stack, conn="c-ana=", headers=bearer(issue_token(SECRET, "ana")))["statusCode"]
        == 200
    )
    sid = auth_stack.connection_item("c-ana=")["sid"]
    before = items(auth_stack)
    out = connect(
        auth_stack,
        conn="c-ben=",
        query={"session_id": sid},
        headers=bearer(issue_token(SECRET, "ben")),
    )
    assert_refused(auth_stack, out, 403, "forbidden", before)
    assert auth_stack.connection_item("c-ben=") is None
    assert auth_stack.session_item(sid)["learner"] == "ana"


def test_resuming_ones_own_session_is_200(auth_stack) -> None:
    token = issue_token(SECRET, "ana")
    assert connect(auth_stack, conn="c-1=", headers=bearer(token))["statusCode"] == 200
    sid = auth_stack.connection_item("c-1=")["sid"]
    auth_stack.invoke("$disconnect", _disconnect("c-1="))
    out = connect(auth_stack, conn="c-2=", query={"session_id": sid}, headers=bearer(token))
    assert out["statusCode"] == 200
    assert auth_stack.connection_item("c-2=")["sid"] == sid
    # a browser puts both in the query string
    out = connect(auth_stack, conn="c-3=", query={"token": token, "session_id": sid})
    assert out["statusCode"] == 200
    assert auth_stack.connection_item("c-3=")["sid"] == sid
    # an unknown (or expired) session is 404, not a fresh session
    out = connect(auth_stack, conn="c-4=", query={"session_id": "sess_nope"}, headers=bearer(token))
    assert out["statusCode"] == 404


def _disconnect(conn: str) -> dict:
    from tests.support.events import disconnect_event

    return disconnect_event(connection_id=conn)


# --------------------------------------------------------------------------- secret from SSM


@pytest.fixture
def ssm_stack(stack, monkeypatch):
    """Authentication on, the token secret in an SSM SecureString (read through Powertools)."""
    from aws_lambda_powertools.utilities import parameters

    boto3.client("ssm").put_parameter(
        Name="/kiddolingo/test/auth-secret", Value=SECRET, Type="SecureString"
    )
    monkeypatch.setenv("AUTH_REQUIRED", "true")
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    monkeypatch.setenv("AUTH_SECRET_PARAMETER", "/kiddolingo/test/auth-secret")
    parameters.clear_caches()
    _reset_settings()
    yield stack
    parameters.clear_caches()
    _reset_settings()


def test_secret_read_from_ssm(ssm_stack) -> None:
    assert connect(ssm_stack, headers=bearer(issue_token(SECRET, "ana")))["statusCode"] == 200
    assert (
        connect(ssm_stack, conn="c-x=", headers=bearer(issue_token(OTHER, "ana")))["statusCode"]
        == 401
    )
    # cached: a rotated parameter is picked up only after PARAMETER_CACHE_S
    boto3.client("ssm").put_parameter(
        Name="/kiddolingo/test/auth-secret", Value=OTHER, Type="SecureString", Overwrite=True
    )
    assert (
        connect(ssm_stack, conn="c-y=", headers=bearer(issue_token(SECRET, "ana")))["statusCode"]
        == 200
    )


def test_unreadable_secret_refuses_everyone(stack, monkeypatch) -> None:
    from aws_lambda_powertools.utilities import parameters

    monkeypatch.setenv("AUTH_REQUIRED", "true")
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    monkeypatch.setenv("AUTH_SECRET_PARAMETER", "/kiddolingo/test/missing")
    parameters.clear_caches()
    _reset_settings()
    try:
        before = items(stack)
        out = connect(stack, headers=bearer(issue_token(SECRET, "ana")))
        assert_refused(stack, out, 500, "auth_not_configured", before)
    finally:
        parameters.clear_caches()
        _reset_settings()
