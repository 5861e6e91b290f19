"""Jasper's business rules as the simulator enforces them: SIM statuses and legal transitions,
PUT body validation, error codes, and the DeviceDetails record of a device.

Pure functions and tables, no HTTP, so the rules can be read (and unit-tested) on their own.

Error codes: 10000001 (invalid credentials) and 40000029 (rate limit) are Jasper's documented
codes. The others below are the simulator's own [I], numeric strings in Jasper's style, because
the public sources do not list codes for these refusals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

ERR_INVALID_CREDENTIALS = "10000001"
ERR_RATE_LIMIT = "40000029"
ERR_INVALID_REQUEST = "10000024"  # [I] malformed body / missing or bad parameter
ERR_NOT_FOUND = "10000003"  # [I] ICCID not in this account
ERR_INVALID_STATUS = "10000017"  # [I] unknown status value
ERR_ILLEGAL_TRANSITION = "20000019"  # [I] status change not allowed from the current status
ERR_EFFECTIVE_DATE = "10000050"  # [I] effectiveDate unreadable or more than 180 days ahead
ERR_UNKNOWN_RATE_PLAN = "30000001"  # [I] rate plan not offered to the account
ERR_UNKNOWN_COMM_PLAN = "30000002"  # [I] communication plan not offered to the account
ERR_UNKNOWN_CUSTOMER = "30000003"  # [I] customer not defined in the account
ERR_SERVER = "50000000"  # [I] injected server error

MSG_NO_CREDENTIALS = "Full authentication is required to access this resource"
MSG_INVALID_CREDENTIALS = "Invalid credentials"
MSG_RATE_LIMIT = "Rate Limit Exceeded"

STATUSES = frozenset(
    {
        "ACTIVATED",
        "ACTIVATION_READY",
        "DEACTIVATED",
        "INVENTORY",
        "PURGED",
        "REPLACED",
        "RETIRED",
        "TEST_READY",
    }
)

# current status -> statuses a PUT may move it to. Setting the current status again is always a
# no-op success (a retried PUT must not be refused). REPLACED is set by the operator's SIM swap,
# never by an edit; RETIRED only goes on to PURGED; PURGED and REPLACED are final.
JASPER_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "INVENTORY": frozenset({"TEST_READY", "ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"}),
    "TEST_READY": frozenset({"INVENTORY", "ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"}),
    "ACTIVATION_READY": frozenset({"INVENTORY", "TEST_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"}),
    "ACTIVATED": frozenset({"DEACTIVATED", "RETIRED"}),
    "DEACTIVATED": frozenset({"ACTIVATED", "ACTIVATION_READY", "TEST_READY", "INVENTORY", "RETIRED"}),
    "RETIRED": frozenset({"PURGED"}),
    "PURGED": frozenset(),
    "REPLACED": frozenset(),
}

EDITABLE_FIELDS = frozenset(
    {
        "ratePlan",
        "communicationPlan",
        "status",
        "customer",
        "deviceID",
        "modemID",
        "overageLimitOverride",
        "ipv4Address",
        "ipv6Address",
        *(f"operatorCustom{i}" for i in range(1, 6)),
        *(f"accountCustom{i}" for i in range(1, 11)),
        *(f"customerCustom{i}" for i in range(1, 6)),
    }
)
OVERAGE_VALUES = frozenset({"DEFAULT", "TEMPORARY_OVERRIDE", "PERMANENT_OVERRIDE"})
MAX_EFFECTIVE_DAYS = 180
# Edit fields stored under another DeviceDetails name.
_DETAIL_NAME = {"ipv4Address": "fixedIPAddress", "ipv6Address": "fixedIpv6Address"}


class Refusal(Exception):
    """A business refusal: HTTP status, Jasper errorCode and errorMessage."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return {"errorMessage": self.message, "errorCode": self.code}


def is_legal_transition(current: str, target: str) -> bool:
    """True if a PUT may move a SIM from `current` to `target` (same status: always)."""
    return current == target or target in JASPER_TRANSITIONS.get(current, frozenset())


def jasper_time(when: dt.datetime) -> str:
    """DeviceDetails date format, as in the spec's example: 2016-06-29 00:21:33.339+0000."""
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def parse_effective_date(value: Any, now: dt.datetime) -> dt.datetime | None:
    """None for an immediate change; the UTC datetime for a scheduled one; Refusal if unreadable
    or beyond 180 days."""
    if not isinstance(value, str) or not value:
        raise Refusal(400, ERR_EFFECTIVE_DATE, "effectiveDate must be a date-time string")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refusal(400, ERR_EFFECTIVE_DATE, f"effectiveDate {value!r} is not a valid date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when > now + dt.timedelta(days=MAX_EFFECTIVE_DAYS):
        raise Refusal(
            400,
            ERR_EFFECTIVE_DATE,
            f"effectiveDate {value} is more than {MAX_EFFECTIVE_DAYS} days in the future",
        )
    return when if when > now else None


def validate_edit(
    body: Any,
    device: Mapping[str, Any],
    *,
    now: dt.datetime,
    rate_plans: frozenset[str] | None = None,
    communication_plans: frozenset[str] | None = None,
    customers: frozenset[str] | None = None,
) -> tuple[dict[str, str], dt.datetime | None]:
    """Check a PUT body against DeviceEditModel and the device's current state at `now` (the
    simulator's clock); returns the edits (DeviceDetails names) and the scheduled time (None =
    now). Raises Refusal."""
    if not isinstance(body, dict):
        raise Refusal(400, ERR_INVALID_REQUEST, "Request body must be a JSON object")
    unknown = sorted(k for k in body if k not in EDITABLE_FIELDS and k != "effectiveDate")
    if unknown:
        raise Refusal(400, ERR_INVALID_REQUEST, f"Unknown field(s): {', '.join(unknown)}")
    edits = {k: v for k, v in body.items() if k != "effectiveDate"}
    if not edits:
        raise Refusal(400, ERR_INVALID_REQUEST, "At least one parameter is required")
    for key, value in edits.items():
        if not isinstance(value, str):
            raise Refusal(400, ERR_INVALID_REQUEST, f"{key} must be a string")
    when = parse_effective_date(body["effectiveDate"], now) if "effectiveDate" in body else None
    status = edits.get("status")
    if status is not None:
        if status not in STATUSES:
            raise Refusal(400, ERR_INVALID_STATUS, f"Invalid status: {status}")
        if not is_legal_transition(device["status"], status):
            raise Refusal(
                400,
                ERR_ILLEGAL_TRANSITION,
                f"Status change from {device['status']} to {status} is not allowed",
            )
    if "overageLimitOverride" in edits and edits["overageLimitOverride"] not in OVERAGE_VALUES:
        raise Refusal(400, ERR_INVALID_REQUEST, "Invalid overageLimitOverride")
    for key, known, code in (
        ("ratePlan", rate_plans, ERR_UNKNOWN_RATE_PLAN),
        ("communicationPlan", communication_plans, ERR_UNKNOWN_COMM_PLAN),
        ("customer", customers, ERR_UNKNOWN_CUSTOMER),
    ):
        if known is not None and key in edits and edits[key] not in known:
            raise Refusal(400, code, f"Invalid {key}: {edits[key]}")
    return {_DETAIL_NAME.get(k, k): v for k, v in edits.items()}, when


def device_record(seed: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A full DeviceDetails record from a seed that names at least `iccid`."""
    iccid = str(seed["iccid"])
    stamp = jasper_time(now)
    record: dict[str, Any] = {
        "iccid": iccid,
        "imsi": "31041" + iccid[-10:],
        "msisdn": "1" + iccid[-10:],
        "imei": "",
        "status": "ACTIVATED",
        "ratePlan": "DEFAULT_RP",
        "communicationPlan": "DEFAULT_CP",
        "customer": None,
        "endConsumerId": None,
        "dateAdded": stamp,
        "dateUpdated": stamp,
        "dateShipped": stamp,
        "accountId": "100020620",
        "fixedIPAddress": None,
        "fixedIpv6Address": None,
        **{f"operatorCustom{i}": "" for i in range(1, 6)},
        **{f"accountCustom{i}": "" for i in range(1, 11)},
        **{f"customerCustom{i}": "" for i in range(1, 6)},
        "simNotes": None,
        "deviceID": None,
        "modemID": "",
        "globalSimType": "",
        "eid": None,
        "simProfileId": "",
    }
    record.update({k: v for k, v in seed.items() if k != "iccid"})
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown Jasper status {record['status']!r} for {iccid}")
    if record["status"] == "ACTIVATED" and "dateActivated" not in record:
        record["dateActivated"] = stamp
    return record


def luhn_check_digit(digits: str) -> str:
    """Luhn check digit for a digit string (ICCIDs and IMEIs end with one)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def make_iccids(count: int, start: int = 0, prefix: str = "89012608") -> list[str]:
    """`count` distinct valid 20-digit ICCIDs (Luhn-checked), for seeding tests and benchmarks."""
    width = 19 - len(prefix)
    out = []
    for n in range(start, start + count):
        body = prefix + str(n).zfill(width)
        out.append(body + luhn_check_digit(body))
    return out
