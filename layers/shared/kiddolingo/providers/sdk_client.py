"""The ``openai`` SDK's client for one stage (:class:`StageClient`), and every SDK or transport
error it raises turned into a :class:`~.errors.ProviderError` (:func:`map_provider_error`).

Timeouts and the SDK's retries (408, 409, 429, 5xx, connection errors; never a stream that has
started) come from the settings. Importing this module imports ``openai``; only the provider
implementations do (:mod:`.openai_compat`, :mod:`.realtime_speech`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx2
import openai

from ..secrets import SecretNotFoundError, get_api_key
from ..settings import Settings, StageSettings
from . import errors

__all__ = [
    "StageClient",
    "map_provider_error",
    "provider_errors",
    "tls_context",
    "websocket_options",
]

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx2.HTTPError,
    httpx2.StreamError,
    ssl.SSLError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
)
_CAUGHT: tuple[type[BaseException], ...] = (openai.OpenAIError, *_TRANSPORT_ERRORS)


def map_provider_error(stage: str, exc: BaseException) -> errors.ProviderError:
    """The :class:`ProviderError` for an SDK or transport exception raised by ``stage``."""
    if isinstance(exc, errors.ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return errors.ProviderTimeoutError(stage, message=str(exc) or "request timed out")
    if isinstance(exc, openai.APIStatusError):
        return _status_error(stage, exc.status_code, exc.message)
    if isinstance(exc, (openai.APIConnectionError, *_TRANSPORT_ERRORS)):
        return errors.ProviderConnectionError(stage, message=str(exc) or type(exc).__name__)
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        return errors.ProviderServerError(stage, message=exc.message)
    if isinstance(exc, openai.OpenAIError) and "credentials" in str(exc).lower():
        return errors.ProviderAuthError(stage, message=str(exc))
    return errors.ProviderError(stage, message=str(exc) or type(exc).__name__)


def _status_error(stage: str, status: int, message: str) -> errors.ProviderError:
    """The :class:`ProviderError` for an HTTP error status."""
    kind: type[errors.ProviderError] = errors.ProviderBadRequestError
    if status == 429:
        kind = errors.ProviderRateLimitError
    elif status in (401, 403):
        kind = errors.ProviderAuthError
    elif status == 408:
        kind = errors.ProviderTimeoutError
    elif status >= 500 or status == 409:
        kind = errors.ProviderServerError
    return kind(stage, status=status, message=message)


@contextlib.contextmanager
def provider_errors(stage: str) -> Iterator[None]:
    """Any SDK or transport error raised inside leaves as the stage's :class:`ProviderError`."""
    try:
        yield
    except errors.ProviderError:
        raise
    except _CAUGHT as exc:
        raise map_provider_error(stage, exc) from exc


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The process's one TLS context, for every client and every Realtime socket.

    Building a TLS context loads the system's CA certificates: ~45 ms of CPU. Left to
    themselves, the SDK builds one per client (one per stage and event loop: four in a turn)
    and ``websockets`` one per ``wss://`` connection (the Realtime socket of every turn). One
    shared context costs that once, at INIT (``preload_providers``) or on the first turn; a
    context is safe to share between threads and event loops. It is the context the SDK's
    client builds by default (``httpx2.create_ssl_context``), so the trust is the same."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx2.create_ssl_context()
        return _tls


def websocket_options(client: openai.AsyncOpenAI) -> dict[str, Any]:
    """``websocket_connection_options`` for ``client.realtime.connect``: the shared TLS context
    when the socket is ``wss://`` (``websockets`` refuses one for ``ws://``)."""
    base = str(client.websocket_base_url or client.base_url)
    return {"ssl": tls_context()} if base.startswith(("https:", "wss:")) else {}


class StageClient:
    """The ``AsyncOpenAI`` client of one stage, created lazily for the running event loop.

    An HTTP connection pool belongs to one event loop. A Lambda handler that runs each
    invocation with a new loop gets a fresh client per loop (in each thread, only the latest is
    kept); a handler that keeps one loop per container keeps its connections warm.
    """

    def __init__(self, stage: str, stage_settings: StageSettings, settings: Settings) -> None:
        self.stage = stage
        self.settings = stage_settings
        self._timeout = settings.provider_timeout_s
        self._max_retries = settings.provider_max_retries
        self._cache_s = settings.parameter_cache_s
        self._local = threading.local()
        self._key: str | None = None
        self._key_expires = 0.0

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def timeout_s(self) -> float:
        return self._timeout

    @property
    def max_retries(self) -> int:
        return self._max_retries

    def get(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        local = self._local
        ref: weakref.ref[asyncio.AbstractEventLoop] | None = getattr(local, "loop", None)
        client: openai.AsyncOpenAI | None = getattr(local, "client", None)
        if client is None or ref is None or ref() is not loop:
            client = self._make_client()
            local.client, local.loop = client, weakref.ref(loop)
        return client

    def _make_client(self) -> openai.AsyncOpenAI:
        api_key: str | Callable[[], Awaitable[str]] | None
        if self.settings.api_key:
            api_key = self.settings.api_key
        elif self.settings.api_key_parameter:
            api_key = self._fetch_key
        else:
            api_key = None  # the SDK falls back to OPENAI_API_KEY, or reports no credentials
        with provider_errors(self.stage):
            return openai.AsyncOpenAI(
                api_key=api_key,
                base_url=self.settings.base_url or None,
                timeout=self._timeout,
                max_retries=self._max_retries,
                # The SDK's own defaults (timeouts, pool limits, redirects), one TLS context.
                http_client=openai.DefaultAsyncHttpxClient(verify=tls_context()),
            )

    async def _fetch_key(self) -> str:
        """The key from SSM / Secrets Manager, cached here and by Powertools."""
        now = time.monotonic()
        if self._key is not None and now < self._key_expires:
            return self._key
        try:
            key = await asyncio.to_thread(get_api_key, self.settings, self._cache_s)
        except SecretNotFoundError as exc:
            raise errors.ProviderAuthError(self.stage, message=str(exc)) from exc
        if not key:
            raise errors.ProviderAuthError(self.stage, message="no API key configured")
        self._key, self._key_expires = key, now + self._cache_s
        return key

    async def aclose(self) -> None:
        """Close the client of the current loop (if it was created on it)."""
        client: openai.AsyncOpenAI | None = getattr(self._local, "client", None)
        ref = getattr(self._local, "loop", None)
        if client is not None and ref is not None and ref() is asyncio.get_running_loop():
            self._local.client = None
            await client.close()
