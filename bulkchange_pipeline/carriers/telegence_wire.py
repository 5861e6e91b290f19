"""AT&T Telegence's wire format, without I/O: the bodies the client sends and how it reads the
answers (reference/carriers.md section 3; original-system.md section 8).

Kept apart from the client (`telegence.py`: calls, concurrency, outcomes) so that what a change
looks like on the wire can be read and tested on its own, as `telegence_errors.py` does for the
error bodies.

- Line changes are synchronous PATCHes of `sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`
  (`line_update` builds the body for each change type).
- New lines are activated asynchronously: a JSON array of up to 200 lines is POSTed
  (`activation_line` builds one element), each answer item carries an activation status id
  (`activation_ids`), and that id is polled until the line is active or rejected
  (`activation_outcome`).

Choices marked [I] (inferred, not confirmed by a public source):
- Paths other than lineconfig: activation `POST sp/mobility/activation/api/v1/service`, its status
  `GET sp/mobility/activation/api/v1/service/{id}`, subscriber detail `GET` on the lineconfig path.
- Status body `{"mode": "suspend"|"restore"|"cancel", "reasonCode", "effectiveDate"}` (AMOP names
  the fields; casing and mode words are ours). Reason codes are not public: the default is
  `DEFAULT_REASON_CODE`, overridden by `account.extra["reason_code"]`, then by the row's
  `target["reason_code"]`.
- EditUsernameCostCenter: a PATCH of two service characteristics, `contactName` (the subscriber
  detail already returns it, so the edit can be read back) for the username and `costCenter` for
  the cost center (no public name exists for it).
- Activation answers: one item per submitted line, in order (items echoing `sim` are matched by
  it); a single item for a whole request is taken as a request-level id shared by its lines.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..domain import ChangeType, DeviceChangeStatus
from .base import DeviceChange, DeviceResult
from .telegence_errors import message_of

LINE_PATH = "sp/mobility/lineconfig/api/v1/service/{}"
ACTIVATION_PATH = "sp/mobility/activation/api/v1/service"  # [I]
ACTIVATION_STATUS_PATH = "sp/mobility/activation/api/v1/service/{}"  # [I]
ACTIVATION_BATCH_SIZE = 200  # AMOP's batch size per activation call
DEFAULT_REASON_CODE = "CR"  # [I] "customer request"; AMOP reads real codes from its database
SWAP_REASON_CODE = "CUST_OWN_EQU"
USERNAME_CHARACTERISTIC = "contactName"
COST_CENTER_CHARACTERISTIC = "costCenter"  # [I]
PENDING_STATUSES = frozenset({"pending", "reserved", "reserve", "inprogress", "in progress", "submitted", "received"})
ACTIVE_STATUSES = frozenset({"active", "complete", "completed", "success", "successful"})
REJECTED_STATUSES = frozenset({"rejected", "reject", "failed", "failure", "error", "cancelled"})
# target status spelling -> (PATCH mode, subscriberStatus it leads to)
_MODES = {
    "a": ("restore", "A"),
    "active": ("restore", "A"),
    "restore": ("restore", "A"),
    "s": ("suspend", "S"),
    "suspend": ("suspend", "S"),
    "suspended": ("suspend", "S"),
    "c": ("cancel", "C"),
    "cancel": ("cancel", "C"),
    "cancelled": ("cancel", "C"),
    "canceled": ("cancel", "C"),
}


def telegence_date(value: Any = None, today: dt.date | None = None) -> str:
    """`yyyy-MM-ddZ` as AMOP sends it: the target's effective date, or today (UTC) when there is
    none or it has passed (a row retried after its date must not be refused as back-dated)."""
    today = today or dt.datetime.now(dt.UTC).date()
    if not value:
        return today.isoformat() + "Z"
    text = str(value).strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        day = (when.astimezone(dt.UTC) if when.tzinfo else when).date()
    except ValueError:
        try:
            day = dt.date.fromisoformat(text[:10])
        except ValueError:
            raise ValueError(f"effective_date {text!r} is not a date") from None
    return max(day, today).isoformat() + "Z"


def _characteristics(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in pairs.items()]


def line_update(
    change: DeviceChange, default_reason_code: str = DEFAULT_REASON_CODE
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(PATCH body, new_values, characteristics the line holds once applied) for a line change.
    Raises ValueError with a reason a person can act on when it cannot be expressed."""
    target = change.target or {}
    ct = change.change_type
    body: dict[str, Any]
    if ct == ChangeType.STATUS_UPDATE:
        wanted = str(target.get("status") or "").strip().lower()
        if wanted not in _MODES:
            raise ValueError(f"Telegence status must be A, S or C (got {target.get('status')!r})")
        mode, letter = _MODES[wanted]
        body = {
            "mode": mode,
            "reasonCode": str(target.get("reason_code") or default_reason_code),
            "effectiveDate": telegence_date(target.get("effective_date")),
        }
        return body, {"status": letter}, {"subscriberStatus": letter}
    if ct == ChangeType.CARRIER_RATE_PLAN_CHANGE:
        plan = target.get("carrier_rate_plan")
        if not plan:
            raise ValueError("no carrier_rate_plan (Telegence singleUserCode) to set")
        body = {
            "effectiveDate": telegence_date(target.get("effective_date")),
            "serviceCharacteristic": _characteristics({"singleUserCode": plan}),
        }
        return body, {"carrier_rate_plan": str(plan)}, {"singleUserCode": str(plan)}
    if ct == ChangeType.CHANGE_ICCID_AND_IMEI:
        swap: dict[str, str] = {}
        if target.get("new_imei"):
            swap["IMEI"] = str(target["new_imei"])
        if target.get("new_iccid"):
            swap["sim"] = str(target["new_iccid"])
        if not swap:
            raise ValueError("no new_iccid or new_imei to send to Telegence")
        body = {"serviceCharacteristic": _characteristics({"reasonCode": SWAP_REASON_CODE, **swap})}
        values = {"iccid": swap["sim"]} if "sim" in swap else {}
        if "IMEI" in swap:
            values["imei"] = swap["IMEI"]
        held = {("BLIMEI" if k == "IMEI" else k): v for k, v in swap.items()}
        return body, values, held
    if ct == ChangeType.EDIT_USERNAME_COST_CENTER:
        edits: dict[str, str] = {}
        values = {}
        if target.get("username") is not None:
            edits[USERNAME_CHARACTERISTIC] = values["username"] = str(target["username"])
        if target.get("cost_center") is not None:
            edits[COST_CENTER_CHARACTERISTIC] = values["cost_center"] = str(target["cost_center"])
        if not edits:
            raise ValueError("no username or cost_center to send to Telegence")
        return {"serviceCharacteristic": _characteristics(edits)}, values, edits
    raise ValueError(f"change type {ct} is not a Telegence line update")


def activation_line(change: DeviceChange, ban: str, extra: dict[str, Any]) -> dict[str, Any]:
    """One element of the activation array (MobilityController.cs shape). Raises ValueError when a
    field Telegence needs is missing."""
    target = change.target or {}
    plan = target.get("carrier_rate_plan")
    zip_code = target.get("service_zip_code") or extra.get("service_zip_code")
    missing = [
        name
        for name, value in (
            ("ICCID", change.iccid),
            ("IMEI", change.imei),
            ("carrier_rate_plan", plan),
            ("service_zip_code", zip_code),
        )
        if not value
    ]
    if missing:
        raise ValueError("cannot activate on Telegence without " + ", ".join(missing))
    chars = {
        "singleUserCode": plan,
        "serviceZipCode": zip_code,
        "equipmentType": extra.get("equipment_type", "G"),
        "deviceTechnologyType": extra.get("device_technology_type", "UMTS"),
        "IMEI": change.imei,
        "sim": change.iccid,
    }
    for i, code in enumerate(target.get("offering_codes") or [], start=1):
        chars[f"offeringCode{i}"] = code
    service: dict[str, Any] = {
        "serviceCharacteristic": _characteristics(chars),
        "serviceSpecification": {"id": "12", "href": "Mobility Services"},
    }
    if extra.get("service_qualification_id"):
        service["serviceQualification"] = {"id": str(extra["service_qualification_id"])}
    return {"billingAccount": {"id": str(ban)}, "service": service}


def characteristic_map(node: Any) -> dict[str, str]:
    """`serviceCharacteristic` [{name, value}] of a detail/status object as a dict."""
    if not isinstance(node, dict):
        return {}
    chars = node.get("serviceCharacteristic")
    if not isinstance(chars, list):
        return {}
    return {str(c.get("name")): str(c.get("value")) for c in chars if isinstance(c, dict) and c.get("name") is not None}


def activation_outcome(change: DeviceChange, item: dict[str, Any]) -> DeviceResult | None:
    """The DeviceResult an activation-status item means for one line; None while pending (or an
    unknown status: the engine polls again and gives up after `max_polls`)."""
    service = item.get("service")
    service = service if isinstance(service, dict) else {}
    status = str(service.get("status") or item.get("interactionStatus") or "").strip().lower()
    request_id = change.carrier_request_id
    if status in ACTIVE_STATUSES:
        number = service.get("subscriberNumber")
        values = {"status": "A"}
        if number:
            values["msisdn"] = str(number)
        plan = (change.target or {}).get("carrier_rate_plan")
        if plan:
            values["carrier_rate_plan"] = str(plan)
        return DeviceResult(
            change.device_change_id,
            DeviceChangeStatus.PROCESSED,
            f"activated by Telegence as {number or '(number not reported)'} (activation {request_id})",
            values,
            request_id,
        )
    if status in REJECTED_STATUSES:
        _, reason = message_of(service.get("error")) if service.get("error") else (None, None)
        reason = reason or str(item.get("interactionStatus") or status)
        return DeviceResult(
            change.device_change_id,
            DeviceChangeStatus.API_FAILED,
            f"activation rejected by Telegence: {reason} (activation {request_id})",
            {},
            request_id,
        )
    return None


def activation_ids(items: list[Any], members: list[DeviceChange]) -> list[str | None]:
    """The status id of each submitted line: by echoed `sim` where present, else by position,
    else one request-level id shared by all [I]."""
    items = [i for i in items if isinstance(i, dict) and i.get("id") is not None]
    by_sim = {characteristic_map(i.get("service")).get("sim"): str(i["id"]) for i in items}
    by_sim.pop(None, None)
    if by_sim and all(c.iccid in by_sim for c in members):
        return [by_sim[c.iccid] for c in members]
    if len(items) == len(members):
        return [str(i["id"]) for i in items]
    if len(items) == 1:
        return [str(items[0]["id"])] * len(members)
    return [None] * len(members)


def item_for(change: DeviceChange, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The status item about this line: the one echoing its ICCID, else the only one."""
    for item in items:
        if change.iccid and characteristic_map(item.get("service")).get("sim") == change.iccid:
            return item
    return items[0] if len(items) == 1 else None
