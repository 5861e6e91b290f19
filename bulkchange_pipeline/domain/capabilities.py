"""The change-type x carrier capability matrix (DESIGN section 4).

A request for a cell that is not listed is refused at validation with a per-device error and is
never sent. ``Handling`` says where the change lands: our database only, or the carrier first and
then our database.

``Capability.dates`` says whether the carrier takes a future effective date in the request and
applies the change itself on that date (``CarrierDates``); such rows are sent at once with the
date. Every other cell with a future effective date waits in SCHEDULED and the sensor launches it
when it is due (intake validation applies the rule).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from .enums import ChangeType, Integration


class Handling(str, enum.Enum):
    DB = "db"  # our database only
    CARRIER = "carrier"  # carrier API call(s), then our database
    CARRIER_ASYNC = "carrier_async"  # carrier answers later (callback or poll), then our database


@dataclass(frozen=True)
class CarrierDates:
    """The carrier takes a future effective date with the change and applies it itself then.

    ``max_days_ahead``: the furthest date it accepts (None: no limit known). ``whole_days``: it
    takes a calendar day (UTC), not a time of day, so only a date on a later day than today can be
    handed over (a later time today would be applied at once).
    """

    max_days_ahead: int | None = None
    whole_days: bool = False

    def takes(self, when: datetime, now: datetime) -> bool:
        """Whether the carrier can be handed ``when`` (a future instant; both naive UTC or both aware)."""
        if when <= now:
            return False
        if self.max_days_ahead is not None and when > now + timedelta(days=self.max_days_ahead):
            return False
        return not self.whole_days or when.date() > now.date()

    def applies_on(self, when: datetime) -> str:
        """When the carrier applies it, as the carrier is told (UTC)."""
        if self.whole_days:
            return when.date().isoformat()
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Capability:
    handling: Handling
    how: str  # what the carrier side does, for people reading a dry-run report
    dates: CarrierDates | None = None  # the carrier takes effective dates itself (see CarrierDates)


CT = ChangeType
I = Integration  # noqa: E741 - one letter a column, so the matrix reads like DESIGN's table
C, A, DB = Handling.CARRIER, Handling.CARRIER_ASYNC, Handling.DB
# Jasper's DeviceEditModel takes effectiveDate up to 180 days ahead; Telegence line PATCHes take a
# `yyyy-MM-ddZ` effectiveDate (no limit documented). Their clients send the target's future date.
JASPER_DATES = CarrierDates(max_days_ahead=180)
TELEGENCE_DATES = CarrierDates(whole_days=True)

MATRIX: dict[ChangeType, dict[Integration, Capability]] = {
    CT.STATUS_UPDATE: {
        I.JASPER: Capability(C, "PUT status", JASPER_DATES),
        I.THINGSPACE: Capability(A, "activate/suspend/restore/deactivate"),
        I.TELEGENCE: Capability(C, "line PATCH; activation batch", TELEGENCE_DATES),
        I.TEAL: Capability(A, "enable/disable"),
        I.POND: Capability(C, "service statuses"),
    },
    CT.ACTIVATE_NEW_SERVICE: {
        I.TELEGENCE: Capability(A, "activation, batches of 200, polled"),
    },
    CT.ARCHIVAL: {i: Capability(DB, "database only") for i in (I.JASPER, I.THINGSPACE, I.TELEGENCE, I.TEAL, I.POND)},
    CT.CUSTOMER_RATE_PLAN_CHANGE: {
        i: Capability(DB, "database only") for i in (I.JASPER, I.THINGSPACE, I.TELEGENCE, I.TEAL, I.POND)
    },
    CT.CUSTOMER_ASSIGNMENT: {
        I.JASPER: Capability(C, "PUT customer, then database", JASPER_DATES),
        I.THINGSPACE: Capability(DB, "database only"),
        I.TELEGENCE: Capability(DB, "database only"),
        I.TEAL: Capability(DB, "database only"),
        I.POND: Capability(DB, "database only"),
        I.REVIO: Capability(C, "service + products when the customer has a Rev id"),
    },
    CT.CARRIER_RATE_PLAN_CHANGE: {
        I.JASPER: Capability(C, "PUT ratePlan (+ communicationPlan)", JASPER_DATES),
        I.THINGSPACE: Capability(A, "PUT plan"),
        I.TELEGENCE: Capability(C, "PATCH singleUserCode", TELEGENCE_DATES),
        I.TEAL: Capability(A, "assign-plan (needs EID)"),
        I.POND: Capability(C, "add package, activate, terminate old; undo on failure"),
    },
    CT.CREATE_REV_SERVICE: {
        I.REVIO: Capability(C, "create service + products"),
    },
    CT.CHANGE_ICCID_AND_IMEI: {
        I.THINGSPACE: Capability(A, "deviceId change"),
        I.TELEGENCE: Capability(C, "PATCH sim/IMEI"),
    },
    CT.EDIT_USERNAME_COST_CENTER: {
        I.JASPER: Capability(C, "PUT custom fields", JASPER_DATES),
        I.THINGSPACE: Capability(DB, "database only"),
        I.TELEGENCE: Capability(C, "PATCH + Rev update"),
        I.TEAL: Capability(DB, "database only"),
        I.POND: Capability(DB, "database only"),
    },
}


def capability(change_type: ChangeType, integration: Integration) -> Capability | None:
    """The cell of the matrix, or None when the carrier cannot do this change type."""
    return MATRIX[change_type].get(integration)


def unsupported_reason(change_type: ChangeType, integration: Integration) -> str:
    able = ", ".join(i.value for i in MATRIX[change_type]) or "no carrier"
    return f"{change_type.label} is not supported for {integration.value} devices (supported for: {able})"
