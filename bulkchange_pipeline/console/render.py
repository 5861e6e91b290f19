"""Rendering the console's pages: one Jinja2 environment, autoescaped, that shows control characters.

Autoescape stops markup; it does not stop a right-to-left override (U+202E) in an identifier or a
carrier's message from reordering what an operator reads. ``visible`` runs on every ``{{ value }}``
(Jinja's ``finalize``, before escaping) and writes control, format (bidi) and separator characters
as ``\\u202e`` text, so they are shown, never obeyed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..domain import change_type_name, outcome_of
from .session import CsrfRefused, LoginRequired

__all__ = ["BadRequest", "NotFound", "install_handlers", "is_console", "page", "visible"]

HIDDEN_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Cn"}
KEPT = {"\n", "\t"}


class NotFound(Exception):
    """Nothing of this tenant's under that id: the same answer for another tenant's and a missing one."""


class BadRequest(Exception):
    """A parameter the page cannot honour (an unknown status filter): a 400 page saying what to send."""


Handler = Callable[[Request, Exception], Awaitable[Response]]


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == "/console" or path.startswith("/console/")


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """(status, reason) of a request FastAPI could not validate: a bad id in the path is a page
    that does not exist (404), anything else a bad request (400)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    name = loc[-1] if loc else "request"
    given = str(first.get("input", ""))[:40]
    if loc[:1] == ["path"]:
        return 404, f"{name} {given!r} is not an id (a whole number, 1 or more): {first.get('msg', 'invalid')}"
    return 400, f"{name}: {first.get('msg', 'invalid value')}"


def visible(value: Any) -> Any:
    """Jinja ``finalize``: None as empty, datetimes to the second, invisible characters as escapes."""
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and not value.isprintable():
        return "".join(
            f"\\u{ord(c):04x}" if c not in KEPT and unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in value
        )
    return value


def query(base: dict[str, Any], **changes: Any) -> str:
    """A page's query string with ``changes`` applied (None drops a parameter): for pagers and filters."""
    merged = {**base, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    finalize=visible,
    undefined=jinja2.StrictUndefined,
)
_env.filters["change_type_name"] = change_type_name
_env.globals["query"] = query
_env.globals["outcome_of"] = outcome_of
templates = Jinja2Templates(env=_env)


def page(request: Request, template: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` (``user`` None on the sign-in and error pages)."""
    context.setdefault("user", None)
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"  # tenant data: not kept by the browser or a proxy
    response.headers["X-Frame-Options"] = "DENY"  # the action forms cannot be framed (clickjacking)
    return response


def install_handlers(app: FastAPI) -> None:
    """Console exceptions as pages: to the sign-in form, 404 page, 403 page, 400 page.

    Under ``/console`` a request FastAPI cannot validate (``/bulk-changes/abc``, an id of 0 or of
    30 digits) or route (an unknown path) is an HTML page with its reason too, not the API's JSON:
    the handlers installed before this one (``install_api``'s problem+json) keep every other path.
    """
    previous_validation: Handler = app.exception_handlers.get(
        RequestValidationError, request_validation_exception_handler
    )
    previous_http: Handler = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)

    async def on_login_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", 404, title="Not found", message=str(exc))

    async def on_bad_request(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", 400, title="Bad request", message=str(exc))

    async def on_csrf(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", 403, title="Refused", message=str(exc))

    async def on_validation(request: Request, exc: Exception) -> Response:
        if not is_console(request) or not isinstance(exc, RequestValidationError):
            return await previous_validation(request, exc)
        status, message = _validation_message(exc)
        return page(
            request, "error.html", status, title="Not found" if status == 404 else "Bad request", message=message
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        if not is_console(request) or not isinstance(exc, StarletteHTTPException):
            return await previous_http(request, exc)
        status = exc.status_code
        message = "no such page in the console" if status == 404 else str(exc.detail)
        title = "Not found" if status == 404 else HTTPStatus(status).phrase
        response = page(request, "error.html", status, title=title, message=message)
        response.headers.update(exc.headers or {})
        return response

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(BadRequest, on_bad_request)
    app.add_exception_handler(CsrfRefused, on_csrf)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
