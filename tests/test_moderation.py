"""Issue 6 §2: child safety, through the real handlers and the fake moderation endpoint.

For a flagged transcript and for a flagged reply: what the child hears (the speech requests and
the audio deltas), what the child sees (the transcript deltas), what ``response.done`` says,
what the history holds, and what the next turn's chat context carries.
"""

from __future__ import annotations

from typing import Any

from infra.fake_openai import synth_pcm
from kiddolingo.conversation import safe_redirect
from kiddolingo.speech_text import strip_for_speech
from tests.test_faults import Client, answer, chat_context, done, errors, heard, shown, types

REDIRECT = safe_redirect("Spanish")
PLACEHOLDER = "[something the tutor could not talk about]"


def spoken_since(fake: Any, before: int) -> list[str]:
    """The sentences the voice model was asked to read (Realtime responses), from ``before``."""
    return [r.text for r in fake.realtime_responses()[before:]]


def everything_said_or_shown(events: list[dict[str, Any]], fake: Any, before: int) -> str:
    """What reached the child: the text on screen and the speech of the audio it was sent."""
    posted = heard(events)
    said = [text for text in spoken_since(fake, before) if synth_pcm(text) in posted]
    return " ".join(said) + " " + shown(events)


def assert_content_filter(events: list[dict[str, Any]]) -> None:
    response = done(events)
    assert response["status"] == "completed"
    assert response["status_details"] == {"type": "completed", "reason": "content_filter"}
    assert errors(events) == []


# --------------------------------------------------------------------------- flagged input


def test_flagged_transcript_gets_the_gentle_redirect(stack, fake_openai) -> None:
    fake_openai.flag("bomba", "violence", 0.9)
    fake_openai.script_transcripts("Hola", "Quiero hacer una bomba", "Me gustan los gatos")
    answer(
        fake_openai,
        {
            "Hola": "¡Hola! (Hello!) 😊",
            "Quiero hacer una bomba": "Una bomba hace ¡bum! (A bomb goes boom!)",
            "Me gustan los gatos": "¡Los gatos son lindos! 🐱 (Cats are cute!)",
        },
    )
    child = Client(stack)
    child.turn()
    before = len(fake_openai.realtime_responses())

    events = child.turn()
    # the child's words were checked
    assert "Quiero hacer una bomba" in [r.input for r in fake_openai.requests("moderations")]
    # the child hears the redirect, and only the redirect: never the chat model's answer
    assert spoken_since(fake_openai, before) == [strip_for_speech(REDIRECT)]
    assert heard(events) == synth_pcm(strip_for_speech(REDIRECT))
    assert shown(events) == REDIRECT
    assert "bum" not in everything_said_or_shown(events, fake_openai, before)
    assert_content_filter(events)
    assert done(events)["output"][0]["content"][0]["transcript"] == REDIRECT
    assert types(events)[-3:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.done",
    ]

    # the history holds a neutral placeholder, never the flagged words
    assert child.history() == [
        ("user", "Hola"),
        ("assistant", "¡Hola! (Hello!) 😊"),
        ("user", PLACEHOLDER),
        ("assistant", REDIRECT),
    ]
    item = stack.session_item(child.sid)
    assert "bomba" not in repr(item)

    # the next turn goes on, and the flagged words are not in its chat context
    events = child.turn()
    assert done(events)["status"] == "completed" and "status_details" not in done(events)
    context = chat_context(fake_openai)
    assert context == [
        ("user", "Hola"),
        ("assistant", "¡Hola! (Hello!) 😊"),
        ("user", PLACEHOLDER),
        ("assistant", REDIRECT),
        ("user", "Me gustan los gatos"),
    ]
    assert stack.audio_keys() == []


def test_our_thresholds_are_stricter_than_the_endpoints(stack, fake_openai) -> None:
    # 0.35 on violence/graphic: the endpoint itself does not flag it (its threshold is 0.5),
    # the child-safety threshold (0.2) does.
    fake_openai.flag("sangre", "violence/graphic", 0.35)
    fake_openai.script_transcripts("Hay mucha sangre")
    fake_openai.script_replies("La sangre es roja. (Blood is red.)")
    child = Client(stack)
    before = len(fake_openai.realtime_responses())
    events = child.turn()
    assert_content_filter(events)
    assert spoken_since(fake_openai, before) == [strip_for_speech(REDIRECT)]
    assert child.history() == [("user", PLACEHOLDER), ("assistant", REDIRECT)]


def test_a_slow_moderation_runs_alongside_the_chat_request(stack, fake_openai) -> None:
    """Nothing flagged: moderation costs no extra latency, and nothing is posted before the
    child's words passed it."""
    fake_openai.set_latency(moderation_ms=300)
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies("¡Hola! (Hello!)")
    child = Client(stack)
    events = child.turn()
    assert done(events)["status"] == "completed"
    (check, *_) = fake_openai.requests("moderations")
    (chat,) = fake_openai.requests("chat/completions")
    assert check.input == "Hola"
    assert chat.received_at < check.finished_at  # in parallel, not one after the other
    # ... but the first word reached the child only after the verdict
    assert check.finished_at <= fake_openai.realtime_responses()[0].received_at + 0.3


# --------------------------------------------------------------------------- flagged output


def test_a_flagged_reply_is_never_spoken(stack, fake_openai) -> None:
    fake_openai.flag("pistola", "violence", 0.8)
    reply = (
        "¡Hola! (Hello!) Vamos a jugar con una pistola. (Let us play with a gun.) "
        "¿Te gusta? (Do you like it?)"
    )
    fake_openai.script_transcripts("Hola", "Vale")
    answer(fake_openai, {"Hola": reply, "Vale": "¡Muy bien! (Very good!)"})
    child = Client(stack)
    before = len(fake_openai.realtime_responses())
    events = child.turn()

    # what came before the flagged sentence was heard; the flagged sentence and everything
    # after it never reached the child's ears nor the screen (each sentence is checked while
    # its speech is synthesized, and posted only once it passed); the redirect closes the answer
    spoken = ["¡Hola!", "(Hello!)", strip_for_speech(REDIRECT)]
    assert "pistola" not in everything_said_or_shown(events, fake_openai, before)
    assert "gun" not in everything_said_or_shown(events, fake_openai, before)
    assert "pistola" in " ".join(str(r.input) for r in fake_openai.requests("moderations"))
    assert heard(events) == b"".join(synth_pcm(s) for s in spoken)
    assert_content_filter(events)
    said = "¡Hola! (Hello!) " + REDIRECT
    assert done(events)["output"][0]["content"][0]["transcript"] == said

    assert child.history() == [("user", "Hola"), ("assistant", said)]
    assert "pistola" not in repr(stack.session_item(child.sid))

    events = child.turn()
    assert done(events)["status"] == "completed"
    assert chat_context(fake_openai) == [("user", "Hola"), ("assistant", said), ("user", "Vale")]


def test_a_reply_flagged_from_its_first_sentence(stack, fake_openai) -> None:
    fake_openai.flag("odio", "hate", 0.9)
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies("Te odio. (I hate you.)")
    child = Client(stack)
    before = len(fake_openai.realtime_responses())
    events = child.turn()
    assert heard(events) == synth_pcm(strip_for_speech(REDIRECT))
    assert "odio" not in everything_said_or_shown(events, fake_openai, before)
    assert shown(events) == REDIRECT
    assert_content_filter(events)
    assert child.history() == [("user", "Hola"), ("assistant", REDIRECT)]
