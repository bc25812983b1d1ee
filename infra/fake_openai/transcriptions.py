"""``POST /v1/audio/transcriptions``: a multipart WAV upload answered with a scripted (or the
default) transcript, in the response format asked for."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING

from aiohttp import web

from infra.fake_openai.plumbing import Exchange, error_response
from kiddolingo.audio import WavFormatError, wav_to_pcm16

if TYPE_CHECKING:
    from infra.fake_openai.recording import RecordedRequest

__all__ = ["TranscriptionsEndpoint"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def _multipart_parts(
    body: bytes, boundary: str
) -> Iterator[tuple[str | None, str | None, str | None, bytes]]:
    """``(name, filename, content type, data)`` of each part of a multipart/form-data body
    (parsed by hand: small, whole bodies, and no dependence on network chunk boundaries)."""
    if not boundary:
        return
    delimiter = b"--" + boundary.encode("latin-1")
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        disposition = headers.get("Content-Disposition", "")
        params = dict(
            (key.strip().lower(), value.strip().strip('"'))
            for key, _, value in (p.partition("=") for p in disposition.split(";")[1:])
        )
        yield params.get("name"), params.get("filename"), headers.get("Content-Type"), data


class TranscriptionsEndpoint:
    """The transcriptions' part of :class:`~infra.fake_openai.server.FakeOpenAI`."""

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("transcriptions", request, self._read_upload, self._transcribe)

    async def _read_upload(
        self, request: web.Request, record: RecordedRequest, authorised: bool
    ) -> None:
        """The multipart form into the record: the WAV file, the fields, the list fields. An
        upload whose key was refused is not read."""
        form: dict[str, str] = {}
        if authorised and request.content_type == "multipart/form-data":
            match = _BOUNDARY.search(request.headers.get("Content-Type", ""))
            boundary = match.group(1) if match else ""
            raw = await request.read()
            record.read_at = time.monotonic()
            for name, filename, content_type, data in _multipart_parts(raw, boundary):
                if name == "file":
                    record.file, record.filename = data, filename
                    record.file_content_type = content_type
                elif name and name.endswith("[]"):
                    # The SDK sends a list as repeated ``name[]`` fields.
                    record.form_lists.setdefault(name[:-2], []).append(
                        data.decode("utf-8", "replace")
                    )
                elif name:
                    form[name] = data.decode("utf-8", "replace")
        record.form = form

    async def _transcribe(self, exchange: Exchange) -> web.StreamResponse:
        record, latency = exchange.record, exchange.latency
        form = record.form
        if not record.file:
            return error_response(400, "missing file")
        if not form.get("model"):
            return error_response(400, "missing model")
        refused = self._transcription_params_problem(form, record.form_lists)
        if refused is not None:
            return error_response(400, refused)
        try:
            record.pcm, record.sample_rate = wav_to_pcm16(record.file)
        except WavFormatError as exc:
            return error_response(400, f"Invalid file format: {exc}")
        await self._sleep_until(self._read_at(record) + latency.transcription_ms / 1000)
        text = self._next_transcript(record)
        record.response_text = text
        return self._transcript_response(record, text)

    @staticmethod
    def _transcript_response(record: RecordedRequest, text: str) -> web.Response:
        """``text`` in the ``response_format`` asked for, its size noted in the record."""
        form = record.form
        duration = len(record.pcm or b"") / 2 / (record.sample_rate or 1)
        fmt = form.get("response_format", "json")
        if fmt in ("text", "srt", "vtt"):
            body = text.encode()
            response = web.Response(body=body, content_type="text/plain", charset="utf-8")
        elif fmt == "verbose_json":
            payload = {
                "task": "transcribe",
                "language": form.get("language", "spanish"),
                "duration": duration,
                "text": text,
                "segments": [],
            }
            body = json.dumps(payload).encode()
            response = web.Response(body=body, content_type="application/json")
        elif fmt == "json":
            # Billed by the second of audio; the fake reports the audio's exact length.
            record.usage = {"type": "duration", "seconds": round(duration, 3)}
            body = json.dumps({"text": text, "usage": record.usage}).encode()
            response = web.Response(body=body, content_type="application/json")
        else:
            return error_response(400, f"unsupported response_format {fmt!r}")
        record.bytes_sent = record.bytes_total = len(body)
        return response

    @staticmethod
    def _transcription_params_problem(
        form: Mapping[str, str], lists: Mapping[str, list[str]]
    ) -> str | None:
        """Why the request's parameters do not fit its model: the gpt-transcribe family takes
        a ``languages`` list and answers ``json`` or ``text``; the older models take one
        ``language``."""
        model = form.get("model", "")
        languages = lists.get("languages")
        if model.startswith(("gpt-transcribe", "gpt-live-transcribe")):
            if "language" in form:
                return f"{model} takes 'languages' (a list of language codes), not 'language'"
            fmt = form.get("response_format", "json")
            if fmt not in ("json", "text"):
                return f"response_format {fmt!r} is not supported by {model}: use json or text"
            bad = [code for code in languages or [] if not re.fullmatch(r"[a-z]{2,3}", code)]
            if bad:
                return f"languages must be ISO-639-1 codes such as 'es', not {bad}"
        elif languages is not None:
            return f"Unrecognized request argument supplied: languages (model {model})"
        return None
