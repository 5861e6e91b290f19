"""Undo a bulk change: a new bulk change, linked to the original, restoring the before-values that
the original's PROCESSED rows recorded in device history.

The undo is an ordinary request, in the very dict shape intake takes (the original's service
provider and change type, per-device values), and goes through ``submit``: validation, the
approval policy and idempotency, like any submission. No carrier is asked for anything here; the
carrier is asked when the undo runs, as for any bulk change.

A row is left out, with its reason, when: it was not PROCESSED (nothing changed to give back); the
change cannot be reversed on that carrier (``domain.approval``'s irreversible table: deactivation,
retirement, ICCID/IMEI swap, archival); the change type has no before-value to restore (an
activation or a Rev.io service is undone by another change, not by restoring a value); no
before-value was recorded (the value did not change, or there was none to go back to); or the
device's same field was changed again since by another bulk change (restoring would overwrite that
later change, which nobody asked to undo).

The idempotency key is derived from the original's id (``undo-of-<id>``), and an undo already made
of the original is answered instead of building another, so a double click makes one undo.
Pond's own undo (``carriers.pond``) is another thing: a compensating step inside one failed
multi-step package change, which never reaches device history; this undo is of a finished change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeRequest, ChangeType, DeviceChangeStatus
from ..domain.approval import irreversible_reason
from ..domain.enums import BulkChangeStatus, Integration
from ..domain.requests import PAYLOAD_KEYS
from ..store.approvals import Actor
from ..store.bulk_changes import count_rows_by_status
from ..store.operations import OperationRefused
from ..store.undo import OriginalBulkChange, OriginalRow, existing_undo, load_original
from .submit import SubmitOutcome, submit

__all__ = ["RESTORED_FIELDS", "LeftOut", "UndoOutcome", "UndoPlan", "idempotency_key_for", "plan_undo", "undo"]

# The device fields an undo restores per change type (device_history field = canonical request key),
# and which of them are numbers (history stores text).
RESTORED_FIELDS: dict[ChangeType, tuple[str, ...]] = {
    ChangeType.STATUS_UPDATE: ("status",),
    ChangeType.CARRIER_RATE_PLAN_CHANGE: ("carrier_rate_plan", "communication_plan"),
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: ("customer_rate_plan_id", "customer_rate_pool_id", "data_allocation_mb"),
    ChangeType.CUSTOMER_ASSIGNMENT: ("customer_id",),
    ChangeType.EDIT_USERNAME_COST_CENTER: ("username", "cost_center"),
}
_NUMBERS = frozenset({"customer_id", "customer_rate_plan_id", "customer_rate_pool_id", "data_allocation_mb"})
_NO_BEFORE_VALUE = {
    ChangeType.ACTIVATE_NEW_SERVICE: "an activation has no before-value to restore; deactivate the devices instead",
    ChangeType.CREATE_REV_SERVICE: "a Rev.io service has no before-value to restore; end the service in Rev.io",
}


@dataclass(frozen=True)
class LeftOut:
    device: str
    reason: str


@dataclass
class UndoPlan:
    """What an undo would restore (``request``: None when nothing is left to restore) and what it
    leaves out, each with its reason."""

    original_id: int
    change_type: ChangeType
    request: dict[str, Any] | None
    left_out: list[LeftOut] = field(default_factory=list)

    @property
    def restored(self) -> list[dict[str, Any]]:
        return [] if self.request is None else list(self.request["devices"])


@dataclass
class UndoOutcome:
    plan: UndoPlan
    submitted: SubmitOutcome | None  # None when nothing is left to restore
    message: str


def idempotency_key_for(original_id: int) -> str:
    """The undo's idempotency key: one undo per original, whoever clicks and however often."""
    return f"undo-of-{original_id}"


def plan_undo(original: OriginalBulkChange) -> UndoPlan:
    """The undo request for ``original`` and the rows left out. Refuses (``OperationRefused``) an
    original still on its way: rows not yet final might still change the devices."""
    status = BulkChangeStatus(original.status)
    if not status.is_final:
        raise OperationRefused(
            f"bulk change {original.id} is {status.value}: undo it once it is finished "
            "(or cancel it: nothing unsent is changed)"
        )
    ct = ChangeType(original.change_type)
    whole = _whole_reason(ct, original)
    devices: list[dict[str, Any]] = []
    left: list[LeftOut] = []
    for row in original.rows:
        reason = whole or _row_reason(ct, original, row)
        values = None if reason else _before_values(ct, row)
        if values is None:
            left.append(LeftOut(row.identifier, reason or _no_value_reason(ct, row)))
        else:
            devices.append({"device": row.identifier, **values})
    request = None
    if devices:
        request = {
            "serviceProviderId": original.service_provider_id,
            "changeType": int(ct),
            "idempotencyKey": idempotency_key_for(original.id),
            PAYLOAD_KEYS[ct]: {},
            "devices": devices,
        }
    return UndoPlan(original.id, ct, request, left)


def _whole_reason(ct: ChangeType, original: OriginalBulkChange) -> str | None:
    if ct in _NO_BEFORE_VALUE:
        return _NO_BEFORE_VALUE[ct]
    if ct not in RESTORED_FIELDS:  # archival, ICCID/IMEI swap: the irreversible table says why
        why = irreversible_reason(ct, _integration(original), [])
        return f"the carrier cannot reverse it: {why}" if why else f"{ct.label} cannot be undone"
    return None


def _row_reason(ct: ChangeType, original: OriginalBulkChange, row: OriginalRow) -> str | None:
    if row.status != DeviceChangeStatus.PROCESSED.value:
        return f"row is {row.status}, not PROCESSED: this bulk change did not change the device"
    if why := irreversible_reason(ct, _integration(original), [row.change_request]):
        return f"the carrier cannot reverse it: {why}"
    if row.later:
        c = row.later[0]
        by = f"bulk change {c.bulk_change_id}" if c.bulk_change_id is not None else "a change outside bulk changes"
        return f"changed again since: {c.field} set to {c.new!r} by {by}; restoring would overwrite that"
    return None


def _integration(original: OriginalBulkChange) -> Integration:
    return Integration.parse(original.integration)


def _before_values(ct: ChangeType, row: OriginalRow) -> dict[str, Any] | None:
    """The recorded before-values to restore, or None when there is none (a field that was empty
    before cannot be emptied through a request: the change types have no "clear" value)."""
    values: dict[str, Any] = {}
    for name in RESTORED_FIELDS[ct]:
        change = row.recorded.get(name)
        if change is None or change.old is None or change.old == "":
            continue
        values[name] = int(change.old) if name in _NUMBERS else change.old
    if ct is ChangeType.CARRIER_RATE_PLAN_CHANGE and "carrier_rate_plan" not in values:
        return None  # a communication plan alone is not a carrier rate plan change
    return values or None


def _no_value_reason(ct: ChangeType, row: OriginalRow) -> str:
    wanted = ", ".join(RESTORED_FIELDS[ct])
    if row.device_id is None:
        return "no device in the inventory: no before-value recorded"
    return f"no before-value recorded for {wanted} (the value did not change, or was empty before)"


def undo(
    engine: sa.Engine,
    tenant_id: int,
    original_id: int,
    created_by: str,
    *,
    dry_run: bool = False,
    actor: Actor | None = None,
) -> UndoOutcome:
    """Build the undo of ``original_id`` and submit it through the one submit path (dry run: only
    validate and show). An undo already made of it is answered, nothing new built.

    Raises ``BulkChangeNotFound`` and ``OperationRefused`` (not finished), and whatever ``submit``
    raises (``RequestRejected``, ``IdempotencyConflict``)."""
    original = load_original(engine, tenant_id, original_id)
    plan = plan_undo(original)
    made = existing_undo(engine, tenant_id, original_id)
    if made and not dry_run:
        bc_id, status = made
        already = SubmitOutcome(
            None,
            bc_id,
            False,
            status,
            f"already undone as bulk change {bc_id}; nothing new created",
            count_rows_by_status(engine, bc_id),
        )
        return UndoOutcome(plan, already, already.message)
    if plan.request is None:
        return UndoOutcome(plan, None, f"nothing to undo: all {len(plan.left_out)} rows left out")
    request = BulkChangeRequest.model_validate(plan.request)
    if dry_run:  # only shows: the key of an undo made earlier from other values must not refuse it
        request = request.model_copy(update={"idempotency_key": None})
    outcome = submit(engine, tenant_id, request, created_by, dry_run=dry_run, actor=actor, undo_of=original_id)
    left = f"; {len(plan.left_out)} rows left out" if plan.left_out else ""
    made_note = f"; already undone as bulk change {made[0]}" if made else ""
    return UndoOutcome(plan, outcome, f"undo of bulk change {original_id}: {outcome.message}{left}{made_note}")
