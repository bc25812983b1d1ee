"""The application layer: what each WebSocket route does, over the stores and providers.

The handlers in ``functions/`` parse the Lambda event, build a ``Tutor`` from their wired
adapters and call one method. Pure decisions live in ``session``, ``ingest``, ``conversation``
and ``turn``; this module sequences the I/O around them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .chunks import MissingChunkError
from .messenger import ConnectionGoneError
from .protocol import (
    ClientEvent,
    ProtocolError,
    error_event,
    parse_client_event,
    server_event,
)
from .session import SessionConfig, session_object
from .store import ConflictError
from .tutor.base import MAX_APPEND_ATTEMPTS, MAX_PARKED_BYTES, SETTLE_WAIT_S, StartedTurn
from .tutor.connect import ConnectResult, connect
from .tutor.handlers import EventHandlers
from .tutor.responses import speculation_response_id

__all__ = [
    "MAX_APPEND_ATTEMPTS",
    "MAX_PARKED_BYTES",
    "ROUTES",
    "SETTLE_WAIT_S",
    "ConnectResult",
    "StartedTurn",
    "Tutor",
    "connect",
    "speculation_response_id",
]

log = logging.getLogger(__name__)

# botocore (and the HTTP stacks under the SDKs) log whole request and response bodies at
# DEBUG: children's transcripts in DynamoDB items and posted events. Capped at INFO unless a
# level was set for them explicitly, so a DEBUG log level never leaks what a child said.
for _name in ("botocore", "urllib3", "openai", "httpx2", "httpcore2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)


class Tutor(EventHandlers):
    """One handler invocation's view of a connection."""

    def handle_message(self, body: str | None, received_ms: int | None = None) -> None:
        """One client event (the ``$default`` route). Never raises for bad input.

        ``received_ms``: when the gateway received it (``requestTimeEpoch``); now if unknown."""
        self._stamp = int(received_ms) if received_ms else int(time.time() * 1000)
        try:
            event: ClientEvent | None = parse_client_event(body)
            bad: ProtocolError | None = None
        except ProtocolError as exc:
            event, bad = None, exc
        is_append = event is not None and event.type == "input_audio_buffer.append"
        if is_append and event is not None and self._refused_short(event):
            return
        known = self._known_item(event) if is_append and event is not None else None
        conn = known or self.store.get_connection(self.connection_id)
        if conn is None:
            self.post(
                error_event(
                    "session_not_found",
                    "This connection has no session; reconnect to start one.",
                    error_type="invalid_request_error",
                )
            )
            return
        if self._correlate is not None:
            self._correlate(conn["sid"])
        self._greet(conn)
        try:
            if bad is not None:
                raise bad
            assert event is not None
            self._dispatch(conn, event, known)
        except ConnectionGoneError:
            raise
        except Exception as exc:
            self._tell_failure(exc, event)

    def _known_item(self, event: ClientEvent) -> dict[str, Any] | None:
        """The item this container's previous append left, when that was a moment ago: the
        append goes on from it, and its commit checks that nothing else wrote the item since."""
        known = self.store.known_connection(self.connection_id)
        if known is not None and event.sequence not in (None, known.get("seq")):
            # Not the chunk right after the ones this container processed: another
            # container processed some since, and a commit from this item would only lose
            # (a failed write costs more than a read).
            return None
        return known

    def _greet(self, conn: dict[str, Any]) -> None:
        if not conn.get("greeted") and self.store.mark_greeted(self.connection_id):
            # The server's first message waits for the client's first: API Gateway refuses
            # posts to a connection before its $connect handshake completes.
            cfg = SessionConfig.from_item(conn.get("cfg"))
            self.post(
                server_event(
                    "session.created",
                    session=session_object(conn["sid"], cfg, self.settings.chat.model),
                )
            )

    def _dispatch(
        self, conn: dict[str, Any], event: ClientEvent, known: dict[str, Any] | None
    ) -> None:
        """Hand ``event`` to its handler (``ROUTES``), in its place in the client's stream."""
        number = event.sequence if event.type != "input_audio_buffer.append" else None
        if number is not None:
            # Its place in the client's sequence: it waits for the events before it, and
            # the ones after it wait for it (``_pass_turn``).
            taken = self._take_turn(conn, number)
            if taken is None:
                return  # a duplicate delivery: it took effect already
            conn = taken
        try:
            if known is not None:
                self._on_input_audio_buffer_append(conn, event, known=True)
            else:
                ROUTES[event.type](self, conn, event)
        finally:
            self._pass_turn()

    def _tell_failure(self, exc: Exception, event: ClientEvent | None) -> None:
        """Tell the client about an event that failed; the session goes on."""
        if isinstance(exc, ProtocolError):
            self.post_error(exc)
        elif isinstance(exc, MissingChunkError):
            log.warning("audio chunk missing: %s", exc)  # the key stays in our logs
            self.post(
                error_event(
                    "audio_missing",
                    "Some of your audio could not be found; please say it again.",
                    error_type="server_error",
                )
            )
        elif isinstance(exc, ConflictError):
            log.warning("gave up after repeated write conflicts: %s", exc)
            self.post(
                error_event(
                    "busy", "Too many events at once; please try again.", error_type="server_error"
                )
            )
        else:
            # The schema should leave nothing to fail here; if something still does, the
            # client hears of it as an event (API Gateway would otherwise send a bare
            # "Internal server error" frame, and the local gateway nothing), and the session
            # goes on.
            log.exception("%s failed", event.type if event is not None else "an event")
            self.post(
                error_event(
                    "server_error",
                    "The server could not handle this event; the session goes on.",
                    event_id=event.event_id if event is not None else None,
                    error_type="server_error",
                )
            )


#: Every client event type and the method that handles it (``protocol.CLIENT_EVENT_TYPES``).
ROUTES: dict[str, Callable[[Any, dict[str, Any], ClientEvent], None]] = {
    "session.update": EventHandlers._on_session_update,
    "input_audio_buffer.append": EventHandlers._on_input_audio_buffer_append,
    "input_audio_buffer.commit": EventHandlers._on_input_audio_buffer_commit,
    "input_audio_buffer.clear": EventHandlers._on_input_audio_buffer_clear,
    "response.create": EventHandlers._on_response_create,
    "response.cancel": EventHandlers._on_response_cancel,
    "conversation.item.truncate": EventHandlers._on_conversation_item_truncate,
}
