"""Client for Pond IoT (Pond Mobile): synchronous per-SIM calls; rate plans are *packages*. This
module holds the calls, their concurrency and the multi-step package change with its undo; the
wire format (paths, paging, error bodies, answer classification) is in `pond_wire.py`, kept apart
because Pond publishes no API documentation (reference/carriers.md section 5) and those inferred
[I] details (from how AMOP drove it, original-system.md section 8) should be easy to change once
the real API is known. Auth is HTTP Basic `account.username:account.secret` [I].

CarrierRatePlanChange (7) is the only multi-step change with a compensating undo, as AMOP had:
(1) add a package of the target type (the rate plan id), (2) set it ACTIVE, (3) set every other
ACTIVE package TERMINATED; if (2) or (3) fails, (4) terminate the new package so the device stays
on its old package, and report API_FAILED saying so (or, loudly, that the undo failed too). Each
call is its own LogEntry. Because adding a package is not idempotent, a retried add (its first
answer lost) may leave extra PENDING packages of the target type: they are found by re-reading
the packages and terminated; and a re-run after a crash reuses a PENDING package of the target
type instead of adding another. StatusUpdate (1) switches every service on (ACTIVATED) or off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ..domain import ChangeType, DeviceChangeStatus, Integration
from .base import (
    BusinessCarrierError,
    CarrierAccount,
    CarrierAdapter,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    require_writes,
)
from .http import CarrierHttp
from .pond_wire import (
    ACTIVE,
    PAGE_LIMIT,
    PATHS,
    PENDING,
    SERVICES_ENABLED_FOR,
    SUPPORTED_CHANGE_TYPES,
    TERMINATED,
    classify_pond_response,
    package_type_id,
)
from .redaction import basic_token, redact_detail
from .results import failure_detail

__all__ = ["PondClient"]

logger = logging.getLogger(__name__)


class PondClient(CarrierAdapter):
    """CarrierAdapter for Pond: per-device calls, paced under the account limits."""

    integration = Integration.POND

    def __init__(
        self, account: CarrierAccount, *, paths: Mapping[str, str] = PATHS, page_limit: int = PAGE_LIMIT
    ) -> None:
        distributor = (account.extra or {}).get("distributor_id")
        if not distributor:
            raise ValueError(
                f"Pond account {account.service_provider_id} needs "
                "extra['distributor_id'] (the {distributorId} of every Pond URL)"
            )
        self.account = account
        self.distributor = str(distributor)
        self.paths = dict(paths)
        self.page_limit = page_limit
        auth = {"Authorization": "Basic " + basic_token(account.username, account.secret)}
        self.http = CarrierHttp(account, auth, classify=classify_pond_response, label="Pond")
        self._secrets = [account.secret, basic_token(account.username, account.secret)]

    def supports(self, change_type: ChangeType) -> bool:
        """Pond's API applies status (service statuses) and carrier rate plan (packages)."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()

    def path(self, name: str, **values: Any) -> str:
        """A path from `PATHS`, every value URL-quoted."""
        quoted = {k: quote(str(v), safe="") for k, v in values.items()}
        return self.paths[name].format(distributor=quote(self.distributor, safe=""), **quoted)

    # -- reads ------------------------------------------------------------------------------------

    async def _paged(self, path: str, description: str) -> tuple[list[dict[str, Any]], list[LogEntry]]:
        """Every element of a paged list; raises CarrierError (with the log so far)."""
        elements: list[dict[str, Any]] = []
        log: list[LogEntry] = []
        offset = 0
        while True:
            try:
                call = await self.http.request(
                    "GET",
                    path,
                    params={"offset": offset, "limit": self.page_limit},
                    description=f"{description} (offset {offset})",
                )
            except CarrierError as exc:
                exc.log = log + exc.log
                raise
            log += call.log
            body = call.body if isinstance(call.body, dict) else {}
            page = body.get("elements") or []
            elements += [e for e in page if isinstance(e, dict)]
            if body.get("isLastPage", True) or not page:
                return elements, log
            offset += len(page)

    async def list_packages(self, iccid: str) -> tuple[list[dict[str, Any]], list[LogEntry]]:
        """Every package on the SIM (any status)."""
        return await self._paged(self.path("packages", iccid=iccid), f"Pond read packages of {iccid}")

    async def list_package_types(self, inventory_id: Any) -> list[dict[str, Any]]:
        """The package types (rate plans) of an inventory, for plan validation and sync."""
        elements, _ = await self._paged(
            self.path("package_types", inventory_id=inventory_id),
            f"Pond read package types of inventory {inventory_id}",
        )
        return elements

    # -- adapter ----------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Apply each change; per-device failures become API_FAILED results (never raised)."""
        require_writes(self.account, "Pond")
        return await self.http.map_bounded(changes, self._apply_one)

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """PROCESSED where Pond already holds the target (the target package type is the only
        ACTIVE one / every service matches the target status), else None."""
        return await self.http.map_bounded(changes, self._check_one)

    async def _apply_one(self, change: DeviceChange) -> DeviceResult:
        if not change.iccid:
            return self._failed(change, "no ICCID: Pond addresses SIMs by ICCID")
        target = change.target or {}
        if change.change_type == ChangeType.STATUS_UPDATE:
            enabled = SERVICES_ENABLED_FOR.get(str(target.get("status") or "").upper())
            if enabled is None:
                return self._failed(
                    change,
                    f"status {target.get('status')!r} cannot be applied "
                    f"at Pond (known: {', '.join(SERVICES_ENABLED_FOR)})",
                )
            return await self._set_services(change, enabled)
        if change.change_type == ChangeType.CARRIER_RATE_PLAN_CHANGE:
            if not target.get("carrier_rate_plan"):
                return self._failed(change, "no carrier_rate_plan (package type id) to apply")
            if package_type_id(target["carrier_rate_plan"]) is None:
                return self._failed(
                    change,
                    f"carrier_rate_plan {target['carrier_rate_plan']!r} is not a Pond package type id "
                    "(a positive integer); nothing was sent",
                )
            return await _PackageChange(self, change).run()
        return self._failed(change, f"change type {change.change_type} is not applied through the Pond API")

    async def _set_services(self, change: DeviceChange, enabled: bool) -> DeviceResult:
        status = str(change.target["status"]).upper()
        try:
            call = await self.http.request(
                "PUT",
                self.path("service_status", iccid=change.iccid),
                json_body={"enabled": enabled},
                description=f"Pond {'enable' if enabled else 'disable'} all services of {change.iccid}",
            )
        except CarrierError as exc:
            return self._failed(change, failure_detail(exc, self._secrets), exc.log)
        return DeviceResult(
            change.device_change_id,
            DeviceChangeStatus.PROCESSED,
            f"all services {'enabled' if enabled else 'disabled'}",
            {"status": status},
            None,
            call.log,
        )

    async def _check_one(self, change: DeviceChange) -> DeviceResult | None:
        target = change.target or {}
        if not change.iccid:
            return None
        try:
            if change.change_type == ChangeType.STATUS_UPDATE:
                status = str(target.get("status") or "").upper()
                enabled = SERVICES_ENABLED_FOR.get(status)
                if enabled is None:
                    return None
                call = await self.http.request(
                    "GET",
                    self.path("device", iccid=change.iccid),
                    description=f"Pond GET device {change.iccid} (already applied?)",
                )
                services = (call.body or {}).get("services") if isinstance(call.body, dict) else None
                if services and all(s.get("enabled") is enabled for s in services):
                    return DeviceResult(
                        change.device_change_id,
                        DeviceChangeStatus.PROCESSED,
                        f"already in effect at Pond: services {'enabled' if enabled else 'disabled'}",
                        {"status": status},
                        None,
                        call.log,
                    )
                return None
            if change.change_type == ChangeType.CARRIER_RATE_PLAN_CHANGE and target.get("carrier_rate_plan"):
                plan = str(target["carrier_rate_plan"]).strip()
                packages, log = await self.list_packages(change.iccid)
                active = [p for p in packages if p.get("status") == ACTIVE]
                if active and all(str(p.get("packageTypeId")) == plan for p in active):
                    return DeviceResult(
                        change.device_change_id,
                        DeviceChangeStatus.PROCESSED,
                        f"already in effect at Pond: package type {plan} is the only ACTIVE package",
                        {"carrier_rate_plan": target["carrier_rate_plan"]},
                        None,
                        log,
                    )
        except CarrierError:
            return None  # cannot tell; the caller re-sends and records that outcome
        return None

    def _failed(self, change: DeviceChange, detail: str, log: Sequence[LogEntry] | None = None) -> DeviceResult:
        """API_FAILED with the detail redacted (a carrier message could echo a credential)."""
        return DeviceResult(
            change.device_change_id,
            DeviceChangeStatus.API_FAILED,
            redact_detail(detail, self._secrets),
            {},
            None,
            list(log or []),
        )


def _ids(packages: Sequence[Any]) -> str:
    return ", ".join(str(p) for p in packages) or "none"


class _PackageChange:
    """One CarrierRatePlanChange on one SIM: steps (1)-(3), the undo (4), and every LogEntry."""

    def __init__(self, client: PondClient, change: DeviceChange) -> None:
        self.client = client
        self.change = change
        self.iccid = str(change.iccid)
        self.plan = str(change.target["carrier_rate_plan"]).strip()
        self.log: list[LogEntry] = []
        self.notes: list[str] = []

    def _is_target(self, package: Mapping[str, Any]) -> bool:
        return str(package.get("packageTypeId")) == self.plan

    async def _call(self, method: str, path: str, description: str, body: Any = None) -> Any:
        try:
            call = await self.client.http.request(method, path, json_body=body, description=description)
        except CarrierError as exc:
            self.log += exc.log
            raise
        self.log += call.log
        return call

    async def _packages(self) -> list[dict[str, Any]]:
        try:
            packages, log = await self.client.list_packages(self.iccid)
        except CarrierError as exc:
            self.log += exc.log
            raise
        self.log += log
        return packages

    async def _set(self, package_id: Any, status: str, description: str) -> None:
        path = self.client.path("package_status", iccid=self.iccid, package_id=package_id)
        await self._call("PUT", path, description, {"status": status})

    def _fail(self, detail: str) -> DeviceResult:
        return self.client._failed(self.change, " ".join([detail, *self.notes]), self.log)

    async def run(self) -> DeviceResult:
        try:
            before = await self._packages()
        except CarrierError as exc:
            return self._fail(
                f"could not read the packages of {self.iccid}; nothing was changed: {failure_detail(exc, self.client._secrets)}"
            )
        active = [p for p in before if p.get("status") == ACTIVE]
        old = [p.get("packageId") for p in active if not self._is_target(p)]
        held = next((p for p in active if self._is_target(p)), None)
        if held is not None and not old:
            return self._done(
                f"already on package type {self.plan} (package {held.get('packageId')} "
                "is the only ACTIVE one); nothing to change"
            )
        if held is not None:
            # ACTIVE before this call (an earlier attempt got past step 2): finish step 3, but it
            # is not ours to undo.
            new_id, ours = held.get("packageId"), False
        else:
            ours = True
            reuse = next((p for p in before if self._is_target(p) and p.get("status") == PENDING), None)
            if reuse is not None:
                new_id = reuse.get("packageId")
                self.notes.append(f"(reused PENDING package {new_id} left by an earlier attempt)")
            else:
                try:
                    new_id = await self._add(before)
                except CarrierError as exc:
                    return self._fail(
                        f"package change to type {self.plan} failed at step 1 (add "
                        f"package): {failure_detail(exc, self.client._secrets)}. Nothing was activated; the "
                        f"device was left on its old package(s) {_ids(old)}."
                    )
            try:
                await self._set(
                    new_id, ACTIVE, f"Pond step 2/3: activate new package {new_id} (type {self.plan}) on {self.iccid}"
                )
            except CarrierError as exc:
                return await self._undo(new_id, f"step 2 (activate new package {new_id})", exc, old, [])
        terminated: list[Any] = []
        for package_id in old:
            try:
                await self._set(
                    package_id, TERMINATED, f"Pond step 3/3: terminate old package {package_id} on {self.iccid}"
                )
            except CarrierError as exc:
                step = f"step 3 (terminate old package {package_id})"
                if ours:
                    return await self._undo(new_id, step, exc, old, terminated)
                return self._fail(
                    f"package change to type {self.plan} failed at {step}: "
                    f"{failure_detail(exc, self.client._secrets)}. Package {new_id} of the target type was "
                    "already ACTIVE before this attempt, so it was not undone; "
                    f"ACTIVE old package(s) left: "
                    f"{_ids([p for p in old if p not in terminated])}."
                )
            terminated.append(package_id)
        return self._done(
            f"package type {self.plan} ACTIVE as package {new_id}; old package(s) {_ids(terminated)} terminated"
        )

    def _done(self, detail: str) -> DeviceResult:
        return DeviceResult(
            self.change.device_change_id,
            DeviceChangeStatus.PROCESSED,
            " ".join([detail, *self.notes]),
            {"carrier_rate_plan": self.change.target["carrier_rate_plan"]},
            None,
            self.log,
        )

    async def _add(self, before: Sequence[Mapping[str, Any]]) -> Any:
        """Step 1; returns the new packageId. A retried add may have created duplicates (its
        earlier answer was lost after Pond applied it): those are terminated here."""
        before_ids = {str(p.get("packageId")) for p in before}
        try:
            call = await self._call(
                "POST",
                self.client.path("packages", iccid=self.iccid),
                f"Pond step 1/3: add package type {self.plan} to {self.iccid}",
                {"packageTypeId": package_type_id(self.plan)},
            )
        except TransientCarrierError:
            await self._drop_duplicates(before_ids, None)
            raise
        new_id = call.body.get("packageId") if isinstance(call.body, dict) else None
        if new_id is None:
            await self._drop_duplicates(before_ids, None)
            raise BusinessCarrierError(
                "Pond accepted the package but returned no packageId", status=call.response.status_code
            )
        if len(call.log) > 1:
            await self._drop_duplicates(before_ids, new_id)
        return new_id

    async def _drop_duplicates(self, before_ids: set[str], keep: Any) -> None:
        """Terminate PENDING packages of the target type that appeared during our add, except
        `keep`; anything that cannot be cleaned up is noted in the detail."""
        try:
            now = await self._packages()
        except CarrierError as exc:
            self.notes.append(
                f"(could not re-read packages to look for duplicate PENDING "
                f"packages of type {self.plan}: {failure_detail(exc, self.client._secrets)})"
            )
            return
        for p in now:
            pid = p.get("packageId")
            if (
                self._is_target(p)
                and p.get("status") == PENDING
                and str(pid) not in before_ids
                and str(pid) != str(keep)
            ):
                try:
                    await self._set(
                        pid,
                        TERMINATED,
                        f"Pond step 1/3: terminate duplicate PENDING package {pid} (an add whose answer was lost)",
                    )
                except CarrierError as exc:
                    self.notes.append(
                        f"(duplicate PENDING package {pid} could not be terminated: {failure_detail(exc, self.client._secrets)})"
                    )

    async def _undo(
        self, new_id: Any, step: str, exc: CarrierError, old: list[Any], terminated: list[Any]
    ) -> DeviceResult:
        """Step 4: terminate the new package so the device stays on its old one."""
        left = [p for p in old if p not in terminated]
        what = f"package change to type {self.plan} failed at {step}: {failure_detail(exc, self.client._secrets)}."
        try:
            await self._set(new_id, TERMINATED, f"Pond undo: terminate new package {new_id} on {self.iccid}")
        except CarrierError as undo_exc:
            result = self._fail(
                f"UNDO FAILED - OPERATOR ACTION NEEDED: {what} Terminating the new package "
                f"{new_id} also failed ({failure_detail(undo_exc, self.client._secrets)}), so device {self.iccid} may hold "
                f"the new package {new_id} as well as its old package(s) {_ids(left)}; terminate "
                f"package {new_id} at Pond by hand."
            )
            logger.error(
                "Pond undo failed (service provider %s, device change %s): %s",
                self.client.account.service_provider_id,
                self.change.device_change_id,
                result.detail,
            )
            return result
        detail = (
            f"{what} Undone: new package {new_id} terminated; the device was left on its old package(s) {_ids(left)}."
        )
        if terminated:
            detail += (
                f" Old package(s) {_ids(terminated)} had already been terminated before "
                "the failure and cannot be restored."
            )
        return self._fail(detail)
