"""The fake's Realtime API socket (``GET /v1/realtime?model=...``), for speech: a session, and
out-of-band responses that read a sentence aloud. See the package docstring for the protocol.

Each socket is a :class:`~infra.fake_openai.recording.RecordedRequest` with endpoint
``realtime`` (its session, the client events, the ``error`` events sent, the audio bytes sent
over all its responses); each response is a :class:`RealtimeResponse`, listed by
``FakeOpenAI.realtime_responses()`` and in its socket's ``responses``.

- ``socket``: the handshake, the session and the client events of one connection;
- ``events``: the checks of the client events the fake serves;
- ``speaking``: one response spoken, from ``response.created`` to ``response.done``;
- ``response``: the response's record, the objects its events carry, its usage.
"""

from infra.fake_openai.realtime.response import (
    AUDIO_TOKEN_MS,
    CHARS_PER_TEXT_TOKEN,
    VOICES,
    RealtimeResponse,
)
from infra.fake_openai.realtime.socket import RealtimeEndpoint

__all__ = [
    "AUDIO_TOKEN_MS",
    "CHARS_PER_TEXT_TOKEN",
    "VOICES",
    "RealtimeEndpoint",
    "RealtimeResponse",
]
