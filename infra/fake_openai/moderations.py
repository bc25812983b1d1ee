"""``POST /v1/moderations``: low background scores, raised for the words a test flags."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from infra.fake_openai.plumbing import Exchange, error_response

__all__ = ["API_FLAG_THRESHOLD", "MODERATION_CATEGORIES", "ModerationsEndpoint"]

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
#: The fake endpoint's own ``flagged`` threshold (the real one is lenient like this).
API_FLAG_THRESHOLD = 0.5


class ModerationsEndpoint:
    """The moderations' part of :class:`~infra.fake_openai.server.FakeOpenAI`."""

    _lock: threading.Lock
    _flags: dict[str, dict[str, float]]

    def flag(
        self,
        word: str,
        categories: str | Mapping[str, float] = "violence",
        score: float = 0.9,
    ) -> None:
        """Moderation inputs containing ``word`` (case-insensitive) get these category scores.
        A score at or above 0.5 also sets the endpoint's own ``flagged``; a lower one tests
        thresholds stricter than the endpoint's."""
        scores = {categories: score} if isinstance(categories, str) else dict(categories)
        unknown = set(scores) - set(MODERATION_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown moderation categories {sorted(unknown)}")
        with self._lock:
            self._flags[word.lower()] = scores

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("moderations", request, self._read_json, self._answer_moderations)

    async def _answer_moderations(self, exchange: Exchange) -> web.StreamResponse:
        record, latency = exchange.record, exchange.latency
        body = record.json or {}
        texts = list(self._moderation_texts(body.get("input")))
        if not texts:
            return error_response(400, "input is required")
        await self._sleep_until(self._read_at(record) + latency.moderation_ms / 1000)
        with self._lock:
            flags = dict(self._flags)
        payload = {
            "id": f"modr-fake-{uuid.uuid4().hex[:12]}",
            "model": body.get("model") or "omni-moderation-latest",
            "results": [self._moderation_result(text, flags) for text in texts],
        }
        data = json.dumps(payload).encode()
        record.bytes_sent = record.bytes_total = len(data)
        return web.Response(body=data, content_type="application/json")

    @staticmethod
    def _moderation_texts(value: Any) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, dict) and item.get("type") == "text":
                    yield str(item.get("text", ""))

    @staticmethod
    def _moderation_result(text: str, flags: Mapping[str, Mapping[str, float]]) -> dict:
        # Low, distinct, deterministic background scores.
        scores = {c: round(1e-6 * (i + 1), 8) for i, c in enumerate(MODERATION_CATEGORIES)}
        lowered = text.lower()
        for word, word_scores in flags.items():
            if word in lowered:
                for category, score in word_scores.items():
                    scores[category] = max(scores[category], score)
        categories = {c: s >= API_FLAG_THRESHOLD for c, s in scores.items()}
        return {
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        }
