"""Print a development access token:
``python -m infra.token [--learner ana] [--role teacher] [--ttl 28800]``.

``make token`` (and ``make token LEARNER=ana``, ``make token ROLE=teacher``) runs this. A
teacher's token acts for the learner it names and may also set that learner's lesson plan
(``session.instructions``); a learner's token (the default) may not. The token is signed
(HS256) with ``AUTH_SECRET`` from the environment, else from the ``.env`` file at the
repository root, else with :data:`LOCAL_DEV_AUTH_SECRET`, the secret the local stack uses by
default.

Use it with the local stack (``?token=<jwt>``, ``Authorization: Bearer <jwt>`` or the
``bearer.<jwt>`` subprotocol). A deployed stack reads its secret from SSM/Secrets Manager
(``AUTH_SECRET_PARAMETER``); mint tokens for it with that secret in ``AUTH_SECRET``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from jwt import InsecureKeyLengthWarning

from kiddolingo.auth import DEFAULT_TTL_S, ROLES, issue_token

REPO_ROOT = Path(__file__).resolve().parent.parent

#: DEV ONLY. The token secret of the local stack when nothing else is configured. It is public
#: (it is in this repository), so it protects nothing: never use it for a deployed stack,
#: which reads its secret from SSM or Secrets Manager.
LOCAL_DEV_AUTH_SECRET = "kiddolingo-local-dev-secret-not-for-production"

DEFAULT_LEARNER = "dev-learner"


def dev_auth_secret(env: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> str:
    """``AUTH_SECRET`` from ``env`` (default: the process environment), then from the
    ``.env`` file at the repository root, then :data:`LOCAL_DEV_AUTH_SECRET`."""
    env = os.environ if env is None else env
    if env.get("AUTH_SECRET"):
        return env["AUTH_SECRET"]
    path = REPO_ROOT / ".env" if dotenv_path is None else dotenv_path
    if path.is_file():
        from dotenv import dotenv_values

        value = dotenv_values(path).get("AUTH_SECRET")
        if value:
            return value
    return LOCAL_DEV_AUTH_SECRET


def dev_token(
    learner_id: str = DEFAULT_LEARNER,
    ttl_s: int = DEFAULT_TTL_S,
    *,
    secret: str | None = None,
    now: float | None = None,
    role: str = "learner",
) -> str:
    """A token for ``learner_id`` signed with ``secret`` (default :func:`dev_auth_secret`)."""
    with warnings.catch_warnings():
        # The public dev secret is shorter than 32 bytes; PyJWT says so, and we know.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return issue_token(secret or dev_auth_secret(), learner_id, ttl_s=ttl_s, now=now, role=role)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.token", description="Print a development access token."
    )
    parser.add_argument("--learner", default=DEFAULT_LEARNER, help="learner id (the sub claim)")
    parser.add_argument(
        "--role",
        default="learner",
        choices=ROLES,
        help="learner (default), or teacher: may also set the learner's lesson plan",
    )
    parser.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL_S, help="lifetime in seconds (default 8 hours)"
    )
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        token = dev_token(args.learner, args.ttl, role=args.role)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
