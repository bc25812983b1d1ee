"""DynamoDB adapter: sessions, connections, the audio state of a connection, responses.

One table, hash key ``pk``, TTL attribute ``expires_at`` (both read from ``template.yaml`` by the
tests, so this cannot drift from the deployed table). Three kinds of item:

``session#<id>``
    ``learner``, ``cfg`` (session settings), ``hist`` (the conversation as heard: one JSON
    string), ``resp`` (the response in flight: id, item id, the sentences posted so far, a
    truncation if one came in), ``truncs`` (item id → the truncation of a reply still in flight,
    until its turn writes it into ``hist``: it outlives ``resp`` being replaced),
    ``timeline_ms`` (where the session's audio timeline stands), ``ver`` (optimistic lock).
``conn#<id>``
    ``sid``, ``learner``, ``role`` (``teacher`` for a teacher's token; absent for a
    learner's), ``cfg`` (a copy of the session settings: the chunk path then reads one
    item), ``greeted``, the audio state (``seq``, ``aver``, ``vad``, ``pend``, ``utt``; see
    ``kiddolingo.ingest``), ``resp`` (the response this connection is receiving), ``rexp``
    (the epoch second that response's hold on the slot expires: its lease) and ``cancel``
    (a response id that must stop), ``ready`` (utterances committed without a reply, waiting
    for ``response.create``), ``cver`` (bumped by every write of the item: see
    ``KnownConnections``).
``turns#<session id>#<minute>``
    ``count``: the session's turns in that clock minute (``count_turn``).

Every expression string that writes an item lives in this package, behind a named method:

- ``table``: the keys, ``ConflictError`` / ``NotFoundError``, the low-level get and update;
- ``known``: ``KnownConnections``, the items this container's commits left;
- ``sessions``: the session item and the turns-per-minute count;
- ``connections``: binding, reading and deleting a connection, ``update_connection``;
- ``responses``: the response slot, the speculation marker, ``ready``;
- ``audio``: the audio state and the event stream (``park``, ``commit_audio``, ``hold_stream``).
"""

from __future__ import annotations

from .audio import AudioCommitChange, AudioWrites
from .known import KNOWN, KNOWN_MAX_ITEMS, KNOWN_TTL_S, KnownConnections, known_version_condition
from .responses import Responses, lease_until, slot_taken
from .sessions import REMOVE, Sessions
from .table import (
    MAX_CONFLICT_RETRIES,
    ConflictError,
    NotFoundError,
    conn_key,
    from_item,
    session_key,
    to_attr,
)

__all__ = [
    "KNOWN",
    "KNOWN_MAX_ITEMS",
    "KNOWN_TTL_S",
    "MAX_CONFLICT_RETRIES",
    "REMOVE",
    "AudioCommitChange",
    "ConflictError",
    "KnownConnections",
    "NotFoundError",
    "SessionStore",
    "conn_key",
    "from_item",
    "known_version_condition",
    "lease_until",
    "session_key",
    "slot_taken",
    "to_attr",
]


class SessionStore(AudioWrites, Responses, Sessions):
    """The one DynamoDB adapter: sessions, connections, responses, the audio state."""
