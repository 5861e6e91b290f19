"""Verizon ThingSpace's wire format, without I/O: paths, limits and fault codes, how an answer is
classified, the shape of one planned action (`Plan`) and how a CarrierService callback is read
(reference/carriers.md section 2).

Kept apart from the client (`thingspace.py`: the calls, batching, pacing and what each answer means
for a device row) and from the auth state (`thingspace_auth.py`: token, session, their renewal and
the header flow) so that what ThingSpace sends and answers can be read and tested on its own, as
`telegence_wire.py` and `revio_wire.py` do for their carriers.

- auth: an OAuth client-credentials token (`POST TOKEN_PATH`) plus an M2M session
  (`POST M2M session/login`); the errors that call for renewing them are `SessionExpiredError`
  and `GatewayAuthError`.
- synchronous refusals are `{"errorCode": "<Service>.<CODE>", "errorMessage"}`; codes are
  matched with the service prefix stripped (`strip_service`), never on the message. Gateway
  faults are `{"fault": {code, message, description}}` (`classify_thingspace_response`).
- callbacks: one CarrierService message per device (`parse_thingspace_callback`).
- device list: `POST devices/actions/list` pages by `largestDeviceIdSeen` (the numeric DeviceId
  of the last device seen, listed as its extended attribute `DeviceId`: `device_number`) and
  `maxNumberOfDevices` (at most `LIST_PAGE_SIZE`), answering `hasMoreData`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from ..domain import DeviceChangeStatus
from .base import AsyncOutcome, BusinessCarrierError, CarrierError, TransientCarrierError
from .http import MALFORMED, stated_wait_seconds

__all__ = [
    "ACTION_STATE",
    "ALREADY",
    "GATEWAY_AUTH_CODES",
    "GATEWAY_THROTTLE_CODES",
    "LIST_PAGE_SIZE",
    "M2M",
    "MAX_DEVICES_PER_REQUEST",
    "SESSION_CODES",
    "STATUS_WORDS",
    "TOKEN_PATH",
    "GatewayAuthError",
    "Plan",
    "SessionExpiredError",
    "classify_thingspace_response",
    "device_number",
    "parse_thingspace_callback",
    "state_and_plan",
    "strip_service",
]

TOKEN_PATH = "api/ts/v1/oauth2/token"
M2M = "api/m2m/v1/"
MAX_DEVICES_PER_REQUEST = 10_000
# maxNumberOfDevices of one device-list page: Verizon's API description (AccountDeviceListRequest in
# its APIMatic SDKs) constrains it to 0..100.
LIST_PAGE_SIZE = 100
SESSION_CODES = frozenset(
    {"REQUEST_FAILED.SessionToken.Expired", "REQUEST_FAILED.SessionToken.Invalid"}
)  # [I] not public
GATEWAY_AUTH_CODES = frozenset({"900901", "900902"})
GATEWAY_THROTTLE_CODES = frozenset({"900800", "900802", "900803"})
# Fault codes that say the device already holds the target (a retried request's answer).
ALREADY = {
    "REQUEST_FAILED.DeviceAlreadyActive": "active",
    "REQUEST_FAILED.DeviceAlreadySuspended": "suspend",
    "REQUEST_FAILED.DeviceAlreadyDeactive": "deactive",
}
STATUS_WORDS = {
    "active": "active",
    "activate": "active",
    "activated": "active",
    "restore": "restore",
    "resume": "restore",
    "deactive": "deactive",
    "deactivate": "deactive",
    "deactivated": "deactive",
    "suspend": "suspend",
    "suspended": "suspend",
}
ACTION_STATE = {"activate": "active", "restore": "active", "deactivate": "deactive", "suspend": "suspend"}


def strip_service(code: str | None) -> str:
    """'UnifiedWebService.REQUEST_FAILED.X' -> 'REQUEST_FAILED.X' (categories are upper case)."""
    head, _, rest = (code or "").partition(".")
    return rest if rest and not head.isupper() else (code or "")


class SessionExpiredError(BusinessCarrierError):
    """The M2M session is gone: log in again and repeat (never a device failure)."""


class GatewayAuthError(BusinessCarrierError):
    """WSO2 refused the OAuth token (900901/900902): refresh once, else a config error."""


def classify_thingspace_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """Transient: 5xx, 429, gateway throttling, malformed bodies. Session and token errors get
    their own types so the client can renew them. Everything else 4xx is a business refusal."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED or not isinstance(body, dict | list):
            return TransientCarrierError("malformed response body from ThingSpace", status=status)
        return None
    fault = body.get("fault") if isinstance(body, dict) else None
    if isinstance(fault, dict):
        code: str | None = str(fault.get("code", ""))
        message = f"{fault.get('message', '')}: {fault.get('description', '')}".strip(": ")
        if status == 429 or code in GATEWAY_THROTTLE_CODES:
            return TransientCarrierError(
                f"[{code}] {message}",
                status=status,
                code=code,
                retry_after=stated_wait_seconds(response, body),
                over_limit=True,
            )
        if status >= 500:
            return TransientCarrierError(f"HTTP {status} [{code}] {message}", status=status, code=code)
        if code in GATEWAY_AUTH_CODES:
            return GatewayAuthError(message, code=code, status=status)
        return BusinessCarrierError(message, code=code, status=status)
    if status == 429:
        return TransientCarrierError(
            f"HTTP 429: {response.text[:200]}",
            status=status,
            retry_after=stated_wait_seconds(response, body),
            over_limit=True,
        )
    if status >= 500 or body is MALFORMED:
        return TransientCarrierError(f"HTTP {status}: {response.text[:200]}", status=status)
    if isinstance(body, dict) and "error" in body:  # the OAuth token endpoint
        return BusinessCarrierError(
            f"ThingSpace refused the OAuth client ({body.get('error')}: "
            f"{body.get('error_description', '')}); check client_id/client_secret",
            code=str(body.get("error")),
            status=status,
        )
    code = str(body.get("errorCode")) if isinstance(body, dict) and body.get("errorCode") else None
    message = str(body.get("errorMessage") or "") if isinstance(body, dict) else response.text[:300]
    if strip_service(code) in SESSION_CODES:
        return SessionExpiredError(message or "session expired", code=code, status=status)
    return BusinessCarrierError(message or response.reason_phrase, code=code, status=status)


@dataclasses.dataclass
class Plan:
    """How one change is sent: the action, its request parameters, the device's ids."""

    action: str
    params: dict[str, Any]
    ids: list[dict[str, str]]
    needs_lookup: bool = False


def parse_thingspace_callback(payload: Any) -> list[AsyncOutcome]:
    """One CarrierService message -> one outcome (empty for anything else). Only the named
    fields are read, so the echoed username/password can never reach a detail. Success:
    `deviceResponse.<action>Response` says what was done; fault: `faultResponse.faultcode`
    (service prefix stripped; an "already in that state" fault means the device holds it)."""
    if not isinstance(payload, dict) or not payload.get("requestId"):
        return []
    asked = [i for i in payload.get("deviceIds") or [] if isinstance(i, dict) and i.get("id")]
    by_kind = {str(i.get("kind", "")).lower(): str(i["id"]) for i in asked}
    key = by_kind.get("iccid") or by_kind.get("imei") or (str(asked[0]["id"]) if asked else "")
    rid = str(payload["requestId"])
    fault = payload.get("faultResponse")
    if isinstance(fault, dict) or str(payload.get("status", "")).lower() == "failed":
        fault = fault if isinstance(fault, dict) else {}
        code = strip_service(str(fault.get("faultcode") or ""))
        text = str(fault.get("faultstring") or "ThingSpace reported a failure")
        if code in ALREADY:
            return [
                AsyncOutcome(
                    rid,
                    key,
                    DeviceChangeStatus.PROCESSED,
                    f"ThingSpace: device already {ALREADY[code]} ({text})",
                    {"status": ALREADY[code]},
                )
            ]
        return [AsyncOutcome(rid, key, DeviceChangeStatus.API_FAILED, f"[{code}] {text}" if code else text)]
    response = payload.get("deviceResponse")
    response = response if isinstance(response, dict) else {}
    name, sub = next(iter(response.items()), ("", {}))
    sub = sub if isinstance(sub, dict) else {}
    action = name.removesuffix("Response")
    new_ids = {
        str(i.get("kind", "")).lower(): str(i.get("id")) for i in sub.get("deviceIds") or [] if isinstance(i, dict)
    }
    values: dict[str, Any] = {}
    if action in ACTION_STATE:
        values["status"] = ACTION_STATE[action]
        if action == "activate" and (new_ids.get("mdn") or new_ids.get("msisdn")):
            values["msisdn"] = new_ids.get("mdn") or new_ids.get("msisdn")
    elif sub.get("servicePlan"):
        values["carrier_rate_plan"] = str(sub["servicePlan"])
    elif action == "changeDeviceId":
        values = {k: v for k, v in new_ids.items() if k in ("iccid", "imei") and by_kind.get(k) != v}
    return [
        AsyncOutcome(rid, key, DeviceChangeStatus.PROCESSED, f"ThingSpace confirmed {action or 'the request'}", values)
    ]


def state_and_plan(device: dict[str, Any] | None) -> tuple[str | None, str | None]:
    infos = (device or {}).get("carrierInformations") or [{}]
    info = infos[0] if isinstance(infos[0], dict) else {}
    return (str(info["state"]).lower() if info.get("state") else None), info.get("servicePlan")


def device_number(device: Any) -> int | None:
    """ThingSpace's numeric DeviceId of a listed device (its `extendedAttributes` entry
    `DeviceId`), the value the next list page's `largestDeviceIdSeen` takes; None if absent."""
    attrs = device.get("extendedAttributes") if isinstance(device, dict) else None
    for attr in attrs if isinstance(attrs, list) else []:
        if isinstance(attr, dict) and attr.get("key") == "DeviceId":
            try:
                return int(str(attr.get("value")))
            except ValueError:
                return None
    return None
