"""AWS clients for the handlers, built once per Lambda container.

Handlers wire their dependencies from here; the domain code only ever receives clients.
``AWS_ENDPOINT_URL`` (honoured by botocore itself) points S3 and DynamoDB at the local stack's
moto server; the Management API endpoint always comes from the event. botocore is used without
boto3, whose import (s3transfer and all) would cost the chunk path's cold start ~80 ms.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import botocore
import botocore.session
from botocore.config import Config

from .chunks import ChunkStore
from .coldstart import long_lived
from .messenger import ApiGatewayMessenger, endpoint_from_event
from .settings import Settings, get_settings
from .store import KNOWN, SessionStore

# Short timeouts and standard retries: a turn has a deadline, and a throttled DynamoDB call is
# worth a quick retry (conditional-check conflicts are retried by the store itself). Two
# per-call costs of botocore are left out, each ~0.5 ms of CPU on every call (ten appends a
# second per child): client-side parameter validation (our requests are built by code and the
# service validates them anyway) and the User-Agent rebuilt from a dozen metadata components
# (a fixed one instead).
_USER_AGENT = f"kiddolingo-voice botocore/{botocore.__version__}"


def _config(read_timeout: int, max_attempts: int) -> Config:
    return Config(
        connect_timeout=2,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        parameter_validation=False,
        user_agent=_USER_AGENT,
    )


_CONFIG = _config(read_timeout=5, max_attempts=3)
_POST_CONFIG = _config(read_timeout=3, max_attempts=2)
_lock = threading.Lock()


class _Session(botocore.session.Session):
    @property
    def events(self) -> Any:
        """The session's event emitter (as ``boto3.Session.events``): hooks for tests/bench."""
        return self.get_component("event_emitter")


@lru_cache(maxsize=1)
def _session() -> Any:
    return _Session()


@lru_cache(maxsize=4)
def _client(service: str) -> Any:
    # A client (its service model and endpoint rules: 10-30k objects) lives as long as the
    # container.
    with _lock, long_lived():
        return _session().create_client(service, config=_CONFIG)


@lru_cache(maxsize=16)
def management_client(endpoint: str) -> Any:
    with _lock, long_lived():
        return _session().create_client(
            "apigatewaymanagementapi", endpoint_url=endpoint, config=_POST_CONFIG
        )


def session_store(settings: Settings | None = None) -> SessionStore:
    settings = settings or get_settings()
    return SessionStore(
        settings.table_name,
        _client("dynamodb"),
        ttl_s=settings.session_ttl_hours * 3600,
        known=KNOWN,
    )


def chunk_store(settings: Settings | None = None) -> ChunkStore:
    settings = settings or get_settings()
    return ChunkStore(settings.bucket_name, _client("s3"))


def messenger(domain_name: str, stage: str, connection_id: str) -> ApiGatewayMessenger:
    return ApiGatewayMessenger(
        management_client(endpoint_from_event(domain_name, stage)), connection_id
    )
