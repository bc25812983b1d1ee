"""A local stand-in for the API Gateway WebSocket API and its Management API (aiohttp).

What it does, as API Gateway does it:

* **Any path with an ``Upgrade: websocket``** is the WebSocket API (``ws://host:port/``,
  ``/realtime?model=…``): the ``$connect`` function runs *before* the handshake completes; a
  non-2xx ``statusCode`` refuses the upgrade with that HTTP status; a ``Sec-WebSocket-Protocol``
  in the returned ``headers`` is the subprotocol of the handshake (none otherwise).
* Every text message becomes a ``MESSAGE`` event, routed with the route selection expression
  (``$request.body.type``): a declared route of that name, else ``$default``. Invocations run
  in a thread pool **concurrently** — a connection's messages are not serialized.
* The connection's end (client close, ``DELETE @connections``, limits, idle/max-duration
  timeouts, an abrupt drop, server shutdown) becomes a ``DISCONNECT`` event with the
  ``disconnectStatusCode`` / ``disconnectReason`` of that end.
* The events have the fields and shapes of API Gateway's Lambda proxy events: ``requestContext``
  (``routeKey``, ``eventType``, ``extendedRequestId``, ``requestTime``, ``messageDirection``,
  ``stage``, ``connectedAt``, ``requestTimeEpoch``, ``identity``, ``requestId``, ``domainName``,
  ``connectionId``, ``apiId``, plus ``messageId`` on MESSAGE and ``disconnectStatusCode`` /
  ``disconnectReason`` on DISCONNECT; ``requestTimeEpoch`` is when the message was read off
  the socket, as API Gateway stamps it at receipt); ``headers``/``multiValueHeaders`` (and the
  query string parameters when there is a query) on CONNECT; the four fixed headers API
  Gateway sends on DISCONNECT; ``body`` on MESSAGE; ``isBase64Encoded``.
* Limits: a frame over 32 KB or a message over 128 KB closes with 1009, a binary frame with
  1003; idle timeout 10 min and maximum connection 2 h close with 1001 (all constructor
  parameters, small in tests). A failing integration sends the client API Gateway's
  ``{"message": "Internal server error", "connectionId": …, "requestId": …}``.
* **The Management API** at ``/{stage}/@connections/{id}`` and ``/@connections/{id}``:
  ``POST`` sends the body to the client as one text frame (413 PayloadTooLargeException over
  128 KB), ``GET`` returns ``connectedAt``/``identity``/``lastActiveAt``, ``DELETE`` closes it
  (204); an unknown or closed connection gets 410 ``GoneException``. SigV4 is not checked.

Besides that it serves the page: ``GET /`` is ``web/index.html``, other paths are static files of
``web/``, and ``GET /config.json`` tells the page about demo mode, auth and the WebSocket URL.

Where each part lives:

* :mod:`infra.apigw.server` - :class:`~infra.apigw.server.LocalGateway`: settings, start and
  stop, the HTTP dispatch, and the helpers tests use (drop, wait for invocations);
* :mod:`infra.apigw.websocket` - one connection from ``$connect`` through its messages to
  ``$disconnect``;
* :mod:`infra.apigw.limits` - the size and time limits, and the frame-limited, receipt-stamping
  WebSocket;
* :mod:`infra.apigw.events` - the Lambda proxy events (shared with the benchmark and the tests);
* :mod:`infra.apigw.invocations` - running the functions on worker threads, and their record;
* :mod:`infra.apigw.management` - the ``@connections`` Management API;
* :mod:`infra.apigw.static` - the page and ``/config.json``;
* :mod:`infra.apigw.routes` - route selection, and what the template says about routes;
* :mod:`infra.apigw.samples` - the sample events of ``events/``.

Run it through ``infra.local`` (``make run``); tests use
:meth:`~infra.apigw.server.LocalGateway.start_background`.
"""
