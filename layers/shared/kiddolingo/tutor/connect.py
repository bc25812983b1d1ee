"""``$connect``: create a session, or resume one, and map the connection to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..protocol import new_id
from ..session import LEARNER, SessionConfig
from ..settings import Settings
from ..store import SessionStore


@dataclass
class ConnectResult:
    status: int
    session_id: str | None = None
    code: str | None = None
    message: str | None = None


def connect(
    store: SessionStore,
    settings: Settings,
    connection_id: str,
    *,
    learner_id: str,
    session_id: str | None,
    check_owner: Callable[[str | None], None],
    role: str = LEARNER,
) -> ConnectResult:
    """Create a session, or resume ``session_id``, and map the connection to it."""
    if session_id:
        session = store.get_session(session_id)
        if session is None:
            return ConnectResult(
                404, code="session_not_found", message="That session has expired; start a new one."
            )
        check_owner(session.get("learner"))
        # As stored now (an earlier deployment's map is read and rewritten as one string).
        cfg = SessionConfig.from_item(session.get("cfg")).to_item()
        timeline = int(session.get("timeline_ms", 0))
    else:
        session_id = new_id("sess")
        cfg = SessionConfig.default(settings.speech_voice, settings.target_language).to_item()
        store.create_session(session_id, learner_id, cfg)
        timeline = 0
    # The token's role goes with the connection: only a teacher's may set the lesson plan.
    store.bind_connection(connection_id, session_id, learner_id, cfg, timeline, role=role)
    return ConnectResult(200, session_id=session_id)
