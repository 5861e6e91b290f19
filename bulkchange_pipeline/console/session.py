"""Console sign-in: an API key is checked once, then a signed, expiring session cookie stands for it.

Why a session and not the key in a cookie: the key is the tenant's credential for the API; a cookie
is sent with every request and sits in the browser's profile. The cookie therefore holds only
``<key id>.<tenant id>.<expiry>.<session id>`` and an HMAC-SHA256 of that under the server's console
key (``settings.Settings.console_key``: ``BULKCHANGE_CONSOLE_SECRET``, else random per process).
The session id is random (``secrets.token_urlsafe``), so every sign-in is its own session with its
own CSRF token, even two of one key in the same second. Each request checks the signature
(``hmac.compare_digest``), the expiry, that the key is still live (revoking the key ends its
sessions at once) and that the session was not signed out: sign-out records the session id in the
business database (``store.console.revoke_session``, kept until the expiry), so a copy of the
cookie replayed afterwards is refused by every replica, not only by the browser that deleted it.

CSRF: every console form that changes something posts ``csrf``, an HMAC of the session token, and
the cookie is ``SameSite=Strict`` besides. The sign-in form, before any session exists, carries an
HMAC of a random pre-session cookie (so another site cannot sign a browser into its tenant).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from .. import settings
from ..intake.auth import Caller, caller_of
from ..intake.deps import request_engine
from ..store.console import live_session, revoke_session

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
    "upload_mac",
    "upload_mac_matches",
]

COOKIE = "bulkchange_console"
LOGIN_COOKIE = "bulkchange_console_login"
SESSION_SECONDS = 8 * 3600
PATH = "/console"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


class CsrfRefused(Exception):
    """A POST without the token of its session (or of its sign-in form): refused with 403."""


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in caller (the API's ``Caller`` of the key), the CSRF token of its session, and
    the session's id and expiry (what sign-out revokes)."""

    caller: Caller
    csrf: str
    session_id: str = ""
    expires: int = 0


def _sign(purpose: str, text: str) -> str:
    return hmac.new(settings.current().console_key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()


def _token(key_id: int, tenant_id: int, expires: int, session_id: str) -> str:
    payload = f"{key_id}.{tenant_id}.{expires}.{session_id}"
    return f"{payload}.{_sign('session', payload)}"


@dataclass(frozen=True)
class _Session:
    key_id: int
    tenant_id: int
    expires: int
    session_id: str


def _parse(token: str) -> _Session | None:
    """The session of a genuine, unexpired token; None otherwise (a token from before session ids,
    ``key.tenant.expiry.sig``, too: its browser signs in again)."""
    parts = token.split(".")
    if len(parts) != 5 or not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts[:3]):
        return None
    if not SESSION_ID.match(parts[3]):
        return None
    payload = ".".join(parts[:4])
    if not hmac.compare_digest(parts[4], _sign("session", payload)) or int(parts[2]) < time.time():
        return None
    return _Session(int(parts[0]), int(parts[1]), int(parts[2]), parts[3])


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def start_session(request: Request, response: Response, caller: Caller) -> None:
    """Set the session cookie for a caller whose key was just verified."""
    token = _token(caller.key_id, caller.tenant_id, int(time.time()) + SESSION_SECONDS, secrets.token_urlsafe(16))
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


async def end_session(engine: sa.Engine, user: ConsoleUser, response: Response) -> None:
    """Sign out: revoke the session server-side (every replica refuses its cookie from now on),
    then delete the cookie in this browser."""
    expires_at = datetime.fromtimestamp(user.expires, UTC).replace(tzinfo=None)  # naive UTC, as stored
    await run_in_threadpool(revoke_session, engine, user.session_id, expires_at)
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
    identity = await run_in_threadpool(live_session, engine, parsed.tenant_id, parsed.key_id, parsed.session_id)
    if identity is None:  # the key was revoked, or the session signed out, since sign-in
        raise LoginRequired()
    return ConsoleUser(caller_of(identity), _sign("csrf", token), parsed.session_id, parsed.expires)


def check_csrf(user: ConsoleUser, token: str | None) -> None:
    """Refuse a state-changing POST whose ``csrf`` field is not its session's token."""
    if not token or not hmac.compare_digest(token.encode(), user.csrf.encode()):
        raise CsrfRefused("this form does not carry your session's token: reload the page and try again")


def upload_mac(tenant_id: int, data: bytes, service_provider: str, change_type: str, idempotency_key: str) -> str:
    """The MAC an upload's confirmation form carries: it binds the confirmation to the dry run that
    was shown (this tenant, these file bytes, this service provider and change type, this key), so
    a confirmation posted with another file or choice is refused instead of submitting something
    nobody saw. JSON makes the fields unambiguous (no separator a field could contain)."""
    fields = [tenant_id, hashlib.sha256(data).hexdigest(), service_provider, change_type, idempotency_key]
    return _sign("upload", json.dumps(fields))


def upload_mac_matches(
    mac: str, tenant_id: int, data: bytes, service_provider: str, change_type: str, idempotency_key: str
) -> bool:
    expected = upload_mac(tenant_id, data, service_provider, change_type, idempotency_key)
    return hmac.compare_digest(mac.encode(), expected.encode())
