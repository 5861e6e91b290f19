"""A loopback simulator of the Jasper / Control Center REST API (`/rws/api/v1/devices`).

It keeps device state, speaks Jasper's wire format (Basic auth, DeviceDetails, DeviceEditModel,
`{errorMessage, errorCode}`), enforces one concurrent call and R calls per one-second window per
account (answering errorCode 40000029 "Rate Limit Exceeded"), refuses illegal status transitions
and bad field values (`jasper_rules`), injects seeded faults, and counts every state-changing PUT
per ICCID so tests can prove nothing was applied twice. Tests, the demo and the 100,000-call
benchmark all run against it, so every request is O(1) and nothing is logged per request.

The HTTP status of a 40000029 answer: no public source states it. Cisco's "API Policies and Best
Practices" (Chinese mirror: shuzhiduo.com/A/ke5jbBko5r, soscw.com/essay/68442.html) names only the
REST return code 40000029 and its message; api-evangelist/rogers `rate-limits/rogers-rate-limits.yml`
says "no RateLimit/X-RateLimit headers or 429 semantics are published, and none were observed on
live probes"; the OpenAPI fragments list only 200/202/400/401/404/500. So the simulator keeps 429
[I] by default and `configure(rate_limit_status=400)` (or 403, 503...) answers the same body with
another status: a client must key on the errorCode, never the status (the client tests run both).

Only GET/PUT `/devices/{iccid}` and GET `/devices` (the pipeline's operations) are simulated. Every
other path under `/rws/api` (the documented auditTrails, ctdUsages, locationHistory, sessionInfo,
usageInZone and smsMessages included), any method, answers like the real API's unknown resource:
after auth, 404 with a Jasper error body (never plain text); a simulated path with a method it does
not serve answers 405 with `Allow` and a Jasper error body.

Where the public OpenAPI fragments contradict their own examples, the simulator follows the
examples (what the real API sends); `test_jasper_schemathesis.FRAGMENT_CONTRADICTIONS` asserts
exactly these and nothing else:
- DeviceDetails `dateActivated`, `dateAdded`, `dateUpdated`, `dateShipped` are declared
  `format: date-time` (RFC 3339) but the fragment's own example, like the Cisco page, has
  "2016-06-29 00:21:33.339+0000" (space, millis, +0000): sent in the example's form.

The SOAP Terminal service (`POST /ws/service/terminal`: EditTerminal, GetTerminalDetails) is served
by the same app on the same state, rate windows and faults: `jasper_soap`.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed), `GET /_sim/devices/{iccid}`,
`GET /_sim/stats`, `POST /_sim/config` (limits, faults, accounts, known plans,
`rate_limit_status`), `POST /_sim/reset`.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import jasper_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock
from .faults import FaultConfig
from .jasper_soap import CONFIG_KEYS as SOAP_CONFIG_KEYS
from .jasper_soap import TerminalService
from .server import ServerHandle

API_ROOT = "/rws/api"
API_PREFIX = API_ROOT + "/v1"
MAX_PAGE_SIZE = rules.MAX_PAGE_SIZE
DEFAULT_RATE_LIMIT_STATUS = 429  # [I]: see the module docstring
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _error(status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"errorMessage": message} if code is None else {"errorMessage": message, "errorCode": code}
    return _json(status, body, headers)


class JasperSimulator(SimulatorBase):
    """In-memory Jasper account(s) behind a Starlette app (`.app`)."""

    API_PREFIX = API_PREFIX

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        *,
        rate_per_second: float = 5.0,
        max_concurrency: int = 1,
        faults: FaultConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate_per_second, max_concurrency, faults, clock)
        self.accounts: dict[str, str] = dict(accounts or {"demo": "demo-api-key"})
        self.devices: dict[str, dict[str, Any]] = {}
        self._updated: dict[str, float] = {}
        self.scheduled: dict[str, list[tuple[dt.datetime, dict[str, str]]]] = {}
        self.rate_plans: frozenset[str] | None = None
        self.communication_plans: frozenset[str] | None = None
        self.customers: frozenset[str] | None = None
        self.rate_limit_status = DEFAULT_RATE_LIMIT_STATUS
        self._auth_cache: dict[str, str | None] = {}
        self.soap = TerminalService(self)
        self.reset_counters()
        self.app = self._build_app()

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (device state is kept)."""
        self._reset_base_counters()
        self.applied_counts: Counter[str] = Counter()
        self.calls_by_method: Counter[str] = Counter()
        self.soap_calls: Counter[str] = Counter()

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace devices given in DeviceDetails names (at least `iccid`)."""
        now = self.clock.now()
        stamp = now.timestamp()
        n = 0
        for seed in devices:
            record = rules.device_record(seed, now)
            self.devices[record["iccid"]] = record
            self._updated[record["iccid"]] = stamp
            n += 1
        return n

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change limits (`rate_per_second`, `max_concurrency`), faults (FaultConfig fields),
        `accounts` ({username: apiKey}), known `rate_plans`/`communication_plans`/`customers`
        (lists; None accepts anything) or `rate_limit_status` (the HTTP status of a 40000029
        answer). Returns the resulting configuration."""
        for key, value in changes.items():
            if key == "rate_limit_status":
                status = int(value)
                if not 400 <= status <= 599:
                    raise KeyError(f"rate_limit_status must be a 4xx/5xx status, not {value!r}")
                self.rate_limit_status = status
            elif key == "accounts":
                self.accounts = dict(value)
                self._auth_cache.clear()
            elif key in SOAP_CONFIG_KEYS:
                self.soap.configure(key, value)
            elif key in ("rate_plans", "communication_plans", "customers"):
                setattr(self, key, None if value is None else frozenset(value))
            else:
                self._configure_base(key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "rate_limit_status": self.rate_limit_status,
            "accounts": sorted(self.accounts),
            **self.soap.config(),
            **self.faults.config.as_dict(),
        }

    def device(self, iccid: str) -> dict[str, Any] | None:
        """Current DeviceDetails of a device (scheduled edits that are due applied first)."""
        self._apply_due(iccid)
        return self.devices.get(iccid)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        return {
            **self._base_stats(),
            "calls_by_method": dict(self.calls_by_method),
            "soap_calls": dict(self.soap_calls),
            "devices": len(self.devices),
            **self._applied_stats(self.applied_counts),
        }

    # -- request plumbing -------------------------------------------------------------------------

    def _account_of(self, header: str | None) -> str | None:
        """Username for a valid Basic header, else None. Cached: decoding per call is waste."""
        if header in self._auth_cache:
            return self._auth_cache[header]
        user = None
        if header and header[:6].lower() == "basic ":
            try:
                name, _, key = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, key = "", ""
            if name in self.accounts and self.accounts[name] == key:
                user = name
        if header is not None and len(self._auth_cache) < 10_000:
            self._auth_cache[header] = user
        return user

    async def _guarded(self, request: Request, handler: Any) -> Response:
        """Auth, limits and faults around one API call, then the handler."""
        self.total_calls += 1
        self.calls_by_method[request.method] += 1
        header = request.headers.get("authorization")
        if not header:
            self.auth_failures += 1
            return _error(401, None, rules.MSG_NO_CREDENTIALS, {"WWW-Authenticate": 'Basic realm="Jasper"'})
        account = self._account_of(header)
        if account is None:
            self.auth_failures += 1
            return _error(401, rules.ERR_INVALID_CREDENTIALS, rules.MSG_INVALID_CREDENTIALS)
        state, refused = self.gate.enter(account)
        if refused:
            self.gate.leave(state)
            return self._over_limit()
        return await self._faulted(
            account,
            state,
            lambda: handler(request, account),
            over_limit=self._over_limit,
            server_error=lambda: _error(500, rules.ERR_SERVER, "Internal server error"),
        )

    def _over_limit(self) -> Response:
        self.over_limit_answers += 1
        return _error(self.rate_limit_status, rules.ERR_RATE_LIMIT, rules.MSG_RATE_LIMIT)

    def _apply_due(self, iccid: str) -> None:
        pending = self.scheduled.get(iccid)
        if not pending:
            return
        now = self.clock.now()
        due = [edits for when, edits in pending if when <= now]
        if due:
            self.scheduled[iccid] = [(w, e) for w, e in pending if w > now]
            for edits in due:
                self._set(iccid, edits)

    def _set(self, iccid: str, edits: Mapping[str, str]) -> bool:
        """Write edits; True if anything changed."""
        record = self.devices[iccid]
        changed = {k: v for k, v in edits.items() if record.get(k) != v}
        if not changed:
            return False
        now = self.clock.now()
        record.update(changed)
        record["dateUpdated"] = rules.jasper_time(now)
        if changed.get("status") == "ACTIVATED" and "dateActivated" not in record:
            record["dateActivated"] = record["dateUpdated"]
        self._updated[iccid] = now.timestamp()
        return True

    def apply_edit(self, iccid: str, edits: Mapping[str, str], when: dt.datetime | None) -> None:
        """Apply validated edits now (`when` None) or schedule them, counting each change that
        takes effect once in `applied_counts`: a repeat of an applied or already scheduled edit
        counts nothing. REST PUT and SOAP EditTerminal both come here."""
        if when is None:
            if self._set(iccid, edits):
                self.applied_counts[iccid] += 1
        else:
            pending = self.scheduled.setdefault(iccid, [])
            if (when, dict(edits)) not in pending:
                pending.append((when, dict(edits)))
                self.applied_counts[iccid] += 1

    # -- API handlers -----------------------------------------------------------------------------

    async def _get_device(self, request: Request, account: str) -> Response:
        iccid = request.path_params["iccid"]
        record = self.device(iccid)
        if record is None:
            self.business_refusals += 1
            return _error(404, rules.ERR_NOT_FOUND, f"Resource not found - Invalid ICCID {iccid}")
        return _json(200, {k: v for k, v in record.items() if k[0] != "_"})

    async def _put_device(self, request: Request, account: str) -> Response:
        iccid = request.path_params["iccid"]
        record = self.device(iccid)
        if record is None:
            self.business_refusals += 1
            return _error(404, rules.ERR_NOT_FOUND, f"Resource not found - Invalid ICCID {iccid}")
        body = await self._body(request)
        try:
            edits, when = rules.validate_edit(
                body,
                record,
                now=self.clock.now(),
                rate_plans=self.rate_plans,
                communication_plans=self.communication_plans,
                customers=self.customers,
            )
        except rules.Refusal as refusal:
            self.business_refusals += 1
            return _json(refusal.status, refusal.body())
        self.apply_edit(iccid, edits, when)
        return _json(200, {"iccid": iccid})

    async def _search_devices(self, request: Request, account: str) -> Response:
        try:
            lo, hi, page_size, page, filters = rules.parse_search(request.query_params)
        except rules.Refusal as refusal:
            self.business_refusals += 1
            return _json(refusal.status, refusal.body())
        matches = sorted(
            (ts, iccid)
            for iccid, ts in self._updated.items()
            if lo <= ts <= hi and all(self.devices[iccid].get(k) == v for k, v in filters.items())
        )
        chunk = matches[(page - 1) * page_size : page * page_size]
        items = [
            {k: self.devices[iccid][k] for k in ("iccid", "status", "ratePlan", "communicationPlan")}
            for _, iccid in chunk
        ]
        return _json(200, {"pageNumber": page, "devices": items, "lastPage": page * page_size >= len(matches)})

    async def _unknown_resource(self, request: Request, account: str) -> Response:
        """Any other path under the API root, any method: the real API's JSON 404, not text."""
        return _error(404, rules.ERR_UNKNOWN_RESOURCE, rules.MSG_UNKNOWN_RESOURCE)

    @staticmethod
    def _not_allowed(allowed: str) -> Any:
        async def handler(request: Request, account: str) -> Response:
            message = f"Request method '{request.method}' is not supported"
            return _error(405, rules.ERR_METHOD_NOT_ALLOWED, message, {"Allow": allowed})

        return handler

    def _build_app(self) -> Starlette:
        def api(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler)

            return endpoint

        def others(served: list[str]) -> list[str]:
            return [m for m in _ALL_METHODS if m not in served and not (m == "HEAD" and "GET" in served)]

        device, devices = API_PREFIX + "/devices/{iccid}", API_PREFIX + "/devices"
        routes = [
            Route(device, api(self._get_device), methods=["GET"]),
            Route(device, api(self._put_device), methods=["PUT"]),
            Route(device, api(self._not_allowed("GET, HEAD, PUT")), methods=others(["GET", "PUT"])),
            Route(devices, api(self._search_devices), methods=["GET"]),
            Route(devices, api(self._not_allowed("GET, HEAD")), methods=others(["GET"])),
            *self.soap.routes(),
            *admin_routes(self),
            Route(API_ROOT, api(self._unknown_resource), methods=_ALL_METHODS),
            Route(API_ROOT + "/{rest:path}", api(self._unknown_resource), methods=_ALL_METHODS),
        ]
        return Starlette(routes=routes)


def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: JasperSimulator | None = None,
    accounts: Mapping[str, str] | None = None,
    rate_per_second: float = 5.0,
    max_concurrency: int = 1,
    faults: FaultConfig | None = None,
) -> ServerHandle:
    """Start a Jasper simulator (a new one unless `simulator` is given) in a background thread.
    The handle's `.simulator` is the JasperSimulator, `.base_url` the API base."""
    sim = simulator or JasperSimulator(
        accounts, rate_per_second=rate_per_second, max_concurrency=max_concurrency, faults=faults
    )
    return sim.run_in_thread(host, port)
