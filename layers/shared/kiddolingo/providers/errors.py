"""Provider errors, independent of any SDK, so the turn logic never imports ``openai``.

Every failure of a provider call surfaces as a :class:`ProviderError` subclass that says which
stage failed, what kind of failure it was, and whether another attempt could succeed (the SDK
has already made its own retries by then).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "ProviderAuthError",
    "ProviderBadRequestError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "Stage",
]

Stage = Literal["transcription", "chat", "speech", "moderation"]


class ProviderError(Exception):
    """A provider call failed.

    ``kind`` is one of ``timeout``, ``rate_limit``, ``server``, ``connection``,
    ``bad_request``, ``auth`` or ``unknown``; ``status`` is the HTTP status when there was one.
    A subclass names its default kind and whether it is worth another attempt in its class
    line (``class X(ProviderError, kind="timeout", retryable=True)``).
    """

    default_kind: ClassVar[str] = "unknown"
    default_retryable: ClassVar[bool] = False

    def __init_subclass__(
        cls, kind: str | None = None, retryable: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.default_kind = kind
        if retryable is not None:
            cls.default_retryable = retryable

    def __init__(
        self,
        stage: str,
        kind: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
        message: str = "",
    ) -> None:
        self.stage = stage
        self.kind = kind or self.default_kind
        self.retryable = self.default_retryable if retryable is None else retryable
        self.status = status
        self.message = message
        detail = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{stage} provider {self.kind}{detail}: {message}".rstrip(": "))

    def __reduce__(self):  # keeps the error picklable with its fields
        return (type(self), (self.stage, self.kind, self.retryable, self.status, self.message))


class ProviderTimeoutError(ProviderError, kind="timeout", retryable=True):
    """No answer in time."""


class ProviderRateLimitError(ProviderError, kind="rate_limit", retryable=True):
    """Too many requests (429)."""


class ProviderServerError(ProviderError, kind="server", retryable=True):
    """The provider failed (5xx, or an error inside a stream)."""


class ProviderConnectionError(ProviderError, kind="connection", retryable=True):
    """The connection failed or broke, possibly in the middle of a stream."""


class ProviderBadRequestError(ProviderError, kind="bad_request", retryable=False):
    """The provider refused the request as such (4xx other than auth and rate limits)."""


class ProviderAuthError(ProviderError, kind="auth", retryable=False):
    """Missing, wrong or unauthorized credentials (401/403, or no key configured)."""
