"""ThingSpace's business rules as the simulator enforces them: device states and what each action
does to them, request-body checks, error and fault codes, and the wire shapes of devices and
callbacks.

Pure functions and tables, no HTTP and no threads, so the rules can be read (and unit-tested) on
their own and the HTTP app stays about transport.

Codes marked [I] are the simulator's own inference in ThingSpace's `<Service>.<CATEGORY>.<Detail>`
style; carriers.md names only AccountNotFound, DeviceAlreadyActive, InvalidCharacter,
UnexpectedError and Device.Account.Invalid. The session-expired code is not public at all [I].

Values are checked, never filled in or coerced (issue 17): deactivate needs `reasonCode` FF and a
JSON boolean `etfWaiver`, `mdnZipCode` is five digits, an identifier's `kind` is lower case, and the
device-id change serves the documented service types only (thingspace.yaml records the sources).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .jasper_rules import luhn_check_digit, make_iccids

SERVICE = "UnifiedWebService"
CARRIER_NAME = "Verizon Wireless"

# -- synchronous errors: HTTP 400 {"errorCode", "errorMessage"} -----------------------------------
ERR_ACCOUNT_NOT_FOUND = f"{SERVICE}.REQUEST_FAILED.AccountNotFound"
ERR_INVALID_REQUEST = f"{SERVICE}.INPUT_INVALID.Request.InvalidCharacter"
ERR_MISSING_FIELD = f"{SERVICE}.INPUT_INVALID.Request.MissingField"  # [I]
ERR_TOO_MANY_DEVICES = f"{SERVICE}.INPUT_INVALID.Devices.MaxLimitExceeded"  # [I]
ERR_SERVICE_PLAN = f"{SERVICE}.INPUT_INVALID.ServicePlan.Invalid"  # [I]
ERR_SESSION_EXPIRED = f"{SERVICE}.REQUEST_FAILED.SessionToken.Expired"  # [I]
ERR_SESSION_INVALID = f"{SERVICE}.REQUEST_FAILED.SessionToken.Invalid"  # [I]
ERR_LOGIN_FAILED = f"{SERVICE}.REQUEST_FAILED.Login.InvalidCredentials"  # [I]
ERR_LOGIN_LOCKED = f"{SERVICE}.REQUEST_FAILED.Login.ContactLocked"  # [I]
ERR_REQUEST_NOT_FOUND = f"{SERVICE}.REQUEST_FAILED.RequestNotFound"  # [I]
ERR_STATUS_NOT_SUPPORTED = f"{SERVICE}.REQUEST_FAILED.RequestStatus.BulkNotSupported"  # [I]
ERR_CALLBACK_NAME = f"{SERVICE}.INPUT_INVALID.Callback.ServiceName"  # [I]
ERR_UNKNOWN_FIELD = f"{SERVICE}.INPUT_INVALID.Request.UnknownField"  # [I]
ERR_INVALID_VALUE = f"{SERVICE}.INPUT_INVALID.Request.InvalidValue"  # [I] reasonCode, etfWaiver, mdnZipCode
ERR_SERVICE_TYPE = f"{SERVICE}.INPUT_INVALID.ServiceType.Invalid"  # [I] {serviceType} of the device-id change

# -- gateway (WSO2) faults: {"fault": {"code", "message", "description"}} -------------------------
GW_INVALID_CREDENTIALS = 900901
GW_MISSING_CREDENTIALS = 900902
GW_THROTTLED = 900802  # WSO2's "Message throttled out" [I: that ThingSpace uses it]
GW_BACKEND = 101503  # WSO2's "Error connecting to the back end" (injected 5xx)
GW_NO_RESOURCE = 900906  # WSO2's "No matching resource found" (carriers.md: wrong path -> 400)

# -- device-level faults, delivered as fault callbacks ---------------------------------------------
F_ALREADY_ACTIVE = f"{SERVICE}.REQUEST_FAILED.DeviceAlreadyActive"
F_ALREADY_SUSPENDED = f"{SERVICE}.REQUEST_FAILED.DeviceAlreadySuspended"  # [I]
F_ALREADY_DEACTIVE = f"{SERVICE}.REQUEST_FAILED.DeviceAlreadyDeactive"  # [I]
F_STATE_INVALID = f"{SERVICE}.REQUEST_FAILED.DeviceStateInvalid"  # [I]
F_NOT_FOUND = f"{SERVICE}.REQUEST_FAILED.DeviceNotFound"  # [I]
F_PLAN_LIMIT = f"{SERVICE}.REQUEST_FAILED.ServicePlanChangeLimitExceeded"  # [I]
F_SUSPENDED = f"{SERVICE}.REQUEST_FAILED.DeviceSuspended"  # [I]
F_ID_IN_USE = f"{SERVICE}.REQUEST_FAILED.DeviceIdAlreadyExists"  # [I]
F_NO_MDN = f"{SERVICE}.REQUEST_FAILED.DeviceHasNoMdn"  # [I]

ACTIVE, DEACTIVE, SUSPEND, PRE_ACTIVE, PENDING = ("active", "deactive", "suspend", "pre-active", "pending activation")
STATES = frozenset({ACTIVE, DEACTIVE, SUSPEND, PRE_ACTIVE, PENDING})
STATUS_ACTIONS = ("activate", "deactivate", "suspend", "restore")
ACTIONS = frozenset({*STATUS_ACTIONS, "plan", "deviceid"})
CHANGE_4G_OPTIONS = {"ChangeICCID": ("iccid",), "ChangeIMEI": ("imei",), "ChangeIMEIandICCID": ("iccid", "imei")}
ID_KINDS = frozenset({"iccid", "imei", "mdn", "msisdn", "meid", "esn", "eid"})  # lower case only
# `{serviceType}` of `PUT /devices/{serviceType}/actions/deviceId`: Verizon's page changes "the
# identifier of a 3G or 4G device"; the SDKs name no values ("Identifier type") [I].
SERVICE_TYPES = frozenset({"4G", "3G"})
REASON_CODE = "FF"  # "Currently the only valid reason code is FF" (CarrierDeactivateRequest)
_ZIP = re.compile(r"[0-9]{5}")
# Callback `deviceResponse` member per action ("activateResponse" is from AMOP's model [C];
# the others follow its pattern [I]).
RESPONSE_KEY = {
    "activate": "activateResponse",
    "deactivate": "deactivateResponse",
    "suspend": "suspendResponse",
    "restore": "restoreResponse",
    "plan": "changeServicePlanResponse",
    "deviceid": "changeDeviceIdResponse",
}
PLAN_CHANGES_PER_MONTH = 4
# `devices/actions/list` paging: `maxNumberOfDevices` is constrained to 0..100 in Verizon's API
# description as the APIMatic SDKs publish it (AccountDeviceListRequest); 0 is refused here (a page
# of nothing never ends) and an absent value gets the largest page [I].
LIST_PAGE_MAX = 100

# state -> action -> (new state, fault code when refused). The same-state answer is the
# "already ..." fault, which a retried request receives: the device holds the target.
# Deactivating a suspended or pending device is allowed (domain/transitions.py agrees).
_MOVES: Mapping[str, Mapping[str, str]] = {
    ACTIVE: {"deactivate": DEACTIVE, "suspend": SUSPEND},
    SUSPEND: {"restore": ACTIVE, "deactivate": DEACTIVE},
    DEACTIVE: {"activate": PENDING},
    PRE_ACTIVE: {"activate": PENDING},
    PENDING: {"deactivate": DEACTIVE},
}
_ALREADY = {
    ("activate", ACTIVE): F_ALREADY_ACTIVE,
    ("restore", ACTIVE): F_ALREADY_ACTIVE,
    ("activate", PENDING): F_ALREADY_ACTIVE,
    ("suspend", SUSPEND): F_ALREADY_SUSPENDED,
    ("deactivate", DEACTIVE): F_ALREADY_DEACTIVE,
}


class Refusal(Exception):
    """A synchronous business refusal: HTTP status and ThingSpace's {errorCode, errorMessage}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return {"errorCode": self.code, "errorMessage": self.message}


def gateway_fault(code: int, message: str, description: str) -> dict[str, Any]:
    """The WSO2 gateway's error body (code as a string, as gateways serialise it)."""
    return {"fault": {"code": str(code), "message": message, "description": description}}


@dataclass
class Decision:
    """What one action does to one device: `edits` to apply when `fault` is None."""

    fault: str | None = None
    faultstring: str = ""
    edits: dict[str, Any] = field(default_factory=dict)
    counts_plan_change: bool = False


def _fault(code: str, text: str) -> Decision:
    return Decision(fault=code, faultstring=f"REQUEST_FAILED. {text}")


def decide(
    action: str,
    device: Mapping[str, Any],
    params: Mapping[str, Any],
    plan_changes_this_month: int,
    id_owner: Any = None,
) -> Decision:
    """The outcome of `action` on `device` (a simulator record). `id_owner(kind, id)` tells
    whether a new identifier already belongs to another device (for the device-id change)."""
    state = device["state"]
    if action in STATUS_ACTIONS:
        if (action, state) in _ALREADY:
            return _fault(_ALREADY[(action, state)], f"Device is already {state}")
        new = _MOVES.get(state, {}).get(action)
        if new is None:
            return _fault(F_STATE_INVALID, f"Device in state {state} cannot be {action}d")
        edits: dict[str, Any] = {"state": new}
        if action == "activate":
            edits["servicePlan"] = params.get("servicePlan") or device.get("servicePlan")
            if not device.get("mdn"):
                edits["mdn"] = "1" + str(device["iccid"])[-10:]
        return Decision(edits=edits)
    if action == "plan":
        plan = params["servicePlan"]
        if state == SUSPEND:
            return _fault(F_SUSPENDED, "Service plan cannot be changed while the device is suspended")
        if state == DEACTIVE:
            return _fault(F_STATE_INVALID, "Device in state deactive cannot change service plan")
        if device.get("servicePlan") == plan:
            return Decision()  # a repeated request: nothing to change, nothing counted
        if plan_changes_this_month >= PLAN_CHANGES_PER_MONTH:
            return _fault(F_PLAN_LIMIT, f"Device has reached {PLAN_CHANGES_PER_MONTH} service plan changes this month")
        return Decision(edits={"servicePlan": plan}, counts_plan_change=True)
    if action == "deviceid":
        if state != ACTIVE:
            return _fault(F_STATE_INVALID, f"Device in state {state} cannot change identifiers")
        if not device.get("mdn"):
            return _fault(F_NO_MDN, "Device must have an MDN to change identifiers")
        edits = {}
        for kind in CHANGE_4G_OPTIONS[params["change4gOption"]]:
            new_id = params["to"].get(kind)
            if new_id == device.get(kind):
                continue
            if id_owner is not None and id_owner(kind, new_id) is not None:
                return _fault(F_ID_IN_USE, f"{kind.upper()} {new_id} already exists")
            edits[kind] = new_id
        return Decision(edits=edits)
    raise ValueError(f"unknown action {action!r}")


# -- request bodies --------------------------------------------------------------------------------


def _id_list(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise Refusal(400, ERR_MISSING_FIELD, f"{where} must be a non-empty list of deviceIds")
    out = []
    for item in value:
        if not (
            isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"] and item.get("kind") in ID_KINDS
        ):
            raise Refusal(400, ERR_INVALID_REQUEST, f"Invalid device identifier in {where} (kind is lower case)")
        out.append({"id": item["id"], "kind": item["kind"]})
    return out


def parse_action(
    action: str, body: Any, max_devices: int, service_plans: frozenset[str] | None
) -> tuple[str | None, list[list[dict]], dict]:
    """Check an action body; returns (accountName or None when the body leaves it out, devices
    as deviceIds lists, params). `accountName` is optional on every device action in Verizon's
    API description (and absent from the device-id change): the caller resolves it from the
    session. Raises Refusal for what ThingSpace refuses synchronously (shape, size, unknown plan)."""
    if not isinstance(body, dict):
        raise Refusal(400, ERR_INVALID_REQUEST, "Request body must be a JSON object")
    account = body.get("accountName")
    if action == "deviceid" and "accountName" in body:
        # ChangeDeviceIdRequest has no accountName (Verizon's SDK models): the device names it.
        raise Refusal(400, ERR_UNKNOWN_FIELD, "accountName is not a field of a device identifier change")
    if account is not None and (not isinstance(account, str) or not account):
        raise Refusal(400, ERR_INVALID_REQUEST, "accountName must be a non-empty string when given")
    params: dict[str, Any] = {}
    if action == "deviceid":
        option = body.get("change4gOption")
        if option not in CHANGE_4G_OPTIONS:
            raise Refusal(400, ERR_INVALID_REQUEST, f"change4gOption {option!r} is not supported")
        to = {i["kind"]: i["id"] for i in _id_list(body.get("deviceIdsTo"), "deviceIdsTo")}
        missing = [k for k in CHANGE_4G_OPTIONS[option] if not to.get(k)]
        if missing:
            raise Refusal(400, ERR_MISSING_FIELD, f"deviceIdsTo needs {', '.join(missing)}")
        params = {"change4gOption": option, "to": to}
        return account, [_id_list(body.get("deviceIds"), "deviceIds")], params
    devices = body.get("devices")
    if not isinstance(devices, list) or not devices:
        raise Refusal(400, ERR_MISSING_FIELD, "devices is required")
    if len(devices) > max_devices:
        raise Refusal(
            400, ERR_TOO_MANY_DEVICES, f"A request may contain at most {max_devices} devices, got {len(devices)}"
        )
    parsed = [_id_list(d.get("deviceIds") if isinstance(d, dict) else None, "devices[].deviceIds") for d in devices]
    if action in ("activate", "plan"):
        plan = body.get("servicePlan")
        if not isinstance(plan, str) or not plan:
            raise Refusal(400, ERR_MISSING_FIELD, "servicePlan is required")
        if service_plans is not None and plan not in service_plans:
            raise Refusal(400, ERR_SERVICE_PLAN, f"Invalid servicePlan: {plan}")
        params["servicePlan"] = plan
    if action == "activate" and "mdnZipCode" in body:
        zip_code = body["mdnZipCode"]
        if not isinstance(zip_code, str) or _ZIP.fullmatch(zip_code) is None:
            raise Refusal(400, ERR_INVALID_VALUE, f"mdnZipCode must be a 5-digit string, not {zip_code!r}")
        params["mdnZipCode"] = zip_code
    if action == "deactivate":
        # Required and FF only (see thingspace.yaml on the SDKs' disagreement); never filled in.
        if "reasonCode" not in body:
            raise Refusal(400, ERR_MISSING_FIELD, "reasonCode is required")
        if body["reasonCode"] != REASON_CODE:
            raise Refusal(400, ERR_INVALID_VALUE, f"reasonCode must be {REASON_CODE}, not {body['reasonCode']!r}")
        waiver = body.get("etfWaiver", False)
        if not isinstance(waiver, bool):
            raise Refusal(400, ERR_INVALID_VALUE, f"etfWaiver must be a JSON boolean, not {waiver!r}")
        params.update(reasonCode=REASON_CODE, etfWaiver=waiver)
    return account, parsed, params


def parse_list_paging(body: Mapping[str, Any]) -> tuple[int, int]:
    """(largestDeviceIdSeen, page size) of a `devices/actions/list` body. The listing pages by
    ThingSpace's numeric DeviceId (each listed device carries it as the extended attribute
    `DeviceId`): the next page holds the devices whose DeviceId is larger than the one given.
    `lastSeenDeviceId` is a response field of other Verizon lists, never this request's: refused.
    A `deviceId` (one device) is checked like the actions' identifiers (lower-case kind)."""
    if "lastSeenDeviceId" in body:
        raise Refusal(400, ERR_UNKNOWN_FIELD, "lastSeenDeviceId is not a field of the device list request")
    if "deviceId" in body:
        _id_list([body["deviceId"]], "deviceId")
    after = body.get("largestDeviceIdSeen", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise Refusal(400, ERR_INVALID_REQUEST, "largestDeviceIdSeen must be a non-negative integer")
    size = body.get("maxNumberOfDevices", LIST_PAGE_MAX)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= LIST_PAGE_MAX:
        raise Refusal(400, ERR_INVALID_REQUEST, f"maxNumberOfDevices must be an integer from 1 to {LIST_PAGE_MAX}")
    return after, size


# -- wire shapes -----------------------------------------------------------------------------------


def device_record(seed: Mapping[str, Any], account_name: str, now: dt.datetime) -> dict[str, Any]:
    """A simulator device from a seed naming at least `iccid` (state defaults to active)."""
    iccid = str(seed["iccid"])
    record = {
        "iccid": iccid,
        "imei": seed.get("imei"),
        "mdn": seed.get("mdn"),
        "state": str(seed.get("state", ACTIVE)).lower(),
        "servicePlan": seed.get("servicePlan", "M2M-4G-1GB"),
        "accountName": seed.get("accountName", account_name),
        "createdAt": now.isoformat(),
        "ipAddress": seed.get("ipAddress", ""),
    }
    if record["state"] not in STATES:
        raise ValueError(f"unknown ThingSpace state {record['state']!r} for {iccid}")
    if record["mdn"] is None and record["state"] in (ACTIVE, SUSPEND):
        record["mdn"] = "1" + iccid[-10:]
    return record


def device_ids(record: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"id": str(record[k]), "kind": k} for k in ("iccid", "imei", "mdn") if record.get(k)]


def device_view(record: Mapping[str, Any], device_id: int) -> dict[str, Any]:
    """One entry of `devices/actions/list`; `device_id` is ThingSpace's numeric DeviceId, listed
    as the extended attribute a client pages with (AMOP reads it there) [C]."""
    return {
        "accountName": record["accountName"],
        "billingCycleEndDate": None,
        "carrierInformations": [
            {"carrierName": CARRIER_NAME, "servicePlan": record["servicePlan"], "state": record["state"]}
        ],
        "connected": record["state"] == ACTIVE,
        "createdAt": record["createdAt"],
        "customFields": [],
        "deviceIds": device_ids(record),
        "extendedAttributes": [{"key": "DeviceId", "value": str(device_id)}],
        "ipAddress": record["ipAddress"],
    }


def success_callback(
    request_id: str, action: str, asked: Sequence[dict], record: Mapping[str, Any], credentials: Mapping[str, str]
) -> dict[str, Any]:
    """The CarrierService success message for one device; `asked` are the ids the request named."""
    response: dict[str, Any] = {"deviceIds": device_ids(record)}
    if action == "activate":
        response["ipAddress"] = record.get("ipAddress", "")
    if action == "plan":
        response["servicePlan"] = record["servicePlan"]
    return {
        **credentials,
        "requestId": request_id,
        "deviceIds": list(asked),
        "deviceResponse": {RESPONSE_KEY[action]: response},
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }


def fault_callback(
    request_id: str, asked: Sequence[dict], faultcode: str, faultstring: str, credentials: Mapping[str, str]
) -> dict[str, Any]:
    """The CarrierService fault message for one device."""
    return {
        **credentials,
        "requestId": request_id,
        "deviceIds": list(asked),
        "faultResponse": {"faultcode": faultcode, "faultstring": faultstring},
        "status": "Failed",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }


def make_devices(count: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """`count` seeds with valid, distinct ICCIDs (Verizon prefix), IMEIs and MDNs."""
    out = []
    for n, iccid in enumerate(make_iccids(count, start=start, prefix="89148000"), start=start):
        body = "35" + str(n).zfill(12)
        out.append({"iccid": iccid, "imei": body + luhn_check_digit(body), "mdn": "5" + str(n).zfill(9), **fields})
    return out


class DeviceBook:
    """The simulator's devices, indexed by every identifier, with the per-device counters the
    rules need (plan changes per month) and the tests read (state changes per ICCID).

    Not thread-safe on purpose: the simulator holds its lock around every use, so the rules stay
    free of locking and a request is applied atomically. `now` is the simulator's clock (aware
    UTC): it dates seeded devices and decides which month a plan change counts against.
    """

    def __init__(self, now: Callable[[], dt.datetime]) -> None:
        self.now = now
        self.devices: dict[int, dict[str, Any]] = {}
        self.index: dict[tuple[str, str], int] = {}
        self.plan_changes: Counter[tuple[int, str]] = Counter()
        self.applied_counts: Counter[str] = Counter()

    def seed(self, seeds: Iterable[Mapping[str, Any]], default_account: str) -> int:
        """Add or replace devices (by ICCID); returns how many."""
        now = self.now()
        n = 0
        for seed in seeds:
            record = device_record(seed, default_account, now)
            old = self.index.get(("iccid", record["iccid"]))
            key = old if old is not None else len(self.devices) + 1
            if old is not None:
                self._unindex(key)
            self.devices[key] = record
            self._reindex(key)
            n += 1
        return n

    def get(self, iccid: str) -> dict[str, Any] | None:
        key = self.index.get(("iccid", iccid))
        return None if key is None else self.devices[key]

    def resolve(self, ids: Iterable[Mapping[str, str]]) -> int | None:
        """The device named by a deviceIds list (ICCID first, then IMEI, then the rest)."""
        rank = {"iccid": 0, "imei": 1}
        for item in sorted(ids, key=lambda i: rank.get(i["kind"], 2)):
            kind = "mdn" if item["kind"] == "msisdn" else item["kind"]
            key = self.index.get((kind, item["id"]))
            if key is not None:
                return key
        return None

    def listing(
        self, account: str, body: Mapping[str, Any], after: int, page_size: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """A `devices/actions/list` answer's devices (views) of `account` and whether more
        follow: the one device `body["deviceId"]` names, or the next `page_size` devices by
        DeviceId (the book's key) above `after` (`largestDeviceIdSeen`)."""
        if "deviceId" in body:  # checked by parse_list_paging: {kind (lower case), id}
            key = self.resolve([{"kind": body["deviceId"]["kind"], "id": body["deviceId"]["id"]}])
            found = [] if key is None or self.devices[key]["accountName"] != account else [key]
            more = False
        else:
            ordered = sorted(k for k, r in self.devices.items() if k > after and r["accountName"] == account)
            found, more = ordered[:page_size], len(ordered) > page_size
        return [device_view(self.devices[k], k) for k in found], more

    def apply(
        self,
        rid: str,
        action: str,
        account: str,
        devices: Sequence[list[dict]],
        params: Mapping[str, Any],
        creds: Mapping[str, str],
        defer_activation: bool,
    ) -> tuple[list[dict], list[tuple[int, list[dict]]], int]:
        """Apply one accepted request of `account` device by device (a device of another account
        is not found). Returns the callback bodies, the activations left pending (key, asked ids)
        when `defer_activation`, and the fault count."""
        month = self.now().strftime("%Y-%m")
        bodies: list[dict] = []
        pending: list[tuple[int, list[dict]]] = []
        faults = 0
        for asked in devices:
            key = self._of(account, self.resolve(asked))
            if key is None and action == "deviceid":
                key = self._of(account, self.resolve([{"kind": k, "id": v} for k, v in params["to"].items()]))
                if key is not None:  # a repeated request: the device already has the new ids
                    bodies.append(success_callback(rid, action, asked, self.devices[key], creds))
                    continue
            if key is None:
                decision = Decision(F_NOT_FOUND, "REQUEST_FAILED. Device not found")
            else:
                record = self.devices[key]
                decision = decide(
                    action,
                    record,
                    params,
                    self.plan_changes[(key, month)],
                    lambda kind, value: self.index.get((kind, value)),
                )
            if decision.fault:
                faults += 1
                bodies.append(fault_callback(rid, asked, decision.fault, decision.faultstring, creds))
                continue
            if decision.edits:
                self.applied_counts[record["iccid"]] += 1
                self._unindex(key)
                record.update(decision.edits)
                self._reindex(key)
            if decision.counts_plan_change:
                self.plan_changes[(key, month)] += 1
            if record["state"] == PENDING and action == "activate":
                if defer_activation:
                    pending.append((key, asked))
                    continue
                record["state"] = ACTIVE
            bodies.append(success_callback(rid, action, asked, record, creds))
        return bodies, pending, faults

    def _of(self, account: str, key: int | None) -> int | None:
        return key if key is not None and self.devices[key]["accountName"] == account else None

    def finish_activation(self, key: int) -> dict[str, Any]:
        record = self.devices[key]
        if record["state"] == PENDING:
            record["state"] = ACTIVE
        return record

    def _reindex(self, key: int) -> None:
        for item in device_ids(self.devices[key]):
            self.index[(item["kind"], item["id"])] = key

    def _unindex(self, key: int) -> None:
        for item in device_ids(self.devices[key]):
            self.index.pop((item["kind"], item["id"]), None)


class SlidingWindow:
    """Calls per account in a sliding window: ThingSpace's limit on activations (100 a minute),
    which unlike the gateway's fixed windows frees a slot exactly `window` seconds after a call."""

    def __init__(self) -> None:
        self._calls: dict[str, deque[float]] = {}

    def admit(self, account: str, limit: float, window: float, now: float) -> float | None:
        """Count the call and return None if fewer than `limit` calls fell in the last `window`
        seconds; else the seconds until the oldest leaves the window (the call is not counted)."""
        calls = self._calls.setdefault(account, deque())
        while calls and calls[0] <= now - window:
            calls.popleft()
        if len(calls) >= limit:
            return calls[0] + window - now
        calls.append(now)
        return None
