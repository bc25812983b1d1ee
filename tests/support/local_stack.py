"""The whole local stack in-process, for tests: ``with local_stack() as stack: ...``.

It is ``infra.local.LocalStack`` — what ``make run`` starts — on free ports: moto's
``ThreadedMotoServer`` with the table and bucket from ``template.yaml``, a ``FakeOpenAI`` with
zero latency (unless ``latency`` says otherwise), and the local gateway running the REAL
handlers named by the template. The process environment is patched while it runs and restored
afterwards.

Handles on the yielded :class:`~infra.local.LocalStack`:

* ``stack.page_url`` / ``stack.ws_url`` / ``stack.ready_url`` (page URL with ``?token=``);
* ``stack.gateway`` (``drop(connection_id)``, ``connections``, ``invocations``,
  ``wait_for_invocations(...)``, ``wait_for_connections(...)``);
* ``stack.fake_openai`` (``requests("chat")``, ``script_transcripts(...)``, ``reset()``);
* ``stack.token``, ``stack.aws_endpoint_url``, ``stack.table_name``, ``stack.bucket_name``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infra.local import LocalStack

_DROPPED = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AWS_PROFILE", "LOCAL_AWS", "PORT")


@contextmanager
def local_stack(
    *,
    auth_required: bool = True,
    latency: Any = None,
    env: dict[str, str] | None = None,
    **gateway_kwargs: Any,
) -> Iterator[LocalStack]:
    """Start the local stack on free loopback ports; stop it (and restore the env) on exit.

    ``latency``: a ``LatencyProfile`` for the fake OpenAI server (zero by default).
    ``env``: extra settings (e.g. ``{"TARGET_LANGUAGE": "French"}``) on top of the process
    environment minus anything that would reach real AWS or a real provider.
    """
    from infra.fake_openai import LatencyProfile

    base = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    for name in list(base):
        if name.endswith(("_API_KEY", "_API_KEY_PARAMETER")) or name.startswith("AWS_"):
            base.pop(name)
    base.update(env or {})
    stack = LocalStack(
        env=base,
        port=0,
        openai="fake",
        fake_latency=latency or LatencyProfile.zero(),
        auth_required=auth_required,
        local_aws="moto",
        **gateway_kwargs,
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
