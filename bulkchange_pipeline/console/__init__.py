"""The operators' bulk-change console: server-rendered pages under ``/console`` of the HTTP app.

The Dagster UI is organised by runs; operators think in bulk changes and devices. The console
shows one tenant's bulk changes, devices and carrier exchanges, and does the API's actions (cancel,
retry failed, release, a CSV upload) after a confirmation page. It is an outer layer like
``intake``: it reads through ``store`` and acts through the functions the API uses, and nothing
below imports it (an import-linter contract). Plain HTML forms and Jinja2 templates: no script
framework to ship, every page a few indexed queries.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from . import actions, pages
from .render import install_handlers

__all__ = ["install_console"]


def install_console(app: FastAPI) -> None:
    """Mount the console on ``app``; it uses the database the intake API was bound to (``intake.deps.bind``)."""
    app.include_router(pages.router)  # first: its fixed paths (devices.csv) before the actions' {name}
    app.include_router(actions.router)
    install_handlers(app)

    @app.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)
