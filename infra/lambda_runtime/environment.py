"""The one ``os.environ`` the in-process functions share, and resetting what the shared package
cached from the environment before."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from infra.lambda_runtime.function import FunctionSpec

log = logging.getLogger("kiddolingo.local.lambda")


def merged_environment(
    specs: Mapping[str, FunctionSpec] | list[FunctionSpec],
    overrides: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """One environment for all functions of the process, as Lambda would give each of them.

    Every function's template ``Environment.Variables`` are merged (string values only: an
    unresolved intrinsic such as ``{"Ref": "Table"}`` is skipped, the overrides supply the local
    value), then ``overrides`` (table/bucket names, endpoints, credentials, OpenAI settings) win.
    Two functions giving one variable different values is logged: in-process they share it.
    """
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    values = specs.values() if isinstance(specs, Mapping) else specs
    seen: set[str] = set()
    for spec in values:
        if spec.logical_id in seen:
            continue
        seen.add(spec.logical_id)
        for key, value in (spec.environment or {}).items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            if isinstance(value, int | float):
                value = str(value)
            if not isinstance(value, str):
                continue
            if key in merged and merged[key] != value and key not in (overrides or {}):
                log.warning(
                    "env %s differs between %s (%r) and %s (%r); in-process they share %r",
                    key,
                    origin[key],
                    merged[key],
                    spec.logical_id,
                    value,
                    merged[key],
                )
                continue
            merged[key] = value
            origin.setdefault(key, spec.logical_id)
    result: dict[str, str | None] = dict(merged)
    for key, value in (overrides or {}).items():
        # None removes the variable (e.g. AWS_PROFILE when pointing at moto).
        result[key] = None if value is None else str(value)
    return result


class EnvironmentPatch:
    """Apply variables to ``os.environ`` and put the previous values back on :meth:`restore`."""

    def __init__(self, values: Mapping[str, str | None]) -> None:
        self._values = dict(values)
        self._saved: dict[str, str | None] = {}
        self._applied = False

    def apply(self) -> EnvironmentPatch:
        if self._applied:
            return self
        for key, value in self._values.items():
            self._saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._applied = True
        reset_shared_caches()
        return self

    def restore(self) -> None:
        if not self._applied:
            return
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._applied = False
        reset_shared_caches()

    def __enter__(self) -> EnvironmentPatch:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def reset_shared_caches() -> None:
    """Forget what the shared package cached from the previous environment.

    ``kiddolingo`` caches its settings, boto3 session/clients, provider clients, the audio it
    wrote lately and the connection items its commits left, per process (per Lambda container);
    a new local stack (another environment) needs fresh ones. Only modules already imported are
    touched.
    """
    settings = sys.modules.get("kiddolingo.settings")
    aws = sys.modules.get("kiddolingo.aws")
    providers = sys.modules.get("kiddolingo.providers")
    candidates = [
        getattr(settings, "get_settings", None),
        getattr(aws, "_session", None),
        getattr(aws, "_client", None),
        getattr(aws, "management_client", None),
    ]
    for cached in candidates:
        cache_clear = getattr(cached, "cache_clear", None)
        if callable(cache_clear):
            cache_clear()
    reset = getattr(providers, "reset_providers", None)
    if callable(reset):
        reset()
    chunks = sys.modules.get("kiddolingo.chunks")
    recent = getattr(chunks, "RECENT", None)
    if recent is not None:
        recent.clear()  # the audio a container kept in memory: another stack's
    store = sys.modules.get("kiddolingo.store")
    known = getattr(store, "KNOWN", None)
    if known is not None:
        known.clear()  # the connection items a container's commits left: another stack's
    ingest = sys.modules.get("kiddolingo.ingest")
    short = getattr(ingest, "SHORT_APPENDS", None)
    if short is not None:
        short.clear()  # the connections that streamed short appends: another stack's
