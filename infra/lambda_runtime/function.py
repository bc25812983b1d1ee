"""One Lambda function run in this process: its spec, its handler loaded once, each
invocation with a fresh context and Lambda's result shapes."""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kiddolingo.local.lambda")

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function to run locally (``infra.template.functions()`` reads them from the
    template; tests write their own). The defaults are Lambda's."""

    logical_id: str
    #: Absolute path of the function's CodeUri.
    code_dir: Path
    #: ``module.function`` inside code_dir (``app.lambda_handler``).
    handler: str = "app.lambda_handler"
    #: Globals + function variables, resolved to strings.
    environment: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 3.0
    memory_mb: int = 128
    runtime: str = "python3.12"
    #: The route key served by this function (``$connect``, ``$default``, ``$disconnect``).
    route_key: str = ""
    #: Logical ids of its layers.
    layers: tuple[str, ...] = ()
    #: ``SnapStart: ApplyOn: PublishedVersions``: INIT runs once, at publication.
    snap_start: bool = False


class LambdaContext:
    """The ``context`` argument of a Python Lambda handler."""

    def __init__(
        self,
        function_name: str,
        *,
        timeout_s: float,
        memory_mb: int = 512,
        region: str = DEFAULT_REGION,
        request_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = (
            time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{uuid.uuid4().hex}"
        )
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext({self.function_name!r}, request_id={self.aws_request_id!r})"


@dataclass
class InvocationResult:
    """What one invocation returned: ``payload`` on success, ``error`` (Lambda's shape) if not."""

    payload: Any = None
    error: dict[str, Any] | None = None
    request_id: str = ""
    duration_ms: float = 0.0
    init_duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def status_code(self) -> int:
        """The ``statusCode`` API Gateway reads from a proxy integration's result (500 on error)."""
        if self.error is not None:
            return 500
        payload = self.payload
        if isinstance(payload, Mapping):
            code = payload.get("statusCode")
            if isinstance(code, int):
                return code
            if isinstance(code, str) and code.isdigit():
                return int(code)
            # A dict without a statusCode: API Gateway treats it as a malformed proxy response.
            return 200 if not payload else 502
        return 200

    def headers(self) -> dict[str, str]:
        if self.error is None and isinstance(self.payload, Mapping):
            headers = self.payload.get("headers")
            if isinstance(headers, Mapping):
                return {str(k): str(v) for k, v in headers.items()}
        return {}


_namespace_counter = itertools.count(1)


class LambdaFunction:
    """One function: its handler, loaded lazily once, invoked from any thread."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        function_name: str | None = None,
        region: str | None = None,
    ) -> None:
        self.spec = spec
        self.logical_id = spec.logical_id
        self.function_name = function_name or f"kiddolingo-local-{spec.logical_id}"
        self.code_dir = Path(spec.code_dir).resolve()
        self.handler_name = spec.handler or "app.lambda_handler"
        self.timeout_s = float(getattr(spec, "timeout_s", 29.0) or 29.0)
        self.memory_mb = int(getattr(spec, "memory_mb", 512) or 512)
        self.region = region or os.environ.get("AWS_REGION") or DEFAULT_REGION
        self._package = f"_kiddolingo_lambda_{next(_namespace_counter)}_{_ident(spec.logical_id)}"
        self._handler: Any = None
        self._module: types.ModuleType | None = None
        self._load_lock = threading.Lock()
        self._init_duration_ms: float | None = None
        self._cold_reported = False

    # -- loading -----------------------------------------------------------------------------
    @property
    def module(self) -> types.ModuleType:
        """The handler's module (imports it if needed)."""
        self.load()
        assert self._module is not None
        return self._module

    @property
    def loaded(self) -> bool:
        return self._handler is not None

    def load(self) -> None:
        """Import the handler module once (the runtime's INIT phase)."""
        if self._handler is not None:
            return
        with self._load_lock:
            if self._handler is not None:
                return
            started = time.perf_counter()
            module_path, _, attr = self.handler_name.rpartition(".")
            if not module_path or not attr:
                raise ValueError(f"bad handler {self.handler_name!r} for {self.logical_id}")
            if str(self.code_dir) not in sys.path:
                # Lambda puts /var/task on sys.path: sibling modules of app.py import normally.
                sys.path.append(str(self.code_dir))
            package = types.ModuleType(self._package)
            package.__path__ = [str(self.code_dir)]
            package.__package__ = self._package
            sys.modules[self._package] = package
            module = importlib.import_module(f"{self._package}.{module_path}")
            handler = getattr(module, attr)
            if not callable(handler):
                raise TypeError(f"{self.handler_name} of {self.logical_id} is not callable")
            self._module = module
            self._handler = handler
            self._init_duration_ms = (time.perf_counter() - started) * 1000
            log.info(
                "INIT %s (%s) in %.1f ms",
                self.function_name,
                self.handler_name,
                self._init_duration_ms,
            )

    def publish(self) -> None:
        """What Lambda does when it publishes a version of a SnapStart function: run INIT
        once, with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``, before any invocation (the
        snapshot every container then starts from). Call it before the function is used:
        the variable is set process-wide while INIT runs."""
        if self._handler is not None:
            return
        previous = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")
        os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        try:
            self.load()
        finally:
            if previous is None:
                os.environ.pop("AWS_LAMBDA_INITIALIZATION_TYPE", None)
            else:
                os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = previous
        # The snapshot's INIT is not a cold start of any invocation.
        self._cold_reported = True

    # -- invoking ----------------------------------------------------------------------------
    def invoke(self, event: Mapping[str, Any]) -> InvocationResult:
        """Run the handler on ``event`` in the calling thread; never raises."""
        request_id = str(uuid.uuid4())
        init_ms: float | None = None
        try:
            self.load()
        except Exception as exc:  # Runtime.ImportModuleError and friends
            log.exception("INIT failed for %s", self.function_name)
            return InvocationResult(
                error=_error(exc, "Runtime.ImportModuleError"), request_id=request_id
            )
        if not self._cold_reported:
            self._cold_reported = True
            init_ms = self._init_duration_ms
        context = LambdaContext(
            self.function_name,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            region=self.region,
            request_id=request_id,
        )
        payload_in = json.loads(json.dumps(event))
        started = time.perf_counter()
        result = InvocationResult(request_id=request_id, init_duration_ms=init_ms)
        try:
            out = self._handler(payload_in, context)
            result.payload = json.loads(json.dumps(out)) if out is not None else None
        except Exception as exc:
            log.error("%s %s raised:\n%s", self.function_name, request_id, traceback.format_exc())
            result.error = _error(exc)
        result.duration_ms = (time.perf_counter() - started) * 1000
        if result.duration_ms > self.timeout_s * 1000:
            log.warning(
                "%s %s ran %.0f ms, past its %.0f s timeout (Lambda would have killed it)",
                self.function_name,
                request_id,
                result.duration_ms,
                self.timeout_s,
            )
        log.debug(
            "REPORT %s RequestId: %s Duration: %.2f ms%s",
            self.function_name,
            request_id,
            result.duration_ms,
            f" Init Duration: {init_ms:.2f} ms" if init_ms is not None else "",
        )
        return result

    def invoke_with_timeout(
        self, event: Mapping[str, Any], executor: concurrent.futures.Executor
    ) -> InvocationResult:
        """Invoke in ``executor``; after the function's timeout return Lambda's timeout error."""
        future = executor.submit(self.invoke, event)
        try:
            return future.result(timeout=self.timeout_s + 1.0)
        except concurrent.futures.TimeoutError:
            return InvocationResult(
                error={
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {self.timeout_s:.2f} seconds",
                }
            )


def _ident(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_exception(exc)[-10:],
    }
