"""The change-type x carrier capability matrix (DESIGN section 4).

A request for a cell that is not listed is refused at validation with a per-device error and is
never sent. ``Handling`` says where the change lands: our database only, or the carrier first and
then our database.

``Capability.dates`` says whether the carrier takes a future effective date in the request and
applies the change itself on that date (``CarrierDates``); such rows are sent at once with the
date. Every other cell with a future effective date waits in SCHEDULED and the sensor launches it
when it is due (intake validation applies the rule).

Columns are (integration, protocol): ``MATRIX`` holds every integration's REST column, and
``SOAP_MATRIX`` the Jasper family's SOAP column (Control Center's SOAP Terminal service, for a
service provider with ``protocol = soap``). ``capability`` reads the column of a provider's protocol.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from .enums import CarrierProtocol, ChangeType, Integration


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
# SOAP EditTerminal takes effectiveDate as an xs:date (a UTC day, at most 180 days ahead): a time
# later today waits in SCHEDULED and is sent when due.
JASPER_SOAP_DATES = CarrierDates(max_days_ahead=180, whole_days=True)

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


# The Jasper family over SOAP: every cell of its REST column, through EditTerminal (one field per
# call; changeType 3 status, 4 rate plan, 124 communication plan [I], 6 customer, 17/18 custom 1/2).
_SOAP_DB = Capability(DB, "database only")
SOAP_MATRIX: dict[ChangeType, dict[Integration, Capability]] = {
    CT.STATUS_UPDATE: {I.JASPER: Capability(C, "EditTerminal status", JASPER_SOAP_DATES)},
    CT.ARCHIVAL: {I.JASPER: _SOAP_DB},
    CT.CUSTOMER_RATE_PLAN_CHANGE: {I.JASPER: _SOAP_DB},
    CT.CUSTOMER_ASSIGNMENT: {I.JASPER: Capability(C, "EditTerminal customer, then database", JASPER_SOAP_DATES)},
    CT.CARRIER_RATE_PLAN_CHANGE: {
        I.JASPER: Capability(C, "EditTerminal rate plan (+ communication plan)", JASPER_SOAP_DATES)
    },
    CT.EDIT_USERNAME_COST_CENTER: {I.JASPER: Capability(C, "EditTerminal custom fields 1 and 2", JASPER_SOAP_DATES)},
}
MATRICES: dict[CarrierProtocol, dict[ChangeType, dict[Integration, Capability]]] = {
    CarrierProtocol.REST: MATRIX,
    CarrierProtocol.SOAP: SOAP_MATRIX,
}


def capability(
    change_type: ChangeType, integration: Integration, protocol: CarrierProtocol = CarrierProtocol.REST
) -> Capability | None:
    """The cell of the matrix (the column of the provider's protocol), or None when the carrier
    cannot do this change type that way."""
    return MATRICES[protocol].get(change_type, {}).get(integration)


class ProtocolNotSupported(ValueError):
    """A protocol an integration is not reached through (only the Jasper family has SOAP)."""


def checked_protocol(integration: Integration, protocol: CarrierProtocol | str | None) -> CarrierProtocol:
    """``protocol`` parsed (None: rest), or ``ProtocolNotSupported`` when ``integration`` has no
    column of that protocol in the matrix: the matrix is where the protocols a carrier speaks are
    listed, so a service provider can only be given one the pipeline can use."""
    proto = CarrierProtocol.parse(protocol)
    if not any(integration in column for column in MATRICES[proto].values()):
        able = sorted({i.value for column in MATRICES[proto].values() for i in column})
        raise ProtocolNotSupported(
            f"protocol {proto.value!r} is not available for integration {integration.value!r} "
            f"(only for: {', '.join(able)}); use protocol 'rest'"
        )
    return proto


def unsupported_reason(
    change_type: ChangeType, integration: Integration, protocol: CarrierProtocol = CarrierProtocol.REST
) -> str:
    column = MATRICES[protocol].get(change_type, {})
    able = ", ".join(i.value for i in column) or "no carrier"
    if protocol is CarrierProtocol.REST:
        return f"{change_type.label} is not supported for {integration.value} devices (supported for: {able})"
    return (
        f"{change_type.label} is not supported for {integration.value} devices over {protocol.value.upper()} "
        f"(supported over {protocol.value.upper()} for: {able})"
    )
