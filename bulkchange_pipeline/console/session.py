"""Console sign-in: an API key is checked once, then a signed, expiring session cookie stands for it.

Why a session and not the key in a cookie: the key is the tenant's credential for the API; a cookie
is sent with every request and sits in the browser's profile. The cookie therefore holds only
``<key id>.<tenant id>.<expiry>`` and an HMAC-SHA256 of that under the server's console key
(``settings.Settings.console_key``: ``BULKCHANGE_CONSOLE_SECRET``, else random per process). Each
request checks the signature (``hmac.compare_digest``), the expiry and that the key is still live,
so revoking the key ends its sessions at once.

CSRF: every console form that changes something posts ``csrf``, an HMAC of the session token, and
the cookie is ``SameSite=Strict`` besides. The sign-in form, before any session exists, carries an
HMAC of a random pre-session cookie (so another site cannot sign a browser into its tenant).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from .. import settings
from ..intake.auth import Caller, caller_of
from ..intake.deps import request_engine
from ..store.console import live_api_key

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "SESSION_SECONDS",
    "ConsoleUser",
    "CsrfRefused",
    "LoginRequired",
    "check_csrf",
    "check_login_csrf",
    "console_user",
    "end_session",
    "login_csrf",
    "remember_login",
    "start_session",
]

COOKIE = "bulkchange_console"
LOGIN_COOKIE = "bulkchange_console_login"
SESSION_SECONDS = 8 * 3600
PATH = "/console"


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


class CsrfRefused(Exception):
    """A POST without the token of its session (or of its sign-in form): refused with 403."""


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in caller (the API's ``Caller`` of the key) and the CSRF token of its session."""

    caller: Caller
    csrf: str


def _sign(purpose: str, text: str) -> str:
    return hmac.new(settings.current().console_key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()


def _token(key_id: int, tenant_id: int, expires: int) -> str:
    payload = f"{key_id}.{tenant_id}.{expires}"
    return f"{payload}.{_sign('session', payload)}"


def _parse(token: str) -> tuple[int, int] | None:
    """(key id, tenant id) of a genuine, unexpired token; None otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[:3]):
        return None
    payload = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3], _sign("session", payload)) or int(parts[2]) < time.time():
        return None
    return int(parts[0]), int(parts[1])


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, caller: Caller) -> None:
    """Set the session cookie for a caller whose key was just verified."""
    token = _token(caller.key_id, caller.tenant_id, int(time.time()) + SESSION_SECONDS)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def login_csrf(request: Request) -> tuple[str, str | None]:
    """The sign-in form's token, and the pre-session nonce to set as a cookie when the browser has
    none yet (``remember_login``)."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    fresh = None
    if len(nonce) != 32 or not nonce.isascii() or not nonce.isalnum():
        nonce = fresh = secrets.token_hex(16)
    return _sign("login", nonce), fresh


def remember_login(request: Request, response: Response, nonce: str | None) -> None:
    if nonce:
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=3600, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
        )


def check_login_csrf(request: Request, token: str) -> None:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(token.encode(), _sign("login", nonce).encode()):
        raise CsrfRefused("the sign-in form is out of date: open it again and sign in")


async def console_user(request: Request, engine: sa.Engine = Depends(request_engine)) -> ConsoleUser:
    """The dependency of every console page: the session's caller, or LoginRequired."""
    token = request.cookies.get(COOKIE, "")
    parsed = _parse(token) if token else None
    if parsed is None:
        raise LoginRequired()
    identity = await run_in_threadpool(live_api_key, engine, parsed[1], parsed[0])
    if identity is None:  # revoked since sign-in
        raise LoginRequired()
    return ConsoleUser(caller_of(identity), _sign("csrf", token))


def check_csrf(user: ConsoleUser, token: str | None) -> None:
    """Refuse a state-changing POST whose ``csrf`` field is not its session's token."""
    if not token or not hmac.compare_digest(token.encode(), user.csrf.encode()):
        raise CsrfRefused("this form does not carry your session's token: reload the page and try again")
