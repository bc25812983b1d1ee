"""kiddolingo.auth and infra.token: every auth case of issue 6 §1, no network."""

from __future__ import annotations

import base64
import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import jwt
import pytest
from moto import mock_aws

from infra import token as token_cli
from kiddolingo.auth import (
    AuthError,
    AuthSecretProvider,
    Claims,
    authenticate,
    check_resume,
    get_auth_secret,
    issue_token,
    token_from_request,
    verify_token,
)
from kiddolingo.settings import Settings
from tests.support.events import DEV_LEARNER_ID, DEV_TOKEN, connect_event

SECRET = "test-secret-that-is-long-enough-for-hs256!"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"
NOW = 1_800_000_000


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@contextmanager
def _raises(status: int, code: str | None = None) -> Iterator[pytest.ExceptionInfo[AuthError]]:
    with pytest.raises(AuthError) as info:
        yield info
    assert info.value.status == status, info.value
    if code is not None:
        assert info.value.code == code, info.value


# --------------------------------------------------------------------------- verify_token


def test_valid_token_gives_claims():
    token = issue_token(SECRET, "ana", ttl_s=600, now=NOW)
    claims = verify_token(token, SECRET, now=NOW + 10)
    assert claims == Claims(learner_id="ana", expires_at=NOW + 600, issued_at=NOW)


def test_a_token_is_a_learners_unless_it_claims_teacher():
    claims = verify_token(issue_token(SECRET, "ana", now=NOW), SECRET, now=NOW)
    assert claims.role == "learner"
    teacher = verify_token(issue_token(SECRET, "ana", now=NOW, role="teacher"), SECRET, now=NOW)
    assert (teacher.learner_id, teacher.role) == ("ana", "teacher")
    with pytest.raises(ValueError):
        issue_token(SECRET, "ana", role="admin")


@pytest.mark.parametrize("role", ["admin", "Teacher", 1, None, ["teacher"]])
def test_an_unknown_role_is_401(role):
    token = jwt.encode({"sub": "ana", "exp": NOW + 60, "role": role}, SECRET, algorithm="HS256")
    with _raises(401, "invalid_token"):
        verify_token(token, SECRET, now=NOW)


def test_valid_token_against_the_real_clock():
    claims = verify_token(issue_token(SECRET, "ana"), SECRET)
    assert claims.learner_id == "ana"
    assert claims.expires_at - time.time() == pytest.approx(8 * 3600, abs=5)


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_token_is_401(missing):
    with _raises(401, "missing_token"):
        verify_token(missing, SECRET)


def test_expired_token_is_401_after_the_leeway():
    token = issue_token(SECRET, "ana", ttl_s=60, now=NOW)
    assert verify_token(token, SECRET, now=NOW + 60 + 29).learner_id == "ana"
    with _raises(401, "token_expired"):
        verify_token(token, SECRET, now=NOW + 60 + 31)
    with _raises(401, "token_expired"):
        verify_token(token, SECRET, now=NOW + 61, leeway_s=0)


def test_forged_token_signed_with_another_secret_is_401():
    forged = issue_token(OTHER_SECRET, "ana", now=NOW)
    with _raises(401, "invalid_signature"):
        verify_token(forged, SECRET, now=NOW)


def test_tampered_payload_is_401():
    header, _payload, signature = issue_token(SECRET, "ana", now=NOW).split(".")
    evil = _b64({"sub": "boris", "iat": NOW, "exp": NOW + 3600})
    with _raises(401, "invalid_signature"):
        verify_token(f"{header}.{evil}.{signature}", SECRET, now=NOW)


def test_alg_none_is_rejected():
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'ana', 'exp': NOW + 60})}."
    with _raises(401, "invalid_token"):
        verify_token(unsigned, SECRET, now=NOW)


def test_hs512_is_rejected_even_with_the_right_secret():
    long_secret = SECRET * 2  # HS512 wants 64 bytes
    token = jwt.encode({"sub": "ana", "exp": NOW + 60}, long_secret, algorithm="HS512")
    with _raises(401, "invalid_token"):
        verify_token(token, long_secret, now=NOW)


@pytest.mark.parametrize(
    "garbage",
    ["abc", "a.b.c", "Bearer", "eyJhbGciOiJIUzI1NiJ9.not-base64!.sig", "🙂.🙂.🙂"],
)
def test_malformed_token_is_401(garbage):
    with _raises(401, "malformed_token"):
        verify_token(garbage, SECRET, now=NOW)


@pytest.mark.parametrize(
    "payload",
    [{"sub": "ana"}, {"exp": NOW + 60}, {"sub": "", "exp": NOW + 60}, {"sub": 7, "exp": NOW + 60}],
    ids=["no-exp", "no-sub", "empty-sub", "numeric-sub"],
)
def test_required_claims(payload):
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    with _raises(401):
        verify_token(token, SECRET, now=NOW)


def test_not_yet_valid_is_401():
    token = jwt.encode({"sub": "ana", "exp": NOW + 600, "nbf": NOW + 300}, SECRET, "HS256")
    with _raises(401, "token_not_yet_valid"):
        verify_token(token, SECRET, now=NOW)
    assert verify_token(token, SECRET, now=NOW + 300).learner_id == "ana"


def test_issue_token_validates_learner_id():
    with pytest.raises(ValueError):
        issue_token(SECRET, "")
    with pytest.raises(ValueError):
        issue_token(SECRET, "x" * 129)


def test_auth_error_response_is_a_lambda_proxy_response():
    err = AuthError(status=403, code="forbidden", message="nope")
    response = err.to_response()
    assert response["statusCode"] == 403
    assert json.loads(response["body"]) == {"error": {"code": "forbidden", "message": "nope"}}


# --------------------------------------------------------------------------- token_from_request


def test_token_from_authorization_header_case_insensitive():
    assert token_from_request({"authorization": "bearer abc.def.ghi"}, None) == (
        "abc.def.ghi",
        None,
    )
    assert token_from_request({"AUTHORIZATION": ["Bearer  xyz "]}, {}) == ("xyz", None)


def test_non_bearer_authorization_is_ignored():
    assert token_from_request({"Authorization": "Basic dXNlcjpwYXNz"}, None) == (None, None)


def test_token_from_query_parameter():
    assert token_from_request({"Host": "x"}, {"token": "q.q.q"}) == ("q.q.q", None)
    assert token_from_request({}, {"token": ["m.m.m"]}) == ("m.m.m", None)
    assert token_from_request(None, None) == (None, None)


def test_header_wins_over_query():
    token, _ = token_from_request({"Authorization": "Bearer h.h.h"}, {"token": "q.q.q"})
    assert token == "h.h.h"


def test_token_from_subprotocol_echoes_the_app_protocol():
    token, echo = token_from_request(
        {"Sec-WebSocket-Protocol": "kiddolingo.v1, bearer.aaa.bbb.ccc"}, None
    )
    assert (token, echo) == ("aaa.bbb.ccc", "kiddolingo.v1")
    token, echo = token_from_request(
        {"sec-websocket-protocol": "bearer.aaa.bbb.ccc,kiddolingo.v1"}, None
    )
    assert (token, echo) == ("aaa.bbb.ccc", "kiddolingo.v1")


def test_a_token_is_never_the_subprotocol_to_echo():
    # Issue 21 §12: the echoed subprotocol is recorded with the response (API Gateway, X-Ray).
    # A client offering only the token gets none back (a browser must offer a plain one too).
    assert token_from_request({"Sec-WebSocket-Protocol": "bearer.t.t.t"}, None) == ("t.t.t", None)
    for offered in ("bearer.t.t.t, bearer.u.u.u", "Bearer.t.t.t", " bearer.t.t.t ,"):
        token, echo = token_from_request({"Sec-WebSocket-Protocol": offered}, None)
        assert token is not None and echo is None, offered
    # a token from the header, and the token subprotocol offered too: still never echoed
    token, echo = token_from_request(
        {"Authorization": "Bearer h.h.h", "Sec-WebSocket-Protocol": "bearer.t.t.t"}, None
    )
    assert (token, echo) == ("h.h.h", None)


def test_subprotocol_echo_even_when_token_comes_from_the_query():
    token, echo = token_from_request({"Sec-WebSocket-Protocol": "kiddolingo.v1"}, {"token": "q"})
    assert (token, echo) == ("q", "kiddolingo.v1")


def test_token_from_the_sample_connect_event():
    event = connect_event()
    token, echo = token_from_request(event["headers"], event.get("queryStringParameters"))
    assert token == DEV_TOKEN
    assert echo is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        claims = verify_token(token, token_cli.LOCAL_DEV_AUTH_SECRET)
    assert claims.learner_id == DEV_LEARNER_ID


def test_sample_connect_event_has_no_token_once_the_header_is_removed():
    event = connect_event(headers={"authorization": None})
    assert token_from_request(event["headers"], event.get("queryStringParameters")) == (None, None)


# --------------------------------------------------------------------------- authenticate / resume


def _settings(**kw) -> Settings:
    return Settings(**{"auth_secret": SECRET, **kw})


def test_authenticate_valid_via_each_channel():
    token = issue_token(SECRET, "ana")
    cases = [
        ({"Authorization": f"Bearer {token}"}, None, None),
        ({}, {"token": token}, None),
        ({"Sec-WebSocket-Protocol": f"kiddolingo.v1, bearer.{token}"}, None, "kiddolingo.v1"),
    ]
    for headers, query, echo in cases:
        result = authenticate(headers, query, _settings())
        assert result.claims is not None and result.claims.learner_id == "ana"
        assert result.subprotocol == echo


def test_authenticate_missing_forged_expired():
    with _raises(401, "missing_token"):
        authenticate({}, None, _settings())
    with _raises(401, "invalid_signature"):
        authenticate({}, {"token": issue_token(OTHER_SECRET, "ana")}, _settings())
    old = issue_token(SECRET, "ana", ttl_s=60, now=time.time() - 3600)
    with _raises(401, "token_expired"):
        authenticate({}, {"token": old}, _settings())


def test_authenticate_uses_the_secret_provider():
    token = issue_token(OTHER_SECRET, "ana")
    result = authenticate({}, {"token": token}, _settings(), secret_provider=lambda: OTHER_SECRET)
    assert result.claims is not None and result.claims.learner_id == "ana"


def test_authenticate_disabled_only_when_told():
    result = authenticate(
        {"Sec-WebSocket-Protocol": "kiddolingo.v1"}, None, _settings(auth_required=False)
    )
    assert result.claims is None and result.subprotocol == "kiddolingo.v1"
    assert Settings.from_env({}).auth_required is True


def test_resume_own_session_is_allowed():
    check_resume(Claims("ana", NOW + 60, NOW), "ana")


def test_resume_of_another_learners_session_is_403():
    with _raises(403, "forbidden"):
        check_resume(Claims("boris", NOW + 60, NOW), "ana")


def test_resume_of_an_unowned_session_is_403_when_authenticated():
    with _raises(403):
        check_resume(Claims("boris", NOW + 60, NOW), None)


def test_resume_without_auth_is_allowed():
    check_resume(None, "ana")


# --------------------------------------------------------------------------- the secret


@pytest.fixture
def aws(monkeypatch):
    from aws_lambda_powertools.utilities import parameters

    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield
    parameters.clear_caches()


def test_secret_from_settings_first():
    assert get_auth_secret(Settings(auth_secret="local", auth_secret_parameter="/x")) == "local"


def test_secret_not_configured_is_500():
    with _raises(500, "auth_not_configured"):
        get_auth_secret(Settings())


def test_secret_from_ssm_securestring_is_cached(aws):
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/kiddolingo/auth-secret", Value=SECRET, Type="SecureString")
    settings = Settings.from_env({"AUTH_SECRET_PARAMETER": "/kiddolingo/auth-secret"})
    provider = AuthSecretProvider(settings)
    assert provider() == SECRET

    calls = []
    boto3_ssm = _powertools_client("ssm")
    boto3_ssm.meta.events.register("before-call.ssm.GetParameter", lambda **kw: calls.append(1))
    ssm.put_parameter(
        Name="/kiddolingo/auth-secret", Value=OTHER_SECRET, Type="SecureString", Overwrite=True
    )
    assert provider() == SECRET  # cached for PARAMETER_CACHE_S (300 s by default)
    assert calls == []

    token = issue_token(SECRET, "ana")
    result = authenticate({"Authorization": f"Bearer {token}"}, None, settings)
    assert result.claims is not None and result.claims.learner_id == "ana"
    assert calls == []


def test_secret_cache_expires(aws):
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/k/auth", Value="first-value", Type="SecureString")
    settings = Settings.from_env({"AUTH_SECRET_PARAMETER": "/k/auth", "PARAMETER_CACHE_S": "0"})
    assert get_auth_secret(settings) == "first-value"
    ssm.put_parameter(Name="/k/auth", Value="second-value", Type="SecureString", Overwrite=True)
    assert get_auth_secret(settings) == "second-value"


def test_secret_from_secrets_manager(aws):
    boto3.client("secretsmanager").create_secret(Name="kiddolingo/auth", SecretString=SECRET)
    settings = Settings.from_env({"AUTH_SECRET_PARAMETER": "secretsmanager:kiddolingo/auth"})
    assert get_auth_secret(settings) == SECRET


def test_missing_ssm_parameter_is_500(aws):
    settings = Settings.from_env({"AUTH_SECRET_PARAMETER": "/does/not/exist"})
    with _raises(500, "auth_not_configured"):
        get_auth_secret(settings)


def _powertools_client(kind: str):
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    return DEFAULT_PROVIDERS[kind].client


# --------------------------------------------------------------------------- infra.token


def _quiet_verify(token: str, secret: str) -> Claims:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return verify_token(token, secret)


def test_token_cli_prints_a_dev_token(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    monkeypatch.setattr(token_cli, "REPO_ROOT", tmp_path)  # no .env there
    assert token_cli.main(["--learner", "ana", "--ttl", "600"]) == 0
    printed = capsys.readouterr().out.strip()
    claims = _quiet_verify(printed, token_cli.LOCAL_DEV_AUTH_SECRET)
    assert claims.learner_id == "ana"
    assert claims.issued_at is not None
    assert claims.expires_at - claims.issued_at == 600


def test_token_cli_default_learner_and_ttl(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    monkeypatch.setattr(token_cli, "REPO_ROOT", tmp_path)
    token_cli.main([])
    claims = _quiet_verify(capsys.readouterr().out.strip(), token_cli.LOCAL_DEV_AUTH_SECRET)
    assert claims.learner_id == token_cli.DEFAULT_LEARNER
    assert claims.issued_at is not None
    assert claims.expires_at - claims.issued_at == 28800


def test_token_cli_secret_from_environment(capsys, monkeypatch):
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    token_cli.main(["--learner", "ana"])
    assert verify_token(capsys.readouterr().out.strip(), SECRET).learner_id == "ana"


def test_token_cli_secret_from_dotenv(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("AUTH_SECRET", raising=False)
    (tmp_path / ".env").write_text(f"OTHER=1\nAUTH_SECRET={OTHER_SECRET}\n")
    monkeypatch.setattr(token_cli, "REPO_ROOT", tmp_path)
    assert token_cli.dev_auth_secret() == OTHER_SECRET
    assert token_cli.dev_auth_secret({"AUTH_SECRET": SECRET}) == SECRET
    assert verify_token(token_cli.dev_token("ana"), OTHER_SECRET).learner_id == "ana"


def test_token_cli_mints_a_teachers_token(capsys, monkeypatch):
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    token_cli.main(["--learner", "ana", "--role", "teacher"])
    claims = verify_token(capsys.readouterr().out.strip(), SECRET)
    assert (claims.learner_id, claims.role) == ("ana", "teacher")
    token_cli.main(["--learner", "ana"])
    assert verify_token(capsys.readouterr().out.strip(), SECRET).role == "learner"
    with pytest.raises(SystemExit):
        token_cli.main(["--role", "admin"])


def test_make_token_role_teacher(monkeypatch):
    """``make token ROLE=teacher`` passes the role on to the CLI."""
    import subprocess

    env = {**os.environ, "AUTH_SECRET": SECRET}
    out = subprocess.run(
        ["make", "-s", "token", "ROLE=teacher", "LEARNER=ana"],
        cwd=Path(token_cli.__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    claims = verify_token(out.splitlines()[-1], SECRET)
    assert (claims.learner_id, claims.role) == ("ana", "teacher")


def test_token_cli_rejects_a_bad_ttl(capsys):
    with pytest.raises(SystemExit):
        token_cli.main(["--ttl", "0"])
