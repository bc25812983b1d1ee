"""API Gateway's WebSocket limits, and the aiohttp WebSocket that enforces the frame limit.

A frame over 32 KB or a message over 128 KB closes the connection with 1009, a binary frame
with 1003; the idle timeout (10 min) and the maximum connection time (2 h) close it with 1001.
The gateway takes each of these as a constructor parameter, so tests can make them small.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket import reader_py
from aiohttp.http_websocket import WebSocketError

KB = 1024
MAX_FRAME_BYTES = 32 * KB
MAX_MESSAGE_BYTES = 128 * KB
MAX_POST_BYTES = 128 * KB
IDLE_TIMEOUT_S = 10 * 60.0
MAX_CONNECTION_S = 2 * 60 * 60.0
INTEGRATION_TIMEOUT_S = 29.0


class _FrameLimitedReader(reader_py.WebSocketReader):
    """aiohttp's reader, plus API Gateway's per-frame size limit (1009 when exceeded)."""

    def __init__(self, *args: Any, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_frame_bytes = max_frame_bytes

    def _handle_frame(self, fin: bool, opcode: int, payload: Any, compressed: int) -> None:
        if opcode in (0x0, 0x1, 0x2) and len(payload) > self._max_frame_bytes:
            raise WebSocketError(
                WSCloseCode.MESSAGE_TOO_BIG,
                f"Frame of {len(payload)} bytes exceeds {self._max_frame_bytes} bytes",
            )
        super()._handle_frame(fin, opcode, payload, compressed)


class _StampingQueue(reader_py.WebSocketDataQueue):
    """aiohttp's message queue, noting when each data message was read off the socket.

    API Gateway stamps a message's ``requestTimeEpoch`` when it receives it, and a
    connection's frames reach it in order over one TCP stream: the stamps are in sending order,
    and frames read together share a millisecond. Stamped here, as the frame is parsed, not
    when the serve loop gets round to the message (which would spread a burst over the loop's
    own delays)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps: deque[int] = deque()

    def feed_data(self, data: Any, size: int) -> None:
        if data[0] in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.stamps.append(int(time.time() * 1000))
        super().feed_data(data, size)


class GatewayWebSocketResponse(web.WebSocketResponse):
    """aiohttp's server WebSocket with the frame limit and the receipt stamps."""

    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_frame_bytes = max_frame_bytes
        self._stamping: _StampingQueue | None = None

    def receipt_stamp(self) -> int:
        """When the data message just received was read off the socket (epoch ms)."""
        if self._stamping is not None and self._stamping.stamps:
            return self._stamping.stamps.popleft()
        return int(time.time() * 1000)

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # Same as aiohttp's, with the frame-limited (pure Python) reader.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        self._reader = self._stamping = _StampingQueue(request._protocol, 2**16, loop=loop)
        self._parser = _FrameLimitedReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
            max_frame_bytes=self._max_frame_bytes,
        )
        cb = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=cb)
        request.protocol.keep_alive(False)
