"""A loopback simulator of the Pond IoT API. PROVISIONAL: Pond publishes no API documentation.

Shape (reference/carriers.md section 5): `{base}/{distributorId}/...`; devices (SIMs by ICCID)
carry packages (`packageId, packageTypeId, status` ACTIVE / TERMINATED / PENDING) and per-SIM
service statuses; package types are listed per inventory; lists are paged with `offset`/`limit`
and answer `{elements, isLastPage}`. Inferred [I], each easy to change here or in `pond_rules`:
HTTP Basic auth (username:secret, each account bound to one distributor id), camelCase JSON
names, the API prefix
`/api`, the path templates below (one table, `ROUTES`), the error envelope `{code, message}`, 429
with `Retry-After` as the over-limit answer, and that an added package starts PENDING. Request
bodies take exactly the described fields with the described types (`packageTypeId` an integer, as
AMOP's `long` RatePlanId is; description in bulkchange_pipeline_tests/contracts/pond.yaml).
A path not in `ROUTES` (any method), or a method a served path does not take, answers after the
Basic-auth check like any call [I]: 404 `NOT_FOUND`, or 405 `METHOD_NOT_ALLOWED` with `Allow`, in
the `{code, message}` envelope, never Starlette's plain text.

Test switches (`configure`): `fail_activate`, `fail_terminate`, `fail_undo` (ICCID lists) make,
for those devices, activating a package / terminating an *old* package / terminating the
*newest* package (the client's undo) fail with `step_failure_status` (409 by default, a business
refusal; 5xx makes it transient). `applied_counts[iccid]` counts state changes (package added,
package status changed, services switched); `history[iccid]` records each package move in order.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed), `GET /_sim/devices/{iccid}`
(device with its packages), `GET /_sim/stats`, `GET|POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import base64
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import pond_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock
from .faults import FaultConfig
from .server import ServerHandle

API_PREFIX = "/api"  # [I]
# [I] path templates under API_PREFIX (AMOP reads Pond's paths from environment variables). AMOP's
# UpdatePackageStatus is called with the package id alone, without the ICCID [C], so the real
# package-status path may not name the device; kept under the device here until Pond's is known.
ROUTES: Mapping[str, str] = {
    "device": "/{distributor}/devices/{iccid}",
    "packages": "/{distributor}/devices/{iccid}/packages",
    "package_status": "/{distributor}/devices/{iccid}/packages/{package_id}/status",
    "service_status": "/{distributor}/devices/{iccid}/services/status",
    "package_types": "/{distributor}/inventories/{inventory_id}/package-types",
}
DEFAULT_ACCOUNTS: Mapping[str, tuple[str, str]] = {"demo": ("demo-secret", "1001")}
_SWITCHES = ("fail_activate", "fail_terminate", "fail_undo")


class PondSimulator(SimulatorBase):
    """In-memory Pond distributor account(s) behind a Starlette app (`.app`).

    `accounts` maps username -> (secret, distributorId). `inventories` maps inventory id ->
    package types (default: inventory 1 with `rules.DEFAULT_PACKAGE_TYPES`).
    """

    API_PREFIX = API_PREFIX

    def __init__(
        self,
        accounts: Mapping[str, tuple[str, str]] | None = None,
        *,
        rate_per_second: float = 5.0,
        max_concurrency: int = 2,
        faults: FaultConfig | None = None,
        inventories: Mapping[Any, list[dict[str, Any]]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate_per_second, max_concurrency, faults, clock)
        self.accounts: dict[str, tuple[str, str]] = {
            u: (str(s), str(d)) for u, (s, d) in (accounts or DEFAULT_ACCOUNTS).items()
        }
        self.inventories: dict[str, list[dict[str, Any]]] = {
            str(k): [dict(t) for t in v]
            for k, v in (inventories or {rules.DEFAULT_INVENTORY_ID: list(rules.DEFAULT_PACKAGE_TYPES)}).items()
        }
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
        self._reset_base_counters()
        self.applied_counts: Counter[str] = Counter()
        self.calls_by_method: Counter[str] = Counter()
        self.packages_added = 0
        self.switched_failures = 0

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace devices (see `rules.device_record` / `rules.package_seeds`)."""
        now = self.clock.now()
        n = 0
        for seed in devices:
            record = rules.device_record(seed, now)
            iccid = record["iccid"]
            self.devices[iccid] = record
            self.packages[iccid] = [
                rules.package_record(next(self._ids), p["packageTypeId"], p["status"], now)
                for p in rules.package_seeds(seed)
            ]
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
            if key == "retry_after_seconds":
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
                self._configure_base(key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "retry_after_seconds": self.retry_after_seconds,
            "accounts": sorted(self.accounts),
            **{k: sorted(getattr(self, k)) for k in _SWITCHES},
            "step_failure_status": self.step_failure_status,
            **self.faults.config.as_dict(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        return {
            **self._base_stats(),
            "calls_by_method": dict(self.calls_by_method),
            "switched_failures": self.switched_failures,
            "packages_added": self.packages_added,
            "devices": len(self.devices),
            "applied_total": sum(self.applied_counts.values()),
            "applied_devices": len(self.applied_counts),
        }

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
            return _json(
                401,
                {"code": rules.ERR_UNAUTHORIZED, "message": "Bad credentials"},
                {"WWW-Authenticate": 'Basic realm="Pond"'},
            )
        distributor = request.path_params.get("distributor")  # None: a path Pond does not serve
        if distributor is not None and distributor != self.accounts[account][1]:
            self.business_refusals += 1
            return _json(
                403, {"code": rules.ERR_FORBIDDEN, "message": "distributor not accessible with these credentials"}
            )
        state, refused = self.gate.enter(account)
        if refused:
            self.gate.leave(state)
            return self._over_limit()
        return await self._faulted(
            account,
            state,
            lambda: handler(request),
            over_limit=self._over_limit,
            server_error=lambda: _json(503, {"code": rules.ERR_SERVER, "message": "Service unavailable"}),
            refusals=(rules.Refusal,),
            refused=self._refused,
        )

    def _refused(self, refusal: rules.Refusal) -> Response:
        """A handler's refusal, counted as a test-switched step failure or a business refusal."""
        if refusal.code == rules.ERR_STEP_FAILED:
            self.switched_failures += 1
        else:
            self.business_refusals += 1
        return _json(refusal.status, refusal.body())

    def _over_limit(self) -> Response:
        self.over_limit_answers += 1
        headers = {"Retry-After": f"{self.retry_after_seconds:g}"} if self.retry_after_seconds is not None else None
        return _json(429, {"code": rules.ERR_RATE_LIMIT, "message": "Rate limit exceeded"}, headers)

    def _device_or_404(self, iccid: str) -> dict[str, Any]:
        record = self.devices.get(iccid)
        if record is None:
            raise rules.Refusal(404, rules.ERR_DEVICE_NOT_FOUND, f"device {iccid} not found")
        return record

    def _move(self, iccid: str, package: dict[str, Any], status: str) -> None:
        if package["status"] == status:
            return  # a repeat is a no-op success
        self.history[iccid].append((package["packageId"], package["status"], status))
        package["status"] = status
        package["dateUpdated"] = rules.pond_time(self.clock.now())
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
        package = rules.package_record(next(self._ids), type_id, rules.PENDING, self.clock.now())
        self.packages[iccid].append(package)
        self.history[iccid].append((package["packageId"], None, rules.PENDING))
        self.applied_counts[iccid] += 1
        self.packages_added += 1
        return _json(201, {"packageId": package["packageId"], "status": package["status"]})

    async def _set_package_status(self, request: Request) -> Response:
        iccid = request.path_params["iccid"]
        self._device_or_404(iccid)
        wanted = request.path_params["package_id"]
        package = next((p for p in self.packages[iccid] if rules.same_id(p["packageId"], wanted)), None)
        if package is None:
            raise rules.Refusal(404, rules.ERR_PACKAGE_NOT_FOUND, f"package {wanted} not found on device {iccid}")
        target = rules.validate_package_status(await self._body(request), package["status"])
        if self._switched_failure(iccid, package, target):
            raise rules.Refusal(
                self.step_failure_status, rules.ERR_STEP_FAILED, f"could not set package {wanted} to {target}"
            )
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
            raise rules.Refusal(404, rules.ERR_INVENTORY_NOT_FOUND, f"inventory {inventory} not found")
        offset, limit = rules.parse_page(request.query_params)
        return _json(200, rules.page(types, offset, limit))

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """A path or method not served: the envelope after auth (module docstring). Under /_sim:
        the admin endpoints' JSON."""
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        allow = {"Allow": exc.headers["Allow"]} if isinstance(exc, HTTPException) and exc.headers else None
        if request.url.path.startswith("/_sim"):
            return _json(status, {"error": f"no admin endpoint {request.method} {request.url.path}"}, allow)

        async def answer(req: Request) -> Response:
            if status == 405:
                message = f"method {req.method} not allowed on {req.url.path}"
                return _json(405, {"code": rules.ERR_METHOD_NOT_ALLOWED, "message": message}, allow)
            return _json(404, {"code": rules.ERR_NOT_FOUND, "message": f"no resource {req.url.path}"})

        return await self._guarded(request, answer)

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
        return Starlette(
            routes=[*admin_routes(self), *routes], exception_handlers={404: self._no_route, 405: self._no_route}
        )


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
    sim = simulator or PondSimulator(
        accounts, rate_per_second=rate_per_second, max_concurrency=max_concurrency, faults=faults
    )
    return sim.run_in_thread(host, port)
