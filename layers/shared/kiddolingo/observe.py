"""Turn observers: how a tool outside the layer (the benchmark) watches the tutor's turns.

Production registers none: each hook is then a loop over an empty list. The module imports
nothing, and only the turn path loads it (the audio-chunk path never does).

An observer runs on the tutor's own thread and must be quick and must not raise:

- ``on_turn_start`` observers are called with no argument in the invoking thread, as a turn is
  handed to the process loop (``kiddolingo.runtime``), so an observer can tell which invocation
  started it (a context variable of that thread, say);
- ``on_turn_outcome`` observers are called with the turn's outcome
  (``kiddolingo.turn.TurnOutcome``) once it is known, as its metrics are emitted: once per
  turn, a discarded speculation included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

on_turn_start: list[Callable[[], None]] = []
on_turn_outcome: list[Callable[[Any], None]] = []


def turn_started() -> None:
    """A turn starts (called by the tutor in the invoking thread)."""
    for observer in on_turn_start:
        observer()


def turn_ended(outcome: Any) -> None:
    """A turn's outcome is known (called by the tutor as it emits the turn's metrics)."""
    for observer in on_turn_outcome:
        observer(outcome)


@contextmanager
def observing(
    *, start: Callable[[], None] | None = None, outcome: Callable[[Any], None] | None = None
) -> Iterator[None]:
    """Register ``start`` and ``outcome`` for the ``with`` block, and remove them after it."""
    if start is not None:
        on_turn_start.append(start)
    if outcome is not None:
        on_turn_outcome.append(outcome)
    try:
        yield
    finally:
        if start is not None:
            on_turn_start.remove(start)
        if outcome is not None:
            on_turn_outcome.remove(outcome)
