"""Submit a bulk change: validate it, then store it with its device rows (or only report: dry run).

The one entry point for every intake path (CLI, HTTP API), so the rules cannot drift apart.
Refused devices are stored too, as ERROR rows: they are the audit trail of what was asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeRequest, DeviceChangeStatus, DeviceEntry, refused_detail
from ..domain.approval import approval_needed
from ..store.approvals import Actor, cli_actor, get_policy, insert_pending
from ..store.bulk_changes import (
    IdempotencyConflict,
    NewBulkChange,
    count_rows_by_status,
    create_bulk_change,
    find_by_idempotency_key,
)
from ..store.submissions import key_holder
from .validation import RowError, ValidationReport, validate_request


@dataclass
class ChildOutcome:
    """One service provider's share of a split request (``intake.split``): its bulk change, or on a
    dry run what it would be (``bulk_change_id`` None)."""

    service_provider_id: int
    service_provider_name: str
    integration: str
    bulk_change_id: int | None  # None on a dry run
    status: str | None
    counts: dict[str, int]
    accepted: int
    refused: int
    report: ValidationReport | None = None  # the child's validation (None for a repeated key)


@dataclass
class SubmitOutcome:
    """What a submission did. A request without a service provider is split (``intake.split``):
    then ``submission_id`` is the parent (None on a dry run), ``children`` one per service provider
    and ``refused`` the devices no service provider could take; ``bulk_change_id`` and ``report``
    are None."""

    report: ValidationReport | None  # None when an idempotency key short-circuited validation
    bulk_change_id: int | None  # None for a dry run
    created: bool
    status: str | None
    message: str
    counts: dict[str, int] | None = None
    submission_id: int | None = None
    children: list[ChildOutcome] = field(default_factory=list)
    refused: list[RowError] = field(default_factory=list)
    split: bool = False  # True: a request split by service provider (even a dry run placing no device)


def stored_request(request: BulkChangeRequest) -> dict[str, Any]:
    """The request header as stored on the bulk change.

    The devices themselves are stored as device rows (with their per-device values), so the
    header keeps only their count: a million-device request must not be duplicated into one JSON
    value.
    """
    body = request.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"devices"})
    body["deviceCount"] = len(request.devices)
    return body


def request_fingerprint(request: BulkChangeRequest) -> str:
    """sha256 of the request as it is understood, stored with its idempotency key.

    Two requests have the same fingerprint when they ask for the same change of the same devices:
    key order, surrounding whitespace, a device as ``"8901..."`` or ``{"device": "8901..."}``, the
    way in (JSON or CSV) and the idempotency key itself do not count; devices, their order and
    values, the change type, service provider, payload and processChanges do. Hashed device by
    device, so a million-device request is never serialised into one string.
    """
    digest = hashlib.sha256()
    header = request.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"devices", "idempotency_key"})
    digest.update(json.dumps(_stripped(header), sort_keys=True).encode())
    devices = request.devices
    for start in range(0, len(devices), 10_000):  # C-speed json.dumps over slices, not one huge string
        digest.update(
            json.dumps([_canonical(d) for d in devices[start : start + 10_000]], sort_keys=True, default=str).encode()
        )
    return digest.hexdigest()


def _canonical(device: str | DeviceEntry) -> Any:
    """A device as the fingerprint sees it: its bare identifier when that is all it has."""
    if isinstance(device, str):
        return device.strip()
    fields = {k: v for k, v in device.__dict__.items() if v is not None}
    fields.update(device.__pydantic_extra__ or {})
    if len(fields) == 1 and isinstance(fields.get("device"), str):
        return fields["device"].strip()
    return {k: v.strip() if isinstance(v, str) else _stripped(v) for k, v in fields.items()}


def _stripped(node: Any) -> Any:
    if isinstance(node, str):
        return node.strip()
    if isinstance(node, dict):
        return {k: _stripped(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_stripped(v) for v in node]
    return node


def submit(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    created_by: str,
    dry_run: bool = False,
    *,
    row_errors: Mapping[int, str] | None = None,
    row_numbers: Sequence[int] | None = None,
    actor: Actor | None = None,
    undo_of: int | None = None,
) -> SubmitOutcome:
    """Validate and (unless ``dry_run``) store; the same idempotency key twice creates nothing new.

    A key this tenant used for a different request raises ``IdempotencyConflict``, for a dry run
    too (it tells the caller before the real submission would be refused). When the tenant's
    approval policy says so (``needs_approval``) the bulk change is stored AWAITING_APPROVAL with
    its approval request, submitted by ``actor`` (default: the CLI operator ``created_by``).
    ``undo_of`` links an undo (``intake.undo``) to the bulk change it undoes.

    Without a service provider the request is split by the devices' service providers into one
    submission (``intake.split.submit_split``, same arguments, same outcome with ``submission_id``
    and ``children``).
    """
    if request.service_provider_id is None:
        from .split import submit_split  # split builds on this module's helpers

        return submit_split(
            engine,
            tenant_id,
            request,
            created_by,
            dry_run,
            row_errors=row_errors,
            row_numbers=row_numbers,
            actor=actor,
            undo_of=undo_of,
        )
    key = request.idempotency_key
    fingerprint = request_fingerprint(request) if key else None
    if key:
        held = submission_holding(engine, tenant_id, key)
        if held is not None:
            raise IdempotencyConflict(key, None, submission_id=held)
        existing = find_by_idempotency_key(engine, tenant_id, key, fingerprint)
        if existing and not dry_run:
            return _already(existing.bulk_change_id, existing.status, engine)
    report = validate_request(engine, tenant_id, request, row_errors=row_errors, row_numbers=row_numbers)
    needed = needs_approval(engine, tenant_id, report)
    if dry_run:
        head = "dry run: nothing stored" + (f"; it would await approval because {needed}" if needed else "")
        return SubmitOutcome(report, None, False, None, _summary(report, head), report.counts())
    submitted = actor or cli_actor(created_by)
    hours = get_policy(engine, tenant_id).expires_after_hours
    result = create_bulk_change(
        engine,
        NewBulkChange(
            tenant_id=tenant_id,
            service_provider_id=report.service_provider.id,
            change_type=int(request.change_type),
            portal_type=report.portal_type,
            process_changes=request.process_changes,
            request=stored_request(request),
            created_by=created_by,
            rows=report.rows,
            idempotency_key=key,
            request_fingerprint=fingerprint,
            awaiting_approval=needed is not None,
            undo_of=undo_of,
            on_stored=None
            if needed is None
            else lambda conn, bc_id: insert_pending(
                conn,
                bulk_change_id=bc_id,
                tenant_id=tenant_id,
                needed_because=needed,
                submitted=submitted,
                expires_after_hours=hours,
            ),
        ),
    )
    if not result.created:  # lost a race with a concurrent submission of the same key
        return _already(result.bulk_change_id, result.status, engine, report)
    return SubmitOutcome(
        report,
        result.bulk_change_id,
        True,
        result.status,
        _summary(report, f"created bulk change {result.bulk_change_id} ({result.status})"),
        result.counts,
    )


def submission_holding(engine: sa.Engine, tenant_id: int, key: str) -> int | None:
    """The submission that holds this tenant's idempotency key, or None: a key is one submission
    or one bulk change, never both (``store.submissions``)."""
    with engine.connect() as conn:
        holder = key_holder(conn, tenant_id, key)
    return holder[1] if holder is not None and holder[0] == "submission" else None


def needs_approval(engine: sa.Engine, tenant_id: int, report: ValidationReport) -> str | None:
    """Why the tenant's approval policy holds this validated bulk change for a second person, or None."""
    policy = get_policy(engine, tenant_id)
    if policy.max_devices is None and not policy.irreversible:
        return None
    accepted = [r.change_request for r in report.rows if r.status is not DeviceChangeStatus.ERROR]
    return approval_needed(policy, len(accepted), report.change_type, report.service_provider.integration, accepted)


def _already(bc_id: int, status: str, engine: sa.Engine, report: ValidationReport | None = None) -> SubmitOutcome:
    return SubmitOutcome(
        report,
        bc_id,
        False,
        status,
        f"already submitted as bulk change {bc_id}; nothing new created",
        count_rows_by_status(engine, bc_id),
    )


def _summary(report: ValidationReport, head: str) -> str:
    parts = [f"{report.accepted} of {report.total} devices accepted"]
    if report.scheduled:
        parts.append(f"{report.scheduled} scheduled")
    if report.errors:
        parts.append(f"{len(report.errors)} refused")
    nothing_sent = refused_detail(report.counts())  # every device refused: the bulk change is ERROR
    return f"{head}: " + ", ".join(parts) + (f"; {nothing_sent}" if nothing_sent else "")
