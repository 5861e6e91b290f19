"""Client for AT&T Telegence (AT&T business mobility / APEX partner APIs): the calls, their
concurrency and what each answer means for a device row. The wire format (bodies, paths, how
answers are read) is in `telegence_wire.py`, the error bodies in `telegence_errors.py`.

Auth: static headers `app-id` / `app-secret` (+ `Accept: application/json`). Line changes are
synchronous PATCHes, run concurrently under the account's limits; new lines are activated in
arrays of up to 200 and polled by activation id (Telegence sends no callbacks, so
`parse_callback` always answers [] and `poll` is the only way to settle).

EditUsernameCostCenter reaches billing too (DESIGN section 4: "PATCH + Rev update"; AMOP did a
subscriber update plus a Rev.io update). The design keeps the engine carrier-neutral: the adapter
registry (`carriers.build_adapter`) hands this client an optional billing companion, a
`RevioClient` for the tenant's Rev.io account, which the engine attaches to the account
(`CarrierAccount.billing`) only for change types `carriers.BILLING_UPDATES` lists. Per device:
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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from .base import (
    ACTIVATE_NEW_SERVICE,
    API_FAILED,
    CARRIER_RATE_PLAN_CHANGE,
    CHANGE_ICCID_AND_IMEI,
    EDIT_USERNAME_COST_CENTER,
    PROCESSED,
    PROCESSING,
    STATUS_UPDATE,
    AsyncOutcome,
    BusinessCarrierError,
    CarrierAccount,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    WritesDisabledError,
)
from .http import CarrierHttp
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
    item_for,
    line_update,
    telegence_date,
)

MAX_PARALLEL_REQUESTS = 10  # AMOP's MAX_PARALLEL_REQUESTS default, when the account sets none
SUPPORTED_CHANGE_TYPES = frozenset({STATUS_UPDATE, ACTIVATE_NEW_SERVICE, CARRIER_RATE_PLAN_CHANGE,
                                    CHANGE_ICCID_AND_IMEI, EDIT_USERNAME_COST_CENTER})
NO_BILLING_ACCOUNT = "Rev.io update skipped: the tenant has no Rev.io account"


class TelegenceClient:
    """AsyncCarrierAdapter for Telegence: concurrent line PATCHes (sync) and batched, polled
    activations (async). `billing` is the tenant's Rev.io client for the Rev.io half of a
    username/cost-center edit (None: the tenant has no Rev.io account, or no row needs it); this
    client closes it."""

    integration = "telegence"
    callback_name = "telegence"
    max_polls = 6  # the seed's "service activation: 6 retries"; the reconcile engine enforces it
    poll_interval_seconds = 300  # AMOP re-checked activations every 300 s

    def __init__(self, account: CarrierAccount, *, billing: RevioClient | None = None,
                 default_reason_code: str | None = None,
                 batch_size: int = ACTIVATION_BATCH_SIZE) -> None:
        self.account = account
        self.billing = billing
        self.extra = {str(k).lower(): v for k, v in (account.extra or {}).items()}
        self.default_reason_code = (default_reason_code or self.extra.get("reason_code")
                                    or DEFAULT_REASON_CODE)
        self.batch_size = max(1, min(batch_size, ACTIVATION_BATCH_SIZE))
        headers = {"app-id": account.username, "app-secret": account.secret}
        self.http = CarrierHttp(account, headers, classify=classify_telegence_response,
                                label="Telegence")

    def supports(self, change_type: int) -> bool:
        """Line status, plan, SIM/IMEI and username/cost-center edits; new-line activation."""
        return change_type in SUPPORTED_CHANGE_TYPES

    def parse_callback(self, payload: dict) -> list[AsyncOutcome]:
        """Telegence sends no callbacks: activations are settled by `poll` only."""
        return []

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.billing is not None:
            await self.billing.aclose()

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Line changes: one PATCH each, concurrently. Activations: arrays of up to 200 lines,
        answered PROCESSING with the activation id. Per-device failures are API_FAILED."""
        if not self.account.write_enabled:
            raise WritesDisabledError(
                f"writes are disabled for service provider {self.account.service_provider_id}; "
                "nothing was sent to Telegence")
        results: list[DeviceResult | None] = [None] * len(changes)
        lines = [i for i, c in enumerate(changes) if c.change_type != ACTIVATE_NEW_SERVICE]
        activations = [i for i, c in enumerate(changes) if c.change_type == ACTIVATE_NEW_SERVICE]

        async def patch(index: int) -> None:
            results[index] = await self._patch_one(changes[index])

        jobs = self._activation_jobs(changes, activations, results)

        async def activate(job: list[tuple[int, dict]]) -> None:
            for index, result in zip([i for i, _ in job], await self._activate(job, changes)):
                results[index] = result

        await asyncio.gather(self._run_all(lines, patch), self._run_all(jobs, activate))
        return [r for r in results if r is not None]

    async def _patch_one(self, change: DeviceChange) -> DeviceResult:
        if not change.msisdn:
            return _result(change, API_FAILED, "no MSISDN: Telegence updates lines by subscriber "
                           "number and this device has none")
        try:
            body, values, _ = line_update(change, self.default_reason_code)
        except ValueError as exc:
            return _result(change, API_FAILED, str(exc))
        desc = f"Telegence PATCH line {change.msisdn}"
        try:
            call = await self.http.request("PATCH", LINE_PATH.format(quote(change.msisdn, safe="")),
                                           json_body=body, description=desc)
        except CarrierError as exc:
            return _result(change, API_FAILED, _failure_detail(exc), log=exc.log)
        summary = _summary(values)
        effective = body.get("effectiveDate")
        if effective and effective > telegence_date():
            return _result(change, PROCESSED, f"scheduled by Telegence for {effective}: {summary}",
                           log=call.log)
        if _needs_billing(change):
            return await self._update_billing(change, values, call.log)
        return _result(change, PROCESSED, f"applied: {summary}", values, log=call.log)

    async def _update_billing(self, change: DeviceChange, values: dict[str, str],
                              log: list[LogEntry]) -> DeviceResult:
        """The Rev.io half of a username/cost-center edit Telegence has taken (module docstring:
        the outcome rules)."""
        summary = _summary(values)
        if self.billing is None:
            return _result(change, PROCESSED, f"applied: {summary}; {NO_BILLING_ACCOUNT}", values,
                           log=log)
        log = list(log)
        try:
            edited = await self.billing.edit_line_services(
                str(change.msisdn), description=values.get("username"),
                cost_center=values.get("cost_center"), log=log)
        except RevioUpdateError as exc:
            where = "Rev.io" if exc.service_id is None else f"Rev.io service {exc.service_id}"
            return _result(change, API_FAILED,
                           f"Telegence updated ({summary}); {where} not updated: {exc.message}",
                           log=log)
        return _result(change, PROCESSED, f"applied: {summary}; Rev.io service "
                       f"{', '.join(map(str, edited))} updated", values, log=log)

    def _activation_jobs(self, changes: Sequence[DeviceChange], indexes: list[int],
                         results: list[DeviceResult | None]) -> list[list[tuple[int, dict]]]:
        """Valid activation lines cut into requests of at most `batch_size`; invalid rows are
        failed in `results` without a call."""
        ban = self.extra.get("ban")
        ready: list[tuple[int, dict]] = []
        for index in indexes:
            if not ban:
                results[index] = _result(changes[index], API_FAILED, "no billing account: set "
                                         "extra['ban'] on the Telegence service provider")
                continue
            try:
                ready.append((index, activation_line(changes[index], str(ban), self.extra)))
            except ValueError as exc:
                results[index] = _result(changes[index], API_FAILED, str(exc))
        return [ready[i:i + self.batch_size] for i in range(0, len(ready), self.batch_size)]

    async def _activate(self, job: list[tuple[int, dict]], changes: Sequence[DeviceChange]
                        ) -> list[DeviceResult]:
        members = [changes[i] for i, _ in job]
        desc = f"Telegence POST activation ({len(members)} lines)"
        try:
            call = await self.http.request("POST", ACTIVATION_PATH,
                                           json_body=[line for _, line in job], description=desc)
        except CarrierError as exc:
            logs = _shared_logs(exc.log, members, desc)
            return [_result(c, API_FAILED, _failure_detail(exc), log=lg)
                    for c, lg in zip(members, logs)]
        items = call.body if isinstance(call.body, list) else [call.body]
        ids = activation_ids(items, members)
        logs = _shared_logs(call.log, members, desc)
        out = []
        for change, request_id, log in zip(members, ids, logs):
            if request_id:
                out.append(_result(change, PROCESSING, f"activation accepted by Telegence, status "
                                   f"id {request_id}", request_id=request_id, log=log))
            else:
                out.append(_result(change, API_FAILED, "Telegence's activation answer has no "
                                   "status id for this line", log=log))
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
            for index, answer in zip(indexes, answers):
                results[index] = answer

        await self._run_all(list(by_id.items()), fetch)
        return results

    async def _poll_one(self, request_id: str, members: list[DeviceChange]
                        ) -> list[DeviceResult | None]:
        desc = f"Telegence GET activation status {request_id}"
        try:
            call = await self.http.request(
                "GET", ACTIVATION_STATUS_PATH.format(quote(request_id, safe="")), description=desc)
        except BusinessCarrierError as exc:
            if exc.status != 404:
                return [None] * len(members)  # e.g. credentials: cannot tell, keep waiting
            logs = _shared_logs(exc.log, members, desc)
            return [_result(c, API_FAILED, f"Telegence has no activation {request_id}: {exc}",
                            request_id=request_id, log=lg) for c, lg in zip(members, logs)]
        except CarrierError:
            return [None] * len(members)
        items = [i for i in (call.body if isinstance(call.body, list) else [call.body])
                 if isinstance(i, dict)]
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
        results: list[DeviceResult | None] = [None] * len(changes)

        async def check(index: int) -> None:
            change = changes[index]
            if change.change_type == ACTIVATE_NEW_SERVICE:
                if change.carrier_request_id:
                    answer = (await self._poll_one(change.carrier_request_id, [change]))[0]
                    results[index] = answer if answer and answer.status == PROCESSED else None
                return
            results[index] = await self._check_line(change)

        await self._run_all(list(range(len(changes))), check)
        return results

    async def get_subscriber(self, subscriber_number: str) -> dict[str, Any]:
        """Subscriber detail (`GET` on the lineconfig path [I]); raises CarrierError."""
        call = await self.http.request(
            "GET", LINE_PATH.format(quote(subscriber_number, safe="")),
            description=f"Telegence GET line {subscriber_number}")
        return call.body if isinstance(call.body, dict) else {}

    async def _check_line(self, change: DeviceChange) -> DeviceResult | None:
        if not change.msisdn:
            return None
        try:
            body, values, held = line_update(change, self.default_reason_code)
        except ValueError:
            return None
        if body.get("effectiveDate", "") > telegence_date():
            return None  # a future-dated change cannot be seen in the line yet
        desc = f"Telegence GET line {change.msisdn} (already applied?)"
        try:
            call = await self.http.request("GET", LINE_PATH.format(quote(change.msisdn, safe="")),
                                           description=desc)
        except CarrierError:
            return None
        actual = characteristic_map(call.body)
        if not all(actual.get(k) == v for k, v in held.items()):
            return None
        detail = f"already in effect at Telegence: {_summary(held)}"
        if not _needs_billing(change):
            return _result(change, PROCESSED, detail, values, log=call.log)
        if self.billing is None:
            return _result(change, PROCESSED, f"{detail}; {NO_BILLING_ACCOUNT}", values,
                           log=call.log)
        log = list(call.log)
        services = await self.billing.line_services_hold(
            change.msisdn, description=values.get("username"),
            cost_center=values.get("cost_center"), log=log)
        if services is None:
            return None  # the re-send repeats the (idempotent) PATCH and then updates Rev.io
        return _result(change, PROCESSED, f"{detail}; and at Rev.io service "
                       f"{', '.join(map(str, services))}", values, log=log)

    async def _run_all(self, items: Sequence[Any], one: Callable[[Any], Awaitable[None]]) -> None:
        """Run `one` over the items with the account's concurrency (AMOP's 10 when unset)."""
        if not items:
            return
        conc = self.account.max_concurrency
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await one(item)

        workers = min(len(items), conc if conc > 0 else MAX_PARALLEL_REQUESTS)
        await asyncio.gather(*(worker() for _ in range(workers)))


def _needs_billing(change: DeviceChange) -> bool:
    """A username/cost-center edit of a line our database says has an active Rev.io service."""
    return change.change_type == EDIT_USERNAME_COST_CENTER and change.has_active_rev_service


def _summary(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _failure_detail(exc: CarrierError) -> str:
    if isinstance(exc, TransientCarrierError):
        return f"retries exhausted: {exc.message}"
    return str(exc) if isinstance(exc, BusinessCarrierError) else exc.message


def _shared_logs(log: list[LogEntry], members: list[DeviceChange], desc: str
                 ) -> list[list[LogEntry]]:
    """The first line of a batched request keeps the full exchange; the others a pointer to it,
    so a 200-line request body is not stored 200 times."""
    if not members:
        return []
    last = log[-1] if log else None
    note = LogEntry(f"{desc}: full exchange logged on device change {members[0].device_change_id}",
                    "", "", last.response_status if last else None,
                    last.has_errors if last else True)
    return [list(log)] + [[note] for _ in members[1:]]


def _result(change: DeviceChange, status: str, detail: str, new_values: dict | None = None, *,
            request_id: str | None = None, log: list[LogEntry] | None = None) -> DeviceResult:
    return DeviceResult(change.device_change_id, status, detail, dict(new_values or {}),
                        request_id, list(log or []))
