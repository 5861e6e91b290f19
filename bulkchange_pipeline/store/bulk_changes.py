"""Repository functions for bulk changes: create, list, read, count (their device rows are written
and read in ``store.device_rows``).

Every function is scoped by tenant, except the ones the pipeline calls with an id it got from
the sensor (the bulk change row carries its tenant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus, bulk_status_detail, derive_bulk_status
from .db import DB_RETRY_ATTEMPTS, run_transaction, utcnow
from .device_rows import NewDeviceChange, write_rows
from .idempotency import claim_key, holder_for
from .schema import bulk_change, device_change, service_provider, tenant

__all__ = [
    "CreateResult",
    "NewBulkChange",
    "QueuedBulkChange",
    "attempted_if_only_errors",
    "count_rows_by_status",
    "counts_by_status",
    "create_bulk_change",
    "find_by_idempotency_key",
    "get_bulk_change",
    "header_states",
    "initial_status",
    "insert_bulk_change",
    "list_due_scheduled",
    "list_not_started",
    "list_waiting",
    "new_status",
    "queued_bulk_change",
    "set_bulk_status",
    "status_from_counts",
]


@dataclass
class NewBulkChange:
    tenant_id: int
    service_provider_id: int
    change_type: int
    portal_type: int
    process_changes: bool
    request: dict[str, Any]
    created_by: str
    # every row, or (a big file, ``intake.submit``) an iterable of chunks of rows, written as they
    # come; then ``awaiting_approval``, ``on_stored`` and ``request_fingerprint`` are read after the
    # last chunk, and the transaction is not retried (the chunks are read once)
    rows: Sequence[NewDeviceChange] | Iterable[Sequence[NewDeviceChange]]
    idempotency_key: str | None = None
    request_fingerprint: str | None = None  # of the normalised request, stored with the key
    # The approval policy holds it: stored AWAITING_APPROVAL, and ``on_stored`` (conn, id) records the
    # approval request in the same transaction (``store.approvals.insert_pending``).
    awaiting_approval: bool = False
    on_stored: Callable[[sa.Connection, int], None] | None = None
    undo_of: int | None = None  # the bulk change this one undoes (intake.undo)
    submission_id: int | None = None  # the submission this one is a child of (intake.split)


@dataclass
class CreateResult:
    bulk_change_id: int
    created: bool  # False: the idempotency key was seen before; nothing new was written
    status: str
    counts: dict[str, int] = field(default_factory=dict)


def initial_status(rows: Sequence[NewDeviceChange]) -> BulkChangeStatus:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return status_from_counts(counts)


def status_from_counts(counts: dict[str, int]) -> BulkChangeStatus:
    """A new bulk change's status from its device rows per status."""
    # Validation refusals (ERROR) are final, but nothing was sent yet: they must not make a fresh
    # bulk change look PROCESSING, or the sensor (which starts NEW ones) would never pick it up.
    live = {k: v for k, v in counts.items() if k != DeviceChangeStatus.ERROR.value}
    # Every device refused: ERROR, not PROCESSED, so it does not look done; nothing was sent, and
    # the sensor (NEW and due SCHEDULED only) never starts a run of it.
    return derive_bulk_status(live) if live else derive_bulk_status(counts, attempted=0)


def create_bulk_change(engine: sa.Engine, new: NewBulkChange) -> CreateResult:
    """Store a bulk change and all its device rows in one transaction.

    With an idempotency key already used by this tenant for the same request (same fingerprint),
    returns the existing bulk change and writes nothing (DESIGN R7); for a different request raises
    ``IdempotencyConflict``. A concurrent duplicate loses on the unique constraint and is answered
    the same way.
    """
    new.idempotency_key = (new.idempotency_key or "").strip() or None  # blank means no key
    if new.idempotency_key:
        existing = find_by_idempotency_key(engine, new.tenant_id, new.idempotency_key, new.request_fingerprint)
        if existing is not None:
            return existing

    now = utcnow()
    attempts = DB_RETRY_ATTEMPTS if isinstance(new.rows, Sequence) else 1  # chunks are read once
    try:
        bc_id = run_transaction(engine, lambda conn: insert_bulk_change(conn, new, now), attempts=attempts)
    except sa.exc.IntegrityError:
        if new.idempotency_key:
            existing = find_by_idempotency_key(engine, new.tenant_id, new.idempotency_key, new.request_fingerprint)
            if existing is not None:
                return existing
        raise
    with engine.connect() as conn:
        counts = counts_by_status(conn, bc_id)
        status = conn.execute(sa.select(bulk_change.c.status).where(bulk_change.c.id == bc_id)).scalar_one()
    return CreateResult(bc_id, True, status, counts)


def new_status(new: NewBulkChange) -> BulkChangeStatus:
    """The status a bulk change is stored with: AWAITING_APPROVAL when the policy holds it, else
    what its rows say (``initial_status``)."""
    return (
        BulkChangeStatus.AWAITING_APPROVAL
        if new.awaiting_approval
        else initial_status(cast(Sequence[NewDeviceChange], new.rows))
    )


def insert_bulk_change(conn: sa.Connection, new: NewBulkChange, now: datetime) -> int:
    """Insert a bulk change and its device rows in the caller's transaction; returns its id.

    The one writer of a new bulk change: ``create_bulk_change`` runs it in a transaction of its own,
    a split (``store.submissions.create_submission``) runs it once per child inside the parent's
    one transaction. Its status is ``new_status``; ``new.on_stored`` runs last, in the same
    transaction.
    """
    chunked = not isinstance(new.rows, Sequence)
    status = BulkChangeStatus.NEW if chunked else new_status(new)  # chunked: set once the rows are in
    rows = cast(Sequence[NewDeviceChange], new.rows)
    scheduled = (
        [] if chunked else [r.effective_at for r in rows if r.status is DeviceChangeStatus.SCHEDULED and r.effective_at]
    )
    bc_id = int(
        conn.execute(
            sa.insert(bulk_change)
            .values(
                tenant_id=new.tenant_id,
                service_provider_id=new.service_provider_id,
                change_type=int(new.change_type),
                portal_type=new.portal_type,
                process_changes=new.process_changes,
                status=status.value,
                request=new.request,
                created_by=new.created_by,
                created_at=now,
                effective_at=min(scheduled) if scheduled else None,
                idempotency_key=new.idempotency_key,
                request_fingerprint=new.request_fingerprint if new.idempotency_key else None,
                processed_at=now if status is BulkChangeStatus.PROCESSED else None,
                undo_of=new.undo_of,
                submission_id=new.submission_id,
            )
            .returning(bulk_change.c.id)
        ).scalar_one()
    )
    if new.idempotency_key:  # the key is this bulk change's, or the transaction fails (store.idempotency)
        claim_key(conn, new.tenant_id, new.idempotency_key, bulk_change_id=bc_id)
    if not chunked:
        write_rows(conn, new.tenant_id, bc_id, rows, now)
        counts = counts_by_status(conn, bc_id)
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(counts=counts))
    else:
        counts, earliest = {}, None
        for chunk in cast(Iterable[Sequence[NewDeviceChange]], new.rows):
            write_rows(conn, new.tenant_id, bc_id, chunk, now)
            for r in chunk:
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
                if r.status is DeviceChangeStatus.SCHEDULED and r.effective_at:
                    earliest = r.effective_at if earliest is None else min(earliest, r.effective_at)
        status = BulkChangeStatus.AWAITING_APPROVAL if new.awaiting_approval else status_from_counts(counts)
        conn.execute(
            sa.update(bulk_change)
            .where(bulk_change.c.id == bc_id)
            .values(
                status=status.value,
                counts=counts,
                effective_at=earliest,
                processed_at=now if status is BulkChangeStatus.PROCESSED else None,
                request_fingerprint=new.request_fingerprint if new.idempotency_key else None,
            )
        )
    if new.on_stored is not None:
        new.on_stored(conn, bc_id)
    return bc_id


def find_by_idempotency_key(
    engine: sa.Engine, tenant_id: int, key: str, fingerprint: str | None
) -> CreateResult | None:
    """This tenant's bulk change submitted with ``key`` (as a not-created result), or None.

    Raises ``IdempotencyConflict`` when that bulk change was stored with another request
    ``fingerprint``, or when a submission holds the key (``store.idempotency``: a key is one bulk
    change or one submission). One stored without a fingerprint (before revision 0007), or a
    caller without one, has nothing to compare, and is answered as before.
    """
    with engine.connect() as conn:
        bc_id = holder_for(conn, tenant_id, key, fingerprint, "bulk_change")
        if bc_id is None:
            return None
        status = conn.execute(sa.select(bulk_change.c.status).where(bulk_change.c.id == bc_id)).scalar_one()
        return CreateResult(bc_id, False, status, counts_by_status(conn, bc_id))


def counts_by_status(conn: sa.Connection, bulk_change_id: int) -> dict[str, int]:
    """Device rows per status (statuses with no row left out): what every header is derived from."""
    rows = conn.execute(
        sa.select(device_change.c.status, sa.func.count())
        .where(device_change.c.bulk_change_id == bulk_change_id)
        .group_by(device_change.c.status)
    )
    return {status: n for status, n in rows}


def count_rows_by_status(engine: sa.Engine, bulk_change_id: int) -> dict[str, int]:
    """``counts_by_status`` in a connection of its own."""
    with engine.connect() as conn:
        return counts_by_status(conn, bulk_change_id)


def attempted_if_only_errors(conn: sa.Connection, bulk_change_id: int, counts: dict[str, int]) -> int | None:
    """How many rows a run has claimed (``attempt_count > 0``), asked only when every row is ERROR,
    the one case ``derive_bulk_status(attempted=...)`` needs it for (0: nothing was sent, the
    header is ERROR); None otherwise, without a query."""
    if not counts or {k for k, v in counts.items() if v} != {DeviceChangeStatus.ERROR.value}:
        return None
    return conn.execute(
        sa.select(sa.func.count())
        .select_from(device_change)
        .where(device_change.c.bulk_change_id == bulk_change_id, device_change.c.attempt_count > 0)
    ).scalar_one()


@dataclass
class QueuedBulkChange:
    """What the sensor needs to request a run."""

    id: int
    tenant_id: int
    service_provider_id: int
    change_type: int
    status: str
    attempt: int
    effective_at: datetime | None
    tenant_name: str = ""  # the names go on run tags next to the ids, for people reading the UI
    account_name: str = ""
    credentials_name: str = ""  # the carrier account the run queue limits (run tag bulkchange/carrier_account)


def _queued_select() -> sa.Select[Any]:
    return sa.select(
        bulk_change.c.id,
        bulk_change.c.tenant_id,
        bulk_change.c.service_provider_id,
        bulk_change.c.change_type,
        bulk_change.c.status,
        bulk_change.c.attempt,
        bulk_change.c.effective_at,
        tenant.c.name.label("tenant_name"),
        service_provider.c.name.label("account_name"),
        service_provider.c.credentials_name,
    ).select_from(
        bulk_change.join(tenant, tenant.c.id == bulk_change.c.tenant_id).join(
            service_provider, service_provider.c.id == bulk_change.c.service_provider_id
        )
    )


def list_waiting(engine: sa.Engine, after_id: int, limit: int) -> list[QueuedBulkChange]:
    """NEW bulk changes marked for processing with id > ``after_id``, oldest first (one page).

    No high-water mark decides what is new: ids are taken when a row is inserted, not when its
    transaction commits (PostgreSQL), so a long upload can commit *below* an id already seen.
    The sensor pages through every waiting bulk change and asks Dagster which already have a run
    for their attempt (``after_id`` is only the page position within one evaluation).
    """
    with engine.connect() as conn:
        rows = conn.execute(
            _queued_select()
            .where(
                bulk_change.c.id > after_id,
                bulk_change.c.status == BulkChangeStatus.NEW.value,
                bulk_change.c.process_changes.is_(True),
                bulk_change.c.deleted_at.is_(None),
            )
            .order_by(bulk_change.c.id)
            .limit(limit)
        )
        return [QueuedBulkChange(**r._mapping) for r in rows]


def queued_bulk_change(engine: sa.Engine, bulk_change_id: int) -> QueuedBulkChange | None:
    """One live bulk change as the sensors and run tags see it (no row counts), or None."""
    with engine.connect() as conn:
        row = conn.execute(
            _queued_select().where(bulk_change.c.id == bulk_change_id, bulk_change.c.deleted_at.is_(None))
        ).first()
    return QueuedBulkChange(**row._mapping) if row else None


def list_not_started(engine: sa.Engine, limit: int) -> list[QueuedBulkChange]:
    """Held (NEW with processChanges=false), SCHEDULED and AWAITING_APPROVAL bulk changes, newest
    first: what the UI should show before any run of theirs exists."""
    with engine.connect() as conn:
        rows = conn.execute(
            _queued_select()
            .where(
                sa.or_(
                    sa.and_(
                        bulk_change.c.status == BulkChangeStatus.NEW.value, bulk_change.c.process_changes.is_(False)
                    ),
                    bulk_change.c.status.in_(
                        (BulkChangeStatus.SCHEDULED.value, BulkChangeStatus.AWAITING_APPROVAL.value)
                    ),
                ),
                bulk_change.c.deleted_at.is_(None),
            )
            .order_by(bulk_change.c.id.desc())
            .limit(limit)
        )
        return [QueuedBulkChange(**r._mapping) for r in rows]


def header_states(engine: sa.Engine, ids: Sequence[int]) -> dict[int, tuple[str, bool]]:
    """(status, process_changes) of the live bulk changes among ``ids`` (one query); archived or
    unknown ids are left out."""
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(bulk_change.c.id, bulk_change.c.status, bulk_change.c.process_changes).where(
                bulk_change.c.id.in_(list(ids)), bulk_change.c.deleted_at.is_(None)
            )
        )
        return {r.id: (r.status, bool(r.process_changes)) for r in rows}


def list_due_scheduled(engine: sa.Engine, now: datetime, limit: int) -> list[QueuedBulkChange]:
    """SCHEDULED bulk changes whose earliest waiting row is due."""
    with engine.connect() as conn:
        rows = conn.execute(
            _queued_select()
            .where(
                bulk_change.c.status == BulkChangeStatus.SCHEDULED.value,
                bulk_change.c.effective_at <= now,
                bulk_change.c.process_changes.is_(True),
                bulk_change.c.deleted_at.is_(None),
            )
            .order_by(bulk_change.c.effective_at, bulk_change.c.id)
            .limit(limit)
        )
        return [QueuedBulkChange(**r._mapping) for r in rows]


def get_bulk_change(engine: sa.Engine, bulk_change_id: int, tenant_id: int | None = None) -> dict[str, Any] | None:
    """The bulk change header with live per-status counts and ``status_detail`` (what the status
    alone does not say, or None), or None (also for another tenant's)."""
    query = sa.select(bulk_change).where(bulk_change.c.id == bulk_change_id, bulk_change.c.deleted_at.is_(None))
    if tenant_id is not None:
        query = query.where(bulk_change.c.tenant_id == tenant_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["counts"] = counts_by_status(conn, bulk_change_id)
        out["total"] = sum(out["counts"].values())
        out["status_detail"] = bulk_status_detail(out["status"], out["counts"])  # e.g. "nothing was sent: ..."
        return out


def set_bulk_status(
    engine_or_conn: sa.Engine | sa.Connection,
    bulk_change_id: int,
    status: BulkChangeStatus,
    *,
    counts: dict[str, int] | None = None,
    effective_at: datetime | None = None,
    processed: bool = False,
) -> None:
    values: dict[str, Any] = {"status": status.value, "effective_at": effective_at}
    if counts is not None:
        values["counts"] = counts
    if processed:
        values["processed_at"] = utcnow()
    stmt = sa.update(bulk_change).where(bulk_change.c.id == bulk_change_id).values(**values)
    if isinstance(engine_or_conn, sa.Engine):
        run_transaction(engine_or_conn, lambda conn: conn.execute(stmt))
    else:
        engine_or_conn.execute(stmt)
