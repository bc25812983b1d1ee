"""What a Lambda container loads once, kept out of the cyclic garbage collector's way.

A container imports its handler (botocore, numpy, Powertools), builds its AWS clients on the
first invocation and the provider SDK on its first turn, and keeps all of it until it is
recycled. Python's collector does not know that:

* while modules load, it runs a pass every few hundred new objects (imports make no garbage
  cycles worth one): ~9 % of the audio handler's import, and ~100 ms of the SDK's;
* a full collection walks every object tracked, the SDK's pydantic models included: measured
  in the benchmark's container processes (``make bench --containers N``), 150-230 ms in the
  middle of a turn or of an append, a stall the child hears.

:func:`long_lived` turns the collector off while such things load and, in a Lambda container,
freezes what was loaded (:func:`gc.freeze`: moved to a permanent generation that later
collections skip, so a full one costs a few ms). Reference counting still frees everything as
usual; only garbage *cycles* already present when a freeze happens are never reclaimed (the
few an invocation in flight may hold, once per container).

The freeze is for a process that is one container: Lambda (and ``sam local``) set
``AWS_LAMBDA_FUNCTION_NAME``. The local stack, the tests and the in-process benchmark run
every function in threads of one process, and a freeze there would keep their (cyclic)
garbage from earlier stacks forever; they only get the collector off while loading.
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
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _one_container_per_process():
            gc.freeze()
        # Nested or concurrent uses: whoever found the collector on turns it back on.
        if enabled:
            gc.enable()
