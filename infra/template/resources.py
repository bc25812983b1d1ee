"""The template's table and bucket: their specs, and creating them (in moto, or anywhere)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from infra.template.document import (
    BUCKET_ID,
    TABLE_ID,
    TemplateError,
    _resource,
    _template,
)

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
