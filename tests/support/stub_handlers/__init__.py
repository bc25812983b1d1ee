"""Tiny recording/echo Lambda handlers used ONLY by tests/test_gateway.py.

Each directory holds an ``app.py`` with ``lambda_handler(event, context)``, loaded by the local
gateway exactly as it loads the real functions. :func:`specs` gives the route table.
"""

from __future__ import annotations

from pathlib import Path

from infra.lambda_runtime import FunctionSpec

HERE = Path(__file__).resolve().parent


def specs(timeout_s: float = 10.0, *, custom_route: str = "ping") -> dict[str, FunctionSpec]:
    """Routes → stub functions: ``$connect``, ``$default``, a custom route, ``$disconnect``."""
    return {
        "$connect": FunctionSpec("StubConnect", HERE / "connect", timeout_s=timeout_s),
        "$default": FunctionSpec("StubDefault", HERE / "default", timeout_s=timeout_s),
        custom_route: FunctionSpec("StubCustom", HERE / "custom", timeout_s=timeout_s),
        "$disconnect": FunctionSpec("StubDisconnect", HERE / "disconnect", timeout_s=timeout_s),
    }
