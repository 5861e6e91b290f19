"""The HTTP app: the intake API and carrier callbacks, served by ``bulkchange serve``.

``create_app(url)`` builds a FastAPI app bound to one business database; its OpenAPI document is
at ``/openapi.json`` and the interactive docs at ``/docs``. The operators' console is under ``/console``.

Big uploads: a bulk change body or CSV upload over ``BIG_UPLOAD_BYTES`` (or of unknown length) is
validated in a worker thread while the event loop keeps answering (``/healthz`` among others);
``UploadGate`` lets ``settings.upload_slots`` of them run at once and answers one more 429 with
Retry-After, so a burst of million-row files waits its turn instead of exhausting memory.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import settings
from ..console import install_console
from ..store.db import shared_engine
from .api import install_api
from .api_models import PROBLEM_JSON
from .callbacks import callbacks_router

BIG_UPLOAD_BYTES = 1024 * 1024
UPLOAD_PATHS = ("/bulk-changes", "/bulk-changes:dry-run", "/bulk-changes/csv", "/console/upload")
RETRY_AFTER_SECONDS = 30  # about what a 1,000,000-row file takes


class UploadGate:
    """ASGI middleware: at most ``slots`` big uploads in the app at once; one more is answered
    429 with Retry-After (a problem document) before its body is read. Small requests pass."""

    def __init__(self, app: ASGIApp, slots: int) -> None:
        self.app, self.slots, self.busy = app, slots, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_big_upload(scope):
            await self.app(scope, receive, send)
            return
        if self.busy >= self.slots:  # one event loop: no lock needed between the check and the count
            await _too_many(scope, send, self.slots)
            return
        self.busy += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy -= 1

    @staticmethod
    def _is_big_upload(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            return False
        length = dict(scope["headers"]).get(b"content-length")
        if length is None or not length.isdigit() or len(length) > 18:
            return True  # chunked, or a length the app refuses later: it may be as big as the limit
        return int(length) > BIG_UPLOAD_BYTES


async def _too_many(scope: Scope, send: Send, slots: int) -> None:
    body = json.dumps(
        {
            "type": "/problems/too-many-requests",
            "title": "Too many uploads at once",
            "status": 429,
            "detail": f"{slots} big upload(s) are being validated; send this one again in {RETRY_AFTER_SECONDS} s",
            "instance": scope["path"],
        }
    ).encode()
    headers: list[Any] = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(url: str | None = None) -> FastAPI:
    app = FastAPI(
        title="bulkchange_pipeline",
        version="0.1.0",
        description="Bulk changes to cellular IoT devices: intake API and carrier callbacks.",
    )
    resolved = url or settings.database_url()

    def engine():
        return shared_engine(resolved)

    app.include_router(callbacks_router(engine))
    install_api(app, engine)
    install_console(app)
    app.add_middleware(UploadGate, slots=settings.current().upload_slots)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Answered on the event loop itself: no worker thread, so a busy pool does not delay it."""
        return {"status": "ok"}

    return app


__all__ = ["BIG_UPLOAD_BYTES", "RETRY_AFTER_SECONDS", "UPLOAD_PATHS", "UploadGate", "create_app"]
