"""``python -m infra.local`` (``make run``): the whole stack on one machine.

* **Settings**: the ``.env`` file at the repository root (python-dotenv; the real environment
  wins over it), then the environment.
* **AWS**: moto's server in a process of its own (``infra.moto_process``: its CPU does not
  compete with the handlers' GIL) on a free loopback port, with ``AWS_ENDPOINT_URL`` and
  dummy credentials pointed at it, and the table and bucket created from ``template.yaml``.
  ``LOCAL_AWS=real`` uses your own AWS configuration/credentials instead, and the existing
  ``TABLE_NAME`` / ``BUCKET_NAME`` (nothing is created).
* **Models**: ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (and the per-stage ``CHAT_BASE_URL``…)
  from the environment, so any OpenAI-compatible server can stand in. Without a key the stack
  starts on the local fake OpenAI server (``infra.fake_openai``) and says so loudly, in the
  terminal and on the page: replies are canned demo replies, not the tutor. ``make run`` has
  the fake speak them in words with espeak-ng when it is installed (tones otherwise).
* **Auth**: on by default, with ``AUTH_SECRET`` from the environment or the public dev secret
  of ``infra.token``; the terminal prints a ready page URL carrying a dev token.
  ``AUTH_REQUIRED=false`` runs without auth (printed as a warning).
* **Gateway**: ``infra.apigw.server.LocalGateway`` on ``127.0.0.1:$PORT`` (8080): the page at
  ``http://127.0.0.1:8080/``, the WebSocket API at ``ws://127.0.0.1:8080/`` (any path), running
  the handlers named by ``template.yaml`` with the environment it gives them.

Ctrl-C or SIGTERM stops everything cleanly (exit status 0). :class:`LocalStack` is the same
stack as a reusable object (the tests use it through ``tests/support/local_stack.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent

DEMO_BANNER = "DEMO MODE: no OPENAI_API_KEY — replies are canned demo replies, not the tutor"
DEMO_SPEECH_NOTE = {
    "espeak": "  Demo speech:    espeak-ng reads the canned replies aloud",
    "tones": "  Demo speech:    tones (install espeak-ng to hear words)",
}
NO_AUTH_WARNING = (
    "WARNING: AUTH_REQUIRED=false — no token needed: anyone who can reach this port can open "
    "a session. Local use only."
)
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
_STAGES = ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION")
_KEY_VARIABLES = ("OPENAI_API_KEY", *(f"{s}_API_KEY" for s in _STAGES))
_KEY_PARAMETERS = ("OPENAI_API_KEY_PARAMETER", *(f"{s}_API_KEY_PARAMETER" for s in _STAGES))

log = logging.getLogger("kiddolingo.local")
#: Powertools settings for a terminal: no tracing, no metrics, warnings only.
_QUIET_POWERTOOLS = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class LocalStack:
    """moto (or real AWS) + the template's table/bucket + models (real or fake) + the gateway.

    ``env`` is where settings come from (default: ``os.environ`` at construction). ``openai``:
    ``"auto"`` (the fake server when no key is configured), ``"fake"`` or ``"env"``.
    ``auth_required`` / ``port`` / ``local_aws`` default to ``AUTH_REQUIRED`` / ``PORT`` /
    ``LOCAL_AWS`` of ``env``. ``fake_speech``: what the fake's speech sounds like, ``"tones"``
    (deterministic, for tests) or ``"espeak"`` (words, for a person listening). Extra keyword
    arguments go to :class:`~infra.apigw.server.LocalGateway` (``idle_timeout_s``,
    ``max_workers``…).
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        openai: str = "auto",
        fake_latency: Any = None,
        fake_speech: str = "tones",
        auth_required: bool | None = None,
        learner_id: str = "dev-learner",
        local_aws: str | None = None,
        **gateway_kwargs: Any,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.host = host
        self.port = int(self.env.get("PORT") or 8080) if port is None else port
        if openai not in ("auto", "fake", "env"):
            raise ValueError("openai must be 'auto', 'fake' or 'env'")
        has_key = any(self.env.get(k) for k in (*_KEY_VARIABLES, *_KEY_PARAMETERS))
        self.demo = openai == "fake" or (openai == "auto" and not has_key)
        self.fake_latency = fake_latency
        self.fake_speech = fake_speech
        self.auth_required = (
            _truthy(self.env.get("AUTH_REQUIRED"), True) if auth_required is None else auth_required
        )
        self.learner_id = learner_id
        aws_mode = (local_aws or self.env.get("LOCAL_AWS") or "moto").strip().lower()
        if aws_mode not in ("moto", "real"):
            raise ValueError("LOCAL_AWS must be 'moto' (default) or 'real'")
        self.real_aws = aws_mode == "real"
        self.gateway_kwargs = gateway_kwargs

        self.gateway: Any = None
        self.fake_openai: Any = None
        self._moto: contextlib.ExitStack | None = None  # moto's process
        self.aws_endpoint_url: str | None = None
        self.openai_base_url: str | None = None
        self.auth_secret: str | None = None
        self.token: str | None = None
        self.table_name = ""
        self.bucket_name = ""
        self.environment: dict[str, str | None] = {}

    # -- URLs --------------------------------------------------------------------------------
    @property
    def page_url(self) -> str:
        return self.gateway.url

    @property
    def ws_url(self) -> str:
        return self.gateway.ws_url

    @property
    def ready_url(self) -> str:
        """The page URL to open: with ``?token=<dev token>`` when auth is on."""
        if self.auth_required and self.token:
            return f"{self.page_url}?token={quote(self.token)}"
        return self.page_url

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from infra import template
        from infra.apigw.server import LocalGateway

        env = self.env
        # Variables the template sets take the user's value when the user gives one.
        overrides: dict[str, str | None] = {
            name: env[name] for name in template.environment_variable_names() if name in env
        }
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        overrides.update(self._real_aws(region) if self.real_aws else self._moto_aws(region))
        overrides["TABLE_NAME"] = self.table_name
        overrides["BUCKET_NAME"] = self.bucket_name
        overrides.update(self._fake_models() if self.demo else self._models())
        overrides.update(self._auth())
        # Quiet, local-friendly Powertools, unless the user says otherwise.
        for name, default in _QUIET_POWERTOOLS.items():
            overrides.setdefault(name, env.get(name, default))

        self.environment = overrides
        page_config = {"demo": self.demo, "authRequired": self.auth_required}
        gateway_kwargs = {"host": self.host, "port": self.port, **self.gateway_kwargs}
        functions = template.functions(
            {"TABLE_NAME": self.table_name, "BUCKET_NAME": self.bucket_name}
        )
        self.gateway = LocalGateway(
            functions,
            page_config=page_config,
            environment_overrides=overrides,
            **gateway_kwargs,
        )
        self.gateway.start_background()

    def _real_aws(self, region: str) -> dict[str, str | None]:
        """A deployed stack's table and bucket, named by ``TABLE_NAME`` and ``BUCKET_NAME``."""
        self.table_name = self.env.get("TABLE_NAME", "")
        self.bucket_name = self.env.get("BUCKET_NAME", "")
        if not self.table_name or not self.bucket_name:
            raise SystemExit(
                "LOCAL_AWS=real needs TABLE_NAME and BUCKET_NAME of an existing table and "
                "bucket (e.g. from a deployed stack's outputs)."
            )
        return {"AWS_REGION": region}

    def _moto_aws(self, region: str) -> dict[str, str | None]:
        """moto in a process of its own, with the template's table and bucket created in it."""
        from infra import template
        from infra.moto_process import moto_process

        # moto serves from a process of its own: its emulation is CPU, and under this
        # process's GIL it competed with the gateway and every handler (a loaded machine
        # fell behind the audio). As in AWS, a call is then a wait here.
        self._moto = contextlib.ExitStack()
        self.aws_endpoint_url = self._moto.enter_context(moto_process())
        defaults = template.functions()["$default"].environment
        self.table_name = self.env.get("TABLE_NAME") or defaults.get(
            "TABLE_NAME", "kiddolingo-sessions"
        )
        self.bucket_name = self.env.get("BUCKET_NAME") or defaults.get(
            "BUCKET_NAME", "kiddolingo-audio"
        )
        self._create_resources(region)
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
        }

    def _fake_models(self) -> dict[str, str | None]:
        """The fake OpenAI server for every stage, and no provider key of any other kind."""
        from infra.fake_openai import FakeOpenAI, LatencyProfile

        self.fake_openai = FakeOpenAI(
            latency=self.fake_latency or LatencyProfile(), speech=self.fake_speech
        ).start()
        self.openai_base_url = self.fake_openai.base_url
        overrides: dict[str, str | None] = {
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": "sk-local-demo-not-a-key",
        }
        for stage in _STAGES:
            overrides[f"{stage}_BASE_URL"] = ""
            overrides[f"{stage}_API_KEY"] = ""
        for name in _KEY_PARAMETERS:
            overrides[name] = ""
        return overrides

    def _models(self) -> dict[str, str | None]:
        """The real providers, with the user's keys."""
        env = self.env
        self.openai_base_url = env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        overrides: dict[str, str | None] = {
            name: env[name] for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if env.get(name)
        }
        for name in _KEY_PARAMETERS:
            # The template's SSM parameter names are for AWS; a local key wins.
            overrides[name] = env.get(name, "")
        return overrides

    def _auth(self) -> dict[str, str | None]:
        """The auth settings, and a dev token the page can use."""
        from infra.token import LOCAL_DEV_AUTH_SECRET, dev_token

        self.auth_secret = self.env.get("AUTH_SECRET") or LOCAL_DEV_AUTH_SECRET
        self.token = dev_token(self.learner_id, secret=self.auth_secret)
        return {
            "AUTH_REQUIRED": "true" if self.auth_required else "false",
            "AUTH_SECRET": self.auth_secret,
            "AUTH_SECRET_PARAMETER": "",
        }

    def _create_resources(self, region: str) -> None:
        import boto3

        from infra import template

        session = boto3.session.Session(
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=region,
        )
        dynamodb = session.client("dynamodb", endpoint_url=self.aws_endpoint_url)
        s3 = session.client("s3", endpoint_url=self.aws_endpoint_url)
        template.create_resources(dynamodb, s3, self.table_name, self.bucket_name)

    def stop(self) -> None:
        """Stop the gateway (connections get 1001 and ``$disconnect``), then the fake and moto."""
        if self.gateway is not None:
            try:
                self.gateway.stop_background()
            finally:
                self.gateway = None
        if self.fake_openai is not None:
            self.fake_openai.stop()
            self.fake_openai = None
        if self._moto is not None:
            self._moto.close()
            self._moto = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the terminal shows -------------------------------------------------------------
    def summary(self) -> str:
        lines = []
        if self.demo:
            bar = "!" * (len(DEMO_BANNER) + 4)
            lines += [bar, f"! {DEMO_BANNER} !", bar, ""]
        if not self.auth_required:
            lines += [NO_AUTH_WARNING, ""]
        lines.append("KiddoLingo Voice is running locally.")
        lines.append(f"  Open the page:  {self.ready_url}")
        lines.append(f"  WebSocket API:  {self.ws_url}  (any path, e.g. {self.ws_url}realtime)")
        if self.auth_required:
            lines.append(
                "  Auth:           on — the token travels as ?token=, the bearer.<jwt> "
                "subprotocol or Authorization: Bearer"
            )
            lines.append(f"  Dev token:      {self.token}")
        if self.real_aws:
            lines.append(
                f"  AWS:            your AWS account (table {self.table_name}, "
                f"bucket {self.bucket_name})"
            )
        else:
            lines.append(
                f"  AWS:            moto at {self.aws_endpoint_url} (table {self.table_name}, "
                f"bucket {self.bucket_name})"
            )
        models = "fake OpenAI server (demo)" if self.demo else "OpenAI-compatible API"
        lines.append(f"  Models:         {models} at {self.openai_base_url}")
        if self.demo and self.fake_speech in DEMO_SPEECH_NOTE:
            lines.append(DEMO_SPEECH_NOTE[self.fake_speech])
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local", description="Run KiddoLingo Voice locally (make run)."
    )
    parser.add_argument("--port", type=int, default=None, help="default: $PORT or 8080")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=ROOT / ".env",
        help="settings file read first (the environment wins); default: .env at the repo root",
    )
    args = parser.parse_args(argv)

    from dotenv import load_dotenv

    if args.env_file.is_file():
        load_dotenv(args.env_file, override=False)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kiddolingo.local").setLevel(
        os.environ.get("LOCAL_LOG_LEVEL", "INFO").upper()
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    from infra.fake_openai import espeak_available

    # A newcomer without a key should hear the tutor say words: espeak-ng when installed.
    stack = LocalStack(port=args.port, fake_speech="espeak" if espeak_available() else "tones")
    try:
        stack.start()
    except OSError as exc:
        print(f"Could not start the local stack: {exc}", file=sys.stderr, flush=True)
        print("Is something else listening on that port? Try PORT=8081 make run", file=sys.stderr)
        return 1
    print(stack.summary(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("\nStopping…", flush=True)
        stack.stop()
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
