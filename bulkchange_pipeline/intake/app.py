"""The HTTP app: the intake API and carrier callbacks, served by ``bulkchange serve``.

``create_app(url)`` builds a FastAPI app bound to one business database; its OpenAPI document is
at ``/openapi.json`` and the interactive docs at ``/docs``. The operators' console is under ``/console``.
"""

from __future__ import annotations

from fastapi import FastAPI

from .. import settings
from ..console import install_console
from ..store.db import shared_engine
from .api import install_api
from .callbacks import callbacks_router


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

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
