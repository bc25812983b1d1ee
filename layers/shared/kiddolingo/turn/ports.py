"""The turn's ports: what a turn needs from the outside, and the one failure it expects of it.

The turn posts through a :class:`Poster` and asks a :class:`ResponseControl` whether its response
may still post; the adapters (``kiddolingo.turn_io`` over the Management API and DynamoDB)
implement them. A poster whose connection is gone raises :class:`ConnectionGoneError`, defined
here so the turn never imports an adapter; the messenger raises this same class.

This module imports nothing heavy: the audio-chunk path loads it through the messenger.
"""

from __future__ import annotations

from typing import Any, Protocol


class ConnectionGoneError(Exception):
    """The child's connection is gone (API Gateway answered 410): stop work for it."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone (410)")
        self.connection_id = connection_id


class ResponseControl(Protocol):
    async def state(self) -> str:
        """``active``, ``cancelled`` or ``gone``."""
        ...


class Poster(Protocol):
    async def post(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (in order); may raise the failure of an earlier post."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued is posted; raises a failed post's error."""
        ...
