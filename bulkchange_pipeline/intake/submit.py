"""Submit a bulk change: validate it, then store it with its device rows (or only report: dry run).

The one entry point for every intake path (CLI, HTTP API), so the rules cannot drift apart.
Refused devices are stored too, as ERROR rows: they are the audit trail of what was asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeRequest, DeviceEntry, refused_detail
from ..domain.approval import approval_needed
from ..store.approvals import Actor, cli_actor, get_policy, insert_pending
from ..store.bulk_changes import (
    CreateResult,
    NewBulkChange,
    count_rows_by_status,
    create_bulk_change,
    find_by_idempotency_key,
)
from ..store.device_rows import NewDeviceChange
from .csv_file import CsvDevices
from .gc_pause import paused_collector
from .validation import CHUNK_ROWS, RowError, ValidationReport, validate_chunks, validate_request


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
    digest = fingerprint_header(request)
    devices = iter(request.devices)
    while piece := list(islice(devices, FINGERPRINT_SLICE)):
        add_to_fingerprint(digest, piece)
    return digest.hexdigest()


FINGERPRINT_SLICE = 10_000  # devices per json.dumps: C speed over slices, never one huge string
assert CHUNK_ROWS % FINGERPRINT_SLICE == 0, "a file hashed chunk by chunk must hash like the whole request"


def fingerprint_header(request: BulkChangeRequest) -> Any:
    """The sha256 of ``request_fingerprint`` with the request header in it; the devices follow in
    slices of ``FINGERPRINT_SLICE`` (``add_to_fingerprint``), so a file read chunk by chunk
    (chunks a multiple of the slice) hashes to the same value as the whole request."""
    digest = hashlib.sha256()
    header = request.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"devices", "idempotency_key"})
    digest.update(json.dumps(_stripped(header), sort_keys=True).encode())
    return digest


def add_to_fingerprint(digest: Any, devices: Sequence[str | DeviceEntry]) -> None:
    """Hash the next devices, at most ``FINGERPRINT_SLICE`` of them at a time."""
    for start in range(0, len(devices), FINGERPRINT_SLICE):
        piece = devices[start : start + FINGERPRINT_SLICE]
        digest.update(json.dumps([_canonical(d) for d in piece], sort_keys=True, default=str).encode())


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

        if isinstance(request.devices, CsvDevices):  # the split indexes its devices: a list of them
            request = request.model_copy(update={"devices": list(request.devices)})

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
    if isinstance(request.devices, CsvDevices):
        return submit_file(
            engine, tenant_id, request, created_by, dry_run, row_errors=row_errors, actor=actor, undo_of=undo_of
        )
    key = request.idempotency_key
    fingerprint = request_fingerprint(request) if key else None
    if key:
        existing = find_by_idempotency_key(engine, tenant_id, key, fingerprint)
        if existing and not dry_run:
            return _already(existing.bulk_change_id, existing.status, engine)
    report = validate_request(engine, tenant_id, request, row_errors=row_errors, row_numbers=row_numbers)
    needed = needs_approval(engine, tenant_id, report)
    if dry_run:
        return SubmitOutcome(report, None, False, None, _summary(report, dry_run_head(needed)), report.counts())
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
            on_stored=_approval_request(tenant_id, needed, submitted, hours),
        ),
    )
    return _answer(engine, report, result)


def submit_file(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    created_by: str,
    dry_run: bool = False,
    *,
    row_errors: Mapping[int, str] | None = None,
    actor: Actor | None = None,
    undo_of: int | None = None,
) -> SubmitOutcome:
    """``submit`` for a request whose devices are a CSV file's (``csv_file.CsvDevices``): read,
    validated and stored ``CHUNK_ROWS`` at a time, in one transaction (a failure stores nothing).

    The same outcome as ``submit``, with a streamed report (``validation.validate_chunks``). The
    fingerprint is hashed as the chunks pass; only a key this tenant used before costs a pass of its
    own first, to tell a repeat from a conflict before anything is validated.
    """
    devices = request.devices
    assert isinstance(devices, CsvDevices)
    key = request.idempotency_key
    if key and find_by_idempotency_key(engine, tenant_id, key, None) is not None:
        existing = find_by_idempotency_key(engine, tenant_id, key, request_fingerprint(request))
        if existing and not dry_run:
            return _already(existing.bulk_change_id, existing.status, engine)
    digest = fingerprint_header(request)

    def hashed() -> Iterator[tuple[list[DeviceEntry], list[int]]]:
        for entries, lines in devices.chunks(CHUNK_ROWS):
            if key:
                add_to_fingerprint(digest, entries)
            yield entries, lines

    with paused_collector():  # see ``gc_pause``: no full collection while the chunks go through
        return _submit_chunks(
            engine, tenant_id, request, created_by, dry_run, hashed(), digest, row_errors, actor, undo_of
        )


def _submit_chunks(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    created_by: str,
    dry_run: bool,
    hashed: Iterator[tuple[list[DeviceEntry], list[int]]],
    digest: Any,
    row_errors: Mapping[int, str] | None,
    actor: Actor | None,
    undo_of: int | None,
) -> SubmitOutcome:
    """``submit_file`` from validation on: a dry run's report, or the bulk change stored with the
    rows written as they are validated, its header completed after the last chunk."""
    key = request.idempotency_key
    report, chunks = validate_chunks(engine, tenant_id, request, hashed, row_errors=row_errors)
    if dry_run:
        for _ in chunks:
            pass
        needed = needs_approval(engine, tenant_id, report)
        return SubmitOutcome(report, None, False, None, _summary(report, dry_run_head(needed)), report.counts())
    submitted = actor or cli_actor(created_by)
    hours = get_policy(engine, tenant_id).expires_after_hours
    new = NewBulkChange(
        tenant_id=tenant_id,
        service_provider_id=report.service_provider.id,
        change_type=int(request.change_type),
        portal_type=report.portal_type,
        process_changes=request.process_changes,
        request=stored_request(request),
        created_by=created_by,
        rows=[],
        idempotency_key=key,
        undo_of=undo_of,
    )

    def rows() -> Iterator[list[NewDeviceChange]]:
        yield from chunks
        # every row is validated: what the header needs from all of them (read after the last chunk)
        new.request_fingerprint = digest.hexdigest() if key else None
        needed = needs_approval(engine, tenant_id, report)
        new.awaiting_approval = needed is not None
        new.on_stored = _approval_request(tenant_id, needed, submitted, hours)

    new.rows = rows()
    return _answer(engine, report, create_bulk_change(engine, new))


def needs_approval(engine: sa.Engine, tenant_id: int, report: ValidationReport) -> str | None:
    """Why the tenant's approval policy holds this validated bulk change for a second person, or None."""
    policy = get_policy(engine, tenant_id)
    if policy.max_devices is None and not policy.irreversible:
        return None
    return approval_needed(
        policy, report.accepted, report.change_type, report.service_provider.integration, report.accepted_targets()
    )


def dry_run_head(needed: str | None) -> str:
    """The first words of a dry run's message (a single bulk change's or a split's), and why the
    approval policy would hold it."""
    return "dry run: nothing stored" + (f"; it would await approval because {needed}" if needed else "")


def _approval_request(
    tenant_id: int, needed: str | None, submitted: Actor, hours: int
) -> Callable[[sa.Connection, int], None] | None:
    """``NewBulkChange.on_stored`` for a bulk change the policy holds (``needed`` says why): its
    approval request, written in the bulk change's own transaction; None when nothing holds it."""
    if needed is None:
        return None
    return lambda conn, bc_id: insert_pending(
        conn,
        bulk_change_id=bc_id,
        tenant_id=tenant_id,
        needed_because=needed,
        submitted=submitted,
        expires_after_hours=hours,
    )


def _answer(engine: sa.Engine, report: ValidationReport, result: CreateResult) -> SubmitOutcome:
    """What ``submit`` and ``submit_file`` answer once ``create_bulk_change`` returned: the bulk
    change created, or the one a concurrent submission of the same key stored first."""
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
