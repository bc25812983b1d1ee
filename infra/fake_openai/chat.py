"""``POST /v1/chat/completions``: a scripted (or canned) reply, whole or streamed as server-sent
events at the profile's token rate, with the usage and reasoning tokens the fake reports."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from infra.fake_openai.content import chat_tokens
from infra.fake_openai.faults import abort_point
from infra.fake_openai.plumbing import Exchange, error_response

if TYPE_CHECKING:
    from infra.fake_openai.profile import LatencyProfile
    from infra.fake_openai.recording import RecordedRequest

__all__ = ["REASONING_MODEL_PREFIXES", "REASONING_TOKENS", "ChatEndpoint"]

#: The fake's rule for the reasoning tokens a chat completion spends at each
#: ``reasoning_effort`` (its own figures, not OpenAI's): they delay the first content token at
#: the profile's token rate and are reported in ``usage.completion_tokens_details``.
REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 64, "medium": 256, "high": 1024, "xhigh": 2048}
#: Models that reason when no ``reasoning_effort`` is given (at ``medium``).
REASONING_MODEL_PREFIXES = ("gpt-6", "gpt-5", "o1", "o3", "o4")


class ChatEndpoint:
    """The chat completions' part of :class:`~infra.fake_openai.server.FakeOpenAI`."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("chat", request, self._read_json, self._answer_chat)

    async def _answer_chat(self, exchange: Exchange) -> web.StreamResponse:
        record, latency = exchange.record, exchange.latency
        body = record.json or {}
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not body.get("model"):
            return error_response(400, "model and a non-empty messages list are required")
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in REASONING_TOKENS:
            allowed = ", ".join(REASONING_TOKENS)
            return error_response(
                400, f"Invalid value for reasoning_effort: {effort!r} (one of {allowed})"
            )
        reply = self._next_reply(messages)
        record.response_text = reply
        tokens = chat_tokens(reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
        record.tokens_total = len(tokens)
        record.usage = self._chat_usage(body, len(tokens))
        if body.get("stream"):
            return await self._stream_chat(exchange, tokens, finish)
        await self._sleep_until(
            self._read_at(record)
            + self._first_token_s(latency, record.usage)
            + latency.token_interval_s() * len(tokens)
        )
        payload = self._completion(body, "".join(tokens), finish, record.usage)
        data = json.dumps(payload).encode()
        record.bytes_sent = record.bytes_total = len(data)
        record.tokens_sent = len(tokens)
        return web.Response(body=data, content_type="application/json")

    @staticmethod
    def _chat_usage(body: dict[str, Any], n_tokens: int) -> dict[str, Any]:
        """The usage the fake reports: a prompt token per word of the messages, a completion
        token per streamed token, and the reasoning tokens of the effort
        (:data:`REASONING_TOKENS`), which count as completion tokens as OpenAI counts them."""
        prompt_tokens = sum(
            len(str(m.get("content") or "").split()) for m in body.get("messages", [])
        )
        effort = body.get("reasoning_effort")
        model = str(body.get("model") or "")
        if effort is None and model.startswith(REASONING_MODEL_PREFIXES):
            effort = "medium"  # a reasoning model reasons unless told not to
        reasoning = REASONING_TOKENS.get(effort or "none", 0)
        completion = n_tokens + reasoning
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _first_token_s(latency: LatencyProfile, usage: Mapping[str, Any]) -> float:
        """The first content token comes after the profile's first-token time and the reasoning
        tokens, produced at the profile's token rate."""
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        return latency.chat_first_token_ms / 1000 + latency.token_interval_s() * reasoning

    @staticmethod
    def _completion(body: dict[str, Any], text: str, finish: str, usage: dict[str, Any]) -> dict:
        return {
            "id": f"chatcmpl-fake-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    @staticmethod
    def _chat_events(record: RecordedRequest, tokens: list[str], finish: str) -> list[bytes]:
        """The whole stream, event by event: the role, a content token each, the finish, the
        usage when asked for, then ``[DONE]``."""
        body = record.json or {}
        head = {
            "id": f"chatcmpl-fake-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            chunk = {**head, "choices": [choice]}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": token}) for token in tokens]
        events.append(event({}, finish))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            # The last chunk before [DONE], with no choices, as OpenAI sends it.
            last = {**head, "choices": [], "usage": record.usage}
            events.append(f"data: {json.dumps(last)}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        return events

    async def _stream_chat(
        self, exchange: Exchange, tokens: list[str], finish: str
    ) -> web.StreamResponse:
        """Send the events, the first content token after the reasoning and each next one at
        the profile's rate; an injected ``abort`` or ``stall`` cuts the stream midway."""
        request, record, failure, latency = exchange
        events = self._chat_events(record, tokens, finish)
        record.bytes_total = sum(len(e) for e in events)
        abort_at = abort_point(failure, record.bytes_total)
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        assert record.usage is not None
        first_token_at = self._read_at(record) + self._first_token_s(latency, record.usage)
        await self._sleep_until(first_token_at)
        interval = latency.token_interval_s()
        for index, data in enumerate(events):
            if abort_at is not None and record.bytes_sent + len(data) > abort_at:
                await self._break_stream(failure)
            if 1 < index <= len(tokens) + 1:
                # content token ``index`` (the first is index 1) is due ``index - 1`` intervals
                # after the first, and the finish event one interval after the last
                await self._sleep_until(first_token_at + interval * (index - 1))
            await self._write(response, record, data)
            if 0 < index <= len(tokens):
                record.tokens_sent += 1
        await response.write_eof()
        return response
