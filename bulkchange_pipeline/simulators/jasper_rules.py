"""Jasper's business rules as the simulator enforces them: SIM statuses and legal transitions,
PUT body validation, error codes, and the DeviceDetails record of a device.

Pure functions and tables, no HTTP, so the rules can be read (and unit-tested) on their own.

Error codes: 10000001 (invalid credentials) and 40000029 (rate limit) are Jasper's documented
codes. The others below are the simulator's own [I], numeric strings in Jasper's style, because
the public sources do not list codes for these refusals.

Field values are checked the way the real API checks them (issue 17: a simulator is at least as
strict as the real API): `ipv4Address` must be an IPv4 address and `ipv6Address` an IPv6 one
(stdlib `ipaddress`, no zone index: a SIM's fixed IP has none), `overageLimitOverride` one of its
three documented values, `status` a SIM status, every field a string, and `effectiveDate` an RFC
3339 date-time with an offset (the fragment's `format: date-time`; carriers.md: "yyyy-MM-ddTHH:
mm:ssZ") no more than 180 days ahead. A body with any bad value is refused whole: nothing stored.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
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
ERR_INVALID_IP = "10000061"  # [I] ipv4Address / ipv6Address is not an address of that family
ERR_UNKNOWN_RESOURCE = "10000002"  # [I] no such API resource (unknown path under /rws/api)
ERR_METHOD_NOT_ALLOWED = "10000005"  # [I] known resource, method it does not serve

MSG_NO_CREDENTIALS = "Full authentication is required to access this resource"
MSG_INVALID_CREDENTIALS = "Invalid credentials"
MSG_RATE_LIMIT = "Rate Limit Exceeded"
MSG_UNKNOWN_RESOURCE = "Resource not found"

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
# RFC 3339 date-time with a mandatory offset; "+0000" (Java's `Z` pattern) is accepted as well.
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)
_IP_FAMILY: Mapping[str, type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]] = {
    "ipv4Address": ipaddress.IPv4Address,
    "ipv6Address": ipaddress.IPv6Address,
}
# Edit fields stored under another DeviceDetails name. DeviceDetails has no overage field, so it
# is kept under a private name ("_" keys are never sent: GET answers only DeviceDetails fields).
_DETAIL_NAME = {
    "ipv4Address": "fixedIPAddress",
    "ipv6Address": "fixedIpv6Address",
    "overageLimitOverride": "_overageLimitOverride",
}


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


def parse_date_time(value: str) -> dt.datetime | None:
    """An RFC 3339 date-time with an offset, as an aware datetime; None if `value` is not one
    (`fromisoformat` alone would also take "2030-01-01", "20300101T00" or a naive time)."""
    if _DATE_TIME.match(value) is None:
        return None
    try:
        return dt.datetime.fromisoformat(value.upper())  # 3.11 reads "Z" and "+0000" too
    except ValueError:  # 2030-02-30, 25:00...
        return None


def parse_effective_date(value: Any, now: dt.datetime) -> dt.datetime | None:
    """None for an immediate change; the UTC datetime for a scheduled one; Refusal if not an RFC
    3339 date-time or beyond 180 days."""
    if not isinstance(value, str) or not value:
        raise Refusal(400, ERR_EFFECTIVE_DATE, "effectiveDate must be a date-time string")
    when = parse_date_time(value)
    if when is None:
        raise Refusal(400, ERR_EFFECTIVE_DATE, f"effectiveDate {value!r} is not a valid date-time")
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
    for key, family in _IP_FAMILY.items():
        if key in edits and not is_ip_address(edits[key], family):
            raise Refusal(400, ERR_INVALID_IP, f"Invalid {key}: {edits[key]}")
    for key, known, code in (
        ("ratePlan", rate_plans, ERR_UNKNOWN_RATE_PLAN),
        ("communicationPlan", communication_plans, ERR_UNKNOWN_COMM_PLAN),
        ("customer", customers, ERR_UNKNOWN_CUSTOMER),
    ):
        if known is not None and key in edits and edits[key] not in known:
            raise Refusal(400, code, f"Invalid {key}: {edits[key]}")
    return {_DETAIL_NAME.get(k, k): v for k, v in edits.items()}, when


MAX_PAGE_SIZE = 50
# searchDevices filters matched by equality against the device (devices.yaml parameters).
SEARCH_FILTERS = frozenset({"status", *(k for k in EDITABLE_FIELDS if "Custom" in k)})


def parse_search(query: Mapping[str, str]) -> tuple[float, float, int, int, dict[str, str]]:
    """searchDevices' query, checked: (since, till) as timestamps (till +inf when absent), page
    size, page number and the equality filters (`accountId` among them). Raises Refusal like the
    PUT checks: `modifiedSince` is required and, like `modifiedTill`, an RFC 3339 date-time;
    `pageSize` 1..50; `pageNumber` >= 1; `accountId` an integer; `status` a SIM status. An offset's
    `+` sent unencoded decodes to a space: refused, never turned back into a `+` (issue 17: one
    spelling, so a client that does not encode its query fails here as it would at Jasper)."""
    bounds: list[float] = []
    for name in ("modifiedSince", "modifiedTill"):
        text = query.get(name) or ""
        if " " in text:
            raise Refusal(400, ERR_INVALID_REQUEST, f"{name} {text!r} has a space: encode the offset's '+' as %2B")
        if not text:
            if name == "modifiedSince":
                raise Refusal(400, ERR_INVALID_REQUEST, "modifiedSince is required")
            bounds.append(float("inf"))
            continue
        when = parse_date_time(text)
        if when is None:
            raise Refusal(400, ERR_INVALID_REQUEST, f"{name} must be yyyy-MM-ddTHH:mm:ss+00:00, not {text!r}")
        bounds.append(when.timestamp())
    try:
        page_size = int(query.get("pageSize") or MAX_PAGE_SIZE)
        page = int(query.get("pageNumber") or 1)
        account = query.get("accountId")
        filters = {} if account is None else {"accountId": str(int(account))}
    except ValueError:
        raise Refusal(400, ERR_INVALID_REQUEST, "pageSize, pageNumber and accountId must be integers") from None
    if not 1 <= page_size <= MAX_PAGE_SIZE or page < 1:
        raise Refusal(400, ERR_INVALID_REQUEST, f"pageSize must be 1..{MAX_PAGE_SIZE} and pageNumber >= 1")
    filters.update({k: v for k, v in query.items() if k in SEARCH_FILTERS})
    if "status" in filters and filters["status"] not in STATUSES:
        raise Refusal(400, ERR_INVALID_STATUS, f"Invalid status: {filters['status']}")
    return bounds[0], bounds[1], page_size, page, filters


def is_ip_address(value: str, family: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> bool:
    """True if `value` is an address of `family` (no IPv6 zone index, as jsonschema's `ipv6`)."""
    try:
        address = family(value)
    except ValueError:
        return False
    return not getattr(address, "scope_id", None)


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
