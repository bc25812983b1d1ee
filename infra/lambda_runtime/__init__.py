"""A small in-process stand-in for the AWS Lambda Python runtime.

The local gateway (``infra.apigw``) invokes the same handlers that run in Lambda. This module
loads a function's handler the way the runtime does and builds the ``context`` object it is
called with:

* the handler string ``"app.lambda_handler"`` names module ``app`` in the function's code
  directory and its attribute ``lambda_handler``;
* the module is imported **once per function** (a warm container), on first invocation, under a
  private package name so that the three ``app.py`` files of connect/audio/disconnect do not
  collide in ``sys.modules``; the code directory is appended to ``sys.path`` like ``/var/task``;
* each invocation gets a fresh :class:`LambdaContext` (request id, remaining time, ARN, log
  group/stream), and the event is round-tripped through JSON, as Lambda does;
* a handler that raises returns an error result shaped like Lambda's
  (``errorMessage``/``errorType``/``stackTrace``) instead of propagating;
* one ``REPORT`` log line per invocation, with the cold-start ``Init Duration``.

Differences from Lambda, on purpose: invocations run in threads of one process, so the module
state of one function is shared between concurrent invocations (its module-level caches must be
thread-safe), all functions share ``os.environ`` (see :func:`merged_environment`), and a timed-out
invocation cannot be killed — the caller gets the timeout error while the thread finishes.
"""

from __future__ import annotations

from infra.lambda_runtime.environment import (
    EnvironmentPatch,
    merged_environment,
    reset_shared_caches,
)
from infra.lambda_runtime.function import (
    ACCOUNT_ID,
    DEFAULT_REGION,
    FunctionSpec,
    InvocationResult,
    LambdaContext,
    LambdaFunction,
)

__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_REGION",
    "EnvironmentPatch",
    "FunctionSpec",
    "InvocationResult",
    "LambdaContext",
    "LambdaFunction",
    "merged_environment",
    "reset_shared_caches",
]
