"""AT&T Telegence's wire format, without I/O: the bodies the client sends and how it reads the
answers (reference/carriers.md section 3; original-system.md section 8).

Kept apart from the client (`telegence.py`: calls, concurrency, outcomes) so that what a change
looks like on the wire can be read and tested on its own, as `telegence_errors.py` does for the
error bodies. The machine-readable description with every source is
`bulkchange_pipeline_tests/contracts/telegence.yaml`.

- Line changes are synchronous PATCHes of `sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`
  (`line_update` builds the body for each change type); the subscriber detail is a GET of the same
  path.
- New lines are activated asynchronously: a JSON array of up to 200 lines is POSTed to
  `sp/mobilityactivations/api/v1/serviceactivation` (`activation_line` builds one element), each
  answer item carries an activation status id (`activation_ids`), and that id is polled with a GET
  of `.../serviceactivation/{requestId}` until the line is active or rejected (`activation_outcome`).

Sources (tags as in carriers.md: C = public client code, I = inference):
- [C] Paths. lineconfig GET/PATCH: Aeriq522/ATT-Scripts `AT&T Scripts/update_IMEIs.py` and
  `AT&T Scripts/GetLineInfo/get_line_info.py` (commit 0fbe6fd275b3e110162848ee4586c857ebe5f3bb and
  earlier); activation POST and status GET: Itential's AT&T Mobility adapter,
  https://app.unpkg.com/@itentialopensource/adapter-att_mobility@0.11.3/files/report/attOpenAPI.json
  (server `https://apsapi.att.com:8082`).
- [C] Equipment (IMEI/ICCID) change, `serviceCharacteristic` names and where the values come from:
  * hemalathapampana/Mobility-Controller-Updated `MobilityController.cs`
    (d0e8cbe740955ddc0847a872b71894af0ab36db2), CreateUpdateICCIDorIMEIChangeRequest: `reasonCode`,
    `serviceZipCode` (the device's synced zip), `technologyType` (the device's synced technology
    type, an AMOP default when empty), `IMEI` and `sim` (the new value, else the CURRENT one: both
    are always sent);
  * hemalathapampana/AltaworxTelegenceAWSGetDeviceDetails `TelegenceServicegGetCharacteristicHelper.cs`
    and `TelegenceDeviceDetailSyncTable.cs` (659931f108129f66571d5b2989e982bff7c9ddea): those synced
    values are the subscriber detail's `serviceZipCode` and `BLDeviceTechnologyType`;
  * Aeriq522/ATT-Scripts `AT&T Scripts/update_IMEIs.py` (6b78062bfedaaef370240030dce20544a21a8e0c;
    commit 4fb41b4 "got changes working on a live test sim"): `reasonCode`=CUST_OWN_EQU,
    `serviceZipCode`, `singleUserCode` (the line's plan), `technologyType`="LTE", `IMEI`;
  * hemalathapampana/BulkChange `ProcessChangeICCIDorIMEI.cs` (a260aa84a95228f4ae3c751e2631793199e0bd69)
    sends that body unchanged and reads `sim`/`IMEI` back from it.
  This client sends the union of the sources: reasonCode, serviceZipCode, singleUserCode,
  technologyType, IMEI, sim, with the current values read from the subscriber detail
  (`serviceZipCode`, `singleUserCode`, `BLDeviceTechnologyType`, `BLIMEI`, `sim`) just before the
  PATCH. The name is `technologyType` (both sources), not the activation's `deviceTechnologyType`.
  [I] Which of the six the real API requires is unknown (the script omitted `sim`, AMOP omits
  `singleUserCode`); the simulator requires all six. [I] No value is invented: when the detail
  lacks one, the row fails with the reason (only `account.extra["technology_type"]` may stand in for
  a missing BLDeviceTechnologyType, where AMOP used an unpublished default).
- [C] Rate plan: `{effectiveDate: yyyy-MM-ddZ, serviceCharacteristic: [singleUserCode]}`
  (BulkChange `AltaworxDeviceBulkChange.cs` ProcessTelegenceCarrierRatePlanUpdateAsync, always with
  a date; ATT-Scripts `plan_change.py`).
- Status: `{mode, reasonCode, effectiveDate}`. [C] AMOP's Mode is the target status CODE of its
  Telegence status table (MobilityController.cs BuildTelegenceCommonStatusUpdateRequest, the date
  only when given); [C] the only public value is `"mode": "R"` with reasonCode `"CR"`
  (ATT-Scripts first commit 6137753c8a14b91fcafe558c6fea2cea1647e569). [I] So the modes are
  `S` (suspend), `R` (restore) and `C` (cancel), the letters of `subscriberStatus`. Reason codes
  are not public beyond `CR`: the default is `DEFAULT_REASON_CODE`, overridden by
  `account.extra["reason_code"]`, then by the row's `target["reason_code"]`.
- [C] Activation element: MobilityController.cs BuildTelegenceNewServiceActivationChangeRequest
  (`equipmentType`="G" and `deviceTechnologyType`="UMTS" are AMOP's constants).
- [I] EditUsernameCostCenter: a PATCH of two service characteristics, `contactName` (the subscriber
  detail already returns it, so the edit can be read back) for the username and `costCenter` for
  the cost center (no public name exists for it).
- [I] Activation answers: one item per submitted line, in order (items echoing `sim` are matched by
  it); a single item for a whole request is taken as a request-level id shared by its lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..domain import ChangeType, DeviceChangeStatus
from .base import DeviceChange, DeviceResult
from .telegence_errors import message_of

__all__ = [
    "ACTIVATION_BATCH_SIZE",
    "ACTIVATION_PATH",
    "ACTIVATION_STATUS_PATH",
    "DEFAULT_REASON_CODE",
    "LINE_PATH",
    "SWAP_CURRENT",
    "SWAP_REASON_CODE",
    "activation_ids",
    "activation_line",
    "activation_outcome",
    "characteristic_map",
    "equipment_change",
    "item_for",
    "line_update",
    "telegence_date",
]

LINE_PATH = "sp/mobility/lineconfig/api/v1/service/{}"
ACTIVATION_PATH = "sp/mobilityactivations/api/v1/serviceactivation"
ACTIVATION_STATUS_PATH = "sp/mobilityactivations/api/v1/serviceactivation/{}"
ACTIVATION_BATCH_SIZE = 200  # AMOP's batch size per activation call
DEFAULT_REASON_CODE = "CR"  # [C] the one public status reason code; AMOP reads real codes from its database
SWAP_REASON_CODE = "CUST_OWN_EQU"
# What an equipment change sends besides reasonCode/IMEI/sim -> the subscriber-detail name it is read from.
SWAP_CURRENT = {
    "serviceZipCode": "serviceZipCode",
    "singleUserCode": "singleUserCode",
    "technologyType": "BLDeviceTechnologyType",
}
USERNAME_CHARACTERISTIC = "contactName"
COST_CENTER_CHARACTERISTIC = "costCenter"  # [I]
PENDING_STATUSES = frozenset({"pending", "reserved", "reserve", "inprogress", "in progress", "submitted", "received"})
ACTIVE_STATUSES = frozenset({"active", "complete", "completed", "success", "successful"})
REJECTED_STATUSES = frozenset({"rejected", "reject", "failed", "failure", "error", "cancelled"})
# target status spelling (ours, from the intake) -> (PATCH mode, subscriberStatus it leads to)
_MODES = {
    "a": ("R", "A"),
    "active": ("R", "A"),
    "restore": ("R", "A"),
    "s": ("S", "S"),
    "suspend": ("S", "S"),
    "suspended": ("S", "S"),
    "c": ("C", "C"),
    "cancel": ("C", "C"),
    "cancelled": ("C", "C"),
    "canceled": ("C", "C"),
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
    change: DeviceChange,
    default_reason_code: str = DEFAULT_REASON_CODE,
    current: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(PATCH body, new_values, characteristics the line holds once applied) for a line change.
    `current` is the line's subscriber detail (`characteristic_map`), which an equipment change
    needs. Raises ValueError with a reason a person can act on when it cannot be expressed."""
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
        return equipment_change(change, current)
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


def equipment_change(
    change: DeviceChange, current: Mapping[str, str] | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The IMEI/ICCID swap (module docstring: sources). Every characteristic the sources send is
    sent: the new IMEI/sim, and for the rest the line's current values from its subscriber detail
    `current` (our database's ICCID/IMEI when the detail lacks them). Raises ValueError naming what
    is missing; nothing is made up."""
    target = change.target or {}
    new_imei = str(target.get("new_imei") or "")
    new_sim = str(target.get("new_iccid") or "")
    if not new_imei and not new_sim:
        raise ValueError("no new_iccid or new_imei to send to Telegence")
    if current is None:
        raise ValueError("an equipment change needs the line's subscriber detail (its current values)")
    pairs: dict[str, str] = {"reasonCode": SWAP_REASON_CODE}
    for name, detail_name in SWAP_CURRENT.items():
        pairs[name] = str(current.get(detail_name) or "")
    pairs["IMEI"] = new_imei or str(current.get("BLIMEI") or change.imei or "")
    pairs["sim"] = new_sim or str(current.get("sim") or change.iccid or "")
    missing = [
        f"{name} ({'BLIMEI' if name == 'IMEI' else SWAP_CURRENT.get(name, name)})" for name, v in pairs.items() if not v
    ]
    if missing:
        raise ValueError("cannot send the equipment change: the line's subscriber detail has no " + ", ".join(missing))
    values = {"iccid": new_sim} if new_sim else {}
    if new_imei:
        values["imei"] = new_imei
    held = {"sim": pairs["sim"], "BLIMEI": pairs["IMEI"]}
    return {"serviceCharacteristic": _characteristics(pairs)}, values, held


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
