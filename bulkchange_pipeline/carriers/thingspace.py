"""Client for Verizon ThingSpace Connectivity Management (M2M): batched, asynchronous actions whose
outcome arrives later as one CarrierService callback per device. This module holds the calls,
batching, pacing and what each answer means for a device row; the wire format (paths, fault
codes, answer classification, callback parsing) is in `thingspace_wire.py`, so it can be read and
tested without I/O, and the token/session state with its renewal in `thingspace_auth.py`.

Behaviour (reference/carriers.md section 2):
- auth: an OAuth client-credentials token (`POST /api/ts/v1/oauth2/token`, Basic
  client_id:client_secret, refreshed before it expires) plus an M2M session
  (`POST /api/m2m/v1/session/login` -> `sessionToken`, sent as `VZ-M2M-Token`). A session
  expires when idle; on the session error the client logs in again once and repeats the call, so
  no device fails because of it. Gateway fault 900901 gets one token refresh, then is reported as
  a configuration error.
- actions answer `{"requestId"}` at once; rows stay PROCESSING until `parse_callback` (or `poll`)
  settles them. Changes with the same action and parameters share one request of up to 10,000
  devices; activations are also paced to the account's 100 requests/min.
- synchronous refusals are `{"errorCode": "<Service>.<CODE>", "errorMessage"}`; codes are
  matched with the service prefix stripped, never on the message.

`account.extra` keys: `client_id`, `client_secret` (OAuth app), `account_name` (the billing
account, e.g. 0000123456-00001; required), optional `service_plan` and `mdn_zip_code` (activation
defaults), `reason_code` (deactivation, default FF), `callback_username`/`callback_password`
(what ThingSpace echoes in callbacks), `activate_requests_per_minute` (default 100),
`service_type` (the `{serviceType}` of the device-id change path: 4G, the default, or 3G; the
simulator serves no other spelling).

An ICCID/IMEI swap is `PUT /api/m2m/v1/devices/{serviceType}/actions/deviceId` with a
`ChangeDeviceIdRequest` body, as Verizon documents it and its SDK sends it; older documents spell
it `/devices/actions/deviceid`, which the simulator refuses so the client cannot drift back.

`accountName` in bodies (issue 17): Verizon's API description, as its APIMatic-generated SDKs
publish it (github.com/sdks-io/verizon-apis-php-sdk and -ruby-sdk, doc/models:
CarrierActivateRequest, CarrierDeactivateRequest, CarrierActionsRequest, ServicePlanUpdateRequest,
AccountDeviceListRequest), makes it optional on activate, deactivate, suspend, restore, plan change
and device list, and ChangeDeviceIdRequest has no such field. The sources disagree on deactivate:
the dotnet SDK's carrier-deactivate-request.md (github.com/sdks-io/verizon-apis-dotnet-sdk, since
commit 2cb1b96 of 2024-11-15; Optional at 063c179 of 2023-07-12) marks AccountName, Devices and
ReasonCode Required, while Verizon's own pages list accountName as optional.
Choice: accountName stays optional; `devices` and `reasonCode` (FF, the only valid code) are
required on deactivate, which the simulator enforces and this client always meets (it sends
`reasonCode` on every deactivation, `etfWaiver` as a JSON boolean and lower-case `kind`s). We send
accountName wherever it is documented, so a request can only act on the configured billing account
(a UWS user may reach several; a wrong one is refused as AccountNotFound instead of acting
elsewhere), and never on the device-id change. The callback and request-status paths carry it as
`{accountName}`.

Device lists (`POST devices/actions/list`, used by `_lookup` for the reconcile checks and by
`list_devices` for inventory) page as ThingSpace does: `maxNumberOfDevices` (100, the documented
maximum) and `largestDeviceIdSeen` (the `DeviceId` extended attribute of the last device of the
previous page, as AMOP's AltaworxThingSpaceAWSGetDevices reads it) until `hasMoreData` is false.
The sources disagree here too: the SDK's AccountDeviceListRequest constrains `largestDeviceIdSeen`
to 0..100 like the page size, while AMOP sends real DeviceIds, far above 100. Choice (recorded in
thingspace.yaml): we follow AMOP, and only the page size keeps the 100 cap.

`aclose()` ends the M2M session (`POST /session/logout`); a failed logout is logged, never raised.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ..domain import ChangeType, DeviceChangeStatus, Integration
from .base import (
    CarrierAccount,
    CarrierAdapter,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    require_writes,
)
from .http import CallResult, CarrierHttp
from .pacing import RateLimiter
from .redaction import basic_token, redact_text
from .results import failure_detail
from .thingspace_auth import ThingSpaceAuth
from .thingspace_wire import (
    ACTION_STATE,
    LIST_PAGE_SIZE,
    M2M,
    MAX_DEVICES_PER_REQUEST,
    STATUS_WORDS,
    Plan,
    classify_thingspace_response,
    device_number,
    parse_thingspace_callback,
    state_and_plan,
)

__all__ = ["ACCEPTED", "SUPPORTED_CHANGE_TYPES", "ThingSpaceClient"]

ACCEPTED = "accepted by ThingSpace, waiting for callback"
SUPPORTED_CHANGE_TYPES = frozenset(
    {ChangeType.STATUS_UPDATE, ChangeType.CARRIER_RATE_PLAN_CHANGE, ChangeType.CHANGE_ICCID_AND_IMEI}
)
UNLIMITED_WORKERS = 16  # devices worked on at once when the account sets no concurrency limit


class ThingSpaceClient(CarrierAdapter):
    """CarrierAdapter for ThingSpace: batched actions, results by callback or poll."""

    integration = Integration.THINGSPACE
    callback_name = "thingspace"
    parse_callback = staticmethod(parse_thingspace_callback)

    def __init__(
        self,
        account: CarrierAccount,
        *,
        max_devices_per_request: int = MAX_DEVICES_PER_REQUEST,
        token_margin_seconds: float = 60.0,
    ) -> None:
        extra = {str(k).lower(): v for k, v in (account.extra or {}).items()}
        self.account = account
        self.account_name = str(extra.get("account_name") or "")
        self.service_plan = extra.get("service_plan")
        self.mdn_zip_code = extra.get("mdn_zip_code")
        self.reason_code = str(extra.get("reason_code") or "FF")
        self.callback_username = extra.get("callback_username")
        self.callback_password = extra.get("callback_password")
        self.max_devices_per_request = max_devices_per_request
        self.service_type = str(extra.get("service_type") or "4G")
        per_minute = float(extra.get("activate_requests_per_minute") or 100.0)
        self.activate_limiter = RateLimiter(per_minute / 60.0)
        self.auth = ThingSpaceAuth(
            str(extra.get("client_id") or ""),
            str(extra.get("client_secret") or ""),
            account.username,
            account.secret,
            token_margin_seconds=token_margin_seconds,
        )
        root = account.base_url.rstrip("/").removesuffix("/api/m2m/v1")
        secrets = [
            self.auth.client_secret,
            basic_token(self.auth.client_id, self.auth.client_secret),
            self.callback_password,
            self.callback_username,
        ]
        self.http = CarrierHttp(
            dataclasses.replace(account, base_url=root),
            self.auth,
            classify=classify_thingspace_response,
            redact=[s for s in secrets if s],
            label="ThingSpace",
            unlimited_workers=UNLIMITED_WORKERS,
        )
        # A row's reason is built from the carrier's answer, which may echo the request: masked with these.
        self._secrets = [account.secret, *secrets]

    def supports(self, change_type: ChangeType) -> bool:
        """Status changes, carrier plan changes and ICCID/IMEI changes go through the API."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        """End the carrier session we opened (a failed logout is logged, not raised), then close
        the connection pool."""
        try:
            await self.auth.logout(self.http)
        finally:
            await self.http.aclose()

    # -- building requests ------------------------------------------------------------------------

    @staticmethod
    def device_ids(change: DeviceChange) -> list[dict[str, str]]:
        """The ids ThingSpace knows the device by (4G: ICCID and IMEI)."""
        ids = [
            {"kind": k, "id": v}
            for k, v in (("iccid", change.iccid), ("imei", change.imei), ("mdn", change.msisdn), ("eid", change.eid))
            if v
        ]
        if not ids:
            raise ValueError("no device identifier (ICCID, IMEI, MDN or EID) to send")
        return ids

    def _plan(self, change: DeviceChange) -> Plan:
        """The action for a change; ValueError if it cannot be expressed."""
        target = change.target or {}
        ids = self.device_ids(change)
        if change.change_type == ChangeType.STATUS_UPDATE:
            word = str(target.get("status") or "").strip().lower().replace("_", " ")
            wanted = STATUS_WORDS.get(word)
            if wanted is None:
                raise ValueError(
                    f"ThingSpace cannot set status {target.get('status')!r} (active, restore, suspend, deactive)"
                )
            if wanted == "deactive":
                return Plan(
                    "deactivate",
                    {"reasonCode": str(target.get("reason_code") or self.reason_code), "etfWaiver": False},
                    ids,
                )
            if wanted == "suspend":
                return Plan("suspend", {}, ids)
            current = str(target.get("current_status") or "").lower() or None
            if wanted == "restore" or current == "suspend":
                return Plan("restore", {}, ids)
            plan = target.get("carrier_rate_plan") or target.get("service_plan") or self.service_plan
            params = {"servicePlan": plan}
            zip_code = target.get("service_zip_code") or self.mdn_zip_code
            if zip_code:
                params["mdnZipCode"] = str(zip_code)
            return Plan("activate", params, ids, needs_lookup=current is None or not plan)
        if change.change_type == ChangeType.CARRIER_RATE_PLAN_CHANGE:
            if not target.get("carrier_rate_plan"):
                raise ValueError("no carrier_rate_plan to send")
            return Plan("plan", {"servicePlan": str(target["carrier_rate_plan"])}, ids)
        if change.change_type == ChangeType.CHANGE_ICCID_AND_IMEI:
            to = [{"kind": k, "id": str(target[f"new_{k}"])} for k in ("iccid", "imei") if target.get(f"new_{k}")]
            if not to:
                raise ValueError("no new_iccid or new_imei to send")
            option = {1: "ChangeICCID" if to[0]["kind"] == "iccid" else "ChangeIMEI", 2: "ChangeIMEIandICCID"}[len(to)]
            return Plan("deviceid", {"change4gOption": option, "deviceIdsTo": to}, ids)
        raise ValueError(f"change type {change.change_type} is not applied through ThingSpace")

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Send the changes grouped into as few requests as ThingSpace allows; one PROCESSING
        result per accepted change (with the requestId), API_FAILED for refusals."""
        require_writes(self.account, "ThingSpace")
        results: list[DeviceResult | None] = [None] * len(changes)
        plans: dict[int, Plan] = {}
        for i, change in enumerate(changes):
            try:
                plans[i] = self._plan(change)
            except ValueError as exc:
                results[i] = _failed(change, str(exc))
        if plans and not self.account_name:
            for i in plans:
                results[i] = _failed(
                    changes[i], "ThingSpace needs extra account_name (BULKCHANGE_CRED_<NAME>_ACCOUNT_NAME)"
                )
            return results  # type: ignore[return-value]
        await self._resolve_activations(changes, plans, results)
        groups: dict[str, list[int]] = {}
        for i, plan in plans.items():
            key = json.dumps([plan.action, plan.params], sort_keys=True)
            if plan.action == "deviceid":
                key += f"#{i}"  # one device per identifier change
            groups.setdefault(key, []).append(i)
        batches = [
            (plans[idx[0]], idx[s : s + self.max_devices_per_request])
            for idx in groups.values()
            for s in range(0, len(idx), self.max_devices_per_request)
        ]

        async def send(batch: tuple[Plan, list[int]]) -> None:
            plan, idx = batch
            for i, result in zip(
                idx, await self._send(plan, [changes[i] for i in idx], [plans[i].ids for i in idx]), strict=True
            ):
                results[i] = result

        await self.http.map_bounded(batches, send)
        return results  # type: ignore[return-value]

    async def _resolve_activations(
        self, changes: Sequence[DeviceChange], plans: dict[int, Plan], results: list[DeviceResult | None]
    ) -> None:
        """For "active" targets whose current state or plan is unknown, read the device: a
        suspended one is restored, a plan-less activation reuses the device's plan."""
        todo = [i for i, p in plans.items() if p.needs_lookup]

        async def one(i: int) -> None:
            found, log = await self._lookup(changes[i])
            plan = plans[i]
            state, current_plan = state_and_plan(found)
            if state == "suspend":
                plans[i] = Plan("restore", {}, plan.ids)
            elif not plan.params.get("servicePlan"):
                if not current_plan:
                    del plans[i]
                    results[i] = _failed(
                        changes[i],
                        "activation needs a service plan: give carrier_rate_plan or set extra service_plan",
                        log,
                    )
                    return
                plan.params["servicePlan"] = current_plan

        await self.http.map_bounded(todo, one)

    async def _send(
        self, plan: Plan, changes: list[DeviceChange], ids: list[list[dict[str, str]]]
    ) -> list[DeviceResult]:
        body: dict[str, Any]
        if plan.action == "deviceid":
            body = {"deviceIds": ids[0], **plan.params}  # ChangeDeviceIdRequest has no accountName
            method, path = "PUT", M2M + f"devices/{quote(self.service_type, safe='')}/actions/deviceId"
        else:
            body = {"devices": [{"deviceIds": d} for d in ids], "accountName": self.account_name, **plan.params}
            method = "PUT" if plan.action == "plan" else "POST"
            path = M2M + "devices/actions/" + plan.action
        if plan.action == "activate":
            await self.activate_limiter.acquire()
        desc = f"ThingSpace {plan.action} ({len(changes)} device{'s' * (len(changes) != 1)})"
        try:
            result = await self.auth.call(self.http, method, path, body, desc)
        except CarrierError as exc:
            return [
                _failed(c, failure_detail(exc, self._secrets), _shared_log(exc.log, k, changes))
                for k, c in enumerate(changes)
            ]
        rid = result.body.get("requestId") if isinstance(result.body, dict) else None
        if not rid:
            return [
                _failed(c, "ThingSpace answered without a requestId", _shared_log(result.log, k, changes))
                for k, c in enumerate(changes)
            ]
        return [
            DeviceResult(
                c.device_change_id,
                DeviceChangeStatus.PROCESSING,
                ACCEPTED,
                {},
                str(rid),
                _shared_log(result.log, k, changes),
            )
            for k, c in enumerate(changes)
        ]

    # -- reads: poll and already_applied ------------------------------------------------------------

    async def _lookup(
        self, change: DeviceChange, prefer_new: bool = False
    ) -> tuple[dict[str, Any] | None, list[LogEntry]]:
        """The device as `devices/actions/list` reports it (None if unknown or unreadable)."""
        target = change.target or {}
        ids = [
            {"kind": k, "id": str(target[f"new_{k}"])}
            for k in ("iccid", "imei")
            if prefer_new and target.get(f"new_{k}")
        ] or self.device_ids(change)
        try:
            devices, log = await self._list(
                {"deviceId": ids[0]}, f"ThingSpace device list {ids[0]['kind']} {ids[0]['id']}"
            )
        except CarrierError as exc:
            return None, exc.log
        return (devices[0] if devices else None), log

    async def _list(self, criteria: dict[str, Any], description: str) -> tuple[list[dict[str, Any]], list[LogEntry]]:
        """Every device `devices/actions/list` returns for `criteria`, page after page until
        `hasMoreData` is false; raises CarrierError (with the log) if a page fails or the answer
        says more follow but gives no DeviceId to continue from."""
        devices: list[dict[str, Any]] = []
        log: list[LogEntry] = []
        after = 0
        while True:
            body = {
                "accountName": self.account_name,
                **criteria,
                "maxNumberOfDevices": LIST_PAGE_SIZE,
                "largestDeviceIdSeen": after,
            }
            try:
                got = await self.auth.call(self.http, "POST", M2M + "devices/actions/list", body, description)
            except CarrierError as exc:
                exc.log = log + exc.log
                raise
            log += got.log
            answer = got.body if isinstance(got.body, dict) else {}
            page = [d for d in answer.get("devices") or [] if isinstance(d, dict)]
            devices += page
            if answer.get("hasMoreData") is not True:
                return devices, log
            last = device_number(page[-1]) if page else None
            if last is None or last <= after:
                raise TransientCarrierError(
                    "ThingSpace device list says hasMoreData but gives no larger DeviceId to continue from", log=log
                )
            after = last

    async def list_devices(self) -> list[dict[str, Any]]:
        """Every device of the billing account as `devices/actions/list` describes it (for an
        inventory sync), all pages; raises CarrierError if the listing cannot be completed."""
        devices, _log = await self._list({}, "ThingSpace device list")
        return devices

    async def _confirm(self, change: DeviceChange) -> DeviceResult | None:
        """PROCESSED if the carrier's device now holds the change's target, else None."""
        try:
            plan = self._plan(change)
        except ValueError:
            return None
        found, log = await self._lookup(change, prefer_new=plan.action == "deviceid")
        if found is None:
            return None
        state, service_plan = state_and_plan(found)
        if plan.action in ACTION_STATE and state == ACTION_STATE[plan.action]:
            values: dict[str, Any] = {"status": state}
        elif plan.action == "plan" and service_plan == plan.params["servicePlan"]:
            values = {"carrier_rate_plan": service_plan}
        elif plan.action == "deviceid" and all(
            {"kind": t["kind"], "id": t["id"]} in found.get("deviceIds", []) for t in plan.params["deviceIdsTo"]
        ):
            values = {t["kind"]: t["id"] for t in plan.params["deviceIdsTo"]}
        else:
            return None
        return DeviceResult(
            change.device_change_id,
            DeviceChangeStatus.PROCESSED,
            f"ThingSpace device holds the target ({_fmt(values)})",
            values,
            change.carrier_request_id,
            log,
        )

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """For rows a crash left PROCESSING before a requestId was stored: PROCESSED if the
        device already holds the target, else None (the caller re-sends)."""
        return await self.http.map_bounded(changes, self._confirm)

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Settle rows whose callback never came: PROCESSED if the device holds the target;
        API_FAILED if a single-device request's status says Failed; None while unknown."""
        shared: dict[str | None, int] = {}
        for c in changes:
            shared[c.carrier_request_id] = shared.get(c.carrier_request_id, 0) + 1

        async def one(change: DeviceChange) -> DeviceResult | None:
            found = await self._confirm(change)
            rid = change.carrier_request_id
            if found is not None or not rid or shared[rid] > 1:
                return found
            try:
                got = await self.auth.call(
                    self.http,
                    "GET",
                    f"{M2M}accounts/{self.account_name}/requests/{rid}/status",
                    description=f"ThingSpace request status {rid}",
                )
            except CarrierError:
                return None  # bulk request or unknown: only a callback can tell
            if isinstance(got.body, dict) and got.body.get("status") == "Failed":
                return DeviceResult(
                    change.device_change_id,
                    DeviceChangeStatus.API_FAILED,
                    f"ThingSpace reports request {rid} Failed",
                    {},
                    rid,
                    got.log,
                )
            return None

        return await self.http.map_bounded(changes, one)

    # -- callbacks (read by `parse_callback`, the class's `parse_thingspace_callback`) ------------

    async def register_callback(
        self, url: str | None = None, username: str | None = None, password: str | None = None
    ) -> CallResult:
        """Register our CarrierService listener (`POST /callbacks/{accountName}`); by default at
        `callback_base_url + /callbacks/thingspace` with the extra callback credentials."""
        url = url or f"{(self.account.callback_base_url or '').rstrip('/')}/callbacks/{self.callback_name}"
        body = {"name": "CarrierService", "url": url}
        for key, value in (
            ("username", username or self.callback_username),
            ("password", password or self.callback_password),
        ):
            if value:
                body[key] = str(value)
        result = await self.auth.call(
            self.http,
            "POST",
            f"{M2M}callbacks/{self.account_name}",
            body,
            "ThingSpace register CarrierService callback",
        )
        extra = [s for s in (password, username) if s]  # an explicit password is not pre-registered
        result.log = [dataclasses.replace(e, request_text=redact_text(e.request_text, extra)) for e in result.log]
        return result


def _shared_log(log: list[LogEntry], k: int, changes: list[DeviceChange]) -> list[LogEntry]:
    """The full exchange for the first device of a request; a pointer for the others, so a
    10,000-device body is stored once, not 10,000 times."""
    if k == 0 or len(changes) == 1:
        return list(log)
    first = changes[0].device_change_id
    return [
        LogEntry(
            e.description,
            f"(one request for {len(changes)} devices; full text logged with device change {first})",
            e.response_text,
            e.response_status,
            e.has_errors,
        )
        for e in log
    ]


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _failed(change: DeviceChange, detail: str, log: list[LogEntry] | None = None) -> DeviceResult:
    return DeviceResult(
        change.device_change_id, DeviceChangeStatus.API_FAILED, detail, {}, change.carrier_request_id, list(log or [])
    )
