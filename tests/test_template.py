"""template.yaml: linted by cfn-lint and `sam validate --lint`, and read for what matters -
least-privilege IAM, a private encrypted bucket that forgets audio, a table with TTL, settings
names that exist - plus infra.template building the same table and bucket under moto."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import template as tpl
from kiddolingo.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
DEFAULT_SAM = REPO / ".venv-sam" / "bin" / "sam"

FUNCTIONS = {
    "$connect": "ConnectFunction",
    "$default": "AudioFunction",
    "$disconnect": "DisconnectFunction",
}
CODE_DIRS = {"$connect": "connect", "$default": "audio", "$disconnect": "disconnect"}
EXPECTED_ACTIONS = {
    "ConnectFunction": {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
        "secretsmanager:GetSecretValue",
    },
    "AudioFunction": {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "execute-api:ManageConnections",
        "ssm:GetParameter",
        "secretsmanager:GetSecretValue",
    },
    # Deletes the audio of an utterance left open by the disconnect (Tutor.disconnect).
    "DisconnectFunction": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "s3:DeleteObject",
        "s3:ListBucket",
    },
}
# The only resources allowed to end in a wildcard.
ALLOWED_WILDCARDS = [
    r"^\$\{AudioBucket\.Arn\}/\*$",
    r"^arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
    r"\$\{WebSocketApi\}/\$\{StageName\}/POST/@connections/\*$",
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return tpl.load_template()


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


# --------------------------------------------------------------------------- linters


def _sam_cli() -> str | None:
    """$SAM_CLI (a path or a command name), else .venv-sam/bin/sam, else None."""
    for candidate in (os.environ.get("SAM_CLI"), str(DEFAULT_SAM)):
        if not candidate:
            continue
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
        if os.sep not in candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    return env


@pytest.fixture(scope="module")
def sam_validate() -> subprocess.CompletedProcess[str]:
    sam = _sam_cli()
    if sam is None:
        pytest.skip(
            f"SAM CLI not found (SAM_CLI={os.environ.get('SAM_CLI')!r}, {DEFAULT_SAM}): "
            "set SAM_CLI or run `make deps` to create .venv-sam/bin/sam"
        )
    return subprocess.run(
        [sam, "validate", "--lint", "--template", str(TEMPLATE), "--region", "us-east-1"],
        cwd=REPO,
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cfn_lint_passes_without_warnings():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    result = subprocess.run(
        [*command, "--format", "parseable", "--", str(TEMPLATE)],
        cwd=REPO,
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_sam_validate_lint_passes(sam_validate):
    output = sam_validate.stdout + sam_validate.stderr
    assert sam_validate.returncode == 0, output
    assert "is a valid SAM Template" in output


# --------------------------------------------------------------------------- the API


def test_websocket_api_routes_on_the_event_type(template):
    (api,) = resources(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert api["Properties"]["RouteSelectionExpression"] == "$request.body.type"
    assert tpl.route_selection_expression() == "$request.body.type"


def test_routes_integrate_the_three_functions(template):
    routes = resources(template, "AWS::ApiGatewayV2::Route")
    assert {r["Properties"]["RouteKey"] for r in routes.values()} == set(FUNCTIONS)
    for integration in resources(template, "AWS::ApiGatewayV2::Integration").values():
        assert integration["Properties"]["IntegrationType"] == "AWS_PROXY"
    specs = tpl.functions()
    assert {key: spec.logical_id for key, spec in specs.items()} == FUNCTIONS


def test_deployment_waits_for_the_routes_and_stage_is_a_parameter(template):
    routes = set(resources(template, "AWS::ApiGatewayV2::Route"))
    (deployment,) = resources(template, "AWS::ApiGatewayV2::Deployment").values()
    assert set(deployment["DependsOn"]) == routes
    (stage,) = resources(template, "AWS::ApiGatewayV2::Stage").values()
    assert stage["Properties"]["StageName"] == {"Ref": "StageName"}
    assert template["Parameters"]["StageName"]["Default"] == "prod" == tpl.stage_name()


def test_each_function_may_be_invoked_by_its_route_only(template):
    permissions = resources(template, "AWS::Lambda::Permission")
    # The audio function is invoked through its published alias (SnapStart).
    by_function = {
        p["Properties"]["FunctionName"]["Ref"].removesuffix(".Alias"): p
        for p in permissions.values()
    }
    assert set(by_function) == set(FUNCTIONS.values())
    for route_key, function in FUNCTIONS.items():
        props = by_function[function]["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com"
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["SourceArn"]["Fn::Sub"].endswith(
            f":${{WebSocketApi}}/${{StageName}}/{route_key}"
        )


def test_websocket_url_output(template):
    value = template["Outputs"]["WebSocketURL"]["Value"]["Fn::Sub"]
    assert value == "wss://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}"
    for name in ("SessionsTableName", "AudioBucketName", "SharedLayerArn"):
        assert name in template["Outputs"]


# --------------------------------------------------------------------------- functions and layer


def _runtime_version(runtime: str) -> tuple[int, int]:
    match = re.fullmatch(r"python(\d+)\.(\d+)", runtime)
    assert match, runtime
    return int(match.group(1)), int(match.group(2))


def test_functions_and_layer(template):
    globals_ = template["Globals"]["Function"]
    functions = resources(template, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTIONS.values())
    for logical_id, fn in functions.items():
        props = {**globals_, **fn["Properties"]}
        assert _runtime_version(props["Runtime"]) >= (3, 12), logical_id
        assert props["Handler"] == "app.lambda_handler"
        assert props["Architectures"] in (["arm64"], ["x86_64"])
        assert props["Layers"] == [{"Ref": "SharedLayer"}]
    layer = template["Resources"]["SharedLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert _runtime_version(layer["Metadata"]["BuildMethod"]) >= (3, 12)
    assert globals_["Architectures"] == layer["Properties"]["CompatibleArchitectures"]
    assert (REPO / "layers/shared/requirements.txt").is_file()

    specs = tpl.functions()
    assert specs["$default"].timeout_s == 120 and specs["$default"].memory_mb == 1024
    for route_key, spec in specs.items():
        assert spec.code_dir.is_absolute()
        assert spec.code_dir == REPO / "functions" / route_key.strip("$").replace(
            "default", "audio"
        )
        assert spec.handler == "app.lambda_handler"
        assert spec.route_key == route_key
        assert spec.timeout_s <= 900


# --------------------------------------------------------------------------- IAM


def _expand(node: Any) -> Iterator[Any]:
    """Every concrete value a (possibly Fn::If-wrapped) node can take."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _, yes, no = node["Fn::If"]
        yield from _expand(yes)
        yield from _expand(no)
    elif node == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield node


def _statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    policies = template["Resources"][function]["Properties"].get("Policies", [])
    statements: list[dict[str, Any]] = []
    for policy in policies:
        assert isinstance(policy, dict) and "Statement" in policy, (
            f"{function}: only inline statements (no managed policies or policy templates)"
        )
        for entry in policy["Statement"]:
            statements.extend(_expand(entry))
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resource_text(resource: Any) -> str:
    if isinstance(resource, str):
        return resource
    if "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in resource:
        return "${" + ".".join(resource["Fn::GetAtt"]) + "}"
    if "Ref" in resource:
        return "${" + resource["Ref"] + "}"
    raise AssertionError(f"unexpected resource {resource!r}")


@pytest.mark.parametrize("function", sorted(EXPECTED_ACTIONS))
def test_least_privilege(template, function):
    statements = _statements(template, function)
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{function}: wildcard action {action}"
            actions.add(action)
        for resource in _as_list(statement["Resource"]):
            text = _resource_text(resource)
            assert text != "*", f"{function}: Resource '*'"
            if "*" in text:
                assert any(re.match(p, text) for p in ALLOWED_WILDCARDS), (
                    f"{function}: wildcard resource {text}"
                )
            service = _as_list(statement["Action"])[0].split(":")[0]
            expected_target = {
                "dynamodb": "${SessionsTable.Arn}",
                "s3": "${AudioBucket.Arn}",
                "execute-api": ":execute-api:",
                "ssm": ":ssm:",
                "secretsmanager": ":secretsmanager:",
            }[service]
            assert expected_target in text, f"{function}: {service} on {text}"
    assert actions == EXPECTED_ACTIONS[function]


def test_only_the_audio_function_posts_to_connections(template):
    posting = {
        fn
        for fn in resources(template, "AWS::Serverless::Function")
        for s in _statements(template, fn)
        if "execute-api:ManageConnections" in _as_list(s["Action"])
    }
    assert posting == {"AudioFunction"}


def test_secrets_are_scoped_to_the_named_parameters(template):
    def secret_resources(function: str) -> set[str]:
        return {
            _resource_text(r)
            for s in _statements(template, function)
            if _as_list(s["Action"])[0].startswith(("ssm:", "secretsmanager:"))
            for r in _as_list(s["Resource"])
        }

    connect = secret_resources("ConnectFunction")
    assert any(r.endswith(":parameter${AuthSecretParameter}") for r in connect)
    assert not any("ApiKey" in r for r in connect)
    audio = secret_resources("AudioFunction")
    assert any(r.endswith(":parameter${OpenAiApiKeyParameter}") for r in audio)
    assert not any("AuthSecret" in r for r in audio)
    for resource in connect | audio:
        if ":secretsmanager:" in resource:
            assert resource.endswith(":secret:${Name}-??????")


# --------------------------------------------------------------------------- storage


def test_bucket_is_private_encrypted_and_forgets_audio_in_a_day(template):
    bucket = template["Resources"]["AudioBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    rules = [r for r in bucket["LifecycleConfiguration"]["Rules"] if r["Status"] == "Enabled"]
    assert any(r["ExpirationInDays"] == 1 and not r.get("Prefix") for r in rules)
    assert "VersioningConfiguration" not in bucket  # deleted audio must not linger as versions
    assert "AccessControl" not in bucket

    (policy,) = resources(template, "AWS::S3::BucketPolicy").values()
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_table_is_on_demand_with_pk_and_ttl(template):
    table = template["Resources"]["SessionsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert tpl.table_ttl_attribute() == "expires_at"


# --------------------------------------------------------------------------- settings


class _Recording(dict):
    """An environment that records every name Settings.from_env asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


def _settings_names() -> set[str]:
    env = _Recording()
    Settings.from_env(env)
    return env.asked


def test_every_environment_variable_is_a_setting():
    names = tpl.environment_variable_names()
    unknown = {n for n in names - _settings_names() if not n.startswith("POWERTOOLS_")}
    assert not unknown, f"not read by kiddolingo.settings: {sorted(unknown)}"
    for required in (
        "TABLE_NAME",
        "BUCKET_NAME",
        "TRANSCRIPTION_MODEL",
        "CHAT_MODEL",
        "SPEECH_MODEL",
        "SPEECH_VOICE",
        "MODERATION_MODEL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY_PARAMETER",
        "AUTH_SECRET_PARAMETER",
        "LOG_TRANSCRIPTS",
        "SPECULATIVE_FRACTION",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        *(f"{stage}_BASE_URL" for stage in ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION")),
    ):
        assert required in names, required


def test_no_secret_is_set_in_plain_text():
    for name in tpl.environment_variable_names():
        assert not name.endswith("_API_KEY"), name
        assert name != "AUTH_SECRET"


def test_template_defaults_are_the_code_defaults():
    environment = tpl.functions({"SessionsTable": "t", "AudioBucket": "b"})["$default"].environment
    deployed = Settings.from_env(environment)
    code = Settings()
    assert (deployed.table_name, deployed.bucket_name) == ("t", "b")
    assert deployed.auth_secret_parameter == "/kiddolingo/auth-secret"
    assert deployed.chat.api_key_parameter == "/kiddolingo/openai-api-key"
    assert deployed.auth_required is True and deployed.log_transcripts is False
    for field in ("transcription", "chat", "speech", "moderation"):
        assert getattr(deployed, field).model == getattr(code, field).model
        assert getattr(deployed, field).base_url is None
    skip = {
        "table_name",
        "bucket_name",
        "transcription",
        "chat",
        "speech",
        "moderation",
        "auth_secret_parameter",
    }
    for field in Settings.__dataclass_fields__:
        if field not in skip:
            assert getattr(deployed, field) == getattr(code, field), field


def test_every_ref_in_the_environment_resolves():
    for route_key, spec in tpl.functions().items():
        assert spec.environment["TABLE_NAME"] == Settings().table_name, route_key
        assert all(isinstance(v, str) for v in spec.environment.values())


def test_functions_overrides():
    specs = tpl.functions({"TABLE_NAME": "by-var", "AudioBucket": "by-id", "ChatModel": "m"})
    env = specs["$connect"].environment
    assert (env["TABLE_NAME"], env["BUCKET_NAME"], env["CHAT_MODEL"]) == ("by-var", "by-id", "m")


def test_load_template_long_forms():
    template = tpl.load_template()
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    layers = template["Globals"]["Function"]["Layers"]
    assert layers == [{"Ref": "SharedLayer"}]
    policy = template["Resources"]["AudioBucketPolicy"]["Properties"]["PolicyDocument"]
    assert policy["Statement"][0]["Resource"][0] == {"Fn::GetAtt": ["AudioBucket", "Arn"]}
    template["Resources"].clear()  # a copy: the next load is intact
    assert tpl.load_template()["Resources"]


def test_samconfig_defaults():
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["stack_name"] == "kiddolingo-voice"
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    text = (REPO / "samconfig.toml").read_text()
    assert not re.search(r"\b\d{12}\b", text), "no account ids"
    assert not re.search(r"(?i)(secret|api_key|password)\s*=", text)


# --------------------------------------------------------------------------- moto


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("dynamodb"), boto3.client("s3")


def test_create_resources_builds_the_template_table_and_bucket(aws):
    dynamodb, s3 = aws
    assert tpl.create_resources(dynamodb, s3, "sessions", "audio") == {
        "table_name": "sessions",
        "bucket_name": "audio",
    }
    table = dynamodb.describe_table(TableName="sessions")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName="sessions")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    rules = s3.get_bucket_encryption(Bucket="audio")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket="audio")["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket="audio")["Rules"]
    assert rule["Expiration"] == {"Days": 1} and rule["Status"] == "Enabled"

    # Idempotent: the local stack may call it on every start.
    tpl.create_resources(dynamodb, s3, "sessions", "audio")


def test_table_and_bucket_specs_are_boto3_kwargs():
    spec = tpl.table_spec("x")
    assert spec["TableName"] == "x" and spec["BillingMode"] == "PAY_PER_REQUEST"
    assert "TableName" not in tpl.table_spec()
    bucket = tpl.bucket_spec()
    assert set(bucket) >= {
        "ServerSideEncryptionConfiguration",
        "PublicAccessBlockConfiguration",
        "LifecycleConfiguration",
    }
