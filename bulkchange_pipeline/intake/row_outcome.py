"""What a validated row becomes (``validation_rules``): the carriers' published rules for a row
sent now, and the ``NewDeviceChange`` stored for it: NEW, SCHEDULED (a future date, or a carrier
rule's wait with deferIfLimited) or ERROR with its reason, with the identifiers of the device or,
for an unknown one, as they were sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..domain import ChangeType, DeviceChangeStatus, Integration
from ..domain.capabilities import CarrierDates
from ..store import reference as ref
from ..store.db import to_naive_utc
from ..store.device_rows import NewDeviceChange
from . import carrier_limits

if TYPE_CHECKING:
    from .validation_rules import Lookups, Row


def carrier_rules(
    rows: list[Row], ct: ChangeType, sp: ref.ServiceProviderInfo, ctx: Lookups, now: datetime, defer: bool
) -> None:
    """The carriers' published rules (``domain.carrier_rules``) for each accepted row sent now:
    refused with the rule, or with ``defer`` (deferIfLimited) kept to wait until the rule allows."""
    if not ctx.histories:
        return
    naive_now = to_naive_utc(now)
    for r in rows:
        if r.reason is not None or r.device is None:
            continue
        effective = _effective_at(r.target)
        if effective is not None and effective > naive_now:
            continue
        refusal = carrier_limits.check(ctx.histories, sp.integration, ct, r.device.id, naive_now)
        if refusal is None:
            continue
        if defer and refusal.allowed_at is not None:
            r.deferred = refusal
        else:
            r.reason = refusal.reason


def _effective_at(target: dict[str, Any] | None) -> datetime | None:
    value = (target or {}).get("effective_date")
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return to_naive_utc(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


CARRIER_DATED_PREFIX = "effective date passed to "


def carrier_label(integration: Integration) -> str:
    """The carrier's name in messages: ``Jasper``, ``Telegence``..."""
    return {Integration.THINGSPACE: "ThingSpace", Integration.REVIO: "Rev.io"}.get(
        integration, integration.value.title()
    )


def carrier_dated_detail(carrier: str, applies_on: str) -> str:
    return f"{CARRIER_DATED_PREFIX}{carrier}: the carrier applies it on {applies_on}"


def is_carrier_dated(row: NewDeviceChange) -> bool:
    return row.status is DeviceChangeStatus.NEW and (row.status_details or "").startswith(CARRIER_DATED_PREFIX)


def to_change(r: Row, now: datetime, dates: CarrierDates | None = None, carrier: str = "") -> NewDeviceChange:
    d = r.device
    ids = {"iccid": None, "imei": None, "msisdn": None, "eid": None}
    if d is not None:
        ids = {"iccid": d.iccid, "imei": d.imei, "msisdn": d.msisdn, "eid": d.eid}
    elif r.kind is not None and len(sent := r.raw.strip()) <= 40:
        # a refused identifier as it was sent (not normalised, never cut short): an audit trail
        # holds what was asked; one too long for the column is kept in change_request["device"] only
        ids[r.kind.value] = sent
    if r.reason is not None:
        body = r.target if r.target is not None else _jsonable(r.entry.values)
        return NewDeviceChange(
            change_request={"device": r.raw[:200], **body},
            status=DeviceChangeStatus.ERROR,
            device_id=d.id if d else None,
            status_details=r.reason,
            **ids,
        )
    if r.deferred is not None and r.deferred.allowed_at is not None:
        return NewDeviceChange(
            change_request=r.target or {},
            status=DeviceChangeStatus.SCHEDULED,
            device_id=d.id if d else None,
            effective_at=r.deferred.allowed_at,
            status_details=carrier_limits.deferred_detail(r.deferred),
            **ids,
        )
    effective = _effective_at(r.target)
    future = effective is not None and effective > to_naive_utc(now)
    details = None
    if future and dates is not None and dates.takes(effective, to_naive_utc(now)):
        future, details = False, carrier_dated_detail(carrier, dates.applies_on(effective))
    return NewDeviceChange(
        change_request=r.target or {},
        status=DeviceChangeStatus.SCHEDULED if future else DeviceChangeStatus.NEW,
        device_id=d.id if d else None,
        effective_at=effective if future else None,
        status_details=details,
        **ids,
    )


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Per-device input as stored on an ERROR row: JSON-safe, long strings cut."""
    out = json.loads(json.dumps(values, default=str))
    return {k: (v[:500] if isinstance(v, str) else v) for k, v in out.items()}


__all__ = [
    "CARRIER_DATED_PREFIX",
    "carrier_dated_detail",
    "carrier_label",
    "carrier_rules",
    "is_carrier_dated",
    "to_change",
]
