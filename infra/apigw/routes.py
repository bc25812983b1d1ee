"""Which function a message goes to: the route selection expression, and the template's routes.

By default the gateway takes its routes, route selection expression and stage from
``template.yaml`` (through :mod:`infra.template`); whatever the caller gives wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from infra.lambda_runtime import FunctionSpec

DEFAULT_ROUTE_SELECTION = "$request.body.type"
DEFAULT_STAGE = "local"


def parse_route_selection(expression: str) -> list[str] | None:
    """``$request.body.type`` (or ``${request.body.type}``) → ``["type"]``; None if unsupported."""
    expr = expression.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = "$" + expr[2:-1]
    prefix = "$request.body."
    if not expr.startswith(prefix) or len(expr) == len(prefix):
        return None
    return expr[len(prefix) :].split(".")


def select_route(path: list[str] | None, body: str, routes: Mapping[str, Any]) -> str | None:
    """The route key for a message body: the selected declared route, else ``$default``."""
    key: Any = None
    if path:
        try:
            value: Any = json.loads(body)
        except (ValueError, RecursionError):
            # Not JSON, or nested deeper than the parser goes: no route value, so $default
            # (whose handler answers with an error event), never a dropped connection.
            value = None
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        key = value
    if (
        isinstance(key, str)
        and key in routes
        and key not in ("$connect", "$disconnect", "$default")
    ):
        return key
    return "$default" if "$default" in routes else None


def resolve_routes(
    functions: Mapping[str, FunctionSpec] | None,
    route_selection_expression: str | None,
    stage: str | None,
) -> tuple[dict[str, FunctionSpec], str, str]:
    """The routes, route selection expression and stage: the given ones, else the template's.

    The template is read only for what is not given, and it must load only when the functions
    themselves come from it.
    """
    template = None
    if functions is None or route_selection_expression is None or stage is None:
        template = _template_module(required=functions is None)
    if functions is None:
        assert template is not None
        functions = template.functions()
    expression = (
        route_selection_expression
        or _template_value(template, "route_selection_expression")
        or DEFAULT_ROUTE_SELECTION
    )
    stage = stage or _template_value(template, "stage_name") or DEFAULT_STAGE
    return dict(functions), expression, stage


def _template_module(*, required: bool) -> Any:
    try:
        import infra.template as template
    except ImportError:
        if required:
            raise
        return None
    return template


def _template_value(template: Any, name: str) -> str | None:
    if template is None:
        return None
    value = getattr(template, name, None)
    if callable(value):
        try:
            value = value()
        except Exception:
            return None
    if isinstance(value, str) and value:
        return value
    upper = getattr(template, name.upper(), None)
    return upper if isinstance(upper, str) and upper else None
