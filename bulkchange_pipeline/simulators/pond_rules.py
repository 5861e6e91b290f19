"""Pond IoT's business rules as the (provisional) simulator enforces them: package statuses and
their legal moves, request-body validation, the device/package/package-type records, paging.

PROVISIONAL. Pond publishes no API documentation (reference/carriers.md section 5). What is known
[C] from AMOP code (hemalathapampana/BulkChange AltaworxDeviceBulkChange.cs and
CarrierRatePlanUpdate.cs; pond-AltaworxPondGetRatePlans AltaworxPondGetRatePlans.cs): packages on a
SIM with statuses ACTIVE / TERMINATED / PENDING, package types per inventory (`packageTypeId, name,
status, dataUsageAllowanceInBytes`), an "add package" call whose body carries the package type id
(`PondAddPackageRequest.PackageTypeId = RatePlanId`, a C# `long`, so an integer: a text id is
refused, not read as a number) and answers the package (`PackageId`, `Status`), per-SIM service
statuses switched all on or all off, and lists fetched by offset and page size whose answers carry
`Elements` + `IsLastPage`. Everything else here is inferred [I]: camelCase JSON names, the paging
parameter names `offset`/`limit`, the error envelope `{"code", "message"}`, the codes, the
status-transition table, the service-status body `{"enabled": bool}`, the service names. Pure
tables and functions, no HTTP, so the assumptions sit in one place and are easy to change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

# Package statuses [C].
ACTIVE = "ACTIVE"
TERMINATED = "TERMINATED"
PENDING = "PENDING"
PACKAGE_STATUSES = frozenset({ACTIVE, TERMINATED, PENDING})

# current package status -> statuses a PUT may set. Setting the current status again is a no-op
# success (a retried PUT must not be refused) [I]. A terminated package is final [I].
PACKAGE_TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({ACTIVE, TERMINATED}),
    ACTIVE: frozenset({TERMINATED}),
    TERMINATED: frozenset(),
}

SERVICE_NAMES = ("DATA", "SMS", "VOICE")  # [I]

# Error codes [I] (the simulator's own; Pond's are not public).
ERR_UNAUTHORIZED = "UNAUTHORIZED"
ERR_FORBIDDEN = "FORBIDDEN"
ERR_RATE_LIMIT = "TOO_MANY_REQUESTS"
ERR_INVALID_REQUEST = "INVALID_REQUEST"
ERR_DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"
ERR_PACKAGE_NOT_FOUND = "PACKAGE_NOT_FOUND"
ERR_INVENTORY_NOT_FOUND = "INVENTORY_NOT_FOUND"
ERR_UNKNOWN_PACKAGE_TYPE = "UNKNOWN_PACKAGE_TYPE"
ERR_INVALID_TRANSITION = "INVALID_STATUS_TRANSITION"
ERR_STEP_FAILED = "OPERATION_FAILED"  # answer of the switched step failures (tests of the undo)
ERR_SERVER = "INTERNAL_ERROR"
ERR_NOT_FOUND = "NOT_FOUND"  # a path Pond does not serve [I]
ERR_METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # a method a served path does not take [I]

MAX_PAGE_LIMIT = 100  # [I]
DEFAULT_INVENTORY_ID = 1
DEFAULT_PACKAGE_TYPES: tuple[dict[str, Any], ...] = (
    {"packageTypeId": 2001, "name": "IoT 100MB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 100 * 1024**2},
    {"packageTypeId": 2002, "name": "IoT 1GB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 1024**3},
    {"packageTypeId": 2003, "name": "IoT 5GB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 5 * 1024**3},
    {"packageTypeId": 2999, "name": "Legacy 10MB", "status": "INACTIVE", "dataUsageAllowanceInBytes": 10 * 1024**2},
)


class Refusal(Exception):
    """A refusal: HTTP status, Pond-style code and message [I]."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def pond_time(when: dt.datetime) -> str:
    """ISO-8601 UTC timestamps [I]."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (f"{when.microsecond // 1000:03d}Z")


def same_id(a: Any, b: Any) -> bool:
    """Whether a record id matches an id taken from a URL path (path segments are always text)."""
    return str(a) == str(b)


def parse_page(query: Mapping[str, str]) -> tuple[int, int]:
    """(offset, limit) from the query; Refusal when out of range."""
    try:
        offset = int(query.get("offset", 0))
        limit = int(query.get("limit", MAX_PAGE_LIMIT))
    except ValueError:
        raise Refusal(400, ERR_INVALID_REQUEST, "offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise Refusal(400, ERR_INVALID_REQUEST, f"offset must be >= 0 and limit 1..{MAX_PAGE_LIMIT}")
    return offset, limit


def page(items: Sequence[Any], offset: int, limit: int) -> dict[str, Any]:
    """The paged list envelope [C]: `elements` and `isLastPage`."""
    return {"elements": list(items[offset : offset + limit]), "isLastPage": offset + limit >= len(items)}


def validate_add_package(body: Any, package_types: Sequence[Mapping[str, Any]] | None) -> Any:
    """The packageTypeId of an add-package body; Refusal unless it names an ACTIVE type of the
    device's inventory."""
    if not isinstance(body, dict) or set(body) != {"packageTypeId"}:
        raise Refusal(400, ERR_INVALID_REQUEST, 'body must be {"packageTypeId": <id>}')
    type_id = body["packageTypeId"]
    if isinstance(type_id, bool) or not isinstance(type_id, int) or type_id < 1:
        raise Refusal(400, ERR_INVALID_REQUEST, f"packageTypeId must be a positive integer, not {type_id!r}")
    match = next((t for t in package_types or () if t["packageTypeId"] == type_id), None)
    if match is None or match.get("status") != "ACTIVE":
        raise Refusal(
            400, ERR_UNKNOWN_PACKAGE_TYPE, f"package type {type_id} is not available in the device's inventory"
        )
    return match["packageTypeId"]


def validate_package_status(body: Any, current: str) -> str:
    """The status a PUT asks for; Refusal if malformed or not a legal move from `current`."""
    if not isinstance(body, dict) or set(body) != {"status"}:
        raise Refusal(400, ERR_INVALID_REQUEST, 'body must be {"status": "ACTIVE"|"TERMINATED"}')
    target = body["status"]
    if target not in (ACTIVE, TERMINATED):
        raise Refusal(400, ERR_INVALID_REQUEST, f"status must be ACTIVE or TERMINATED, not {target!r}")
    if target != current and target not in PACKAGE_TRANSITIONS.get(current, frozenset()):
        raise Refusal(409, ERR_INVALID_TRANSITION, f"package status cannot change from {current} to {target}")
    return target


def validate_service_status(body: Any) -> bool:
    """The `enabled` flag of a service-status PUT; Refusal if malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool) or len(body) != 1:
        raise Refusal(400, ERR_INVALID_REQUEST, 'body must be {"enabled": true|false}')
    return body["enabled"]


def device_record(seed: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A device from a seed naming at least `iccid`. `packages` are optional seeds
    (`packageTypeId`, `status`); default one ACTIVE package of type 2001. `servicesEnabled`
    (default true) sets every service."""
    iccid = str(seed["iccid"])
    enabled = bool(seed.get("servicesEnabled", True))
    return {
        "iccid": iccid,
        "imsi": "23450" + iccid[-10:],
        "msisdn": "44" + iccid[-10:],
        "inventoryId": seed.get("inventoryId", DEFAULT_INVENTORY_ID),
        "billingGroupId": seed.get("billingGroupId"),
        "dateCreated": pond_time(now),
        "services": [{"name": n, "enabled": enabled} for n in SERVICE_NAMES],
    }


def package_seeds(seed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The package seeds of a device seed, checked."""
    packages = seed.get("packages", [{"packageTypeId": 2001, "status": ACTIVE}])
    out = []
    for p in packages:
        status = p.get("status", ACTIVE)
        if status not in PACKAGE_STATUSES:
            raise ValueError(f"unknown package status {status!r} for {seed['iccid']}")
        out.append({"packageTypeId": p["packageTypeId"], "status": status})
    return out


def package_record(package_id: int, type_id: Any, status: str, now: dt.datetime) -> dict[str, Any]:
    """A package on a SIM as the API returns it ([C] packageId, status; the rest [I])."""
    stamp = pond_time(now)
    return {
        "packageId": package_id,
        "packageTypeId": type_id,
        "status": status,
        "dateCreated": stamp,
        "dateUpdated": stamp,
    }
