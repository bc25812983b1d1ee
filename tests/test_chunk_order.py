"""The chunk path's sequencer as pure code (``ingest.order_run``): where an append's chunk
falls against the watermark, without AWS. The races around it are tested through the real
handlers in test_sequencing.py, test_audio_order.py and test_faults.py."""

from __future__ import annotations

from kiddolingo.ingest import MAX_PARKED_CHUNKS, AudioState, Verdict, order_run
from kiddolingo.sequencing import GAP_TIMEOUT_MS

A, B, C = b"a" * 8, b"b" * 8, b"c" * 8
NOW = 1_000_000


def test_the_chunk_at_the_watermark_runs_and_takes_the_parked_ones_after_it() -> None:
    state = AudioState(next_seq=3, pending={4: B, 5: C, 7: A})
    order = order_run(state, A, 3, NOW)
    assert order.verdict is Verdict.RUN and order.own_in_run
    assert order.run == ((3, A), (4, B), (5, C))  # 7 waits behind the gap at 6
    assert order.state == state


def test_a_chunk_already_processed_or_parked_is_a_duplicate() -> None:
    state = AudioState(next_seq=3, pending={5: B})
    assert order_run(state, A, 2, NOW).verdict is Verdict.DUPLICATE
    assert order_run(state, A, 5, NOW).verdict is Verdict.DUPLICATE


def test_a_chunk_ahead_of_a_fresh_gap_is_parked() -> None:
    state = AudioState(next_seq=3, pending={5: B}, gap_since=NOW - GAP_TIMEOUT_MS + 1)
    order = order_run(state, A, 4, NOW)
    assert order.verdict is Verdict.PARK and order.run == ()


def test_a_gap_that_waited_too_long_is_skipped_from_the_oldest_parked_chunk() -> None:
    state = AudioState(next_seq=3, pending={5: B, 6: C}, gap_since=NOW - GAP_TIMEOUT_MS)
    order = order_run(state, A, 8, NOW)
    assert order.verdict is Verdict.RUN and not order.own_in_run  # 7 is still missing
    assert order.state.next_seq == 5 and order.run == ((5, B), (6, C))


def test_a_full_parking_skips_the_gap_and_ours_joins_the_run() -> None:
    pending = {n: B for n in range(4, 4 + MAX_PARKED_CHUNKS)}
    state = AudioState(next_seq=2, pending=pending, gap_since=NOW)
    last = 4 + MAX_PARKED_CHUNKS
    order = order_run(state, A, last, NOW)
    assert order.verdict is Verdict.RUN and order.own_in_run
    assert order.run[0][0] == 4 and order.run[-1] == (last, A)


def test_a_gap_held_by_a_numbered_event_is_not_skipped() -> None:
    state = AudioState(
        next_seq=3, pending={5: B}, gap_since=NOW - GAP_TIMEOUT_MS, hold=3, hold_since=NOW
    )
    assert order_run(state, A, 6, NOW).verdict is Verdict.PARK


def test_without_a_chunk_only_what_waits_before_the_holding_event_runs() -> None:
    state = AudioState(next_seq=3, pending={4: B, 5: C, 7: A})
    assert order_run(state, None, 0, NOW).verdict is Verdict.IDLE  # the gap at 3 is fresh
    order = order_run(state, None, 0, NOW, before=5, hurry=True)
    assert order.state.next_seq == 4 and order.run == ((4, B),)
