"""template.yaml read as data: short tags in long form, parameters, and the intrinsic values
the local stack resolves (``Ref``, a simple ``Fn::Sub``, conditions)."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

#: Logical ids of the stateful resources in template.yaml.
TABLE_ID = "SessionsTable"
BUCKET_ID = "AudioBucket"

#: Values of pseudo parameters outside AWS.
PSEUDO_PARAMETERS = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "kiddolingo-voice",
    "AWS::URLSuffix": "amazonaws.com",
}


class TemplateError(ValueError):
    """template.yaml does not have the shape this module expects."""


# --------------------------------------------------------------------------- loading


class _CfnLoader(yaml.SafeLoader):
    """A safe loader that turns CloudFormation short-form tags into their long forms."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


@lru_cache(maxsize=8)
def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        data = yaml.load(handle, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path} is not a CloudFormation template")
    return data


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    """template.yaml (or ``path``) as data, short tags in long form (a fresh deep copy)."""
    return copy.deepcopy(_load(Path(path or TEMPLATE_PATH).resolve()))


def _template(path: str | Path | None) -> dict[str, Any]:
    # Read-only internal access without the copy.
    return _load(Path(path or TEMPLATE_PATH).resolve())


def _resource(template: Mapping[str, Any], logical_id: str, type_: str) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    if not resource or resource.get("Type") != type_:
        raise TemplateError(f"template.yaml has no {type_} named {logical_id}")
    return dict(resource)


def _resources_of_type(template: Mapping[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == type_}


# --------------------------------------------------------------------------- parameters


def parameter_defaults(path: str | Path | None = None) -> dict[str, str]:
    """Every template parameter's Default, as the string CloudFormation would pass."""
    result = {}
    for name, spec in _template(path).get("Parameters", {}).items():
        default = spec.get("Default", "")
        result[name] = _stringify(default)
    return result


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_stringify(v) for v in value)
    return str(value)


def stage_name(path: str | Path | None = None) -> str:
    """The default of the ``StageName`` parameter (``prod``)."""
    return parameter_defaults(path).get("StageName", "prod")


def route_selection_expression(path: str | Path | None = None) -> str:
    """The WebSocket API's ``RouteSelectionExpression`` (``$request.body.type``)."""
    apis = _resources_of_type(_template(path), "AWS::ApiGatewayV2::Api")
    for api in apis.values():
        props = api.get("Properties", {})
        if props.get("ProtocolType") == "WEBSOCKET":
            return str(props["RouteSelectionExpression"])
    raise TemplateError("template.yaml has no WebSocket API")


# --------------------------------------------------------------------------- intrinsic values


def _default_resource_names() -> dict[str, str]:
    from kiddolingo.settings import Settings

    defaults = Settings()
    return {TABLE_ID: defaults.table_name, BUCKET_ID: defaults.bucket_name}


def _resolve(
    value: Any,
    template: Mapping[str, Any],
    names: Mapping[str, str],
    where: str,
) -> str:
    """A scalar environment value: plain, ``Ref`` or a simple ``Fn::Sub``."""
    if not isinstance(value, dict):
        return _stringify(value)
    if set(value) == {"Ref"}:
        return _ref(value["Ref"], template, names, where)
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(
            r"\$\{([^}!]+)\}",
            lambda m: _ref(m.group(1), template, names, where),
            value["Fn::Sub"],
        )
    if set(value) == {"Fn::If"} and len(value["Fn::If"]) == 3:
        condition, yes, no = value["Fn::If"]
        chosen = yes if _condition(condition, template, names, where) else no
        return _resolve(chosen, template, names, where)
    raise TemplateError(f"{where}: cannot resolve {value!r} outside AWS")


def _condition(
    name: str, template: Mapping[str, Any], names: Mapping[str, str], where: str
) -> bool:
    """A template condition, evaluated with the parameters at their defaults (Equals/Not)."""
    spec = template.get("Conditions", {}).get(name)
    if spec is None:
        raise TemplateError(f"{where}: no condition {name!r} in template.yaml")

    def evaluate(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Fn::Equals"}:
            left, right = (evaluate(v) for v in node["Fn::Equals"])
            return left == right
        if isinstance(node, dict) and set(node) == {"Fn::Not"}:
            return not evaluate(node["Fn::Not"][0])
        if isinstance(node, dict) and set(node) == {"Condition"}:
            return _condition(node["Condition"], template, names, where)
        return _resolve(node, template, names, where)

    return bool(evaluate(spec))


def _ref(target: str, template: Mapping[str, Any], names: Mapping[str, str], where: str) -> str:
    if target in names:
        return names[target]
    if target in PSEUDO_PARAMETERS:
        return PSEUDO_PARAMETERS[target]
    parameters = template.get("Parameters", {})
    if target in parameters:
        return _stringify(parameters[target].get("Default", ""))
    if target in template["Resources"]:
        raise TemplateError(
            f"{where}: !Ref {target} names a resource; pass its name in overrides[{target!r}]"
        )
    raise TemplateError(f"{where}: !Ref {target} names nothing in template.yaml")
