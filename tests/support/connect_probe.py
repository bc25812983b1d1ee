"""One ``$connect`` as a deployed Lambda with tracing on would run it, with what it records.

``python -m tests.support.connect_probe <out.json> <Sec-WebSocket-Protocol>`` runs the real
connect handler (moto AWS built from ``template.yaml``) in a process of its own: Tracer on, in
Lambda mode (``LAMBDA_TASK_ROOT`` and a sampled ``_X_AMZN_TRACE_ID``), sending its segments to a
UDP socket standing in for the X-Ray daemon, with ``POWERTOOLS_LOGGER_LOG_EVENT=true`` and a
DEBUG log level. It writes the handler's response, every datagram the "daemon" received and the
token to ``out.json``; the handler's logs go to this process's stdout. A process of its own
because the X-Ray SDK decides at import whether it runs in Lambda.
"""

from __future__ import annotations

import json
import os
import socket
import sys

SECRET = "connect-probe-secret-long-enough-for-hs256"


def main(out_path: str, offered: str) -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    os.environ.update(
        {
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
            "LAMBDA_TASK_ROOT": os.getcwd(),
            "_X_AMZN_TRACE_ID": (
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            ),
            "POWERTOOLS_TRACE_DISABLED": "false",
            "POWERTOOLS_LOGGER_LOG_EVENT": "true",
            "POWERTOOLS_LOG_LEVEL": "DEBUG",
            "AUTH_REQUIRED": "true",
            "AUTH_SECRET": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    from moto import mock_aws

    from kiddolingo.auth import issue_token
    from tests.support import aws_stack
    from tests.support.events import connect_event

    os.environ.update({"TABLE_NAME": aws_stack.TABLE, "BUCKET_NAME": aws_stack.BUCKET})
    token = issue_token(SECRET, "ana")
    headers = {"Authorization": None, "Sec-WebSocket-Protocol": offered.replace("<jwt>", token)}
    with mock_aws():
        aws_stack.create_resources()
        stack = aws_stack.Stack(aws_stack.PostRecorder())
        response = stack.invoke(
            "$connect", connect_event(headers=headers, query=None, connection_id="probe=")
        )
    datagrams = []
    try:
        while True:
            datagrams.append(daemon.recv(65536).decode())
    except TimeoutError:
        pass
    with open(out_path, "w") as out:
        json.dump({"response": response, "datagrams": datagrams, "token": token}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
