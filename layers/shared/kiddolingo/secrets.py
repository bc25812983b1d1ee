"""Secrets from SSM Parameter Store (SecureString) or Secrets Manager, through Powertools
Parameters with its in-process cache. Powertools (and boto3) are imported only when a secret is
actually fetched, so importing this module costs nothing.

A name that starts with ``secretsmanager:`` is a Secrets Manager secret (name or ARN after the
prefix); any other name is an SSM parameter, read with decryption.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import StageSettings

__all__ = ["SECRETS_MANAGER_PREFIX", "SecretNotFoundError", "get_api_key", "get_secret_value"]

SECRETS_MANAGER_PREFIX = "secretsmanager:"
#: Keys looked up, in order, when a secret holds a JSON object instead of a bare string.
_JSON_KEYS = ("api_key", "apiKey", "OPENAI_API_KEY", "key", "secret", "value")


class SecretNotFoundError(LookupError):
    """The parameter or secret could not be read (missing, no permission, empty)."""


def get_secret_value(
    name: str, cache_s: int = 300, *, json_keys: tuple[str, ...] = _JSON_KEYS
) -> str:
    """The string stored under ``name``, cached for ``cache_s`` seconds.

    A secret holding a JSON object yields the first of ``json_keys`` it contains (Secrets
    Manager's console stores key/value secrets that way); a single-entry object yields its value.
    """
    from aws_lambda_powertools.utilities import parameters

    try:
        value: Any
        if name.startswith(SECRETS_MANAGER_PREFIX):
            value = parameters.get_secret(name[len(SECRETS_MANAGER_PREFIX) :], max_age=cache_s)
        else:
            value = parameters.get_parameter(name, decrypt=True, max_age=cache_s)
    except parameters.GetParameterError as exc:
        raise SecretNotFoundError(f"cannot read secret {name!r}: {exc}") from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    text = str(value or "").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key in json_keys:
                if isinstance(obj.get(key), str) and obj[key]:
                    return str(obj[key])
            if len(obj) == 1 and isinstance(next(iter(obj.values())), str):
                return str(next(iter(obj.values())))
            raise SecretNotFoundError(f"secret {name!r} is a JSON object without a known key")
    if not text:
        raise SecretNotFoundError(f"secret {name!r} is empty")
    return text


def get_api_key(stage: StageSettings, cache_s: int = 300) -> str | None:
    """The API key of a provider stage: its ``api_key`` when set, else the secret named by its
    ``api_key_parameter``, else ``None`` (the SDK then reports missing credentials)."""
    if stage.api_key:
        return stage.api_key
    if stage.api_key_parameter:
        return get_secret_value(stage.api_key_parameter, cache_s)
    return None
