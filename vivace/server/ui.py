"""The web UI: static HTML, JS modules and CSS served at `/` and `/static/`, no build step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
# The page and its assets are public even when the API needs a key: the page asks the user for it.
# no-cache: the browser revalidates (cheap 304s) so a restarted server never runs stale JS.
_HEADERS = {"Cache-Control": "no-cache"}


class _Static(StaticFiles):
    """StaticFiles that marks every asset no-cache."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(_HEADERS)
        return response


def mount_ui(app: FastAPI) -> None:
    """Serve the web UI on `app`: the page at `/`, its assets under `/static/`."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"web UI assets missing: {index} (reinstall vivace; they ship as package data)")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=_HEADERS)

    app.mount("/static", _Static(directory=STATIC_DIR), name="static")
