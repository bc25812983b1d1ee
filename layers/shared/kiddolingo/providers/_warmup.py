"""One pass of the SDK through a turn's requests, answered in memory (see ``preload_providers``).

The requests go to an ``httpx2.MockTransport``: the SDK's own documented way to answer requests
without a network. Only the SDK warms up; our providers' clients are built per event loop when a
turn runs, so nothing made here outlives the snapshot.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import httpx2
import openai

_CHAT_CHUNKS = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hola"}}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    },
]


def _answer(request: httpx2.Request) -> httpx2.Response:
    path = request.url.path
    if path.endswith("/chat/completions"):
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in _CHAT_CHUNKS) + "data: [DONE]\n\n"
        return httpx2.Response(200, text=body, headers={"content-type": "text/event-stream"})
    if path.endswith("/audio/transcriptions"):
        return httpx2.Response(
            200, json={"text": "hola", "usage": {"type": "duration", "seconds": 1}}
        )
    if path.endswith("/audio/speech"):
        return httpx2.Response(200, content=b"\0\0" * 240)
    if path.endswith("/moderations"):
        result = {"flagged": False, "categories": {}, "category_scores": {}}
        return httpx2.Response(200, json={"id": "m", "model": "m", "results": [result]})
    return httpx2.Response(404, json={"error": {"message": "not found"}})


async def _one_turn(chat: Any) -> None:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_answer))
    client = openai.AsyncOpenAI(api_key="warm-up", base_url="http://warm-up/v1", http_client=http)
    try:
        await client.audio.transcriptions.create(
            model="gpt-transcribe",
            file=("turn.wav", b"RIFF", "audio/wav"),
            response_format="json",
            languages=["es", "en"],
        )
        # The request our chat provider makes, as it makes it (its own request builder).
        params = chat.request(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            temperature=0.7,
            max_tokens=5,
        )
        stream = await client.chat.completions.create(**params)
        async for _ in stream:
            pass
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="coral", input="hola", response_format="pcm"
        ) as speech:
            async for _ in speech.iter_bytes():
                pass
        await client.moderations.create(model="omni-moderation-latest", input="hola")
    finally:
        await client.close()


def warm_up_sdk(chat: Any) -> None:
    """Run one turn's requests through the SDK, in memory, and load what its first real
    requests would load: the HTTP transport (httpcore2, its TLS context) and the Realtime
    client's WebSocket connector, which the SDK imports on the first ``connect()``. ``chat``
    is the chat provider, whose own request builder makes the chat request."""
    asyncio.run(_one_turn(chat))
    asyncio.run(httpx2.AsyncHTTPTransport().aclose())
    importlib.import_module("openai.lib._websocket")
