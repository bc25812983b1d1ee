"""The brief's sequential design as the baseline, on the same fake server and profile through the
real SDK: whole transcription, non-streamed chat completion, whole speech, then "send"."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from . import config
from .conversation import Turn


def run_sequential(
    profile: Any, utterances: list[bytes], turns: list[Turn], silence_ms: int, fake: Any
) -> list[float]:
    """The brief's design: whole transcription → whole completion → whole speech → send."""
    import openai

    from kiddolingo.audio import pcm16_to_wav
    from kiddolingo.conversation import chat_messages
    from kiddolingo.speech_text import strip_for_speech

    fake.reset()
    fake.set_latency(profile)
    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench-fake", max_retries=0)
    out: list[float] = []
    history: list[dict[str, Any]] = []
    try:
        for turn, pcm in zip(turns, utterances, strict=True):
            fake.script_transcripts(turn.phrase)
            fake.script_replies(turn.reply)
            wav = pcm16_to_wav(pcm, config.RATE)
            started = time.perf_counter()
            text = client.audio.transcriptions.create(
                model="whisper-1", file=("turn.wav", wav, "audio/wav")
            ).text
            messages = chat_messages(
                history,
                text,
                target_language="Spanish",
                learner_age=7,
                instructions=None,
                max_history=20,
            )
            completion = client.chat.completions.create(
                model="gpt-4o",
                messages=messages,  # type: ignore[arg-type]
                temperature=0.7,
                max_tokens=150,
            )
            reply = completion.choices[0].message.content or ""
            speech = client.audio.speech.create(
                model="tts-1-hd", voice="nova", input=strip_for_speech(reply), response_format="pcm"
            )
            first = speech.content[:16_384]
            json.dumps(
                {
                    "type": "response.output_audio.delta",
                    "delta": base64.b64encode(first).decode("ascii"),
                }
            )  # "send"
            out.append(silence_ms + (time.perf_counter() - started) * 1000.0)
            history += [{"role": "user", "text": text}, {"role": "assistant", "text": reply}]
    finally:
        client.close()
    return out
