"""Client for Rev.io billing: creating a device's service line and its products when a device is
assigned to a customer that has a Rev customer id (CustomerAssignment, 5) or when a Rev service is
asked for directly (CreateRevService, 8); and, as the billing companion of a carrier whose change
must reach billing too (Telegence EditUsernameCostCenter), editing a line's service
(`edit_line_services`: description and cost-center custom field).

Wire format (reference/carriers.md section 6): HTTP Basic `user@clientCode:password` (the username
must not be an e-mail address) plus `Ocp-Apim-Subscription-Key`; lists
`{ok, has_more, record_count, records}` paged by `search.page_size` (max 500) / `search.page`;
creates answer 201 `{ok: true, id}`; PATCH takes JSON Patch as `application/json-patch+json`.
Limits: 500 calls/min per account (set `rate_per_second` ~8.3) and 150,000/day; a 429 carries
`{"statusCode":429,"message":"Rate limit is exceeded. Try again in N seconds."}` and the shared
layer's stated-wait hook (`http.stated_wait_seconds`) waits those N seconds. Rev.io calls get up to
5 retries (AMOP's number), whatever the account's `max_attempts` is below that.

Why creates are not retried blindly: a POST whose answer was lost (timeout, truncated body, 5xx)
may have created the service, and a second POST would bill the line twice. Each create attempt
after such a failure first looks for what the lost attempt may have made, and adopts it.

`account.extra` keys: `subscription_key` (required), `provider_id` (required; Rev provider the
services belong to), `service_type_id` (optional), `product_ids` (optional default products,
comma list), `product_rates` (optional `product_id:rate` comma list; without one Rev's catalog rate
applies [I]).

A service's cost center is a custom field [I: Rev tenants define their own custom fields; AMOP
finds the field labelled "Cost Center 1", else "Cost Center", and patches `/fields/<index>/value`].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

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
    WritesDisabledError,
)
from .http import CallResult, CarrierHttp
from .results import failure_detail
from .revio_wire import (
    MAX_PAGE_SIZE,
    QUOTA_CODE,
    REVIO_MAX_ATTEMPTS,
    SUPPORTED_CHANGE_TYPES,
    RevioAuth,
    RevioConfigError,
    RevioUpdateError,
    check_username,
    classify_revio_response,
    parse_id_list,
    parse_rates,
    rev_date_time,
    rev_id,
    revio_base_url,
    service_edit_ops,
    service_holds,
)

__all__ = ["RevioClient"]


class _Failed(Exception):
    """One device's refusal inside the flow, with the message to record."""


class RevioClient(CarrierAdapter):
    """CarrierAdapter for Rev.io: per device, find the number's active services, then create the
    service and its products when none stands in the way."""

    integration = Integration.REVIO

    def __init__(self, account: CarrierAccount) -> None:
        check_username(account.username)
        extra = {k.lower(): v for k, v in (account.extra or {}).items()}
        key = extra.get("subscription_key")
        if not key:
            raise RevioConfigError(
                "Rev.io needs a subscription key: set the credentials entry's "
                "SUBSCRIPTION_KEY (account.extra['subscription_key'])"
            )
        try:
            self.provider_id = int(extra["provider_id"])
            stype = extra.get("service_type_id")
            self.service_type_id = int(stype) if stype not in (None, "") else None
            self.default_products = parse_id_list(extra.get("product_ids"))
            self.rates = parse_rates(extra.get("product_rates"))
        except KeyError:
            raise RevioConfigError("Rev.io needs provider_id (the credentials entry's PROVIDER_ID)") from None
        except ValueError as exc:
            raise RevioConfigError(f"bad Rev.io setting: {exc}") from exc
        self.account = account
        tuned = dataclasses.replace(
            account,
            base_url=revio_base_url(account.base_url),
            max_attempts=max(account.max_attempts, REVIO_MAX_ATTEMPTS),
        )
        auth = RevioAuth(account.username, account.secret, key)
        self.http = CarrierHttp(tuned, auth, classify=classify_revio_response, redact=[key], label="Rev.io")
        # A row's reason is built from the carrier's answer, which may echo the request: masked with these.
        self._secrets = [account.secret, key]
        # Creates go through a single-attempt twin sharing the limiter and counters; `_create`
        # retries them itself, under `self.http`'s retry policy, with a look-up before each re-send.
        self._once = CarrierHttp(
            dataclasses.replace(tuned, max_attempts=1),
            auth,
            classify=classify_revio_response,
            redact=[key],
            label="Rev.io",
        )
        self._once.limiter = self.http.limiter
        self._once.stats = self.http.stats
        self._quota_message: str | None = None

    def supports(self, change_type: ChangeType) -> bool:
        """Rev.io applies customer assignment (service + products) and CreateRevService."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()
        await self._once.aclose()

    # -- reads ------------------------------------------------------------------------------------

    async def list_all(self, resource: str, log: list[LogEntry] | None = None, **search: Any) -> list[dict[str, Any]]:
        """Every record of `GET /v1/<resource>?search.<field>=...`, following `has_more` pages of
        500. Raises CarrierError; `log` (if given) collects every exchange."""
        records: list[dict[str, Any]] = []
        params = {f"search.{k}": str(v) for k, v in search.items()}
        page = 1
        while True:
            result = await self.http.request(
                "GET",
                resource,
                params={**params, "search.page_size": MAX_PAGE_SIZE, "search.page": page},
                description=f"Rev.io GET {resource} {_summary(search)} page {page}",
            )
            if log is not None:
                log.extend(result.log)
            body = result.body if isinstance(result.body, dict) else {}
            chunk = body.get("records") or []
            records.extend(r for r in chunk if isinstance(r, dict))
            if not body.get("has_more") or not chunk:
                return records
            page += 1

    async def active_services(self, number: str, log: list[LogEntry] | None = None) -> list[dict[str, Any]]:
        """ACTIVE services whose number is `number` [I: search fields `number`, `status`]."""
        return await self.list_all("Services", log, number=number, status="ACTIVE")

    async def patch_service_product(self, service_product_id: int, ops: list[dict[str, Any]]) -> CallResult:
        """`PATCH /v1/ServiceProduct/{id}` with JSON Patch ops, e.g.
        `[{"op": "replace", "path": "/quantity", "value": 2}]` (idempotent, so retried)."""
        if not self.account.write_enabled:
            raise WritesDisabledError(self._writes_off())
        return await self.http.request(
            "PATCH",
            f"ServiceProduct/{int(service_product_id)}",
            json_body=ops,
            description=f"Rev.io PATCH ServiceProduct {service_product_id}",
        )

    async def edit_line_services(
        self, number: str, *, description: str | None, cost_center: str | None, log: list[LogEntry]
    ) -> list[int]:
        """Give every ACTIVE service of `number` this description and cost center
        (`PATCH /v1/Services/{id}`, JSON Patch from `service_edit_ops`; a replace is idempotent,
        so transient failures are retried). Returns the ids of the services edited; every exchange
        is appended to `log`. Raises RevioUpdateError saying what was not done and why."""
        if not self.account.write_enabled:
            raise RevioUpdateError(self._writes_off())
        if self._quota_message:
            raise RevioUpdateError(f"not sent: {self._quota_message}")
        try:
            services = await self.active_services(number, log)
        except CarrierError as exc:
            log.extend(exc.log)
            raise RevioUpdateError(f"its service could not be looked up: {self._reason(exc)}") from None
        if not services:
            raise RevioUpdateError(f"Rev.io has no active service for number {number}")
        edited: list[int] = []
        for service in services:
            service_id = int(service["service_id"])
            try:
                ops = service_edit_ops(service, description, cost_center)
            except ValueError as exc:
                raise RevioUpdateError(str(exc), service_id=service_id) from None
            try:
                result = await self.http.request(
                    "PATCH",
                    f"Services/{service_id}",
                    json_body=ops,
                    description=f"Rev.io PATCH Services {service_id} (description, cost center)",
                )
            except CarrierError as exc:
                log.extend(exc.log)
                raise RevioUpdateError(self._reason(exc), service_id=service_id) from None
            log.extend(result.log)
            edited.append(service_id)
        return edited

    async def line_services_hold(
        self, number: str, *, description: str | None, cost_center: str | None, log: list[LogEntry]
    ) -> list[int] | None:
        """The ids of `number`'s ACTIVE services when there are some and every one already shows
        this description and cost center; None otherwise (or when Rev.io cannot be asked)."""
        try:
            services = await self.active_services(number, log)
        except CarrierError as exc:
            log.extend(exc.log)
            return None
        if not services or not all(service_holds(s, description, cost_center) for s in services):
            return None
        return [int(s["service_id"]) for s in services]

    def _reason(self, exc: CarrierError) -> str:
        """What a person reads for a failed call (Rev.io's refusal with its status, or that
        retries ran out); a spent daily quota is remembered so later calls are not even tried."""
        if isinstance(exc, BusinessCarrierError) and exc.code == QUOTA_CODE:
            self._quota_message = exc.message
        return failure_detail(exc, self._secrets)

    # -- writes -----------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Per device: refuse, adopt or create; failures become API_FAILED results."""
        if not self.account.write_enabled:
            raise WritesDisabledError(self._writes_off())
        return await self.http.map_bounded(changes, self._apply_one)

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """PROCESSED where an ACTIVE service for the number and customer exists with every target
        product; None otherwise (the re-send then adopts the service and adds missing products)."""
        return await self.http.map_bounded(changes, self._check_one)

    def _writes_off(self) -> str:
        return (
            f"writes are disabled for service provider {self.account.service_provider_id}; nothing was sent to Rev.io"
        )

    def _plan(self, change: DeviceChange) -> tuple[int, str, list[int]]:
        """(Rev customer id, number, product ids) or _Failed."""
        if change.change_type not in SUPPORTED_CHANGE_TYPES:
            raise _Failed(f"change type {change.change_type} is not applied through Rev.io")
        target = change.target or {}
        if not target.get("rev_customer_id"):
            raise _Failed(
                "the customer has no Rev.io customer id (rev_customer_id); this "
                "assignment is database-only and should not have been sent to Rev.io"
            )
        number = change.msisdn or change.iccid
        if not number:
            raise _Failed("device has neither MSISDN nor ICCID to use as the Rev service number")
        try:
            products = parse_id_list(target.get("product_ids")) or self.default_products
        except ValueError:
            raise _Failed(f"product_ids {target.get('product_ids')!r} are not integer ids") from None
        try:
            customer = rev_id(target["rev_customer_id"])
        except ValueError as exc:
            raise _Failed(f"rev_customer_id {exc}; nothing was sent to Rev.io") from None
        return customer, str(number), products

    async def _apply_one(self, change: DeviceChange) -> DeviceResult:
        log: list[LogEntry] = []
        service_id: int | None = None
        try:
            if self._quota_message:
                raise _Failed(f"not sent: {self._quota_message}")
            customer, number, products = self._plan(change)
            active = await self.active_services(number, log)
            mine = [s for s in active if str(s.get("customer_id")) == str(customer)]
            other = [s for s in active if s not in mine]
            if other:
                s = other[0]
                raise _Failed(
                    f"active Rev service line exists (service {s.get('service_id')} "
                    f"for customer {s.get('customer_id')}); disconnect it first"
                )
            if mine and change.change_type == ChangeType.CREATE_REV_SERVICE:
                s = mine[0]
                raise _Failed(
                    f"an active Rev service already exists for number {number} "
                    f"(service {s.get('service_id')} for customer {customer}); "
                    "not creating another"
                )
            if mine:
                service_id = int(mine[0]["service_id"])
                added = await self._add_products(service_id, customer, products, change, log)
                detail = f"already applied: active Rev service {service_id} for customer {customer}" + (
                    f"; added missing products {added}" if added else ""
                )
            else:
                service_id = await self._create_service(customer, number, change, log)
                added = await self._add_products(service_id, customer, products, change, log, existing=set())
                detail = f"created Rev service {service_id} for customer {customer}, number {number}" + (
                    f", products {added}" if added else ", no products"
                )
        except _Failed as exc:
            return _result(change, DeviceChangeStatus.API_FAILED, str(exc), log, service_id)
        except CarrierError as exc:
            log.extend(e for e in exc.log if e not in log)
            text = self._reason(exc)
            if service_id is not None:
                text = f"Rev service {service_id} exists but a product was not added: {text}"
            return _result(change, DeviceChangeStatus.API_FAILED, text, log, service_id)
        except (KeyError, TypeError, ValueError) as exc:  # a record without the fields we read
            return _result(
                change, DeviceChangeStatus.API_FAILED, f"unexpected answer from Rev.io: {exc!r}", log, service_id
            )
        return _result(change, DeviceChangeStatus.PROCESSED, detail, log, service_id, _new_values(change))

    async def _check_one(self, change: DeviceChange) -> DeviceResult | None:
        log: list[LogEntry] = []
        try:
            customer, number, products = self._plan(change)
            active = await self.active_services(number, log)
            mine = [s for s in active if str(s.get("customer_id")) == str(customer)]
            if not mine:
                return None
            service_id = int(mine[0]["service_id"])
            if set(products) - await self._products_of(service_id, log):
                return None
        except (_Failed, CarrierError, KeyError, TypeError, ValueError):
            return None  # cannot tell; the re-send records the outcome
        return _result(
            change,
            DeviceChangeStatus.PROCESSED,
            f"already in effect at Rev.io: service {service_id} for customer {customer}",
            log,
            service_id,
            _new_values(change),
        )

    # -- creates ----------------------------------------------------------------------------------

    async def _create_service(self, customer: int, number: str, change: DeviceChange, log: list[LogEntry]) -> int:
        when = rev_date_time(change.target.get("effective_date"))
        body: dict[str, Any] = {
            "customer_id": customer,
            "provider_id": self.provider_id,
            "number": number,
            "effective_date": when,
            "activated_date": when,
        }
        if self.service_type_id is not None:
            body["service_type_id"] = self.service_type_id

        async def find() -> int | None:
            mine = [s for s in await self.active_services(number, log) if str(s.get("customer_id")) == str(customer)]
            return int(mine[0]["service_id"]) if mine else None

        return await self._create("Services", body, find, log, f"service for {number}")

    async def _products_of(self, service_id: int, log: list[LogEntry]) -> set[int]:
        """Product ids on the service that are not DENIED or DISCONNECTED."""
        records = await self.list_all("ServiceProduct", log, service_id=service_id)
        return {
            int(r["product_id"])
            for r in records
            if r.get("product_id") is not None and str(r.get("status", "")).upper() not in ("DENIED", "DISCONNECTED")
        }

    async def _add_products(
        self,
        service_id: int,
        customer: Any,
        products: list[int],
        change: DeviceChange,
        log: list[LogEntry],
        existing: set[int] | None = None,
    ) -> list[int]:
        """Create the products the service lacks (`existing` given for a service just created,
        which has none, saving a look-up); returns the ids created."""
        if not products:
            return []
        if existing is None:
            existing = await self._products_of(service_id, log)
        missing = [p for p in dict.fromkeys(products) if p not in existing]
        when = rev_date_time(change.target.get("effective_date"))
        for pid in missing:
            body: dict[str, Any] = {
                "customer_id": customer,
                "service_id": service_id,
                "product_id": pid,
                "quantity": 1,
                "effective_date": when,
            }
            if pid in self.rates:
                body["rate"] = self.rates[pid]

            async def find(pid: int = pid) -> int | None:
                return pid if pid in await self._products_of(service_id, log) else None

            await self._create("ServiceProduct", body, find, log, f"product {pid} on service {service_id}")
        return missing

    async def _create(
        self,
        resource: str,
        body: dict[str, Any],
        find: Callable[[], Awaitable[int | None]],
        log: list[LogEntry],
        what: str,
    ) -> int:
        """POST a create with retries under the account's retry policy (`CarrierHttp.retrying`:
        stated waits, else the fixed interval); before re-sending after an answer that may hide a
        success (timeout, truncated body, 5xx), `find` looks for the record and it is adopted instead."""
        unsure = False
        async for attempt in self.http.retrying():
            with attempt:
                if unsure:
                    found = await find()
                    if found is not None:
                        return found
                try:
                    result = await self._once.request(
                        "POST", resource, json_body=body, description=f"Rev.io POST {resource} ({what})"
                    )
                except CarrierError as exc:
                    log.extend(exc.log)
                    exc.log = []
                    # A 429 is refused by the gateway before Rev.io sees the call.
                    unsure = unsure or (isinstance(exc, TransientCarrierError) and not exc.over_limit)
                    raise
                log.extend(result.log)
                new_id = result.body.get("id") if isinstance(result.body, dict) else None
                if new_id is None:
                    unsure = True
                    raise TransientCarrierError(f"Rev.io created {what} without an id in the answer")
                return int(new_id)
        raise AssertionError("unreachable")  # pragma: no cover


def _new_values(change: DeviceChange) -> dict[str, Any]:
    """Device columns Rev.io now backs: an active Rev service line, and the customer for an
    assignment (archival and later reassignments check the service flag)."""
    values: dict[str, Any] = {"has_active_rev_service": True}
    if change.change_type == ChangeType.CUSTOMER_ASSIGNMENT and "customer_id" in change.target:
        values["customer_id"] = change.target["customer_id"]
    return values


def _summary(search: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in search.items())


def _result(
    change: DeviceChange,
    status: DeviceChangeStatus,
    detail: str,
    log: list[LogEntry],
    service_id: int | None,
    values: dict[str, Any] | None = None,
) -> DeviceResult:
    return DeviceResult(
        change.device_change_id,
        status,
        detail,
        dict(values or {}),
        None if service_id is None else str(service_id),
        list(log),
    )
