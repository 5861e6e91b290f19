"""Verizon ThingSpace's two-part auth as one object: the OAuth client-credentials token (and when
it expires), the M2M session, the lock that lets one caller at a time renew them, the header flow
that puts them on each request, and the renewal rules of a call (reference/carriers.md section 2).

Owning all of the auth state here (rather than on the client, read by the wire module) means the
request builder and the renewal logic read the same fields through one object, and neither the
client nor `thingspace_wire.py` holds a reference back to the other.

- token: `POST /api/ts/v1/oauth2/token` with Basic client_id:client_secret and a form body,
  refreshed `token_margin_seconds` before it expires; sent as `Authorization: Bearer`.
- session: `POST /api/m2m/v1/session/login` -> `sessionToken`, sent as `VZ-M2M-Token` on M2M calls.
  It expires when idle; on the session error a call logs in again once and is repeated, so no
  device fails because of it. Gateway fault 900901 gets one token refresh, then is reported as a
  configuration error.
- logout: `POST /api/m2m/v1/session/logout` (no body; Bearer and `VZ-M2M-Token`) ends the session
  when the client closes (`logout`), so sessions do not pile up at the carrier until their 20 idle
  minutes run out. A failed logout is logged and the session dropped all the same: closing never
  fails because of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator
from typing import Any

import httpx

from .base import BusinessCarrierError, CarrierError, LogEntry, TransientCarrierError
from .http import CallResult, CarrierHttp
from .redaction import basic_token
from .thingspace_wire import M2M, TOKEN_PATH, GatewayAuthError, SessionExpiredError

__all__ = ["ThingSpaceAuth"]

logger = logging.getLogger(__name__)


class ThingSpaceAuth(httpx.Auth):
    """The credentials and their state for one ThingSpace account; also the `httpx.Auth` of its
    `CarrierHttp`, so every request carries whatever `call` last obtained."""

    def __init__(
        self, client_id: str, client_secret: str, username: str, password: str, *, token_margin_seconds: float = 60.0
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.token_margin_seconds = token_margin_seconds
        self.token: str | None = None
        self.token_expires = 0.0  # time.monotonic() after which the token is renewed
        self.session: str | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- the request builder ----------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Basic client credentials (and the form body) on the token call, the Bearer token on
        every other call, the session token on M2M calls."""
        path = request.url.path
        if path.endswith("/" + TOKEN_PATH):
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-type", "content-length")}
            headers["Authorization"] = "Basic " + basic_token(self.client_id, self.client_secret)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            yield httpx.Request("POST", request.url, headers=headers, content=b"grant_type=client_credentials")
            return
        if self.token:
            request.headers["Authorization"] = "Bearer " + self.token
        if self.session and not path.endswith("/session/login"):
            request.headers["VZ-M2M-Token"] = self.session
        yield request

    # -- renewal ----------------------------------------------------------------------------------

    def _renewal_lock(self) -> asyncio.Lock:
        """One lock per event loop (the engine may run one `asyncio.run` per batch)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _ensure(
        self, http: CarrierHttp, *, stale_session: str | None = None, stale_token: str | None = None
    ) -> list[LogEntry]:
        """A valid token and session (renewing those named stale); returns the auth exchanges."""
        log: list[LogEntry] = []
        async with self._renewal_lock():
            if stale_token is not None and self.token == stale_token:
                self.token = None
            if stale_session is not None and self.session == stale_session:
                self.session = None
            if self.token is None or time.monotonic() >= self.token_expires:
                if not (self.client_id and self.client_secret):
                    raise BusinessCarrierError(
                        "ThingSpace needs extra client_id and client_secret "
                        "(BULKCHANGE_CRED_<NAME>_CLIENT_ID/_CLIENT_SECRET)"
                    )
                self.token = None
                got = await http.request("POST", TOKEN_PATH, description="ThingSpace OAuth token")
                log += got.log
                body = got.body if isinstance(got.body, dict) else {}
                if not body.get("access_token"):
                    raise TransientCarrierError("token response without access_token", log=log)
                ttl = float(body.get("expires_in") or 3600)
                self.token = str(body["access_token"])
                self.token_expires = time.monotonic() + ttl - min(self.token_margin_seconds, ttl * 0.2)
            if self.session is None:
                got = await http.request(
                    "POST",
                    M2M + "session/login",
                    description="ThingSpace session login",
                    json_body={"username": self.username, "password": self.password},
                )
                log += got.log
                session = got.body.get("sessionToken") if isinstance(got.body, dict) else None
                if not session:
                    raise TransientCarrierError("login response without sessionToken", log=log)
                self.session = str(session)
        return log

    async def logout(self, http: CarrierHttp) -> list[LogEntry]:
        """End the open M2M session, if any, and forget it; returns the exchange (empty when no
        session was open). Never raises for the carrier's answer: a session that cannot be ended
        (already expired, token gone, carrier down) is logged and dropped, and expires by itself."""
        async with self._renewal_lock():
            if self.session is None:
                return []
            try:
                # The header flow adds VZ-M2M-Token from self.session, so it is cleared only after.
                got = await http.request("POST", M2M + "session/logout", description="ThingSpace session logout")
                return got.log
            except Exception as exc:  # noqa: BLE001 - closing the client must not fail on a logout
                logger.warning("ThingSpace session logout failed; the session is dropped anyway: %s", exc)
                return list(getattr(exc, "log", None) or [])
            finally:
                self.session = None

    async def call(
        self, http: CarrierHttp, method: str, path: str, body: Any = None, description: str = ""
    ) -> CallResult:
        """One M2M call through `http` with auth renewal: one re-login on session expiry, one token
        refresh on 900901; the result's log holds every exchange, auth ones included."""
        log: list[LogEntry] = []
        renewed: set[str] = set()
        stale: dict[str, str | None] = {}
        while True:
            session, token = self.session, self.token
            try:
                log += await self._ensure(http, stale_session=stale.get("session"), stale_token=stale.get("token"))
                session, token = self.session, self.token
                result = await http.request(method, path, json_body=body, description=description)
                result.log = log + result.log
                return result
            except (SessionExpiredError, GatewayAuthError) as exc:
                log += exc.log
                kind = "session" if isinstance(exc, SessionExpiredError) else "token"
                if kind in renewed:
                    what = (
                        "ThingSpace rejected the OAuth token again after a refresh; check the "
                        "service provider's client_id/client_secret"
                        if kind == "token"
                        else "ThingSpace refused the session again after a new login"
                    )
                    raise BusinessCarrierError(
                        f"{what} ({exc.message})", code=exc.code, status=exc.status, log=log
                    ) from exc
                renewed.add(kind)
                stale = {"session": session} if kind == "session" else {"token": token}
            except CarrierError as exc:
                exc.log = log + exc.log
                raise
