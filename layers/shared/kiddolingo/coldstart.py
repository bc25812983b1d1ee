"""What a Lambda container loads once, kept out of the cyclic garbage collector's way.

A container imports its handler (botocore, numpy, Powertools), builds its AWS clients on the
first invocation and the provider SDK on its first turn, and keeps all of it until it is
recycled. Python's collector does not know that:

* while modules load, it runs a pass every few hundred new objects, though loading makes
  hardly any garbage (~1,800 objects in cycles by the end of a first turn);
* a full collection walks every object tracked, ~200,000 once the SDK is loaded (its pydantic
  models): 150-230 ms in the benchmark's container processes (``make bench --containers N``),
  in the middle of a turn or of an append, a stall the child hears.

:func:`long_lived` turns the collector off while such things load, then freezes what was
loaded (:func:`gc.freeze`: moved to a permanent generation that later collections skip, so a
full one costs a few ms, and the passes skipped while loading are never owed). Reference
counting still frees everything as usual; only garbage *cycles* already present when a freeze
happens are never reclaimed (the few that invocations in flight hold at those moments, all of
them early in a container's life).

This is for a process that is one container: Lambda (and ``sam local``) set
``AWS_LAMBDA_FUNCTION_NAME``. The local stack, the tests and the in-process benchmark run
every function in threads of one process: a freeze there would keep their (cyclic) garbage
from earlier stacks forever, and the collector merely turned off and on again would only
postpone its passes (the first one after would walk everything loaded meanwhile). There,
:func:`long_lived` does nothing.

What it saves, measured: docs/bench.md, section "2026-12-02".
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

__all__ = ["long_lived"]


def _one_container_per_process() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """Load what lives as long as the container: no collections meanwhile, frozen after."""
    if not _one_container_per_process():
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        # Nested or concurrent uses: whoever found the collector on turns it back on.
        if enabled:
            gc.enable()
