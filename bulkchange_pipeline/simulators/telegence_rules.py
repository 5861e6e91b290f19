"""AT&T Telegence's business rules as the simulator enforces them: lines (subscriberStatus A/S/C,
singleUserCode, sim, BLIMEI, contactName, costCenter), PATCH validation, activation-line
validation, and the deliberately inconsistent error bodies.

Pure functions and tables, no HTTP, so the rules can be read (and unit-tested) on their own.

At least as strict as the real API, never more lenient (sources: carriers/telegence_wire.py and
bulkchange_pipeline_tests/contracts/telegence.yaml): one spelling per field, nothing missing is
filled in, unknown fields are refused.
- Equipment change: all six characteristics the public sources send are required (reasonCode
  CUST_OWN_EQU, serviceZipCode, singleUserCode, technologyType, IMEI, sim) [I: which ones the real
  API requires is not public, so all are]; `deviceTechnologyType` there is refused (it is the
  activation's name); a singleUserCode other than the line's plan changes the plan too (the public
  script combined the two).
- Rate plan change: `effectiveDate` (yyyy-MM-ddZ) is required (every source sends it).
- Status: `mode` is a subscriberStatus letter, S / R (restore) / C, with a `reasonCode` [I: only
  "R" is seen in public code]; `effectiveDate` optional.
- Activation element: billingAccount.id, serviceSpecification and the characteristics
  singleUserCode, serviceZipCode, equipmentType, deviceTechnologyType, IMEI and sim (AMOP sends
  all of them in both of its builders); `technologyType` there is refused.

Inferred [I]: the `costCenter` characteristic, and that repeating a change the line already holds
is a successful no-op (a retried PATCH must not be refused). A cancelled line (C) is terminal:
every change to it is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .jasper_rules import luhn_check_digit

STATUSES = frozenset({"A", "S", "C"})
MODES = {"S": "S", "R": "A", "C": "C"}
_MODE_WORDS = {"S": "suspend", "R": "restore", "C": "cancel"}
# mode -> subscriberStatus values it may start from (besides the one it leads to: a no-op).
MODE_FROM = {"S": frozenset({"A"}), "R": frozenset({"S"}), "C": frozenset({"A", "S"})}
SWAP_REASON = "CUST_OWN_EQU"
SWAP_REQUIRED = ("reasonCode", "serviceZipCode", "singleUserCode", "technologyType", "IMEI", "sim")
EDITABLE = frozenset({"singleUserCode", "contactName", "costCenter"})
PATCH_KEYS = frozenset({"effectiveDate", "mode", "reasonCode", "serviceCharacteristic"})
ACTIVATION_REQUIRED = ("singleUserCode", "serviceZipCode", "equipmentType", "deviceTechnologyType", "IMEI", "sim")
_OFFERING = re.compile(r"^offeringCode\d+$")
RESOURCE_UNAVAILABLE = "A Resource Required By Service Is Not Available"
MAX_ACTIVATION_LINES = 200
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}Z$")
_ICCID = re.compile(r"^\d{19,20}$")
_IMEI = re.compile(r"^\d{15}$")
_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
# The shapes Telegence's refusals come in; the simulator rotates through them on purpose.
ERROR_SHAPES = ("responseMessage", "errorDescription", "Description", "text")


class Refusal(Exception):
    """A business refusal: HTTP status and message; `body` overrides the rotated error shape
    (the eSIM NotFound answer has its own fixed body)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.body = status, message, body


def error_body(shape: str, message: str, status: int) -> tuple[str, str]:
    """(content, media type) of an error in one of Telegence's shapes."""
    if shape == "responseMessage":
        return json.dumps({"responseCode": str(status), "responseMessage": message}), "application/json"
    if shape == "errorDescription":
        return json.dumps({"errorCode": f"ERR{status}", "errorDescription": message}), "application/json"
    if shape == "Description":
        return json.dumps({"Code": status, "Description": message}), "application/json"
    return message, "text/plain"


def esim_refusal() -> Refusal:
    """The vague NotFound an eSIM-only line answers to a SIM/IMEI swap."""
    return Refusal(404, "eSIM line", {"id": str(uuid.uuid4()), "description": "/service/"})


def parse_date(value: Any, today: dt.date) -> dt.date:
    """An `effectiveDate` in `yyyy-MM-ddZ`; Refusal when unreadable or in the past."""
    if not isinstance(value, str) or not _DATE.match(value):
        raise Refusal(400, f"Invalid effectiveDate {value!r}: expected yyyy-MM-ddZ")
    try:
        when = dt.date.fromisoformat(value[:10])
    except ValueError:
        raise Refusal(400, f"Invalid effectiveDate {value!r}") from None
    if when < today - dt.timedelta(days=1):  # one day of slack for time zones
        raise Refusal(400, f"effectiveDate {value} is in the past")
    return when


def characteristics(items: Any, what: str) -> dict[str, str]:
    """`serviceCharacteristic` [{name, value}] as a dict; Refusal when malformed."""
    if not isinstance(items, list) or not items:
        raise Refusal(400, f"{what}: serviceCharacteristic must be a non-empty array")
    out: dict[str, str] = {}
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise Refusal(400, f"{what}: each serviceCharacteristic needs a string name and value")
        out[item["name"]] = item["value"]
    return out


def validate_patch(
    body: Any, line: Mapping[str, Any], *, plans: frozenset[str] | None, sim_in_use: Any, today: dt.date
) -> tuple[dict[str, str], dt.date | None]:
    """Check a lineconfig PATCH against the line; returns the characteristic edits and the
    effective date (None = now). `sim_in_use(iccid)` says whether another line holds a SIM."""
    if not isinstance(body, dict):
        raise Refusal(400, "Request body must be a JSON object")
    unknown_keys = sorted(set(body) - PATCH_KEYS)
    if unknown_keys:
        raise Refusal(400, f"Unsupported field(s): {', '.join(unknown_keys)}")
    status = line["subscriberStatus"]
    when = parse_date(body["effectiveDate"], today) if "effectiveDate" in body else None
    if "mode" in body:
        if "serviceCharacteristic" in body:
            raise Refusal(400, "A status change (mode) cannot carry serviceCharacteristic")
        mode = body.get("mode")
        if mode not in MODES:
            raise Refusal(400, f"Invalid mode {mode!r}: expected S, R or C")
        if not isinstance(body.get("reasonCode"), str) or not body["reasonCode"].strip():
            raise Refusal(400, "reasonCode is required for a status change")
        target = MODES[mode]
        if status != target and status not in MODE_FROM[mode]:
            if status == "C":
                raise Refusal(
                    400, f"Subscriber {line['subscriberNumber']} is cancelled; {_MODE_WORDS[mode]} is not allowed"
                )
            raise Refusal(400, f"Cannot {_MODE_WORDS[mode]} subscriber {line['subscriberNumber']} in status {status}")
        return {"subscriberStatus": target}, (when if when and when > today else None)
    if "reasonCode" in body:
        raise Refusal(400, "reasonCode belongs to a status change (mode) or, for equipment, in serviceCharacteristic")
    chars = characteristics(body.get("serviceCharacteristic"), "PATCH")
    if status == "C":
        raise Refusal(400, f"Subscriber {line['subscriberNumber']} is cancelled and cannot be changed")
    if "reasonCode" in chars:
        return _swap(chars, line, sim_in_use, plans), None
    unknown = sorted(set(chars) - EDITABLE)
    if unknown:
        raise Refusal(400, f"Unsupported serviceCharacteristic: {', '.join(unknown)}")
    plan = chars.get("singleUserCode")
    if plan is not None:
        if "effectiveDate" not in body:
            raise Refusal(400, "effectiveDate is required for a singleUserCode change")
        if plans is not None and plan not in plans:
            raise Refusal(400, f"Invalid singleUserCode {plan}: not offered on this account")
    return chars, (when if when and when > today else None)


def _swap(
    chars: dict[str, str], line: Mapping[str, Any], sim_in_use: Any, plans: frozenset[str] | None
) -> dict[str, str]:
    """An equipment change: every characteristic of `SWAP_REQUIRED`, nothing else."""
    if chars["reasonCode"] != SWAP_REASON:
        raise Refusal(400, f"Invalid reasonCode {chars['reasonCode']} for an equipment change")
    unknown = sorted(set(chars) - set(SWAP_REQUIRED))
    if unknown:
        raise Refusal(400, f"Unsupported serviceCharacteristic for an equipment change: {', '.join(unknown)}")
    missing = [name for name in SWAP_REQUIRED if not chars.get(name, "").strip()]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise Refusal(400, f"serviceCharacteristic {', '.join(missing)} {verb} required for an equipment change")
    if not _ZIP.match(chars["serviceZipCode"]):
        raise Refusal(400, f"Invalid serviceZipCode {chars['serviceZipCode']}")
    plan = chars["singleUserCode"]
    if plan != line.get("singleUserCode") and plans is not None and plan not in plans:
        raise Refusal(400, f"Invalid singleUserCode {plan}: not offered on this account")
    if line.get("esim"):
        raise esim_refusal()
    if not valid_iccid(chars["sim"]):
        raise Refusal(400, f"Invalid sim {chars['sim']}")
    if chars["sim"] != line.get("sim") and sim_in_use(chars["sim"]):
        raise Refusal(400, f"sim {chars['sim']} is already in use on another subscriber")
    if not valid_imei(chars["IMEI"]):
        raise Refusal(400, f"Invalid IMEI {chars['IMEI']}")
    return {
        "sim": chars["sim"],
        "BLIMEI": chars["IMEI"],
        "singleUserCode": plan,
        "serviceZipCode": chars["serviceZipCode"],
    }


def valid_iccid(value: str) -> bool:
    return bool(_ICCID.match(value)) and luhn_check_digit(value[:-1]) == value[-1]


def valid_imei(value: str) -> bool:
    return bool(_IMEI.match(value)) and luhn_check_digit(value[:-1]) == value[-1]


def validate_activation_line(item: Any, index: int, bans: frozenset[str] | None) -> dict[str, str]:
    """The characteristics of one activation element; Refusal (whole request 400) when its shape
    is wrong. Business problems (unknown plan, SIM in use) surface later as a rejected status."""
    where = f"line {index}"
    if not isinstance(item, dict):
        raise Refusal(400, f"{where}: each element must be an object")
    ban = (item.get("billingAccount") or {}).get("id") if isinstance(item.get("billingAccount"), dict) else None
    if not ban:
        raise Refusal(400, f"{where}: billingAccount.id is required")
    if bans is not None and str(ban) not in bans:
        raise Refusal(400, f"{where}: billing account {ban} is not valid for this app")
    service = item.get("service")
    if not isinstance(service, dict):
        raise Refusal(400, f"{where}: service is required")
    if not isinstance(service.get("serviceSpecification"), dict):
        raise Refusal(400, f"{where}: service.serviceSpecification is required")
    chars = characteristics(service.get("serviceCharacteristic"), where)
    unknown = sorted(n for n in chars if n not in ACTIVATION_REQUIRED and not _OFFERING.match(n))
    if unknown:
        raise Refusal(400, f"{where}: unsupported serviceCharacteristic {', '.join(unknown)}")
    for name in ACTIVATION_REQUIRED:
        if not chars.get(name):
            raise Refusal(400, f"{where}: serviceCharacteristic {name} is required")
    if not _ZIP.match(chars["serviceZipCode"]):
        raise Refusal(400, f"{where}: invalid serviceZipCode {chars['serviceZipCode']}")
    if not valid_iccid(chars["sim"]):
        raise Refusal(400, f"{where}: invalid sim {chars['sim']}")
    if not valid_imei(chars["IMEI"]):
        raise Refusal(400, f"{where}: invalid IMEI {chars['IMEI']}")
    return {**chars, "ban": str(ban)}


def validate_activation_request(body: Any, bans: frozenset[str] | None) -> list[dict[str, str]]:
    """The characteristics of every line of an activation POST (a non-empty JSON array of at
    most `MAX_ACTIVATION_LINES`), or a Refusal for the whole request."""
    if not isinstance(body, list) or not body:
        raise Refusal(400, "Request body must be a non-empty JSON array")
    if len(body) > MAX_ACTIVATION_LINES:
        raise Refusal(400, f"At most {MAX_ACTIVATION_LINES} lines per activation request (got {len(body)})")
    return [validate_activation_line(item, i, bans) for i, item in enumerate(body)]


@dataclass
class Activation:
    """One submitted line: its characteristics, how it ends, and how often it was polled."""

    id: str
    chars: dict[str, str]
    outcome: str  # active | rejected | forever
    reason: str = ""
    polls: int = 0
    subscriber_number: str | None = None


def activation_status(act: Activation, state: str) -> list[dict[str, Any]]:
    """The status GET's answer for an activation in `state` (pending | active | rejected)."""
    service: dict[str, Any] = {
        "status": state,
        "name": "Mobility Services",
        "subscriberNumber": act.subscriber_number,
        "serviceCharacteristic": [{"name": k, "value": act.chars[k]} for k in ("sim", "IMEI", "singleUserCode")],
        "error": None,
    }
    if state == "rejected":
        service["error"] = {"code": "ACT_REJECTED", "description": act.reason}
    interaction = {"pending": "InProgress", "active": "Completed", "rejected": "Failed"}[state]
    return [{"id": act.id, "interactionStatus": interaction, "service": service}]


def line_record(seed: Mapping[str, Any], today: dt.date) -> dict[str, Any]:
    """A line from a seed naming at least `subscriberNumber` (or `msisdn`); `iccid`/`imei`/
    `status`/`plan` are accepted as aliases; `esim: true` marks an eSIM-only line."""
    number = str(seed.get("subscriberNumber") or seed.get("msisdn") or "")
    if not number:
        raise ValueError("a Telegence line needs subscriberNumber")
    record: dict[str, Any] = {
        "subscriberNumber": number,
        "subscriberStatus": str(seed.get("subscriberStatus") or seed.get("status") or "A"),
        "singleUserCode": str(seed.get("singleUserCode") or seed.get("plan") or "IOTSOC1GB"),
        "singleUserCodeDescription": "Mobility IoT",
        "sim": str(seed.get("sim") or seed.get("iccid") or ""),
        "BLIMEI": str(seed.get("BLIMEI") or seed.get("imei") or ""),
        "BLIMEIType": "IMEI",
        "BLDeviceTechnologyType": "LTE",
        "serviceZipCode": str(seed.get("serviceZipCode") or "75001"),
        "subscriberActivationDate": today.isoformat(),
        "statusEffectiveDate": today.isoformat(),
        "contactName": str(seed.get("contactName") or ""),
        "costCenter": str(seed.get("costCenter") or ""),
        "ban": str(seed.get("ban") or "287000000001"),
        "fan": str(seed.get("fan") or "100000001"),
        "esim": bool(seed.get("esim", False)),
    }
    if record["subscriberStatus"] not in STATUSES:
        raise ValueError(f"unknown subscriberStatus {record['subscriberStatus']!r} for {number}")
    return record


_HIDDEN = frozenset({"subscriberNumber", "ban", "fan", "esim"})


def detail(record: Mapping[str, Any]) -> dict[str, Any]:
    """The subscriber-detail body of a line."""
    chars = [{"name": k, "value": v} for k, v in record.items() if k not in _HIDDEN]
    return {
        "subscriberNumber": record["subscriberNumber"],
        "billingAccount": {"id": record["ban"]},
        "serviceCharacteristic": chars,
    }


def list_paging(headers: Mapping[str, str], query: Mapping[str, str], max_size: int) -> tuple[int, int]:
    """(page, size) of a subscriber-list GET: `current-page` (from 1) and `page-size` (1..max)
    headers, both required; any query parameter is refused (none is described)."""
    if query:
        raise Refusal(400, f"Unknown query parameter(s): {', '.join(sorted(query))}")
    missing = [h for h in ("current-page", "page-size") if not headers.get(h)]
    if missing:
        raise Refusal(400, f"Missing required header(s): {', '.join(missing)}")
    page, size = headers["current-page"], headers["page-size"]
    if not all(v.isascii() and v.isdigit() for v in (page, size)) or int(page) < 1 or not 1 <= int(size) <= max_size:
        raise Refusal(400, f"current-page must be >= 1 and page-size 1..{max_size}")
    return int(page), int(size)


def list_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """One subscriber-list element: AMOP's TelegenceDeviceResponse fields [C], camelCase [I]."""
    return {
        "subscriberNumber": record["subscriberNumber"],
        "subscriberNumberStatus": record["subscriberStatus"],
        "billingAccountNumber": record["ban"],
        "foundationAccountNumber": record["fan"],
    }


def make_subscriber_numbers(count: int, start: int = 0, prefix: str = "214555") -> list[str]:
    """`count` distinct 10-digit subscriber numbers."""
    return [prefix + str(n).zfill(10 - len(prefix)) for n in range(start, start + count)]


def make_imeis(count: int, start: int = 0, prefix: str = "35693803") -> list[str]:
    """`count` distinct Luhn-valid 15-digit IMEIs."""
    out = []
    for n in range(start, start + count):
        body = prefix + str(n).zfill(14 - len(prefix))
        out.append(body + luhn_check_digit(body))
    return out
