"""A loopback simulator of the Pond IoT API. PROVISIONAL: Pond publishes no API documentation.

Shape (reference/carriers.md section 5): `{base}/{distributorId}/...`; devices (SIMs by ICCID)
carry packages (`packageId, packageTypeId, status` ACTIVE / TERMINATED / PENDING) and per-SIM
service statuses; package types are listed per inventory; lists are paged with `offset`/`limit`
and answer `{elements, isLastPage}`. Inferred [I], each easy to change here or in `pond_rules`:
HTTP Basic auth (username:secret, each account bound to one distributor id), the API prefix
`/api`, the path templates below (one table, `ROUTES`), the error envelope `{code, message}`, 429
with `Retry-After` as the over-limit answer, and that an added package starts PENDING.

Test switches (`configure`): `fail_activate`, `fail_terminate`, `fail_undo` (ICCID lists) make,
for those devices, activating a package / terminating an *old* package / terminating the
*newest* package (the client's undo) fail with `step_failure_status` (409 by default, a business
refusal; 5xx makes it transient). `applied_counts[iccid]` counts state changes (package added,
package status changed, services switched); `history[iccid]` records each package move in order.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed), `GET /_sim/devices/{iccid}`
(device with its packages), `GET /_sim/stats`, `GET|POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import pond_rules as rules
from .admin import admin_routes
from .faults import AccountGate, Fault, FaultConfig, FaultInjector
from .server import ServerHandle, run_app_in_thread

API_PREFIX = "/api"  # [I]
ROUTES: Mapping[str, str] = {  # [I] path templates under API_PREFIX
    "device": "/{distributor}/devices/{iccid}",
    "packages": "/{distributor}/devices/{iccid}/packages",
    "package_status": "/{distributor}/devices/{iccid}/packages/{package_id}/status",
    "service_status": "/{distributor}/devices/{iccid}/services/status",
    "package_types": "/{distributor}/inventories/{inventory_id}/package-types",
}
DEFAULT_ACCOUNTS: Mapping[str, tuple[str, str]] = {"demo": ("demo-secret", "1001")}
_JSON = "application/json"
_SWITCHES = ("fail_activate", "fail_terminate", "fail_undo")


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, _JSON)


class PondSimulator:
    """In-memory Pond distributor account(s) behind a Starlette app (`.app`).

    `accounts` maps username -> (secret, distributorId). `inventories` maps inventory id ->
    package types (default: inventory 1 with `rules.DEFAULT_PACKAGE_TYPES`).
    """

    def __init__(
        self,
        accounts: Mapping[str, tuple[str, str]] | None = None,
        *,
        rate_per_second: float = 5.0,
        max_concurrency: int = 2,
        faults: FaultConfig | None = None,
        inventories: Mapping[Any, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.accounts: dict[str, tuple[str, str]] = {
            u: (str(s), str(d)) for u, (s, d) in (accounts or DEFAULT_ACCOUNTS).items()}
        self.gate = AccountGate(rate_per_second, max_concurrency)
        self.faults = FaultInjector(faults or FaultConfig())
        self.inventories: dict[str, list[dict[str, Any]]] = {
            str(k): [dict(t) for t in v] for k, v in (inventories or {
                rules.DEFAULT_INVENTORY_ID: list(rules.DEFAULT_PACKAGE_TYPES)}).items()}
        self.devices: dict[str, dict[str, Any]] = {}
        self.packages: dict[str, list[dict[str, Any]]] = {}
        self.history: dict[str, list[tuple[int, str | None, str]]] = {}
        self._ids = itertools.count(1)
        self.fail_activate: set[str] = set()
        self.fail_terminate: set[str] = set()
        self.fail_undo: set[str] = set()
        self.step_failure_status = 409
        self.retry_after_seconds: float | None = 1.0
        self.reset_counters()
        self.app = self._build_app()

    # -- Administered -----------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (device state is kept)."""
        self.applied_counts: Counter[str] = Counter()
        self.total_calls = 0
        self.calls_by_method: Counter[str] = Counter()
        self.packages_added = 0
        self.over_limit_answers = 0
        self.auth_failures = 0
        self.business_refusals = 0
        self.switched_failures = 0
        self.gate.accounts.clear()
        self.faults.counts = {k: 0 for k in self.faults.counts}

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace devices (see `rules.device_record` / `rules.package_seeds`)."""
        now = dt.datetime.now(dt.UTC)
        n = 0
        for seed in devices:
            record = rules.device_record(seed, now)
            iccid = record["iccid"]
            self.devices[iccid] = record
            self.packages[iccid] = [
                rules.package_record(next(self._ids), p["packageTypeId"], p["status"], now)
                for p in rules.package_seeds(seed)]
            self.history[iccid] = []
            n += 1
        return n

    def device(self, iccid: str) -> dict[str, Any] | None:
        """The device record with its packages (admin view)."""
        record = self.devices.get(iccid)
        if record is None:
            return None
        return {**record, "packages": [dict(p) for p in self.packages[iccid]]}

    def active_packages(self, iccid: str) -> list[dict[str, Any]]:
        """The device's ACTIVE packages (for tests)."""
        return [p for p in self.packages.get(iccid, []) if p["status"] == rules.ACTIVE]

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change limits (`rate_per_second`, `max_concurrency`), `retry_after_seconds` (None: no
        header), `accounts` ({user: [secret, distributorId]}), `inventories`, the step-failure
        switches (`fail_activate`, `fail_terminate`, `fail_undo`: ICCID lists;
        `step_failure_status`) or faults (FaultConfig fields; unknown keys raise KeyError)."""
        for key, value in changes.items():
            if key == "rate_per_second":
                self.gate.rate_per_second = float(value)
            elif key == "max_concurrency":
                self.gate.max_concurrency = int(value)
            elif key == "retry_after_seconds":
                self.retry_after_seconds = None if value is None else float(value)
            elif key == "accounts":
                self.accounts = {u: (str(s), str(d)) for u, (s, d) in dict(value).items()}
            elif key == "inventories":
                self.inventories = {str(k): [dict(t) for t in v] for k, v in dict(value).items()}
            elif key in _SWITCHES:
                setattr(self, key, {str(i) for i in value or ()})
            elif key == "step_failure_status":
                self.step_failure_status = int(value)
            else:
                self.faults.config.update({key: value})
                if key == "seed":
                    self.faults.reseed(int(value))
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            "rate_per_second": self.gate.rate_per_second,
            "max_concurrency": self.gate.max_concurrency,
            "retry_after_seconds": self.retry_after_seconds,
            "accounts": sorted(self.accounts),
            **{k: sorted(getattr(self, k)) for k in _SWITCHES},
            "step_failure_status": self.step_failure_status,
            **self.faults.config.as_dict(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        per_account = {
            name: {"calls": st.calls, "peak_concurrency": st.peak_concurrency,
                   "rate_refusals": st.rate_refusals,
                   "concurrency_refusals": st.concurrency_refusals}
            for name, st in self.gate.accounts.items()}
        return {
            "total_calls": self.total_calls,
            "calls_by_method": dict(self.calls_by_method),
            "over_limit_answers": self.over_limit_answers,
            "auth_failures": self.auth_failures,
            "business_refusals": self.business_refusals,
            "switched_failures": self.switched_failures,
            "packages_added": self.packages_added,
            "injected": dict(self.faults.counts),
            "accounts": per_account,
            "peak_concurrency": max((a["peak_concurrency"] for a in per_account.values()), default=0),
            "devices": len(self.devices),
            "applied_total": sum(self.applied_counts.values()),
            "applied_devices": len(self.applied_counts),
        }

    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
        """Serve in a background thread; `.base_url` ends in /api (append /{distributorId}/...)."""
        return run_app_in_thread(self.app, host, port, api_prefix=API_PREFIX, app_state=self)

    # -- request plumbing -------------------------------------------------------------------------

    def _account_of(self, header: str | None) -> str | None:
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            user, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        known = self.accounts.get(user)
        return user if known is not None and known[0] == secret else None

    async def _guarded(self, request: Request, handler: Any) -> Response:
        """Auth, distributor check, limits and faults around one API call, then the handler."""
        self.total_calls += 1
        self.calls_by_method[request.method] += 1
        account = self._account_of(request.headers.get("authorization"))
        if account is None:
            self.auth_failures += 1
            return _json(401, {"code": rules.ERR_UNAUTHORIZED, "message": "Bad credentials"},
                         {"WWW-Authenticate": 'Basic realm="Pond"'})
        if request.path_params["distributor"] != self.accounts[account][1]:
            self.business_refusals += 1
            return _json(403, {"code": rules.ERR_FORBIDDEN,
                               "message": "distributor not accessible with these credentials"})
        state, refused = self.gate.enter(account)
        left = False
        try:
            if refused:
                return self._over_limit()
            fault = self.faults.draw(account)
            latency = self.faults.latency_seconds()
            if latency:
                await asyncio.sleep(latency)
            if fault is Fault.BURST_429:
                return self._over_limit()
            if fault is Fault.ERROR_5XX:
                return _json(503, {"code": rules.ERR_SERVER, "message": "Service unavailable"})
            try:
                response = await handler(request)
            except rules.Refusal as refusal:
                if refusal.code == rules.ERR_STEP_FAILED:
                    self.switched_failures += 1
                else:
                    self.business_refusals += 1
                return _json(refusal.status, refusal.body())
            if fault is Fault.TIMEOUT:
                self.gate.leave(state)  # done; only the answer is late
                left = True
                await asyncio.sleep(self.faults.config.timeout_hold_seconds)
            elif fault is Fault.MALFORMED:
                return Response(response.body[: max(1, len(response.body) // 2)], 200,
                                media_type=_JSON)
            return response
        finally:
            if not left:
                self.gate.leave(state)

    def _over_limit(self) -> Response:
        self.over_limit_answers += 1
        headers = ({"Retry-After": f"{self.retry_after_seconds:g}"}
                   if self.retry_after_seconds is not None else None)
        return _json(429, {"code": rules.ERR_RATE_LIMIT, "message": "Rate limit exceeded"}, headers)

    def _device_or_404(self, iccid: str) -> dict[str, Any]:
        record = self.devices.get(iccid)
        if record is None:
            raise rules.Refusal(404, rules.ERR_DEVICE_NOT_FOUND, f"device {iccid} not found")
        return record

    @staticmethod
    async def _body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            return None

    def _move(self, iccid: str, package: dict[str, Any], status: str) -> None:
        if package["status"] == status:
            return  # a repeat is a no-op success
        self.history[iccid].append((package["packageId"], package["status"], status))
        package["status"] = status
        package["dateUpdated"] = rules.pond_time(dt.datetime.now(dt.UTC))
        self.applied_counts[iccid] += 1

    def _switched_failure(self, iccid: str, package: dict[str, Any], target: str) -> bool:
        """True if a test switch makes this package move fail."""
        if package["status"] == target:
            return False
        if target == rules.ACTIVE:
            return iccid in self.fail_activate
        newest = max(p["packageId"] for p in self.packages[iccid])
        if package["packageId"] == newest:
            return iccid in self.fail_undo
        return iccid in self.fail_terminate

    # -- API handlers -----------------------------------------------------------------------------

    async def _get_device(self, request: Request) -> Response:
        return _json(200, self._device_or_404(request.path_params["iccid"]))

    async def _list_packages(self, request: Request) -> Response:
        iccid = request.path_params["iccid"]
        self._device_or_404(iccid)
        offset, limit = rules.parse_page(request.query_params)
        return _json(200, rules.page(self.packages[iccid], offset, limit))

    async def _add_package(self, request: Request) -> Response:
        iccid = request.path_params["iccid"]
        device = self._device_or_404(iccid)
        types = self.inventories.get(str(device["inventoryId"]))
        type_id = rules.validate_add_package(await self._body(request), types)
        package = rules.package_record(next(self._ids), type_id, rules.PENDING,
                                       dt.datetime.now(dt.UTC))
        self.packages[iccid].append(package)
        self.history[iccid].append((package["packageId"], None, rules.PENDING))
        self.applied_counts[iccid] += 1
        self.packages_added += 1
        return _json(201, {"packageId": package["packageId"], "status": package["status"]})

    async def _set_package_status(self, request: Request) -> Response:
        iccid = request.path_params["iccid"]
        self._device_or_404(iccid)
        wanted = request.path_params["package_id"]
        package = next((p for p in self.packages[iccid] if rules.same_id(p["packageId"], wanted)),
                       None)
        if package is None:
            raise rules.Refusal(404, rules.ERR_PACKAGE_NOT_FOUND,
                                f"package {wanted} not found on device {iccid}")
        target = rules.validate_package_status(await self._body(request), package["status"])
        if self._switched_failure(iccid, package, target):
            raise rules.Refusal(self.step_failure_status, rules.ERR_STEP_FAILED,
                                f"could not set package {wanted} to {target}")
        self._move(iccid, package, target)
        return _json(200, dict(package))

    async def _set_service_status(self, request: Request) -> Response:
        iccid = request.path_params["iccid"]
        device = self._device_or_404(iccid)
        enabled = rules.validate_service_status(await self._body(request))
        if any(s["enabled"] != enabled for s in device["services"]):
            for service in device["services"]:
                service["enabled"] = enabled
            self.applied_counts[iccid] += 1
        return _json(200, {"iccid": iccid, "services": device["services"]})

    async def _list_package_types(self, request: Request) -> Response:
        inventory = request.path_params["inventory_id"]
        types = self.inventories.get(inventory)
        if types is None:
            raise rules.Refusal(404, rules.ERR_INVENTORY_NOT_FOUND,
                                f"inventory {inventory} not found")
        offset, limit = rules.parse_page(request.query_params)
        return _json(200, rules.page(types, offset, limit))

    def _build_app(self) -> Starlette:
        def api(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler)
            return endpoint

        table = [
            ("device", "GET", self._get_device),
            ("packages", "GET", self._list_packages),
            ("packages", "POST", self._add_package),
            ("package_status", "PUT", self._set_package_status),
            ("service_status", "PUT", self._set_service_status),
            ("package_types", "GET", self._list_package_types),
        ]
        routes = [Route(API_PREFIX + ROUTES[name], api(h), methods=[m]) for name, m, h in table]
        return Starlette(routes=[*admin_routes(self), *routes])


def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: PondSimulator | None = None,
    accounts: Mapping[str, tuple[str, str]] | None = None,
    rate_per_second: float = 5.0,
    max_concurrency: int = 2,
    faults: FaultConfig | None = None,
) -> ServerHandle:
    """Start a Pond simulator (a new one unless `simulator` is given) in a background thread."""
    sim = simulator or PondSimulator(accounts, rate_per_second=rate_per_second,
                                     max_concurrency=max_concurrency, faults=faults)
    return sim.run_in_thread(host, port)
