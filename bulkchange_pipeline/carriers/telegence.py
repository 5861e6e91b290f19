"""Client for AT&T Telegence (AT&T business mobility / APEX partner APIs): the calls, their
concurrency and what each answer means for a device row. The wire format (bodies, paths, how
answers are read) is in `telegence_wire.py`, the error bodies in `telegence_errors.py`.

Auth: static headers `app-id` / `app-secret` (+ `Accept: application/json`). Line changes are
synchronous PATCHes, run concurrently under the account's limits; new lines are activated in
arrays of up to 200 and polled by activation id (Telegence sends no callbacks, so
`poll` is the only way to settle; it has no `callback_name`).

An IMEI/ICCID swap (issue 17) sends what the public sources send: reasonCode CUST_OWN_EQU,
serviceZipCode, singleUserCode, technologyType, IMEI and sim (telegence_wire.py has the sources,
repo + path + commit, and what stays [I]). The values it does not change are the line's CURRENT
ones, so each swap first GETs the subscriber detail (serviceZipCode, singleUserCode,
BLDeviceTechnologyType, BLIMEI, sim) and then PATCHes: two calls for a swap, one for every other
line change. A line whose detail lacks a value fails with that reason instead of a guessed value;
only `account.extra["technology_type"]` may stand in for a missing BLDeviceTechnologyType.

EditUsernameCostCenter reaches billing too (DESIGN section 4: "PATCH + Rev update"; AMOP did a
subscriber update plus a Rev.io update). The design keeps the engine carrier-neutral: this client
lists the change type in `billing_change_types`, so the engine attaches the tenant's Rev.io account
to the account (`CarrierAccount.billing`, see `carriers.updates_billing`) and this client builds
its billing companion, a `RevioClient`, from it. Per device:
- the Telegence PATCH fails -> API_FAILED with Telegence's reason, and Rev.io is not called;
- the device has no active Rev service (our database's `has_active_rev_service`) -> PROCESSED,
  no Rev.io call;
- the tenant has no Rev.io account -> PROCESSED, the detail says the billing update was skipped;
- otherwise the line's ACTIVE Rev services get the username as description and the cost center
  in their cost-center field: PROCESSED when Rev.io takes it; API_FAILED "Telegence updated (...);
  Rev.io service N not updated: <reason>" when it does not. That row is not PROCESSED because
  the change is not complete until billing agrees: our device table keeps the old values, and a
  retry re-sends the Telegence PATCH (a no-op for a line that already holds the values) and then
  the Rev.io update. Every Rev.io exchange is logged on the device's row, redacted like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
    require_writes,
)
from .http import CarrierHttp
from .results import batch_result, device_result, failure_detail, shared_logs
from .revio import RevioClient
from .revio_wire import RevioUpdateError
from .telegence_errors import classify_telegence_response
from .telegence_wire import (
    ACTIVATION_BATCH_SIZE,
    ACTIVATION_PATH,
    ACTIVATION_STATUS_PATH,
    DEFAULT_REASON_CODE,
    LINE_PATH,
    activation_ids,
    activation_line,
    activation_outcome,
    characteristic_map,
    equipment_change,
    item_for,
    line_update,
    telegence_date,
)

__all__ = ["MAX_PARALLEL_REQUESTS", "NO_BILLING_ACCOUNT", "SUPPORTED_CHANGE_TYPES", "TelegenceClient"]

MAX_PARALLEL_REQUESTS = 10  # AMOP's MAX_PARALLEL_REQUESTS default, when the account sets none
SUPPORTED_CHANGE_TYPES = frozenset(
    {
        ChangeType.STATUS_UPDATE,
        ChangeType.ACTIVATE_NEW_SERVICE,
        ChangeType.CARRIER_RATE_PLAN_CHANGE,
        ChangeType.CHANGE_ICCID_AND_IMEI,
        ChangeType.EDIT_USERNAME_COST_CENTER,
    }
)
NO_BILLING_ACCOUNT = "Rev.io update skipped: the tenant has no Rev.io account"


class TelegenceClient(CarrierAdapter):
    """CarrierAdapter for Telegence: concurrent line PATCHes (sync) and batched, polled
    activations (async). `billing` is the tenant's Rev.io client for the Rev.io half of a
    username/cost-center edit, by default built from `account.billing` (None: the tenant has no
    Rev.io account, or no row needs it); this client closes it."""

    integration = Integration.TELEGENCE
    max_polls = 6  # the seed's "service activation: 6 retries"; the reconcile engine enforces it
    billing_change_types = frozenset({ChangeType.EDIT_USERNAME_COST_CENTER})
    poll_interval_seconds = 300  # AMOP re-checked activations every 300 s

    def __init__(
        self,
        account: CarrierAccount,
        *,
        billing: RevioClient | None = None,
        default_reason_code: str | None = None,
        batch_size: int = ACTIVATION_BATCH_SIZE,
    ) -> None:
        self.account = account
        if billing is None and account.billing is not None:
            billing = RevioClient(account.billing)
        self.billing = billing
        self.extra = {str(k).lower(): v for k, v in (account.extra or {}).items()}
        self.default_reason_code = default_reason_code or self.extra.get("reason_code") or DEFAULT_REASON_CODE
        self.batch_size = max(1, min(batch_size, ACTIVATION_BATCH_SIZE))
        headers = {"app-id": account.username, "app-secret": account.secret}
        self.http = CarrierHttp(
            account,
            headers,
            classify=classify_telegence_response,
            label="Telegence",
            unlimited_workers=MAX_PARALLEL_REQUESTS,
        )
        # A row's reason is built from the carrier's answer, which may echo the request: masked with these.
        self._secrets = [account.secret]

    def supports(self, change_type: ChangeType) -> bool:
        """Line status, plan, SIM/IMEI and username/cost-center edits; new-line activation."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.billing is not None:
            await self.billing.aclose()

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Line changes: one PATCH each, concurrently. Activations: arrays of up to 200 lines,
        answered PROCESSING with the activation id. Per-device failures are API_FAILED."""
        require_writes(self.account, "Telegence")
        results: list[DeviceResult | None] = [None] * len(changes)
        lines = [i for i, c in enumerate(changes) if c.change_type != ChangeType.ACTIVATE_NEW_SERVICE]
        activations = [i for i, c in enumerate(changes) if c.change_type == ChangeType.ACTIVATE_NEW_SERVICE]

        async def patch(index: int) -> None:
            results[index] = await self._patch_one(changes[index])

        jobs = self._activation_jobs(changes, activations, results)

        async def activate(job: list[tuple[int, dict[str, Any]]]) -> None:
            for index, result in zip([i for i, _ in job], await self._activate(job, changes), strict=True):
                results[index] = result

        await asyncio.gather(self.http.map_bounded(lines, patch), self.http.map_bounded(jobs, activate))
        return [r for r in results if r is not None]

    async def _patch_one(self, change: DeviceChange) -> DeviceResult:
        if not change.msisdn:
            return device_result(
                change,
                DeviceChangeStatus.API_FAILED,
                "no MSISDN: Telegence updates lines by subscriber number and this device has none",
            )
        log: list[LogEntry] = []
        try:
            if change.change_type == ChangeType.CHANGE_ICCID_AND_IMEI:
                current, log = await self._current_detail(change)
                body, values, _ = equipment_change(change, current)
            else:
                body, values, _ = line_update(change, self.default_reason_code)
        except ValueError as exc:
            return device_result(change, DeviceChangeStatus.API_FAILED, str(exc), log=log)
        except CarrierError as exc:
            return device_result(change, DeviceChangeStatus.API_FAILED, failure_detail(exc, self._secrets), log=exc.log)
        desc = f"Telegence PATCH line {change.msisdn}"
        try:
            call = await self.http.request(
                "PATCH", LINE_PATH.format(quote(change.msisdn, safe="")), json_body=body, description=desc
            )
        except CarrierError as exc:
            return device_result(
                change, DeviceChangeStatus.API_FAILED, failure_detail(exc, self._secrets), log=[*log, *exc.log]
            )
        call.log = [*log, *call.log]
        summary = _summary(values)
        effective = body.get("effectiveDate")
        if effective and effective > telegence_date():
            return device_result(
                change, DeviceChangeStatus.PROCESSED, f"scheduled by Telegence for {effective}: {summary}", log=call.log
            )
        if _needs_billing(change):
            return await self._update_billing(change, values, call.log)
        return device_result(change, DeviceChangeStatus.PROCESSED, f"applied: {summary}", values, log=call.log)

    async def _update_billing(self, change: DeviceChange, values: dict[str, str], log: list[LogEntry]) -> DeviceResult:
        """The Rev.io half of a username/cost-center edit Telegence has taken (module docstring:
        the outcome rules)."""
        summary = _summary(values)
        if self.billing is None:
            return device_result(
                change, DeviceChangeStatus.PROCESSED, f"applied: {summary}; {NO_BILLING_ACCOUNT}", values, log=log
            )
        log = list(log)
        try:
            edited = await self.billing.edit_line_services(
                str(change.msisdn), description=values.get("username"), cost_center=values.get("cost_center"), log=log
            )
        except RevioUpdateError as exc:
            where = "Rev.io" if exc.service_id is None else f"Rev.io service {exc.service_id}"
            return device_result(
                change,
                DeviceChangeStatus.API_FAILED,
                f"Telegence updated ({summary}); {where} not updated: {exc.message}",
                log=log,
            )
        return device_result(
            change,
            DeviceChangeStatus.PROCESSED,
            f"applied: {summary}; Rev.io service {', '.join(map(str, edited))} updated",
            values,
            log=log,
        )

    def _activation_jobs(
        self, changes: Sequence[DeviceChange], indexes: list[int], results: list[DeviceResult | None]
    ) -> list[list[tuple[int, dict[str, Any]]]]:
        """Valid activation lines cut into requests of at most `batch_size`; invalid rows are
        failed in `results` without a call."""
        ban = self.extra.get("ban")
        ready: list[tuple[int, dict[str, Any]]] = []
        for index in indexes:
            if not ban:
                results[index] = device_result(
                    changes[index],
                    DeviceChangeStatus.API_FAILED,
                    "no billing account: set extra['ban'] on the Telegence service provider",
                )
                continue
            try:
                ready.append((index, activation_line(changes[index], str(ban), self.extra)))
            except ValueError as exc:
                results[index] = device_result(changes[index], DeviceChangeStatus.API_FAILED, str(exc))
        return [ready[i : i + self.batch_size] for i in range(0, len(ready), self.batch_size)]

    async def _activate(
        self, job: list[tuple[int, dict[str, Any]]], changes: Sequence[DeviceChange]
    ) -> list[DeviceResult]:
        members = [changes[i] for i, _ in job]
        desc = f"Telegence POST activation ({len(members)} lines)"
        try:
            call = await self.http.request(
                "POST", ACTIVATION_PATH, json_body=[line for _, line in job], description=desc
            )
        except CarrierError as exc:
            return batch_result(
                members, exc.log, desc, DeviceChangeStatus.API_FAILED, failure_detail(exc, self._secrets)
            )
        items = call.body if isinstance(call.body, list) else [call.body]
        ids = activation_ids(items, members)
        logs = shared_logs(call.log, members, desc)
        out = []
        for change, request_id, log in zip(members, ids, logs, strict=True):
            if request_id:
                out.append(
                    device_result(
                        change,
                        DeviceChangeStatus.PROCESSING,
                        f"activation accepted by Telegence, status id {request_id}",
                        request_id=request_id,
                        log=log,
                    )
                )
            else:
                out.append(
                    device_result(
                        change,
                        DeviceChangeStatus.API_FAILED,
                        "Telegence's activation answer has no status id for this line",
                        log=log,
                    )
                )
        return out

    # -- poll -------------------------------------------------------------------------------------

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """One status GET per activation id: PROCESSED (active, with the new subscriber number),
        API_FAILED (rejected, or Telegence does not know the id), None while pending or when the
        answer could not be read."""
        results: list[DeviceResult | None] = [None] * len(changes)
        by_id: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            if change.carrier_request_id:
                by_id.setdefault(change.carrier_request_id, []).append(index)

        async def fetch(item: tuple[str, list[int]]) -> None:
            request_id, indexes = item
            answers = await self._poll_one(request_id, [changes[i] for i in indexes])
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = answer

        await self.http.map_bounded(list(by_id.items()), fetch)
        return results

    async def _poll_one(self, request_id: str, members: list[DeviceChange]) -> list[DeviceResult | None]:
        desc = f"Telegence GET activation status {request_id}"
        try:
            call = await self.http.request(
                "GET", ACTIVATION_STATUS_PATH.format(quote(request_id, safe="")), description=desc
            )
        except BusinessCarrierError as exc:
            if exc.status != 404:
                return [None] * len(members)  # e.g. credentials: cannot tell, keep waiting
            detail = f"Telegence has no activation {request_id}: {exc}"
            return [*batch_result(members, exc.log, desc, DeviceChangeStatus.API_FAILED, detail, request_id=request_id)]
        except CarrierError:
            return [None] * len(members)
        items = [i for i in (call.body if isinstance(call.body, list) else [call.body]) if isinstance(i, dict)]
        out: list[DeviceResult | None] = []
        for change in members:
            item = item_for(change, items)
            answer = activation_outcome(change, item) if item is not None else None
            if answer is not None:
                answer.log = list(call.log)
            out.append(answer)
        return out

    # -- already applied --------------------------------------------------------------------------

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Line changes: read the subscriber detail and compare subscriberStatus / singleUserCode
        / sim / BLIMEI / contactName / costCenter with the target (a username/cost-center edit
        that must reach Rev.io also needs the line's Rev services to show it). Activations with a
        known status id: PROCESSED if that activation is active. Anything else: None (re-send)."""

        async def check(change: DeviceChange) -> DeviceResult | None:
            if change.change_type != ChangeType.ACTIVATE_NEW_SERVICE:
                return await self._check_line(change)
            if not change.carrier_request_id:
                return None
            answer = (await self._poll_one(change.carrier_request_id, [change]))[0]
            return answer if answer and answer.status == DeviceChangeStatus.PROCESSED else None

        return await self.http.map_bounded(changes, check)

    async def get_subscriber(self, subscriber_number: str) -> dict[str, Any]:
        """Subscriber detail (`GET` on the lineconfig path [C]); raises CarrierError."""
        call = await self.http.request(
            "GET",
            LINE_PATH.format(quote(subscriber_number, safe="")),
            description=f"Telegence GET line {subscriber_number}",
        )
        return call.body if isinstance(call.body, dict) else {}

    async def _current_detail(self, change: DeviceChange) -> tuple[dict[str, str], list[LogEntry]]:
        """The line's subscriber detail as {characteristic: value} (and the call's log), for an
        equipment change: the values it keeps are sent as they are now. Raises CarrierError."""
        desc = f"Telegence GET line {change.msisdn} (current values for the equipment change)"
        call = await self.http.request("GET", LINE_PATH.format(quote(str(change.msisdn), safe="")), description=desc)
        current = characteristic_map(call.body)
        if not current.get("BLDeviceTechnologyType") and self.extra.get("technology_type"):
            current["BLDeviceTechnologyType"] = str(self.extra["technology_type"])
        return current, list(call.log)

    async def _check_line(self, change: DeviceChange) -> DeviceResult | None:
        if not change.msisdn:
            return None
        swap = change.change_type == ChangeType.CHANGE_ICCID_AND_IMEI
        if not swap:
            try:
                body, values, held = line_update(change, self.default_reason_code)
            except ValueError:
                return None
            if body.get("effectiveDate", "") > telegence_date():
                return None  # a future-dated change cannot be seen in the line yet
        desc = f"Telegence GET line {change.msisdn} (already applied?)"
        try:
            call = await self.http.request("GET", LINE_PATH.format(quote(change.msisdn, safe="")), description=desc)
        except CarrierError:
            return None
        actual = characteristic_map(call.body)
        if swap:
            try:
                _, values, held = equipment_change(change, actual)
            except ValueError:
                return None
        if not all(actual.get(k) == v for k, v in held.items()):
            return None
        detail = f"already in effect at Telegence: {_summary(held)}"
        if not _needs_billing(change):
            return device_result(change, DeviceChangeStatus.PROCESSED, detail, values, log=call.log)
        if self.billing is None:
            return device_result(
                change, DeviceChangeStatus.PROCESSED, f"{detail}; {NO_BILLING_ACCOUNT}", values, log=call.log
            )
        log = list(call.log)
        services = await self.billing.line_services_hold(
            change.msisdn, description=values.get("username"), cost_center=values.get("cost_center"), log=log
        )
        if services is None:
            return None  # the re-send repeats the (idempotent) PATCH and then updates Rev.io
        return device_result(
            change,
            DeviceChangeStatus.PROCESSED,
            f"{detail}; and at Rev.io service {', '.join(map(str, services))}",
            values,
            log=log,
        )


def _needs_billing(change: DeviceChange) -> bool:
    """A username/cost-center edit of a line our database says has an active Rev.io service."""
    return change.change_type in TelegenceClient.billing_change_types and change.has_active_rev_service


def _summary(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
