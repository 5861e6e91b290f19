"""Enumerations shared by every layer.

ChangeType keeps the integer values of the system being replaced, so its requests still parse.
Statuses are stored as their string values.
"""

from __future__ import annotations

import enum


class ChangeType(enum.IntEnum):
    STATUS_UPDATE = 1
    ACTIVATE_NEW_SERVICE = 2
    ARCHIVAL = 3
    CUSTOMER_RATE_PLAN_CHANGE = 4
    CUSTOMER_ASSIGNMENT = 5
    CARRIER_RATE_PLAN_CHANGE = 7
    CREATE_REV_SERVICE = 8
    CHANGE_ICCID_AND_IMEI = 9
    EDIT_USERNAME_COST_CENTER = 10

    @property
    def label(self) -> str:
        """The name the replaced system used, e.g. ``CustomerRatePlanChange``."""
        return _LABELS[self]

    @classmethod
    def parse(cls, value: object) -> ChangeType:
        """Accept an int, a numeric string or a label; raise ValueError naming the valid values."""
        if isinstance(value, ChangeType):
            return value
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            value = repr(value)  # a JSON true or 4.5 is not a change type; fall through to the error
        elif isinstance(value, str) and not (value.strip().isascii() and value.strip().lstrip("-").isdigit()):
            for member, label in _LABELS.items():
                if value.strip().lower() in (label.lower(), member.name.lower()):
                    return member
        else:
            try:
                return cls(int(value))  # type: ignore[call-overload]
            except (TypeError, ValueError):
                pass
        valid = ", ".join(f"{m.value} {m.label}" for m in cls)
        raise ValueError(f"unknown change type {value!r}; valid change types are: {valid}")


_LABELS = {
    ChangeType.STATUS_UPDATE: "StatusUpdate",
    ChangeType.ACTIVATE_NEW_SERVICE: "ActivateNewService",
    ChangeType.ARCHIVAL: "Archival",
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: "CustomerRatePlanChange",
    ChangeType.CUSTOMER_ASSIGNMENT: "CustomerAssignment",
    ChangeType.CARRIER_RATE_PLAN_CHANGE: "CarrierRatePlanChange",
    ChangeType.CREATE_REV_SERVICE: "CreateRevService",
    ChangeType.CHANGE_ICCID_AND_IMEI: "ChangeICCIDAndIMEI",
    ChangeType.EDIT_USERNAME_COST_CENTER: "EditUsernameCostCenter",
}


def change_type_name(change_type: int) -> str:
    """A change type's label for people (``CustomerRatePlanChange``), or ``unknown change type 11``.

    The one wording everywhere a change type is shown by name: the API's ``changeTypeName``, the
    console, the Dagster run tag and the event messages. A number no ChangeType has (a row stored
    before a type was retired) is still named, so a reader sees which number it was rather than an
    empty field that reads like a missing value.
    """
    try:
        return ChangeType(change_type).label
    except ValueError:
        return f"unknown change type {change_type}"


class DeviceChangeStatus(str, enum.Enum):
    """Status of one device row of a bulk change."""

    NEW = "NEW"  # accepted, waiting to be sent
    SCHEDULED = "SCHEDULED"  # effective date in the future
    PROCESSING = "PROCESSING"  # sent; waiting for the carrier's answer or callback
    PROCESSED = "PROCESSED"
    API_FAILED = "API_FAILED"  # carrier refused it, or retries ran out
    ERROR = "ERROR"  # failed validation or internal error
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_DEVICE_STATUSES


FINAL_DEVICE_STATUSES = frozenset(
    {
        DeviceChangeStatus.PROCESSED,
        DeviceChangeStatus.API_FAILED,
        DeviceChangeStatus.ERROR,
        DeviceChangeStatus.CANCELLED,
    }
)


class BulkChangeStatus(str, enum.Enum):
    """Status of a bulk change header; always derived from its device rows (see derive_bulk_status)."""

    NEW = "NEW"
    # The tenant's approval policy holds it until a second person approves it (``domain.approval``);
    # set at intake and left only by approve (to NEW/SCHEDULED) or by reject/expiry/cancel (CANCELLED):
    # never derived from rows.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    SCHEDULED = "SCHEDULED"
    PROCESSING = "PROCESSING"
    PENDING = "PENDING"  # only asynchronous answers outstanding
    PROCESSED = "PROCESSED"  # every device row final; the counts say how many of each
    # The run could not finish (unfinished rows stay re-runnable), or nothing was ever sent: every
    # device was refused at validation (``refused_detail`` says so; nothing to retry or resume).
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """Nothing more will happen to this bulk change (followers stop, the demo stops waiting)."""
        return self in FINAL_BULK_STATUSES

    @classmethod
    def final_values(cls) -> frozenset[str]:
        """The stored strings of the final statuses, for comparing with a status read as text."""
        return frozenset(s.value for s in FINAL_BULK_STATUSES)


FINAL_BULK_STATUSES = frozenset({BulkChangeStatus.PROCESSED, BulkChangeStatus.ERROR, BulkChangeStatus.CANCELLED})


class PortalType(enum.IntEnum):
    M2M = 0
    LNP = 1
    MOBILITY = 2


class Integration(str, enum.Enum):
    """Carrier or billing API an account speaks. The Jasper family shares one client."""

    JASPER = "jasper"
    THINGSPACE = "thingspace"
    TELEGENCE = "telegence"
    TEAL = "teal"
    POND = "pond"
    REVIO = "revio"

    @classmethod
    def parse(cls, value: str) -> Integration:
        key = value.strip().lower()
        if key in _JASPER_FAMILY:
            return cls.JASPER
        try:
            return cls(key)
        except ValueError:
            valid = ", ".join(i.value for i in cls)
            raise ValueError(f"unknown integration {value!r}; valid: {valid}") from None


class CarrierProtocol(str, enum.Enum):
    """The API a service provider's account is reached through. Only the Jasper family has two:
    Control Center's REST API (``rest``, every provider's default) and its legacy SOAP Terminal
    service (``soap``), which older accounts and some operators' instances still use."""

    REST = "rest"
    SOAP = "soap"

    @classmethod
    def parse(cls, value: str | CarrierProtocol | None) -> CarrierProtocol:
        """A protocol from its name (any case, surrounding blanks ignored); None means ``rest``."""
        if value is None:
            return cls.REST
        if isinstance(value, CarrierProtocol):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"unknown protocol {value!r}; valid: rest, soap") from None


# Carriers that run Cisco Control Center and speak the Jasper REST API.
_JASPER_FAMILY = {"jasper", "att_cisco_jasper", "att_pod19", "pod19", "t_mobile_jasper", "tmobile_jasper", "rogers"}


def refused_detail(counts: dict[str, int]) -> str | None:
    """ "nothing was sent: all N devices were refused at validation" when every row is ERROR, else None.

    Only for a bulk change no run ever claimed a row of (``attempt_count = 0`` everywhere): the
    header status ERROR says that (``derive_bulk_status(..., attempted=0)``), so callers that hold
    the header use ``bulk_status_detail``.
    """
    total = sum(counts.values())
    if not total or counts.get(DeviceChangeStatus.ERROR.value, 0) != total:
        return None
    if total == 1:
        return "nothing was sent: its one device was refused at validation"
    return f"nothing was sent: all {total} devices were refused at validation"


def bulk_status_detail(status: str, counts: dict[str, int]) -> str | None:
    """What the header status alone does not say, for people (API ``statusDetail``, CLI status)."""
    return refused_detail(counts) if status == BulkChangeStatus.ERROR.value else None


def derive_bulk_status(
    counts: dict[str, int], *, has_pending_async: bool = False, attempted: int | None = None
) -> BulkChangeStatus:
    """Derive a bulk change's status from the counts of its device rows by status.

    The header never overrides a device row's result; it only summarises them. ``attempted``: how
    many rows a run has claimed (``attempt_count > 0``), where the caller knows it. Every row ERROR
    and none claimed means nothing was sent (every device was refused at validation): ERROR, not
    PROCESSED, so the bulk change does not look done. Rows that failed while being processed
    (``attempted > 0``) leave it PROCESSED like any other finished mix. Unknown (None): PROCESSED.
    """
    total = sum(counts.values())
    if total == 0:
        return BulkChangeStatus.PROCESSED
    if attempted == 0 and refused_detail(counts) is not None:
        return BulkChangeStatus.ERROR
    c = {DeviceChangeStatus(k): v for k, v in counts.items() if v}
    if set(c) == {DeviceChangeStatus.CANCELLED}:
        return BulkChangeStatus.CANCELLED
    if c.get(DeviceChangeStatus.PROCESSING) and not c.get(DeviceChangeStatus.NEW):
        return BulkChangeStatus.PENDING if has_pending_async else BulkChangeStatus.PROCESSING
    if c.get(DeviceChangeStatus.NEW) or c.get(DeviceChangeStatus.PROCESSING):
        return (
            BulkChangeStatus.PROCESSING
            if any(c.get(s) for s in FINAL_DEVICE_STATUSES) or c.get(DeviceChangeStatus.PROCESSING)
            else BulkChangeStatus.NEW
        )
    if c.get(DeviceChangeStatus.SCHEDULED):
        return BulkChangeStatus.SCHEDULED
    return BulkChangeStatus.PROCESSED
