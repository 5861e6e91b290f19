"""The change-type x carrier capability matrix (DESIGN section 4).

A request for a cell that is not listed is refused at validation with a per-device error and is
never sent. ``Handling`` says where the change lands: our database only, or the carrier first and
then our database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .enums import ChangeType, Integration


class Handling(str, enum.Enum):
    DB = "db"  # our database only
    CARRIER = "carrier"  # carrier API call(s), then our database
    CARRIER_ASYNC = "carrier_async"  # carrier answers later (callback or poll), then our database


@dataclass(frozen=True)
class Capability:
    handling: Handling
    how: str  # what the carrier side does, for people reading a dry-run report


CT = ChangeType
I = Integration
C, A, DB = Handling.CARRIER, Handling.CARRIER_ASYNC, Handling.DB

MATRIX: dict[ChangeType, dict[Integration, Capability]] = {
    CT.STATUS_UPDATE: {
        I.JASPER: Capability(C, "PUT status"),
        I.THINGSPACE: Capability(A, "activate/suspend/restore/deactivate"),
        I.TELEGENCE: Capability(C, "line PATCH; activation batch"),
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
        I.JASPER: Capability(C, "PUT customer, then database"),
        I.THINGSPACE: Capability(DB, "database only"),
        I.TELEGENCE: Capability(DB, "database only"),
        I.TEAL: Capability(DB, "database only"),
        I.POND: Capability(DB, "database only"),
        I.REVIO: Capability(C, "service + products when the customer has a Rev id"),
    },
    CT.CARRIER_RATE_PLAN_CHANGE: {
        I.JASPER: Capability(C, "PUT ratePlan (+ communicationPlan)"),
        I.THINGSPACE: Capability(A, "PUT plan"),
        I.TELEGENCE: Capability(C, "PATCH singleUserCode"),
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
        I.JASPER: Capability(C, "PUT custom fields"),
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
    return (
        f"{change_type.label} is not supported for {integration.value} devices "
        f"(supported for: {able})"
    )
