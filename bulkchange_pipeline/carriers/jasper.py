"""Client for the Cisco Jasper / IoT Control Center family (AT&T Control Center and POD19,
T-Mobile Jasper, Rogers): synchronous per-device edits with `PUT /devices/{iccid}`.

Wire format (reference/carriers.md section 1; the OpenAPI fragments copied in
bulkchange_pipeline_tests/contracts/jasper_openapi/): HTTP Basic username:apiKey; errors are
`{"errorMessage", "errorCode"}`.

Over the limit, Jasper answers errorCode 40000029 "Rate Limit Exceeded" (Cisco "API Policies and
Best Practices", mirrored at shuzhiduo.com/A/ke5jbBko5r). No public source states the HTTP status
that carries it: that page gives only the code, api-evangelist/rogers rate-limits yml says no 429
semantics are published or were observed, and the OpenAPI fragments list only 200/202/400/401/
404/500. So the client keys on the code, whatever the status (a 400 or 403 with 40000029 is an
over-limit answer to retry, not a business refusal), and treats a bare 429 as over-limit too. The
simulator answers 429 by default [I] and any other status on request; the client tests run both.

EditUsernameCostCenter (10) mapping. DeviceEditModel has no "username" or "cost center" field, so
they go to enterprise custom fields: username -> `accountCustom1`, cost_center -> `accountCustom2`
(override with `field_map`). Why these: accountCustom1-10 are the fields "created by the
enterprise" (the reseller's own account), editable by PUT and returned by GET, so the edit can be
verified and re-checked after a crash; `deviceID` is a device identifier other tools rely on, and
customerCustom1-5 belong to the end customer, who may edit them in the portal.

The mapping from a change to Jasper fields (`jasper_edit_body`, the field map), the device columns
an edit sets (`jasper_columns`), the "already done?" comparison (`holds_edits`) and the result of
an accepted edit (`applied_result`) are shared with the SOAP client (`jasper_soap`), which sends the
same edit one field per EditTerminal call: both protocols change and report a device the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

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
from .http import MALFORMED, CallResult, CarrierHttp, stated_wait_seconds
from .redaction import basic_token
from .results import failure_detail

__all__ = [
    "DEFAULT_FIELD_MAP",
    "JASPER_INVALID_CREDENTIALS_CODE",
    "JASPER_RATE_LIMIT_CODE",
    "SUPPORTED_CHANGE_TYPES",
    "JasperClient",
    "applied_result",
    "classify_jasper_response",
    "edit_summary",
    "holds_edits",
    "jasper_columns",
    "jasper_edit_body",
    "jasper_error",
]

JASPER_RATE_LIMIT_CODE = "40000029"
JASPER_INVALID_CREDENTIALS_CODE = "10000001"
SUPPORTED_CHANGE_TYPES = frozenset(
    {
        ChangeType.STATUS_UPDATE,
        ChangeType.CUSTOMER_ASSIGNMENT,
        ChangeType.CARRIER_RATE_PLAN_CHANGE,
        ChangeType.EDIT_USERNAME_COST_CENTER,
    }
)
DEFAULT_FIELD_MAP: Mapping[str, str] = {"username": "accountCustom1", "cost_center": "accountCustom2"}

# Edit-body field -> device column name the engine stores.
_COLUMN_OF = {
    "status": "status",
    "ratePlan": "carrier_rate_plan",
    "communicationPlan": "communication_plan",
    "customer": "customer_name",
}


def _future_effective_date(value: Any, now: dt.datetime | None = None) -> str | None:
    """The effectiveDate to send: only a date in the future schedules a change; a past or
    present one means "now", which Jasper expresses by omitting the field."""
    if not value:
        return None
    text = str(value)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text  # let the carrier refuse a date it cannot read, with its own message
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    if when <= now:
        return None
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def jasper_edit_body(
    change: DeviceChange,
    field_map: Mapping[str, str] = DEFAULT_FIELD_MAP,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The DeviceEditModel body for one change. Raises ValueError when the change cannot be
    expressed (unsupported type, or no target value), which the caller records per device."""
    target = change.target or {}
    body: dict[str, str] = {}
    ct = change.change_type
    if ct == ChangeType.STATUS_UPDATE:
        if target.get("status"):
            body["status"] = str(target["status"]).upper()
    elif ct == ChangeType.CARRIER_RATE_PLAN_CHANGE:
        if target.get("carrier_rate_plan"):
            body["ratePlan"] = str(target["carrier_rate_plan"])
        if target.get("communication_plan"):
            body["communicationPlan"] = str(target["communication_plan"])
    elif ct == ChangeType.CUSTOMER_ASSIGNMENT:
        if target.get("customer_name"):
            body["customer"] = str(target["customer_name"])
    elif ct == ChangeType.EDIT_USERNAME_COST_CENTER:
        for key in ("username", "cost_center"):
            if target.get(key) is not None:
                body[field_map[key]] = str(target[key])
    else:
        raise ValueError(f"change type {ct} is not applied through the Jasper API")
    if not body:
        raise ValueError(f"change type {ct} has no target value to send (target={target!r})")
    effective = _future_effective_date(target.get("effective_date"), now)
    if effective:
        body["effectiveDate"] = effective
    return body


def jasper_columns(edits: Mapping[str, str], field_map: Mapping[str, str] = DEFAULT_FIELD_MAP) -> dict[str, str]:
    """Device columns for the engine, from edit-body fields (REST names; the SOAP client maps its
    wire back to these names, so both protocols report a change the same way)."""
    reverse = {v: k for k, v in field_map.items()}
    return {_COLUMN_OF.get(k) or reverse.get(k, k): v for k, v in edits.items()}


def edit_summary(edits: Mapping[str, str]) -> str:
    """``status=DEACTIVATED, ratePlan=IOT-5GB``: what a row's detail says was sent."""
    return ", ".join(f"{k}={v}" for k, v in edits.items())


def holds_edits(device: Mapping[str, Any], edits: Mapping[str, str]) -> bool:
    """True when a device as read back (DeviceDetails names) already holds every edited field."""
    return all(str(device.get(k) or "") == v for k, v in edits.items())


def applied_result(
    change: DeviceChange,
    body: Mapping[str, str],
    log: list[LogEntry],
    field_map: Mapping[str, str] = DEFAULT_FIELD_MAP,
    *,
    scheduled_for: str | None = None,
) -> DeviceResult:
    """The PROCESSED result of an accepted edit body. With an effectiveDate Jasper applies it on that
    date (`scheduled_for`: how the date was sent, default the body's), so the device columns stay
    until a later read shows the change; otherwise the edited columns are the device's now."""
    edits = {k: v for k, v in body.items() if k != "effectiveDate"}
    if "effectiveDate" in body:
        detail = f"scheduled by Jasper for {scheduled_for or body['effectiveDate']}: {edit_summary(edits)}"
        new_values: dict[str, str] = {}
    else:
        detail = f"applied: {edit_summary(edits)}"
        new_values = jasper_columns(edits, field_map)
    return DeviceResult(change.device_change_id, DeviceChangeStatus.PROCESSED, detail, new_values, None, log)


def jasper_error(response: httpx.Response, body: Any) -> tuple[str | None, str]:
    """(errorCode, errorMessage) from a Jasper error body, tolerating other shapes."""
    if isinstance(body, dict):
        code = body.get("errorCode")
        message = body.get("errorMessage") or body.get("message")
        return (str(code) if code is not None else None, str(message or response.reason_phrase))
    text = response.text.strip()[:300] if body is not MALFORMED else response.text[:300]
    return None, text or response.reason_phrase


def classify_jasper_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """Jasper rules: 40000029 transient (any status); 401 a configuration error worth a clear
    message; 404 device not found; other 4xx business; 5xx, 429 and malformed bodies transient."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED or (body is not None and not isinstance(body, dict)):
            return TransientCarrierError("malformed response body from Jasper", status=status)
        return None
    code, message = jasper_error(response, body)
    if code == JASPER_RATE_LIMIT_CODE or status == 429:
        return TransientCarrierError(
            f"[{code or status}] {message}",
            status=status,
            code=code,
            retry_after=stated_wait_seconds(response, body),
            over_limit=True,
        )
    if status >= 500 or body is MALFORMED:
        return TransientCarrierError(f"HTTP {status}: {message}", status=status, code=code)
    if status == 401:
        return BusinessCarrierError(
            f"Jasper rejected the credentials ({message}); check the service provider's username and API key",
            code=code,
            status=status,
        )
    if status == 404:
        return BusinessCarrierError(f"device not found at the carrier ({message})", code=code, status=status)
    return BusinessCarrierError(message, code=code, status=status)


class JasperClient(CarrierAdapter):
    """CarrierAdapter for the Jasper family: one PUT per device, paced under the account limits."""

    integration = Integration.JASPER

    def __init__(
        self,
        account: CarrierAccount,
        *,
        field_map: Mapping[str, str] = DEFAULT_FIELD_MAP,
    ) -> None:
        self.account = account
        self.field_map = dict(field_map)
        auth = {"Authorization": "Basic " + basic_token(account.username, account.secret)}
        self.http = CarrierHttp(account, auth, classify=classify_jasper_response, label="Jasper")
        # A row's reason is built from Jasper's answer, which may echo the request: masked with these.
        self._secrets = [account.secret, basic_token(account.username, account.secret)]

    def supports(self, change_type: ChangeType) -> bool:
        """Jasper's API applies status, customer, carrier rate plan and custom-field edits."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- reads ------------------------------------------------------------------------------------

    async def get_device(self, iccid: str) -> CallResult:
        """`GET /devices/{iccid}`; raises CarrierError (BusinessCarrierError 404 if unknown)."""
        return await self.http.request(
            "GET", f"devices/{quote(iccid, safe='')}", description=f"Jasper GET device {iccid}"
        )

    # -- writes -----------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """PUT each change; per-device failures become API_FAILED results (never raised)."""
        require_writes(self.account, "Jasper")
        return await self.http.map_bounded(changes, self._apply_one)

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Read each device back; PROCESSED when it already holds every field of the edit.

        A future-dated edit cannot be seen in the device yet, so it is reported as not applied and
        re-sent (PUT is idempotent, and the simulator counts a repeat as no change)."""
        return await self.http.map_bounded(changes, self._check_one)

    async def _apply_one(self, change: DeviceChange) -> DeviceResult:
        if not change.iccid:
            return _failed(change, "no ICCID: Jasper edits devices by ICCID")
        try:
            body = jasper_edit_body(change, self.field_map)
        except ValueError as exc:
            return _failed(change, str(exc))
        try:
            result = await self.http.request(
                "PUT",
                f"devices/{quote(change.iccid, safe='')}",
                json_body=body,
                description=f"Jasper PUT device {change.iccid}",
            )
        except CarrierError as exc:
            return _failed(change, failure_detail(exc, self._secrets), exc.log)
        return applied_result(change, body, result.log, self.field_map)

    async def _check_one(self, change: DeviceChange) -> DeviceResult | None:
        if not change.iccid:
            return None
        try:
            body = jasper_edit_body(change, self.field_map)
        except ValueError:
            return None
        if "effectiveDate" in body:
            return None
        try:
            result = await self.http.request(
                "GET",
                f"devices/{quote(change.iccid, safe='')}",
                description=f"Jasper GET device {change.iccid} (already applied?)",
            )
        except CarrierError:
            return None  # cannot tell; the caller re-sends and records that outcome
        device = result.body or {}
        if holds_edits(device, body):
            return DeviceResult(
                change.device_change_id,
                DeviceChangeStatus.PROCESSED,
                f"already in effect at Jasper: {edit_summary(body)}",
                jasper_columns(body, self.field_map),
                None,
                result.log,
            )
        return None


def _failed(change: DeviceChange, detail: str, log: list[LogEntry] | None = None) -> DeviceResult:
    return DeviceResult(change.device_change_id, DeviceChangeStatus.API_FAILED, detail, {}, None, list(log or []))
