"""Authentication of learners on ``$connect`` (issue 6 §1).

A learner presents a JWT signed with HS256 by our own secret. Browsers cannot set headers on a
WebSocket, so the token is taken, in this order, from:

1. ``Authorization: Bearer <jwt>`` (server-side clients, the ``openai`` SDK, ``sam local``);
2. the ``token`` query parameter (``wss://.../prod?token=<jwt>``);
3. ``Sec-WebSocket-Protocol``: the browser offers e.g. ``kiddolingo.v1, bearer.<jwt>``. A
   browser drops the connection unless the ``$connect`` response echoes one offered
   subprotocol; :func:`token_from_request` returns the one to echo (the first that is not a
   token), which the connect handler puts in its response's ``Sec-WebSocket-Protocol`` header.
   A token is never echoed: the response is recorded (API Gateway, X-Ray through Tracer), and a
   token there is a token anyone reading it can use. A client that offers only the token gets
   no subprotocol back; browsers then fail the handshake, so a browser offers a plain protocol
   beside the token, as ``web/kiddolingo-client.js`` does.

A token's ``role`` claim is ``learner`` (the default, when it has none) or ``teacher``. A
teacher's token acts for the learner its ``sub`` names and may also set that learner's lesson
plan (``session.instructions``); a learner's may not. Any other role is refused (401).

Missing, expired, forged or malformed tokens raise :class:`AuthError` with status 401; a learner
resuming another learner's session raises it with 403 (:func:`check_resume`).

The secret comes from ``AUTH_SECRET`` (local stack and tests) or, in AWS, from the SSM
SecureString (or ``secretsmanager:<name>`` secret) named by ``AUTH_SECRET_PARAMETER``, read
through Powertools Parameters and cached for ``PARAMETER_CACHE_S`` seconds. Powertools is
imported lazily so that modules importing this one stay cheap to load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from kiddolingo.settings import Settings

__all__ = [
    "ALGORITHM",
    "BEARER_SUBPROTOCOL_PREFIX",
    "ROLES",
    "AuthError",
    "AuthResult",
    "AuthSecretProvider",
    "Claims",
    "authenticate",
    "check_resume",
    "get_auth_secret",
    "issue_token",
    "token_from_request",
    "verify_token",
]

ALGORITHM = "HS256"
#: A ``Sec-WebSocket-Protocol`` entry carrying the token: ``bearer.<jwt>``.
BEARER_SUBPROTOCOL_PREFIX = "bearer."
#: Learner ids end up in DynamoDB items and logs: keep them short.
MAX_LEARNER_ID_LENGTH = 128
DEFAULT_TTL_S = 3600 * 8
#: The roles a token may claim; a token without a ``role`` claim is a learner's.
ROLES = ("learner", "teacher")


class AuthError(Exception):
    """An authentication (401) or authorization (403) failure, safe to show to the client."""

    def __init__(self, status: int = 401, code: str = "unauthorized", message: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message or code.replace("_", " ")
        super().__init__(f"{status} {code}: {self.message}")

    def to_response(self) -> dict[str, Any]:
        """The Lambda proxy response that refuses the ``$connect`` with this status."""
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": {"code": self.code, "message": self.message}}),
        }


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer."""

    learner_id: str
    #: Unix seconds.
    expires_at: int
    #: Unix seconds, or None when the token has no ``iat``.
    issued_at: int | None
    #: ``learner`` or ``teacher`` (see :data:`ROLES`).
    role: str = "learner"


@dataclass(frozen=True)
class AuthResult:
    """Outcome of :func:`authenticate`: ``claims`` is None only when auth is disabled."""

    claims: Claims | None
    subprotocol: str | None


# --------------------------------------------------------------------------- token extraction


def _first(value: Any) -> str | None:
    """A header or query value as one string (multi-value lists give their first item)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else None
    return str(value)


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return _first(value)
    return None


def token_from_request(
    headers: Mapping[str, Any] | None, query: Mapping[str, Any] | None
) -> tuple[str | None, str | None]:
    """Find the token of a ``$connect`` request.

    Returns ``(token, subprotocol_to_echo)``. The subprotocol is the first offered protocol
    that is not a ``bearer.<jwt>`` entry, and None when there is none: a token is never echoed
    (it would be recorded with the response). Header names are matched case-insensitively;
    multi-value lists are accepted.
    """
    token: str | None = None

    authorization = _header(headers, "Authorization")
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()

    if token is None and query:
        from_query = _first(query.get("token"))
        if from_query and from_query.strip():
            token = from_query.strip()

    subprotocol: str | None = None
    offered = _header(headers, "Sec-WebSocket-Protocol")
    if offered:
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        token_protocols = [p for p in protocols if p.lower().startswith(BEARER_SUBPROTOCOL_PREFIX)]
        others = [p for p in protocols if p not in token_protocols]
        if token is None:
            for entry in token_protocols:
                candidate = entry[len(BEARER_SUBPROTOCOL_PREFIX) :]
                if candidate:
                    token = candidate
                    break
        if others:
            subprotocol = others[0]

    return token, subprotocol


# --------------------------------------------------------------------------- tokens


def _secret_bytes(secret: str | bytes) -> bytes:
    if not secret:
        raise AuthError(500, "auth_not_configured", "the token secret is empty")
    return secret.encode() if isinstance(secret, str) else secret


def issue_token(
    secret: str | bytes,
    learner_id: str,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
    role: str = "learner",
) -> str:
    """Sign a token for ``learner_id`` valid ``ttl_s`` seconds from ``now``; ``role``
    ``teacher`` makes it a teacher's token for that learner."""
    if not learner_id or len(learner_id) > MAX_LEARNER_ID_LENGTH:
        raise ValueError(f"learner_id must be 1-{MAX_LEARNER_ID_LENGTH} characters")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": learner_id, "iat": issued, "exp": issued + int(ttl_s)}
    if role != "learner":
        payload["role"] = role
    return jwt.encode(payload, _secret_bytes(secret), algorithm=ALGORITHM)


def _int_claim(payload: Mapping[str, Any], name: str) -> int:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError(401, "malformed_token", f"the {name} claim is not a number")
    return int(value)


def verify_token(
    token: str | None,
    secret: str | bytes,
    *,
    now: float | None = None,
    leeway_s: float = 30,
) -> Claims:
    """Check a token's signature (HS256 only) and its ``exp``/``nbf``/``iat`` and ``sub``.

    ``now`` (Unix seconds) defaults to the current time. Raises :class:`AuthError` (401).
    """
    if not token:
        raise AuthError(401, "missing_token", "an access token is required")
    key = _secret_bytes(secret)
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            # Times are checked below against `now`; PyJWT only checks they are present.
            options={
                "require": ["exp", "sub"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError(401, "invalid_token", "the token's algorithm is not accepted") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError(401, "invalid_signature", "the token's signature is not valid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, "invalid_token", f"the token has no {exc.claim} claim") from exc
    except jwt.InvalidTokenError as exc:  # DecodeError and the other claim errors
        raise AuthError(401, "malformed_token", "the token cannot be read") from exc

    current = time.time() if now is None else now
    expires_at = _int_claim(payload, "exp")
    if expires_at <= current - leeway_s:
        raise AuthError(401, "token_expired", "the access token has expired")
    if "nbf" in payload and _int_claim(payload, "nbf") > current + leeway_s:
        raise AuthError(401, "token_not_yet_valid", "the access token is not valid yet")
    issued_at = _int_claim(payload, "iat") if "iat" in payload else None
    if issued_at is not None and issued_at > current + leeway_s:
        raise AuthError(401, "token_not_yet_valid", "the access token was issued in the future")

    learner_id = payload["sub"]
    if not isinstance(learner_id, str) or not learner_id.strip():
        raise AuthError(401, "invalid_token", "the token names no learner")
    if len(learner_id) > MAX_LEARNER_ID_LENGTH:
        raise AuthError(401, "invalid_token", "the token's learner id is too long")
    role = payload.get("role", "learner")
    if role not in ROLES:
        raise AuthError(401, "invalid_token", "the token's role is not known")
    return Claims(learner_id=learner_id, expires_at=expires_at, issued_at=issued_at, role=role)


# --------------------------------------------------------------------------- the secret


def get_auth_secret(settings: Settings) -> str:
    """The token secret: ``settings.auth_secret`` if set, else the secret it names.

    ``settings.auth_secret_parameter`` is an SSM SecureString name (read with decryption) or
    ``secretsmanager:<name>``; both are read through Powertools Parameters
    (:func:`kiddolingo.secrets.get_secret_value`) and cached for ``settings.parameter_cache_s``
    seconds across the invocations of a warm Lambda container.
    """
    if settings.auth_secret:
        return settings.auth_secret
    name = settings.auth_secret_parameter
    if not name:
        raise AuthError(
            500,
            "auth_not_configured",
            "neither AUTH_SECRET nor AUTH_SECRET_PARAMETER is set",
        )
    from kiddolingo.secrets import SecretNotFoundError, get_secret_value

    try:
        return get_secret_value(name, settings.parameter_cache_s)
    except SecretNotFoundError as exc:
        raise AuthError(500, "auth_not_configured", "the token secret cannot be read") from exc


class AuthSecretProvider:
    """A callable returning the token secret for ``settings`` (see :func:`get_auth_secret`).

    Tests and the local stack can pass a fixed provider (``lambda: "secret"``) to
    :func:`authenticate` instead.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self) -> str:
        return get_auth_secret(self.settings)


# --------------------------------------------------------------------------- the checks


def authenticate(
    headers: Mapping[str, Any] | None,
    query: Mapping[str, Any] | None,
    settings: Settings,
    *,
    secret_provider: Callable[[], str | bytes] | None = None,
    now: float | None = None,
) -> AuthResult:
    """Authenticate a ``$connect`` request: token lookup, then verification.

    With ``settings.auth_required`` false (the local stack, only when told so explicitly) no
    token is looked at and ``claims`` is None. Raises :class:`AuthError` otherwise.
    """
    token, subprotocol = token_from_request(headers, query)
    if not settings.auth_required:
        return AuthResult(claims=None, subprotocol=subprotocol)
    if not token:
        raise AuthError(401, "missing_token", "an access token is required")
    secret = (secret_provider or AuthSecretProvider(settings))()
    return AuthResult(claims=verify_token(token, secret, now=now), subprotocol=subprotocol)


def check_resume(claims: Claims | None, session_owner_learner_id: str | None) -> None:
    """Refuse (403) to resume a session that belongs to someone else.

    ``claims`` None means auth is disabled: anything goes. With auth on, a session must be owned
    by the same learner; a session without an owner cannot be claimed.
    """
    if claims is None:
        return
    if session_owner_learner_id != claims.learner_id:
        raise AuthError(403, "forbidden", "this session belongs to another learner")
