"""The page the local gateway serves besides the API: ``web/`` and ``/config.json``.

``GET /`` is ``web/index.html``, other paths are static files of ``web/``, and
``GET /config.json`` tells the page about demo mode, auth and the WebSocket URL.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

PageConfig = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None
_TEXT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".json": "application/json",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
}


class Page:
    """The files of ``web_dir`` (none when it is None) and the page's ``/config.json``."""

    def __init__(self, web_dir: Path | str | None, page_config: PageConfig) -> None:
        self.web_dir = Path(web_dir).resolve() if web_dir else None
        self.page_config = page_config

    def config(self, request: web.Request) -> web.Response:
        """``/config.json``: the WebSocket URL of this host, overridden by ``page_config``."""
        config: dict[str, Any] = {
            "demo": False,
            "authRequired": False,
            "wsUrl": f"ws://{request.host}/",
        }
        extra = self.page_config() if callable(self.page_config) else self.page_config
        config.update(extra or {})
        return web.json_response(config, headers={"Cache-Control": "no-store"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        """A file below ``web_dir`` (a directory's ``index.html``), never one outside it."""
        if self.web_dir is None:
            return web.Response(status=404, text="Not Found")
        rel = request.path.lstrip("/") or "index.html"
        target = (self.web_dir / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.web_dir) or not target.is_file():
            return web.Response(status=404, text="Not Found")
        ctype = content_type(target)
        headers = {"Cache-Control": "no-store", "Content-Type": ctype}
        return web.FileResponse(target, headers=headers)


def content_type(path: Path) -> str:
    """The ``Content-Type`` of a file of the page (text types in UTF-8)."""
    suffix = path.suffix.lower()
    if suffix in (".js", ".mjs"):
        return "text/javascript; charset=utf-8"
    if suffix in _TEXT_TYPES:
        return f"{_TEXT_TYPES[suffix]}; charset=utf-8"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
