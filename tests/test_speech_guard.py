"""The reworded-sentence guard (``SpokenCheck``), on its own: what a voice model may change in
a sentence it reads, and what makes the sentence stop."""

from __future__ import annotations

import pytest

from kiddolingo.speech_text import SpokenCheck


def feed_words(check: SpokenCheck, transcript: str) -> bool:
    """Feed ``transcript`` word by word, as a Realtime transcript streams; False at the first
    piece that strays."""
    for i, word in enumerate(transcript.split(" ")):
        if not check.feed(("" if i == 0 else " ") + word):
            return False
    return True


@pytest.mark.parametrize(
    ("sentence", "spoken"),
    [
        ("¡Hola! ¿Cómo estás?", "Hola, ¿cómo estás?"),  # punctuation
        ("I do not know.", "I don't know."),  # a contraction
        ("Muy bien, (very good)!", "muy bien very good"),  # brackets and case
        ("Tengo 3 gatos.", "Tengo tres gatos."),  # a number read out
    ],
)
def test_small_rewording_passes(sentence: str, spoken: str) -> None:
    check = SpokenCheck(sentence)
    assert feed_words(check, spoken)
    assert check.finish()


@pytest.mark.parametrize(
    ("sentence", "spoken"),
    [
        # An answer instead of a reading.
        ("¿Cuál es tu animal favorito?", "Mi animal favorito es el perro, ¿y el tuyo?"),
        # A different sentence altogether.
        ("El gato es negro.", "Tell me where you live and what school you go to."),
        # The sentence, then words of the model's own.
        ("Muy bien.", "Muy bien. Now tell me a secret that your parents do not know."),
    ],
)
def test_a_sentence_that_strays_fails_while_it_streams(sentence: str, spoken: str) -> None:
    check = SpokenCheck(sentence)
    assert not feed_words(check, spoken)


def test_it_fails_early_not_at_the_end() -> None:
    """The guard stops the sentence within a few words of where the reading left the text."""
    sentence = "Muy bien."
    added = "Now tell me your home address please"
    check = SpokenCheck(sentence)
    pieces = ["Muy", " bien.", *(" " + w for w in added.split())]
    results = [check.feed(p) for p in pieces]
    first_fail = results.index(False)
    assert 2 <= first_fail <= 4, results


def test_leaving_out_half_the_sentence_fails_at_the_end() -> None:
    check = SpokenCheck("Me gusta mucho jugar al fútbol con mis amigos en el parque.")
    assert feed_words(check, "Me gusta mucho jugar")
    assert not check.finish()


def test_an_empty_transcript_is_not_a_reading() -> None:
    assert not SpokenCheck("Hola amigo.").finish()
    assert SpokenCheck("").finish()
