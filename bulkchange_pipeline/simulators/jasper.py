"""A loopback simulator of the Jasper / Control Center REST API (`/rws/api/v1/devices`).

It keeps device state, speaks Jasper's wire format (Basic auth, DeviceDetails, DeviceEditModel,
`{errorMessage, errorCode}`), enforces one concurrent call and R calls per one-second window per
account (answering 40000029 "Rate Limit Exceeded" with HTTP 429), refuses illegal status
transitions, injects seeded faults, and counts every state-changing PUT per ICCID so tests can
prove nothing was applied twice. Tests, the demo and the 100,000-call benchmark all run against
it, so every request is O(1) and nothing is logged per request.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed), `GET /_sim/devices/{iccid}`,
`GET /_sim/stats`, `POST /_sim/config` (limits, faults, accounts, known plans), `POST /_sim/reset`.
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
from .server import ServerHandle

API_PREFIX = "/rws/api/v1"
MAX_PAGE_SIZE = 50


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
        self._auth_cache: dict[str, str | None] = {}
        self.reset_counters()
        self.app = self._build_app()

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (device state is kept)."""
        self._reset_base_counters()
        self.applied_counts: Counter[str] = Counter()
        self.calls_by_method: Counter[str] = Counter()

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
        `accounts` ({username: apiKey}) or known `rate_plans`/`communication_plans`/`customers`
        (lists; None accepts anything). Returns the resulting configuration."""
        for key, value in changes.items():
            if key == "accounts":
                self.accounts = dict(value)
                self._auth_cache.clear()
            elif key in ("rate_plans", "communication_plans", "customers"):
                setattr(self, key, None if value is None else frozenset(value))
            else:
                self._configure_base(key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "accounts": sorted(self.accounts),
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
        if len(self._auth_cache) < 10_000:
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
        return _error(429, rules.ERR_RATE_LIMIT, rules.MSG_RATE_LIMIT)

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

    # -- API handlers -----------------------------------------------------------------------------

    async def _get_device(self, request: Request, account: str) -> Response:
        iccid = request.path_params["iccid"]
        record = self.device(iccid)
        if record is None:
            self.business_refusals += 1
            return _error(404, rules.ERR_NOT_FOUND, f"Resource not found - Invalid ICCID {iccid}")
        return _json(200, record)

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
        if when is None:
            if self._set(iccid, edits):
                self.applied_counts[iccid] += 1
        else:
            pending = self.scheduled.setdefault(iccid, [])
            if (when, edits) not in pending:
                pending.append((when, edits))
                self.applied_counts[iccid] += 1
        return _json(200, {"iccid": iccid})

    async def _search_devices(self, request: Request, account: str) -> Response:
        q = request.query_params
        since_text = (q.get("modifiedSince") or "").replace(" ", "+")
        if not since_text:
            return _error(400, rules.ERR_INVALID_REQUEST, "modifiedSince is required")
        try:
            since = dt.datetime.fromisoformat(since_text.replace("Z", "+00:00"))
            till_text = (q.get("modifiedTill") or "").replace(" ", "+")
            till = dt.datetime.fromisoformat(till_text.replace("Z", "+00:00")) if till_text else None
            page_size = int(q.get("pageSize") or MAX_PAGE_SIZE)
            page = int(q.get("pageNumber") or 1)
        except ValueError:
            return _error(400, rules.ERR_INVALID_REQUEST, "Invalid request parameter")
        if not 1 <= page_size <= MAX_PAGE_SIZE or page < 1:
            return _error(400, rules.ERR_INVALID_REQUEST, f"pageSize must be 1..{MAX_PAGE_SIZE} and pageNumber >= 1")
        lo = (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).timestamp()
        hi = float("inf") if till is None else (till if till.tzinfo else till.replace(tzinfo=dt.UTC)).timestamp()
        status = q.get("status")
        matches = sorted(
            (ts, iccid)
            for iccid, ts in self._updated.items()
            if lo <= ts <= hi and (status is None or self.devices[iccid]["status"] == status)
        )
        chunk = matches[(page - 1) * page_size : page * page_size]
        items = [
            {k: self.devices[iccid][k] for k in ("iccid", "status", "ratePlan", "communicationPlan")}
            for _, iccid in chunk
        ]
        return _json(200, {"pageNumber": page, "devices": items, "lastPage": page * page_size >= len(matches)})

    def _build_app(self) -> Starlette:
        def api(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler)

            return endpoint

        routes = [
            Route(API_PREFIX + "/devices/{iccid}", api(self._get_device), methods=["GET"]),
            Route(API_PREFIX + "/devices/{iccid}", api(self._put_device), methods=["PUT"]),
            Route(API_PREFIX + "/devices", api(self._search_devices), methods=["GET"]),
            *admin_routes(self),
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
