"""A loopback simulator of Verizon ThingSpace Connectivity Management (M2M), callbacks included.

It speaks the wire format of carriers.md section 2: OAuth client-credentials tokens that expire,
M2M sessions (`VZ-M2M-Token`) that expire when idle, `{"requestId"}` answers to every action,
synchronous `{errorCode, errorMessage}` refusals, WSO2 gateway faults, and one CarrierService
callback per device, in the success or the fault shape, with the registered username/password
echoed in the body as the real service does. Actions are processed off the request path by a
backend thread (so a device's state changes after the answer, as at the carrier) and callbacks are
posted by a small pool of sender threads, retried up to 4 times; duplicates, delays, shuffling and
drops can be switched on to exercise the receiver (DESIGN R6).

Issue 17 (as strict as the real API, in its shapes): `accountName` is optional on device actions
(the session's account acts; a wrong one is AccountNotFound) and refused on the device-id change,
whose request has no such field, and whose `{serviceType}` is 4G or 3G; `devices/actions/list` pages by `largestDeviceIdSeen` /
`maxNumberOfDevices` (202 while `hasMoreData`); `POST /session/logout` ends a session; an unknown
path or method gets the gateway's 400 / 900906 fault.

Everything per request is O(devices) with dict lookups, so a 10,000-device request is cheap.
Admin endpoints (no auth, loopback only): `POST /_sim/devices`, `GET /_sim/devices/{iccid}`,
`GET /_sim/stats`, `GET|POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import base64
import heapq
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import thingspace_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock, pause_until
from .faults import FaultConfig
from .server import ServerHandle

M2M = "/api/m2m/v1"
TOKEN_PATH = "/api/ts/v1/oauth2/token"
DEFAULT_CLIENTS = {"demo-client": "demo-client-secret"}
DEFAULT_USERS = {"demo-uws": ("demo-uws-password", "0000123456-00001")}
# configure() keys that are plain attributes, with their types.
_SETTINGS = {
    "token_ttl_seconds": float,
    "session_idle_seconds": float,
    "session_max_calls": int,
    "activate_per_minute": float,
    "activate_window_seconds": float,
    "max_devices_per_request": int,
    "activation_seconds": float,
    "duplicate_rate": float,
    "callback_delay_seconds": float,
    "shuffle_callbacks": bool,
    "drop_rate": float,
    "callback_retry_seconds": float,
    "callback_attempts": int,
}


class ThingSpaceSimulator(SimulatorBase):
    """In-memory ThingSpace account(s) behind a Starlette app (`.app`).

    `clients`: OAuth client_id -> client_secret. `users`: UWS username -> (password, accountName).
    """

    def __init__(
        self,
        clients: Mapping[str, str] | None = None,
        users: Mapping[str, tuple[str, str]] | None = None,
        *,
        token_ttl_seconds: float = 3600.0,
        session_idle_seconds: float = 1200.0,
        activate_per_minute: float = 100.0,
        max_devices_per_request: int = 10_000,
        rate_per_second: float = 0.0,
        max_concurrency: int = 0,
        callback_senders: int = 8,
        faults: FaultConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate_per_second, max_concurrency, faults, clock)
        self.clients = dict(clients or DEFAULT_CLIENTS)
        self.users = {u: tuple(v) for u, v in (users or DEFAULT_USERS).items()}
        self.token_ttl_seconds = token_ttl_seconds
        self.session_idle_seconds = session_idle_seconds
        self.session_max_calls = 0  # test switch: a session expires after this many calls
        self.activate_per_minute = activate_per_minute
        self.activate_window_seconds = 60.0
        self.max_devices_per_request = max_devices_per_request
        self.activation_seconds = 0.0  # time spent in "pending activation"
        self.service_plans: frozenset[str] | None = None
        self.duplicate_rate = self.drop_rate = 0.0
        self.callback_delay_seconds = 0.0
        self.shuffle_callbacks = False
        self.callback_retry_seconds = 1.0
        self.callback_attempts = 4
        self._random = random.Random(self.faults.config.seed)
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._work = threading.Condition(self._lock)  # a job came in, time moved, or close()
        self._closed = False
        self.book = rules.DeviceBook(self.clock.now)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._sessions: dict[str, list[Any]] = {}  # token -> [username, last_used, calls]
        self._failed_logins: Counter[str] = Counter()
        self.callbacks: dict[str, dict[str, str]] = {}  # accountName -> registration
        self.requests: dict[str, dict[str, Any]] = {}
        self._activates = rules.SlidingWindow()
        self._outstanding = 0
        self._jobs: deque[tuple[str, str, str, list, dict]] = deque()
        self._delayed: list[tuple[float, int, Any]] = []
        self._senders = ThreadPoolExecutor(callback_senders, thread_name_prefix="ts-callback")
        self._http = httpx.Client(
            timeout=5.0,
            limits=httpx.Limits(max_connections=callback_senders, max_keepalive_connections=callback_senders),
        )
        self.reset_counters()
        self._backend = threading.Thread(target=self._backend_loop, daemon=True, name="thingspace-backend")
        self._backend.start()
        self.app = self._build_app()

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (device state, tokens and sessions are kept)."""
        with self._lock:
            self._reset_base_counters()
            self.book.applied_counts.clear()
            self.calls: Counter[str] = Counter()
            self.session_errors = self.device_faults = 0
            self.tokens_issued = self.logins = self.logouts = self.max_devices_seen = 0
            self.cb: Counter[str] = Counter()

    @property
    def devices(self) -> dict[int, dict[str, Any]]:
        return self.book.devices

    @property
    def applied_counts(self) -> Counter[str]:
        """State changes per ICCID (the proof that nothing was applied twice)."""
        return self.book.applied_counts

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace devices: `{iccid, imei?, mdn?, state?, servicePlan?, accountName?}`."""
        with self._lock:
            return self.book.seed(devices, next(iter(self.users.values()))[1])

    def device(self, iccid: str) -> dict[str, Any] | None:
        """A copy of the device record now holding `iccid`."""
        with self._lock:
            record = self.book.get(iccid)
            return None if record is None else dict(record)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings (`_SETTINGS` names, `rate_per_second`, `max_concurrency`,
        `service_plans`, `clients`, `users`), FaultConfig fields, or `expire_sessions=True`."""
        with self._lock:
            for key, value in changes.items():
                if key in _SETTINGS:
                    setattr(self, key, _SETTINGS[key](value))
                elif key == "service_plans":
                    self.service_plans = None if value is None else frozenset(value)
                elif key == "clients":
                    self.clients = dict(value)
                elif key == "users":
                    self.users = {u: tuple(v) for u, v in dict(value).items()}
                elif key == "expire_sessions":
                    if value:
                        self.expire_sessions()
                else:
                    self._configure_base(key, value)
        return self.config()

    def _reseed(self, seed: int) -> None:
        self._random.seed(seed)

    def config(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in _SETTINGS},
            **self._limits_config(),
            "service_plans": None if self.service_plans is None else sorted(self.service_plans),
            "clients": sorted(self.clients),
            "users": sorted(self.users),
            **self.faults.config.as_dict(),
        }

    def expire_sessions(self) -> None:
        """Make every M2M session idle-expired (the next call gets the session-expired error)."""
        with self._lock:
            for session in self._sessions.values():
                session[1] = -math.inf

    def revoke_tokens(self) -> None:
        """Forget every OAuth token (the next call gets gateway fault 900901)."""
        with self._lock:
            self._tokens.clear()

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        with self._lock:
            return {
                **self._base_stats(("calls", "peak_concurrency", "rate_refusals")),
                "calls": dict(self.calls),
                "session_errors": self.session_errors,
                "device_faults": self.device_faults,
                "tokens_issued": self.tokens_issued,
                "logins": self.logins,
                "logouts": self.logouts,
                "sessions_open": len(self._sessions),
                "max_devices_in_request": self.max_devices_seen,
                "devices": len(self.devices),
                "requests": len(self.requests),
                **self._applied_stats(self.applied_counts),
                "callbacks_sent": self.cb["sent"],
                "callbacks_dropped": self.cb["dropped"],
                "callbacks_duplicated": self.cb["duplicated"],
                "callbacks_failed_attempts": self.cb["failed_attempts"],
                "callbacks_undelivered": self.cb["undelivered"],
                "callbacks_unregistered": self.cb["unregistered"],
                "outstanding": self._outstanding,
            }

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every accepted request is processed and every callback delivered (or given
        up); True if that happened within `timeout`. For tests and the demo.

        `timeout` is real time, not the simulator's: it bounds a wait for threads, which must end
        even when a test holds the clock still."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """Stop the backend and sender threads (a sender waiting to deliver or retry gives up)."""
        with self._work:
            self._closed = True
            self._work.notify_all()
        self._senders.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- backend: process requests, send callbacks ------------------------------------------------

    def _add_outstanding(self, n: int) -> None:
        with self._idle:
            self._outstanding += n
            if self._outstanding <= 0:
                self._idle.notify_all()

    def _submit(self, job: tuple[str, str, str, list, dict]) -> None:
        with self._work:
            self._jobs.append(job)
            self._work.notify_all()  # all: senders pausing on the same condition must not take it

    def _pause_until(self, due: float) -> bool:
        """Wait until simulator time `due`; False if the simulator was closed meanwhile."""
        return pause_until(self.clock, self._work, due, lambda: self._closed)

    def _next_job(self) -> tuple[str, str, str, list, dict] | None:
        """The next accepted request; None when a pending activation is due first (or on close)."""
        with self._work:
            while not self._closed and not self._jobs:
                if self._delayed and self._delayed[0][0] <= self.clock.monotonic():
                    return None
                self.clock.wait(self._work, self._delayed[0][0] if self._delayed else None)
            return self._jobs.popleft() if self._jobs else None

    def _backend_loop(self) -> None:
        seq = 0
        while not self._closed:
            job = self._next_job()
            if job is not None:
                try:
                    later = self._process(*job)
                except Exception:  # noqa: BLE001 - the simulator must keep serving
                    later = []
                for item in later:
                    seq += 1
                    heapq.heappush(self._delayed, (self.clock.monotonic() + self.activation_seconds, seq, item))
                self._add_outstanding(len(later) - 1)
            while self._delayed and self._delayed[0][0] <= self.clock.monotonic():
                _, _, (rid, key, asked) = heapq.heappop(self._delayed)
                self._finish_activation(rid, key, asked)
                self._add_outstanding(-1)

    def _process(self, rid: str, action: str, account: str, devices: list, params: dict) -> list:
        """Apply one accepted request; returns the activations still pending."""
        with self._lock:
            bodies, pending, faults = self.book.apply(
                rid, action, account, devices, params, self._credentials(account), self.activation_seconds > 0
            )
            self.device_faults += faults
            entry = self.requests[rid]
            entry["failed"] = faults > 0
            entry["status"] = "Pending" if pending else ("Failed" if faults else "Success")
        self._dispatch(account, bodies)
        return [(rid, key, asked) for key, asked in pending]

    def _finish_activation(self, rid: str, key: int, asked: list) -> None:
        with self._lock:
            record = self.book.finish_activation(key)
            entry = self.requests[rid]
            entry["status"] = "Failed" if entry.get("failed") else "Success"
            account = entry["account"]
            body = rules.success_callback(rid, "activate", asked, record, self._credentials(account))
        self._dispatch(account, [body])

    def _credentials(self, account: str) -> dict[str, str]:
        reg = self.callbacks.get(account) or {}
        return {k: reg[k] for k in ("username", "password") if reg.get(k)}

    def _dispatch(self, account: str, bodies: list[dict]) -> None:
        """Hand one request's callbacks to the senders, applying the delivery switches."""
        with self._lock:
            reg = self.callbacks.get(account)
            if reg is None:
                self.cb["unregistered"] += len(bodies)
                return
            out = []
            for body in bodies:
                if self.drop_rate and self._random.random() < self.drop_rate:
                    self.cb["dropped"] += 1
                    continue
                out.append(body)
                if self.duplicate_rate and self._random.random() < self.duplicate_rate:
                    self.cb["duplicated"] += 1
                    out.append(dict(body))
            if self.shuffle_callbacks:
                self._random.shuffle(out)
            due = self.clock.monotonic() + self.callback_delay_seconds
            url, attempts, wait = reg["url"], self.callback_attempts, self.callback_retry_seconds
        self._add_outstanding(len(out))
        for body in out:
            self._senders.submit(self._deliver, url, body, due, attempts, wait)

    def _deliver(self, url: str, body: dict, due: float, attempts: int, wait: float) -> None:
        try:
            if not self._pause_until(due):
                return
            for attempt in range(1, max(1, attempts) + 1):
                body["callbackCount"] = attempt
                try:
                    ok = 200 <= self._http.post(url, json=body).status_code < 300
                except httpx.HTTPError:
                    ok = False
                with self._lock:
                    self.cb["sent" if ok else "failed_attempts"] += 1
                if ok:
                    return
                if attempt < attempts and not self._pause_until(self.clock.monotonic() + wait):
                    return
            with self._lock:
                self.cb["undelivered"] += 1
        finally:
            self._add_outstanding(-1)

    # -- request plumbing -------------------------------------------------------------------------

    def _bearer_ok(self, header: str | None) -> Response | None:
        if not header or not header.lower().startswith("bearer "):
            self.auth_failures += 1
            return _json(
                401,
                rules.gateway_fault(
                    rules.GW_MISSING_CREDENTIALS, "Missing Credentials", "Required OAuth credentials not provided"
                ),
            )
        entry = self._tokens.get(header[7:].strip())
        if entry is None or entry[1] <= self.clock.monotonic():
            self.auth_failures += 1
            return _json(
                401,
                rules.gateway_fault(
                    rules.GW_INVALID_CREDENTIALS,
                    "Invalid Credentials",
                    "Access failure for API: /api/m2m/v1, version: v1. Make sure your provided token is valid.",
                ),
            )
        return None

    def _session_user(self, token: str | None) -> tuple[str | None, Response | None]:
        session = self._sessions.get(token or "")
        now = self.clock.monotonic()
        if session is None:
            self.session_errors += 1
            return None, _json(400, {"errorCode": rules.ERR_SESSION_INVALID, "errorMessage": "SessionToken is invalid"})
        session[2] += 1
        if now - session[1] > self.session_idle_seconds or 0 < self.session_max_calls < session[2]:
            self.session_errors += 1
            return None, _json(400, {"errorCode": rules.ERR_SESSION_EXPIRED, "errorMessage": "SessionToken Expired"})
        session[1] = now
        return session[0], None

    def _throttled(self, wait: float) -> Response:
        self.over_limit_answers += 1
        return _json(
            429,
            {
                "fault": {
                    "code": str(rules.GW_THROTTLED),
                    "message": "Message throttled out",
                    "description": "You have exceeded your quota",
                }
            },
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def _guarded(self, request: Request, handler: Any, needs_session: bool = True) -> Response:
        """Token, session, limits and faults around one M2M call, then the handler."""
        self.total_calls += 1
        with self._lock:
            refused = self._bearer_ok(request.headers.get("authorization"))
            user = None
            if refused is None and needs_session:
                user, refused = self._session_user(request.headers.get("vz-m2m-token"))
        if refused is not None:
            return refused
        state, limit = self.gate.enter(user or "-")
        if limit:
            self.gate.leave(state)
            return self._throttled(1.0)
        return await self._faulted(
            user or "-",
            state,
            lambda: handler(request, user),
            over_limit=lambda: self._throttled(1.0),
            server_error=lambda: _json(
                503, rules.gateway_fault(rules.GW_BACKEND, "Runtime Error", "Error connecting to the back end")
            ),
        )

    def _refuse(self, status: int, code: str, message: str) -> Response:
        self.business_refusals += 1
        return _json(status, {"errorCode": code, "errorMessage": message})

    # -- auth handlers ----------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        self.total_calls += 1
        self.calls["token"] += 1
        header = request.headers.get("authorization") or ""
        client_id = secret = ""
        if header.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        if not client_id or self.clients.get(client_id) != secret:
            self.auth_failures += 1
            return _json(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "A valid OAuth client could not be found for client_id: " + client_id,
                },
            )
        form = (await request.body()).decode(errors="replace")
        if "grant_type=client_credentials" not in form:
            return _json(
                400, {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}
            )
        now = self.clock.monotonic()
        with self._lock:
            # Within its lifetime the same token is returned again (carriers.md).
            token = next((t for t, (c, exp) in self._tokens.items() if c == client_id and exp > now), None)
            if token is None:
                token = uuid.uuid4().hex
                self._tokens[token] = (client_id, now + self.token_ttl_seconds)
                self.tokens_issued += 1
            left = self._tokens[token][1] - now
        return _json(
            200,
            {
                "access_token": token,
                "scope": "am_application_scope default",
                "token_type": "Bearer",
                "expires_in": max(0, int(left)),
            },
        )

    async def _login(self, request: Request, _user: Any) -> Response:
        self.calls["login"] += 1
        body = await self._body(request)
        name = body.get("username") if isinstance(body, dict) else None
        with self._lock:
            if self._failed_logins[name or ""] >= 5:
                return self._refuse(400, rules.ERR_LOGIN_LOCKED, "Contact is locked")
            user = self.users.get(name or "")
            if user is None or not isinstance(body, dict) or body.get("password") != user[0]:
                self._failed_logins[name or ""] += 1
                return self._refuse(400, rules.ERR_LOGIN_FAILED, "Invalid username or password")
            self._failed_logins.pop(name, None)
            token = str(uuid.uuid4())
            self._sessions[token] = [name, self.clock.monotonic(), 0]
            self.logins += 1
        return _json(200, {"sessionToken": token})

    async def _logout(self, request: Request, _user: str) -> Response:
        """`POST /session/logout` ends the session the call carries (`_guarded` checked it): the
        token is forgotten, so its next use gets the invalid-session error. The answer echoes the
        token (Verizon's LogOutRequest model: "returned to confirm that it was invalidated")."""
        self.calls["logout"] += 1
        token = request.headers.get("vz-m2m-token") or ""
        with self._lock:
            self._sessions.pop(token, None)
            self.logouts += 1
        return _json(200, {"sessionToken": token})

    # -- API handlers -----------------------------------------------------------------------------

    def _account_of(self, user: str, account: Any) -> Response | None:
        if account != self.users[user][1]:
            return self._refuse(400, rules.ERR_ACCOUNT_NOT_FOUND, f"Account {account} not found")
        return None

    def _action(self, action: str) -> Any:
        async def handler(request: Request, user: str) -> Response:
            self.calls[action] += 1
            service_type = request.path_params.get("service_type")
            if service_type is not None and service_type not in rules.SERVICE_TYPES:
                # One spelling per documented type ("4g" or "5G" is no service type of this call).
                return self._refuse(400, rules.ERR_SERVICE_TYPE, f"Invalid serviceType: {service_type}")
            try:
                account, devices, params = rules.parse_action(
                    action, await self._body(request), self.max_devices_per_request, self.service_plans
                )
            except rules.Refusal as refusal:
                self.business_refusals += 1
                return _json(refusal.status, refusal.body())
            # accountName is optional (Verizon's SDK models): without it the request acts on the
            # session's account; a wrong one is refused in the documented AccountNotFound shape.
            if account is None:
                account = self.users[user][1]
            elif (refused := self._account_of(user, account)) is not None:
                return refused
            with self._lock:
                if action == "activate" and self.activate_per_minute > 0:
                    wait = self._activates.admit(
                        account, self.activate_per_minute, self.activate_window_seconds, self.clock.monotonic()
                    )
                    if wait is not None:
                        return self._throttled(wait)
                rid = str(uuid.uuid4())
                self.requests[rid] = {
                    "action": action,
                    "account": account,
                    "devices": len(devices),
                    "status": "Pending",
                }
                self.max_devices_seen = max(self.max_devices_seen, len(devices))
            self._add_outstanding(1)
            self._submit((rid, action, account, devices, params))
            return _json(200, {"requestId": rid})

        return handler

    async def _request_status(self, request: Request, user: str) -> Response:
        self.calls["request_status"] += 1
        account, rid = request.path_params["account"], request.path_params["rid"]
        if (refused := self._account_of(user, account)) is not None:
            return refused
        entry = self.requests.get(rid)
        if entry is None or entry["account"] != account:
            return self._refuse(400, rules.ERR_REQUEST_NOT_FOUND, f"Request {rid} not found")
        if entry["devices"] != 1 or entry["action"] not in rules.STATUS_ACTIONS:
            return self._refuse(
                400,
                rules.ERR_STATUS_NOT_SUPPORTED,
                "Request status is only available for single-device activate, deactivate, suspend or restore",
            )
        return _json(200, {"requestId": rid, "status": entry["status"]})

    async def _list(self, request: Request, user: str) -> Response:
        self.calls["list"] += 1
        body = await self._body(request)
        if not isinstance(body, dict):
            return self._refuse(400, rules.ERR_INVALID_REQUEST, "Request body must be a JSON object")
        account = body.get("accountName", self.users[user][1])
        if (refused := self._account_of(user, account)) is not None:
            return refused
        try:
            after, size = rules.parse_list_paging(body)
        except rules.Refusal as refusal:
            self.business_refusals += 1
            return _json(refusal.status, refusal.body())
        with self._lock:
            devices, more = self.book.listing(account, body, after, size)
        # Verizon's AccountDeviceListResult: hasMoreData is "False for a status 200 response. True
        # for a status 202 response, indicating that there is more data to be retrieved."
        return _json(202 if more else 200, {"hasMoreData": more, "devices": devices})

    async def _callbacks(self, request: Request, user: str) -> Response:
        self.calls["callbacks"] += 1
        account = request.path_params["account"]
        if (refused := self._account_of(user, account)) is not None:
            return refused
        if request.method == "GET":
            # Verizon's listener answers name the service `serviceName` (the request says `name`) and
            # list the listener's own callback credentials with it.
            return _json(
                200,
                [
                    {"accountName": account, "serviceName": "CarrierService", **r}
                    for r in [self.callbacks.get(account)]
                    if r
                ],
            )
        if request.method == "DELETE":
            self.callbacks.pop(account, None)
            return _json(200, {"accountName": account, "serviceName": request.path_params["name"]})
        body = await self._body(request)
        if not isinstance(body, dict) or body.get("name") != "CarrierService" or not body.get("url"):
            return self._refuse(400, rules.ERR_CALLBACK_NAME, "name must be CarrierService and url is required")
        with self._lock:
            self.callbacks[account] = {k: str(body[k]) for k in ("url", "username", "password") if body.get(k)}
        return _json(200, {"accountName": account, "serviceName": "CarrierService"})

    async def _no_resource(self, request: Request, _exc: Exception) -> Response:
        """An unknown path (or method) gets the WSO2 gateway's answer, as at ThingSpace
        (carriers.md: wrong path -> 400, code 900906), never a bare 404."""
        return _json(
            400,
            rules.gateway_fault(
                rules.GW_NO_RESOURCE,
                "No matching resource found for given API Request",
                f"Access failure for API: {request.url.path}. No matching resource found for given API Request",
            ),
        )

    def _build_app(self) -> Starlette:
        def api(handler: Any, needs_session: bool = True) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler, needs_session)

            return endpoint

        routes = [
            Route(TOKEN_PATH, self._token, methods=["POST"]),
            Route(M2M + "/session/login", api(self._login, False), methods=["POST"]),
            Route(M2M + "/session/logout", api(self._logout), methods=["POST"]),
        ]
        for action in rules.STATUS_ACTIONS:
            routes.append(Route(f"{M2M}/devices/actions/{action}", api(self._action(action)), methods=["POST"]))
        routes += [
            Route(M2M + "/devices/actions/plan", api(self._action("plan")), methods=["PUT"]),
            Route(M2M + "/devices/{service_type}/actions/deviceId", api(self._action("deviceid")), methods=["PUT"]),
            Route(M2M + "/devices/actions/list", api(self._list), methods=["POST"]),
            Route(M2M + "/accounts/{account}/requests/{rid}/status", api(self._request_status), methods=["GET"]),
            Route(M2M + "/callbacks/{account}", api(self._callbacks), methods=["GET", "POST"]),
            Route(M2M + "/callbacks/{account}/name/{name}", api(self._callbacks), methods=["DELETE"]),
            *admin_routes(self),
        ]
        return Starlette(routes=routes, exception_handlers={404: self._no_resource, 405: self._no_resource})


def run_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, simulator: ThingSpaceSimulator | None = None, **kwargs: Any
) -> ServerHandle:
    """Start a ThingSpace simulator (a new one, built from `kwargs`, unless `simulator` is given)
    in a background thread; the handle's `.simulator` is its state, `.base_url` its root."""
    sim = simulator or ThingSpaceSimulator(**kwargs)
    return sim.run_in_thread(host, port)
