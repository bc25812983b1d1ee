"""One pass of the SDK through a turn's requests, answered on this machine (see
``preload_providers``).

The HTTP requests go to an ``httpx2.MockTransport``: the SDK's own documented way to answer
requests without a network. The Realtime speech sentence needs a real WebSocket: a server on
the loopback address answers it with the few events a sentence reads (``websockets``, which the
SDK's Realtime client runs on, serves it). Only the SDK and the process's TLS context warm up;
our providers' clients are built per event loop when a turn runs, so no connection made here
outlives the snapshot.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from .sdk_client import tls_context

if TYPE_CHECKING:
    from ..settings import Settings

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


def _realtime_answers(text: str) -> list[dict[str, Any]]:
    """What the Realtime API sends for one out-of-band response reading ``text``: the events
    our speech session reads, in their documented shapes (ids and figures made up)."""
    response = {"object": "realtime.response", "id": "r", "status": "in_progress", "output": []}
    where = {"response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0}
    usage = {
        "total_tokens": 2,
        "input_tokens": 1,
        "output_tokens": 1,
        "input_token_details": {"text_tokens": 1, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 0, "audio_tokens": 1},
    }
    return [
        {"type": "response.created", "response": response},
        {"type": "response.output_audio.delta", **where, "delta": "AAAAAA=="},
        {"type": "response.output_audio_transcript.delta", **where, "delta": text},
        {"type": "response.output_audio_transcript.done", **where, "transcript": text},
        {"type": "response.output_audio.done", **where},
        {"type": "response.done", "response": {**response, "status": "completed", "usage": usage}},
    ]


async def _answer_realtime(socket: Any) -> None:
    """A Realtime socket in this process: ``session.updated`` for an update, and one finished
    response (its metadata sent back) for each ``response.create``."""
    async for message in socket:
        event = json.loads(message)
        answers: list[dict[str, Any]] = []
        if event.get("type") == "session.update":
            answers = [{"type": "session.updated", "session": event.get("session", {})}]
        elif event.get("type") == "response.create":
            request = event.get("response", {})
            answers = _realtime_answers(request["input"][0]["content"][0]["text"])
            answers[0]["response"]["metadata"] = request.get("metadata")
        for n, answer in enumerate(answers):
            await socket.send(json.dumps({"event_id": f"warm-{n}", **answer}))


async def _speak_once(settings: Settings) -> None:
    """One sentence through our Realtime speech session and the SDK's Realtime client, over a
    real WebSocket to ``_answer_realtime`` on this machine's loopback: the SDK's Realtime
    modules, its event models and its request transforms load here, not in a child's turn."""
    from websockets.asyncio.server import serve

    from .realtime_speech import RealtimeSpeechSynth
    from .sdk_client import StageClient

    async with serve(_answer_realtime, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stage = replace(settings.speech, base_url=f"http://127.0.0.1:{port}/v1", api_key="warm")
        synth = RealtimeSpeechSynth(
            StageClient("speech", stage, settings),
            reasoning_effort=settings.speech_reasoning_effort,
        )
        try:
            async for _ in synth.stream("Hola.", voice=settings.speech_voice):
                pass
        finally:
            await synth.aclose()


def warm_up_sdk(chat: Any, settings: Settings) -> None:
    """Run one turn's requests through the SDK, in memory, and load what its first real
    requests would load: the HTTP transport (httpcore2), the process's TLS context and, when
    speech goes over the Realtime API, a sentence spoken over a loopback socket. ``chat`` is
    the chat provider, whose own request builder makes the chat request."""
    tls_context()
    asyncio.run(_one_turn(chat))
    asyncio.run(httpx2.AsyncHTTPTransport(verify=tls_context()).aclose())
    importlib.import_module("openai.lib._websocket")
    if settings.speech_api == "realtime":
        asyncio.run(_speak_once(settings))
