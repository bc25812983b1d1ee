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

from infra.lambda_runtime import FunctionSpec
from infra.template.document import (
    BUCKET_ID,
    PSEUDO_PARAMETERS,
    REPO_ROOT,
    TABLE_ID,
    TEMPLATE_PATH,
    TemplateError,
    load_template,
    parameter_defaults,
    route_selection_expression,
    stage_name,
)
from infra.template.function_specs import environment_variable_names, functions
from infra.template.resources import (
    bucket_spec,
    create_resources,
    table_spec,
    table_ttl_attribute,
)

__all__ = [
    "BUCKET_ID",
    "PSEUDO_PARAMETERS",
    "REPO_ROOT",
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
