"""The pure ordering decisions (``kiddolingo.sequencing``), the short-append rule and the VAD
leaving an utterance the client ended, without I/O."""

from __future__ import annotations

from kiddolingo import ingest, sequencing, vad
from kiddolingo.sequencing import Placement, Turn


def test_an_unnumbered_event_is_placed_against_the_newest_stamp_applied() -> None:
    assert sequencing.place(0, 5) is Placement.IN_ORDER  # nothing applied yet
    assert sequencing.place(100, 101) is Placement.IN_ORDER
    assert sequencing.place(100, 100) is Placement.TIE
    assert sequencing.place(100, 99) is Placement.LATE


def test_the_client_is_told_at_most_once_a_second() -> None:
    assert sequencing.should_tell(0, 5)
    assert not sequencing.should_tell(1000, 1999)
    assert sequencing.should_tell(1000, 2000)


def test_a_numbered_event_against_the_watermark() -> None:
    assert sequencing.numbered_turn(5, 4) is Turn.DUPLICATE
    assert sequencing.numbered_turn(5, 5) is Turn.NOW
    assert sequencing.numbered_turn(5, 9) is Turn.WAIT


def test_a_gap_expires_on_the_gateways_clock() -> None:
    assert not sequencing.gap_expired(0, 10**12)  # no gap
    assert not sequencing.gap_expired(1000, 1000 + sequencing.GAP_TIMEOUT_MS - 1)
    assert sequencing.gap_expired(1000, 1000 + sequencing.GAP_TIMEOUT_MS)


def test_the_error_names_the_remedy() -> None:
    exc = sequencing.unordered_error("Something happened.", "ev1")
    assert exc.code == "unordered_events" and exc.event_id == "ev1"
    assert exc.message.startswith("Something happened. Number your events")


def test_short_appends_a_lone_one_is_taken_a_stream_is_refused_and_told_once() -> None:
    short = ingest.SHORT_APPENDS.__class__(window_s=1.0)
    small, ok = ingest.MIN_APPEND_BYTES - 2, ingest.MIN_APPEND_BYTES
    assert short.judge("c", ok, 0.0) == (False, False)
    assert short.judge("c", small, 0.0) == (False, False)  # the end of a recording
    assert short.judge("c", small, 0.02) == (True, True)
    assert short.judge("c", small, 0.04) == (True, False)
    assert short.judge("c", small, 0.6) == (True, False)
    assert short.judge("c", small, 1.1) == (True, True)  # told again a second later
    assert short.judge("other", small, 1.06) == (False, False)
    assert short.judge("c", small, 5.0) == (False, False)  # a pause: one is taken again


def test_end_utterance_leaves_the_utterance_and_keeps_the_ring() -> None:
    state = vad.VadState(
        sample_rate=24000,
        in_utterance=True,
        speech_start_ms=400,
        silence_ms=300,
        speculate_fired=True,
        candidate_start=10,
        ring=b"\x01\x00" * 10,
    )
    out = vad.end_utterance(state)
    assert not out.in_utterance and out.candidate_start == -1 and out.speech_start_ms == -1
    assert out.silence_ms == 0 and not out.speculate_fired
    assert out.ring == state.ring
