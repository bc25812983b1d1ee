"""The template's functions, route by route, as the local runtime runs them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.lambda_runtime import FunctionSpec
from infra.template.document import (
    REPO_ROOT,
    TemplateError,
    _default_resource_names,
    _resolve,
    _resource,
    _resources_of_type,
    _template,
)

# --------------------------------------------------------------------------- functions


def environment_variable_names(path: str | Path | None = None) -> set[str]:
    """Every environment variable name the template sets (Globals and functions)."""
    template = _template(path)
    names = set(_globals(template).get("Environment", {}).get("Variables", {}))
    for fn in _resources_of_type(template, "AWS::Serverless::Function").values():
        names |= set(fn.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    return names


def _globals(template: Mapping[str, Any]) -> dict[str, Any]:
    return dict(template.get("Globals", {}).get("Function", {}))


def _invoked_function(uri: Any) -> str | None:
    """The logical id of the function an integration URI invokes: ``!Sub "...${Fn.Arn}..."``,
    or a ``!Join`` around ``!Ref Fn.Alias`` (a published alias, for SnapStart)."""
    if isinstance(uri, dict) and "Fn::Join" in uri:
        for part in uri["Fn::Join"][1]:
            ref = part.get("Ref") if isinstance(part, dict) else None
            if isinstance(ref, str) and ref.endswith(".Alias"):
                return ref.removesuffix(".Alias")
        return None
    uri_sub = uri.get("Fn::Sub") if isinstance(uri, dict) else uri
    fn_match = re.search(r"/functions/\$\{(\w+)\.Arn\}/invocations", str(uri_sub))
    return fn_match.group(1) if fn_match else None


def _route_targets(template: Mapping[str, Any]) -> dict[str, str]:
    """Route key -> function logical id, through the route's integration."""
    integrations = _resources_of_type(template, "AWS::ApiGatewayV2::Integration")
    result = {}
    for route_id, route in _resources_of_type(template, "AWS::ApiGatewayV2::Route").items():
        props = route.get("Properties", {})
        target = props.get("Target")
        sub = target.get("Fn::Sub") if isinstance(target, dict) else target
        match = re.fullmatch(r"integrations/\$\{(\w+)\}", str(sub))
        if not match or match.group(1) not in integrations:
            raise TemplateError(f"route {route_id} has no integration target")
        uri = integrations[match.group(1)].get("Properties", {}).get("IntegrationUri")
        function_id = _invoked_function(uri)
        if function_id is None:
            raise TemplateError(f"integration {match.group(1)} does not invoke a function")
        result[str(props["RouteKey"])] = function_id
    return result


def functions(
    overrides: Mapping[str, str] | None = None, *, path: str | Path | None = None
) -> dict[str, FunctionSpec]:
    """Route key -> :class:`FunctionSpec` for every route of the WebSocket API.

    See the module docstring for ``overrides``. Without overrides the table and bucket names
    are the :class:`~kiddolingo.settings.Settings` defaults.
    """
    template = _template(path)
    root = Path(path).resolve().parent if path else REPO_ROOT
    overrides = dict(overrides or {})
    names = {**_default_resource_names(), **overrides}
    globals_ = _globals(template)
    global_env = globals_.get("Environment", {}).get("Variables", {})

    specs = {}
    for route_key, logical_id in _route_targets(template).items():
        fn = _resource(template, logical_id, "AWS::Serverless::Function")
        props = {**globals_, **fn.get("Properties", {})}
        variables = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        environment = {}
        for var, value in variables.items():
            if var in overrides:
                environment[var] = str(overrides[var])
            else:
                environment[var] = _resolve(value, template, names, f"{logical_id}.{var}")
        layers = tuple(layer["Ref"] for layer in props.get("Layers", []) if isinstance(layer, dict))
        specs[route_key] = FunctionSpec(
            logical_id=logical_id,
            code_dir=(root / str(props["CodeUri"])).resolve(),
            handler=str(props.get("Handler", "app.lambda_handler")),
            environment=environment,
            timeout_s=float(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            runtime=str(props.get("Runtime", "python3.12")),
            route_key=route_key,
            layers=layers,
            snap_start=(props.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions",
        )
    return specs
