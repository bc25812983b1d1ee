"""``template.yaml`` as data, for everything that runs the stack outside AWS.

The local gateway, the moto-backed functional tests and the benchmark build their table, bucket
and functions from the SAM template through this module, so they cannot drift from what is
deployed.

Public API (names are stable; other modules rely on them):

``load_template(path=None) -> dict``
    The template as plain data. CloudFormation short tags become their long forms
    (``!Ref X`` -> ``{"Ref": "X"}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``,
    ``!Sub s`` -> ``{"Fn::Sub": s}``, ...). Cached per path; callers get a deep copy.
``table_spec(table_name=None) -> dict``
    ``boto3`` ``create_table`` kwargs (KeySchema, AttributeDefinitions, BillingMode,
    SSESpecification; TableName when given).
``table_ttl_attribute() -> str``
    The TTL attribute of the sessions table (``expires_at``).
``bucket_spec() -> dict``
    ``{"ServerSideEncryptionConfiguration": ..., "PublicAccessBlockConfiguration": ...,
    "LifecycleConfiguration": ..., "OwnershipControls": ...}``, each the argument of the
    matching ``put_bucket_*`` / ``put_public_access_block`` call.
``create_resources(dynamodb_client, s3_client, table_name, bucket_name) -> dict``
    Creates (idempotently) the table with TTL enabled and the bucket with its encryption,
    public access block, ownership controls and lifecycle. Returns the names.
``functions(overrides=None, *, path=None) -> dict[str, FunctionSpec]``
    Route key (``$connect``, ``$default``, ``$disconnect``) -> :class:`FunctionSpec`, from
    the routes -> integrations -> functions of the template. ``FunctionSpec.environment`` is
    Globals + the function's own variables with ``!Ref`` of a parameter resolved to its
    Default and ``!Ref`` of the table/bucket resolved through ``overrides``.
``route_selection_expression() -> str``, ``stage_name() -> str``
    The API's ``RouteSelectionExpression`` and the ``StageName`` parameter's default.
``parameter_defaults() -> dict[str, str]``, ``environment_variable_names() -> set[str]``
    Helpers for tests and docs.

``overrides`` maps names to values; a key may be an environment variable name
(``"TABLE_NAME"``), a resource logical id (``"SessionsTable"``) or a parameter name
(``"ChatModel"``); environment variable names win. Table and bucket fall back to the defaults
of :class:`kiddolingo.settings.Settings` (``kiddolingo-sessions``/``kiddolingo-audio``).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from infra.lambda_runtime import FunctionSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
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

__all__ = [
    "BUCKET_ID",
    "TABLE_ID",
    "TEMPLATE_PATH",
    "FunctionSpec",
    "TemplateError",
    "bucket_spec",
    "create_resources",
    "environment_variable_names",
    "functions",
    "load_template",
    "parameter_defaults",
    "route_selection_expression",
    "stage_name",
    "table_spec",
    "table_ttl_attribute",
]


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


# --------------------------------------------------------------------------- table and bucket


def _table(path: str | Path | None = None) -> dict[str, Any]:
    return _resource(_template(path), TABLE_ID, "AWS::DynamoDB::Table")["Properties"]


def table_spec(table_name: str | None = None, *, path: str | Path | None = None) -> dict[str, Any]:
    """``create_table`` kwargs for the sessions table (with ``TableName`` when given)."""
    props = _table(path)
    spec: dict[str, Any] = {
        "KeySchema": copy.deepcopy(props["KeySchema"]),
        "AttributeDefinitions": copy.deepcopy(props["AttributeDefinitions"]),
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if spec["BillingMode"] == "PROVISIONED":
        spec["ProvisionedThroughput"] = copy.deepcopy(props["ProvisionedThroughput"])
    sse = props.get("SSESpecification")
    if sse and sse.get("SSEEnabled"):
        spec["SSESpecification"] = {"Enabled": True}
        if sse.get("SSEType"):
            spec["SSESpecification"]["SSEType"] = sse["SSEType"]
    if table_name:
        spec["TableName"] = table_name
    return spec


def table_ttl_attribute(*, path: str | Path | None = None) -> str:
    """The TTL attribute of the sessions table."""
    ttl = _table(path).get("TimeToLiveSpecification") or {}
    if not ttl.get("Enabled") or not ttl.get("AttributeName"):
        raise TemplateError("the sessions table has no TTL")
    return str(ttl["AttributeName"])


def bucket_spec(*, path: str | Path | None = None) -> dict[str, Any]:
    """The bucket's settings as the arguments of the matching boto3 S3 calls."""
    props = _resource(_template(path), BUCKET_ID, "AWS::S3::Bucket")["Properties"]
    rules = []
    for rule in props.get("LifecycleConfiguration", {}).get("Rules", []):
        out: dict[str, Any] = {
            "ID": rule.get("Id", "rule"),
            "Status": rule["Status"],
            "Filter": {"Prefix": rule.get("Prefix", "")},
        }
        if "ExpirationInDays" in rule:
            out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        abort = rule.get("AbortIncompleteMultipartUpload")
        if abort:
            out["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": int(abort["DaysAfterInitiation"])
            }
        rules.append(out)
    encryption = []
    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]:
        # CloudFormation says ServerSideEncryptionByDefault, the S3 API ApplyServer...
        out = {"ApplyServerSideEncryptionByDefault": dict(rule["ServerSideEncryptionByDefault"])}
        if "BucketKeyEnabled" in rule:
            out["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
        encryption.append(out)
    spec: dict[str, Any] = {
        "ServerSideEncryptionConfiguration": {"Rules": encryption},
        "PublicAccessBlockConfiguration": copy.deepcopy(props["PublicAccessBlockConfiguration"]),
        "LifecycleConfiguration": {"Rules": rules},
    }
    if "OwnershipControls" in props:
        spec["OwnershipControls"] = copy.deepcopy(props["OwnershipControls"])
    return spec


def create_resources(
    dynamodb_client: Any,
    s3_client: Any,
    table_name: str,
    bucket_name: str,
    *,
    path: str | Path | None = None,
) -> dict[str, str]:
    """Create the sessions table (TTL on) and the audio bucket as template.yaml declares them.

    Safe to call again on existing resources (their settings are re-applied). Works against
    moto (``mock_aws`` or ``ThreadedMotoServer``) and real AWS alike.
    """
    with contextlib.suppress(dynamodb_client.exceptions.ResourceInUseException):
        dynamodb_client.create_table(**table_spec(table_name, path=path))
    dynamodb_client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    ttl = dynamodb_client.describe_time_to_live(TableName=table_name)
    if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb_client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": table_ttl_attribute()},
        )

    spec = bucket_spec(path=path)
    region = s3_client.meta.region_name
    create_kwargs: dict[str, Any] = {"Bucket": bucket_name}
    if region and region != "us-east-1":
        create_kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    already = (
        s3_client.exceptions.BucketAlreadyOwnedByYou,
        s3_client.exceptions.BucketAlreadyExists,
    )
    with contextlib.suppress(*already):
        s3_client.create_bucket(**create_kwargs)
    s3_client.put_bucket_encryption(
        Bucket=bucket_name,
        ServerSideEncryptionConfiguration=spec["ServerSideEncryptionConfiguration"],
    )
    s3_client.put_public_access_block(
        Bucket=bucket_name,
        PublicAccessBlockConfiguration=spec["PublicAccessBlockConfiguration"],
    )
    if "OwnershipControls" in spec:
        s3_client.put_bucket_ownership_controls(
            Bucket=bucket_name, OwnershipControls=spec["OwnershipControls"]
        )
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=bucket_name, LifecycleConfiguration=spec["LifecycleConfiguration"]
    )
    return {"table_name": table_name, "bucket_name": bucket_name}
