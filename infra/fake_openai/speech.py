"""``POST /v1/audio/speech``: the PCM of the input text (tones or espeak-ng's words), streamed
in chunks faster than real time by the profile's factor."""

from __future__ import annotations

import asyncio

from aiohttp import web

from infra.fake_openai.faults import abort_point
from infra.fake_openai.plumbing import Exchange, error_response
from infra.fake_openai.voices import SPEECH_MODES, espeak_pcm, speech_pcm

__all__ = ["SPEECH_CHUNK_BYTES", "SpeechEndpoint", "speech_mode"]

#: Bytes per streamed speech chunk: 100 ms of 24 kHz PCM16.
SPEECH_CHUNK_BYTES = 4_800


def speech_mode(mode: str) -> str:
    """``mode`` if the fake can speak that way (``tones`` or ``espeak``), else ValueError."""
    if mode not in SPEECH_MODES:
        raise ValueError(f"unknown speech mode {mode!r}; one of {SPEECH_MODES}")
    return mode


class SpeechEndpoint:
    """The speech's part of :class:`~infra.fake_openai.server.FakeOpenAI`; its audio is also
    what the Realtime socket speaks."""

    #: ``tones`` or ``espeak``: see :class:`~infra.fake_openai.server.FakeOpenAI`.
    speech: str
    #: Bytes per write of streamed speech (odd values exercise a client's odd-byte carry);
    #: on the Realtime socket, bytes per ``response.output_audio.delta``.
    speech_chunk_bytes: int

    def set_speech(self, mode: str) -> None:
        """``tones`` or ``espeak`` from now on."""
        self.speech = speech_mode(mode)

    async def _speech_audio(self, text: str) -> bytes:
        """The PCM of ``text`` in the current speech mode (espeak-ng runs off the loop)."""
        if self.speech == "espeak":
            return await asyncio.to_thread(espeak_pcm, text)
        return speech_pcm(text, "tones")

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("speech", request, self._read_json, self._answer_speech)

    async def _answer_speech(self, exchange: Exchange) -> web.StreamResponse:
        request, record, failure, latency = exchange
        body = record.json or {}
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return error_response(400, "input must be a non-empty string")
        if len(text) > 4096:
            return error_response(400, "input is longer than 4096 characters")
        if not body.get("model") or not body.get("voice"):
            return error_response(400, "model and voice are required")
        fmt = body.get("response_format", "mp3")
        if fmt != "pcm":
            return error_response(400, f"the fake serves response_format 'pcm' only, not {fmt!r}")
        pcm = await self._speech_audio(text)
        record.bytes_total = len(pcm)
        abort_at = abort_point(failure, len(pcm))
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/octet-stream"}
        )
        response.content_length = len(pcm)
        await response.prepare(request)
        first_byte_at = self._read_at(record) + latency.speech_first_byte_ms / 1000
        await self._sleep_until(first_byte_at)
        size = max(1, int(self.speech_chunk_bytes))
        interval = latency.speech_chunk_interval_s(size)
        for start in range(0, len(pcm), size):
            chunk = pcm[start : start + size]
            if abort_at is not None and record.bytes_sent + len(chunk) > abort_at:
                head = abort_at - record.bytes_sent
                if head > 0:
                    await self._write(response, record, chunk[:head])
                await self._break_stream(failure)
            if start:
                # A sleep per chunk, not deadlines: after the first byte only the rate
                # matters (faster than real time), and a fake that fell behind would catch
                # up in one burst, merging chunks that are meant to be network reads of
                # their own.
                await self._sleep(interval)
            await self._write(response, record, chunk)
        await response.write_eof()
        return response
