"""What the wire allows: frame and id sizes, the client event types, audio rates, voices and
languages. Every other part of ``protocol`` (and the session configuration) reads them here."""

from __future__ import annotations

from ..settings import HTTP_VOICES

#: API Gateway closes the socket on a client frame over 32 KB; we answer any event over this
#: size with an error instead, and keep every posted message under it too.
MAX_EVENT_BYTES = 32 * 1024
#: Ids a client chooses (``event_id``, ``item_id``, ``response_id``) are echoed back in
#: events: bounded so that an echo can never push an event past 32 KB.
MAX_ID_CHARS = 128
#: An error message never passes this, whatever it quotes.
MAX_ERROR_MESSAGE_CHARS = 1024

SUPPORTED_INPUT_RATES = (24000, 16000)
#: The input rate of a session that has not said which.
DEFAULT_INPUT_RATE = SUPPORTED_INPUT_RATES[0]
#: The one rate of every audio the tutor sends.
OUTPUT_RATE = 24000

#: Every voice of any speech API (a deployment's own may be fewer: ``Settings.speech_voices``,
#: checked where the settings are known).
VOICES = HTTP_VOICES

#: The languages a child may choose to learn. The name goes into the tutor's system prompt, so
#: a learner picks it from this list (matched without regard to case) and never writes it.
TARGET_LANGUAGES = {
    name.casefold(): name
    for name in (
        "Arabic",
        "Catalan",
        "Chinese",
        "Czech",
        "Danish",
        "Dutch",
        "English",
        "Finnish",
        "French",
        "German",
        "Greek",
        "Hebrew",
        "Hindi",
        "Hungarian",
        "Indonesian",
        "Italian",
        "Japanese",
        "Korean",
        "Malay",
        "Mandarin",
        "Norwegian",
        "Polish",
        "Portuguese",
        "Romanian",
        "Russian",
        "Spanish",
        "Swahili",
        "Swedish",
        "Tagalog",
        "Thai",
        "Turkish",
        "Ukrainian",
        "Vietnamese",
        "Welsh",
    )
}

#: The ages a learner may give (``session.tutor.learner_age``), inclusive.
LEARNER_AGE_RANGE = (3, 17)
#: The longest lesson plan (``session.instructions``, from a teacher's connection).
MAX_INSTRUCTIONS_CHARS = 4000
#: No assistant item is longer than a connection, which API Gateway caps at two hours.
MAX_AUDIO_END_MS = 2 * 3600 * 1000
