"""Housekeeping on the business database: tenant retention settings, the purge of archived bulk
changes, state reconstruction (rebuild a header from its rows and logs) and the health queries
behind the asset checks.

State reconstruction is the seed's recovery procedure: after a restore, headers may be older or
newer than their device rows; the rows (and the bulk-level log) are the truth, so each header's
status, counts, processed_at and effective_at are derived again from them. Run it with no runs in
flight: a header mid-run legitimately differs from its rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus
from .archive import COMPLETED, completed_at, tenant_cutoffs
from .db import run_transaction, utcnow
from .headers import is_async, status_from_counts
from .schema import (
    bulk_change,
    bulk_change_log,
    carrier_callback,
    device_change,
    device_history,
    service_provider,
    tenant,
)

__all__ = [
    "CHUNK",
    "Disagreement",
    "Rebuilt",
    "Retention",
    "RowFacts",
    "StuckRows",
    "get_retention",
    "ids_of",
    "plan_rebuild",
    "purge_bulk_changes",
    "purgeable",
    "rebuild_status",
    "row_facts",
    "set_retention",
    "status_disagreements",
    "status_from_rows",
    "stuck_processing",
]

CHUNK = 500
S = DeviceChangeStatus

# --- retention settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    tenant_id: int
    name: str
    archive_after_days: int
    purge_after_days: int


def get_retention(engine: sa.Engine, tenant_id: int) -> Retention:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(tenant.c.id, tenant.c.name, tenant.c.archive_after_days, tenant.c.purge_after_days).where(
                tenant.c.id == tenant_id
            )
        ).one()
    return Retention(*row)


def set_retention(
    engine: sa.Engine, tenant_id: int, *, archive_after_days: int | None = None, purge_after_days: int | None = None
) -> Retention:
    """Change a tenant's retention; ValueError when the result would purge before it archives
    (a purge only removes archived bulk changes, so purge age < archive age would be a silent no-op)."""
    current = get_retention(engine, tenant_id)
    archive = current.archive_after_days if archive_after_days is None else archive_after_days
    purge = current.purge_after_days if purge_after_days is None else purge_after_days
    if archive < 1 or purge < 1:
        raise ValueError("retention ages are whole days, at least 1")
    if purge < archive:
        raise ValueError(f"purge age ({purge} days) must not be shorter than archive age ({archive} days)")
    run_transaction(
        engine,
        lambda conn: conn.execute(
            sa.update(tenant).where(tenant.c.id == tenant_id).values(archive_after_days=archive, purge_after_days=purge)
        ),
    )
    return get_retention(engine, tenant_id)


# --- purge --------------------------------------------------------------------------------------


def purgeable(engine: sa.Engine, now: datetime, limit: int = 10_000) -> list[int]:
    """Ids of soft-deleted (archived) bulk changes that finished more than their tenant's purge age
    ago, oldest first."""
    out: list[int] = []
    with engine.connect() as conn:
        for tenant_id, cutoff in sorted(tenant_cutoffs(conn, now, tenant.c.purge_after_days).items()):
            out += (
                conn.execute(
                    sa.select(bulk_change.c.id)
                    .where(
                        bulk_change.c.tenant_id == tenant_id,
                        bulk_change.c.deleted_at.is_not(None),
                        completed_at() <= cutoff,
                    )
                    .order_by(bulk_change.c.id)
                    .limit(limit - len(out))
                )
                .scalars()
                .all()
            )
            if len(out) >= limit:
                break
    return out


def purge_bulk_changes(engine: sa.Engine, ids: Sequence[int]) -> dict[str, int]:
    """Delete soft-deleted bulk changes for good with their device rows, logs and history rows, and
    the carrier callbacks stored for their rows' request ids.

    Set-based (DELETE ... WHERE bulk_change_id IN, a chunk per transaction); a bulk change that is
    not soft-deleted is never touched. Callbacks carry no tenant: they are matched by (integration,
    request id) of the purged rows, so another bulk change's callbacks (or another carrier's with
    the same id) stay. They are not archived: what they reported is in the rows' outcome and logs.
    Returns rows deleted per table.
    """
    deleted = {"bulk_change": 0, "device_change": 0, "bulk_change_log": 0, "device_history": 0, "carrier_callback": 0}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])

        def work(conn: sa.Connection, chunk: list[int] = chunk) -> dict[str, int]:
            gone = (
                conn.execute(
                    sa.select(bulk_change.c.id).where(
                        bulk_change.c.id.in_(chunk), bulk_change.c.deleted_at.is_not(None)
                    )
                )
                .scalars()
                .all()
            )
            if not gone:
                return {}
            return {
                "carrier_callback": _delete_callbacks(conn, gone),
                "bulk_change_log": conn.execute(
                    sa.delete(bulk_change_log).where(bulk_change_log.c.bulk_change_id.in_(gone))
                ).rowcount,
                "device_history": conn.execute(
                    sa.delete(device_history).where(device_history.c.bulk_change_id.in_(gone))
                ).rowcount,
                "device_change": conn.execute(
                    sa.delete(device_change).where(device_change.c.bulk_change_id.in_(gone))
                ).rowcount,
                "bulk_change": conn.execute(sa.delete(bulk_change).where(bulk_change.c.id.in_(gone))).rowcount,
            }

        for table, n in run_transaction(engine, work).items():
            deleted[table] += n
    return deleted


def _delete_callbacks(conn: sa.Connection, bulk_change_ids: Sequence[int]) -> int:
    """Delete the stored callbacks of these bulk changes' rows (by integration and request id)."""
    pairs = conn.execute(
        sa.select(service_provider.c.integration, device_change.c.carrier_request_id)
        .distinct()
        .select_from(
            device_change.join(bulk_change, bulk_change.c.id == device_change.c.bulk_change_id).join(
                service_provider, service_provider.c.id == bulk_change.c.service_provider_id
            )
        )
        .where(device_change.c.bulk_change_id.in_(bulk_change_ids), device_change.c.carrier_request_id.is_not(None))
    ).all()
    by_integration: dict[str, list[str]] = defaultdict(list)
    for integration, request_id in pairs:
        by_integration[integration].append(request_id)
    removed = 0
    for integration, request_ids in by_integration.items():
        for start in range(0, len(request_ids), CHUNK):
            removed += conn.execute(
                sa.delete(carrier_callback).where(
                    carrier_callback.c.integration == integration,
                    carrier_callback.c.request_id.in_(request_ids[start : start + CHUNK]),
                )
            ).rowcount
    return removed


# --- state reconstruction -----------------------------------------------------------------------


@dataclass
class RowFacts:
    """What a bulk change's device rows and bulk-level log say, gathered set-based."""

    counts: dict[str, int] = field(default_factory=dict)
    attempted: int = 0  # rows a run has claimed at least once
    last_update: datetime | None = None
    last_processed: datetime | None = None
    next_due: datetime | None = None  # earliest effective date of its SCHEDULED rows
    last_bulk_log_failed: bool = False  # the newest bulk-level log row is a run failure...
    last_bulk_log_at: datetime | None = None  # ...written at this time


@dataclass
class Rebuilt:
    bulk_change_id: int
    tenant_id: int
    old_status: str
    status: str
    old_counts: dict[str, int]
    counts: dict[str, int]
    processed_at: datetime | None
    effective_at: datetime | None

    @property
    def changed(self) -> bool:
        return self.old_status != self.status or (self.old_counts or {}) != self.counts


def status_from_rows(facts: RowFacts, *, async_carrier: bool) -> BulkChangeStatus:
    """The header status the rows imply, as the pipeline would have left it with no run in flight.

    - every row final: PROCESSED, or CANCELLED when every row that passed validation was cancelled,
      or ERROR when every row was refused at validation (none ever claimed: nothing was sent);
    - rows still PROCESSING: PROCESSING, or PENDING for an asynchronous carrier;
    - the newest bulk-level log is a run failure after the last row change: ERROR (re-runnable);
    - otherwise rows wait for a run: NEW (SCHEDULED when only future rows wait). Validation
      refusals (ERROR rows) do not make a waiting bulk change look started, as at submission.
    """
    c = {k: v for k, v in facts.counts.items() if v}
    if all(DeviceChangeStatus(k).is_final for k in c) or c.get(S.PROCESSING.value):
        # As finalize, cancel and settle leave it (``headers.status_from_counts``).
        return status_from_counts(c, async_carrier=async_carrier, attempted=facts.attempted)
    if facts.last_bulk_log_failed and (
        facts.last_update is None
        or (facts.last_bulk_log_at is not None and facts.last_bulk_log_at >= facts.last_update)
    ):
        return BulkChangeStatus.ERROR
    return BulkChangeStatus.NEW if c.get(S.NEW.value) else BulkChangeStatus.SCHEDULED


def _heads(conn: sa.Connection, tenant_id: int | None, ids: Sequence[int] | None) -> list[sa.Row[*tuple[Any, ...]]]:
    query = (
        sa.select(
            bulk_change.c.id,
            bulk_change.c.tenant_id,
            bulk_change.c.status,
            bulk_change.c.counts,
            bulk_change.c.processed_at,
            bulk_change.c.change_type,
            service_provider.c.integration,
        )
        .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
        # AWAITING_APPROVAL is not derived from rows (they say NEW): rebuilding it would release it unapproved
        .where(bulk_change.c.deleted_at.is_(None), bulk_change.c.status != BulkChangeStatus.AWAITING_APPROVAL.value)
        .order_by(bulk_change.c.id)
    )
    if tenant_id is not None:
        query = query.where(bulk_change.c.tenant_id == tenant_id)
    if ids is None:
        return list(conn.execute(query).all())
    return [
        r
        for start in range(0, len(ids), CHUNK)
        for r in conn.execute(query.where(bulk_change.c.id.in_(list(ids[start : start + CHUNK]))))
    ]


def row_facts(conn: sa.Connection, ids: Sequence[int]) -> dict[int, RowFacts]:
    """RowFacts of many bulk changes: three grouped queries per chunk of ids, never one per row."""
    facts: dict[int, RowFacts] = defaultdict(RowFacts)
    dc = device_change.c
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        for bc_id, status, n in conn.execute(
            sa.select(dc.bulk_change_id, dc.status, sa.func.count())
            .where(dc.bulk_change_id.in_(chunk))
            .group_by(dc.bulk_change_id, dc.status)
        ):
            facts[bc_id].counts[status] = n
        for r in conn.execute(
            sa.select(
                dc.bulk_change_id,
                sa.func.sum(sa.case((dc.attempt_count > 0, 1), else_=0)).label("attempted"),
                sa.func.max(sa.func.coalesce(dc.updated_at, dc.processed_at)).label("last_update"),
                sa.func.max(dc.processed_at).label("last_processed"),
                sa.func.min(sa.case((dc.status == S.SCHEDULED.value, dc.effective_at))).label("next_due"),
            )
            .where(dc.bulk_change_id.in_(chunk))
            .group_by(dc.bulk_change_id)
        ):
            f = facts[r.bulk_change_id]
            f.attempted, f.last_update, f.last_processed, f.next_due = (
                int(r.attempted or 0),
                r.last_update,
                r.last_processed,
                r.next_due,
            )
        newest = (
            sa.select(bulk_change_log.c.bulk_change_id, sa.func.max(bulk_change_log.c.id).label("log_id"))
            .where(bulk_change_log.c.bulk_change_id.in_(chunk), bulk_change_log.c.device_change_id.is_(None))
            .group_by(bulk_change_log.c.bulk_change_id)
            .subquery()
        )
        for bc_id, has_errors, created in conn.execute(
            sa.select(
                bulk_change_log.c.bulk_change_id, bulk_change_log.c.has_errors, bulk_change_log.c.created_at
            ).join(newest, newest.c.log_id == bulk_change_log.c.id)
        ):
            facts[bc_id].last_bulk_log_failed, facts[bc_id].last_bulk_log_at = bool(has_errors), created
    return facts


def plan_rebuild(engine: sa.Engine, *, tenant_id: int | None = None, ids: Sequence[int] | None = None) -> list[Rebuilt]:
    """What each header (of a tenant, or the given ids; archived ones excluded) should say."""
    with engine.connect() as conn:
        heads = _heads(conn, tenant_id, ids)
        facts = row_facts(conn, [h.id for h in heads])
    out = []
    for h in heads:
        f = facts.get(h.id) or RowFacts()
        status = status_from_rows(f, async_carrier=is_async(h.change_type, h.integration))
        final = status.value in COMPLETED
        out.append(
            Rebuilt(
                bulk_change_id=h.id,
                tenant_id=h.tenant_id,
                old_status=h.status,
                status=status.value,
                old_counts=dict(h.counts or {}),
                counts=dict(sorted(f.counts.items())),
                processed_at=(f.last_processed or h.processed_at) if final else None,
                effective_at=f.next_due if status is BulkChangeStatus.SCHEDULED else None,
            )
        )
    return out


def rebuild_status(
    engine: sa.Engine, *, tenant_id: int | None = None, ids: Sequence[int] | None = None
) -> list[Rebuilt]:
    """Rebuild headers from their rows and write the ones that differ (one executemany); returns
    every header examined, with ``changed`` telling which were rewritten."""
    plan = plan_rebuild(engine, tenant_id=tenant_id, ids=ids)
    params = [
        {
            "b_id": r.bulk_change_id,
            "b_status": r.status,
            "b_counts": r.counts,
            "b_processed": r.processed_at,
            "b_effective": r.effective_at,
        }
        for r in plan
        if r.changed
    ]
    if params:
        stmt = (
            sa.update(bulk_change)
            .where(bulk_change.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                counts=sa.bindparam("b_counts", type_=sa.JSON),
                processed_at=sa.bindparam("b_processed"),
                effective_at=sa.bindparam("b_effective"),
            )
        )
        run_transaction(engine, lambda conn: conn.execute(stmt, params))
    return plan


# --- health queries (asset checks) --------------------------------------------------------------


@dataclass
class Disagreement:
    bulk_change_id: int
    status: str
    rows_say: str
    counts: dict[str, int]
    stored_counts: dict[str, Any]


def status_disagreements(
    engine: sa.Engine, now: datetime | None = None, grace: timedelta = timedelta(minutes=30)
) -> list[Disagreement]:
    """Bulk changes whose header contradicts their rows, ignoring the normal states of a run:

    - a finished header (PROCESSED, CANCELLED) with rows not final, or counts that differ from the rows;
    - an unfinished header (NEW, SCHEDULED, PROCESSING, PENDING, ERROR) whose rows have all been
      final for longer than ``grace`` (a finalize that never happened: a crashed run).
    """
    now = now or utcnow()
    out = []
    with engine.connect() as conn:
        heads = _heads(conn, None, None)
        facts = row_facts(conn, [h.id for h in heads])
    for h in heads:
        f = facts.get(h.id) or RowFacts()
        rows_say = status_from_rows(f, async_carrier=is_async(h.change_type, h.integration)).value
        if h.status in COMPLETED:
            bad = rows_say != h.status or {k: v for k, v in (h.counts or {}).items() if v} != {
                k: v for k, v in f.counts.items() if v
            }
        else:
            bad = rows_say in COMPLETED and (f.last_update is None or f.last_update <= now - grace)
        if bad:
            out.append(Disagreement(h.id, h.status, rows_say, dict(f.counts), dict(h.counts or {})))
    return out


@dataclass
class StuckRows:
    bulk_change_id: int
    tenant_id: int
    carrier: str
    rows: int
    oldest_sent_at: datetime


def stuck_processing(engine: sa.Engine, older_than: datetime) -> list[StuckRows]:
    """Device rows still PROCESSING that were sent (claimed) before ``older_than``, per bulk change.

    The send time is the row's ``updated_at`` as reconcile reads it; an answered row leaves PROCESSING.
    """
    dc = device_change.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                dc.bulk_change_id,
                bulk_change.c.tenant_id,
                service_provider.c.carrier,
                sa.func.count().label("n"),
                sa.func.min(dc.updated_at).label("oldest"),
            )
            .join(bulk_change, bulk_change.c.id == dc.bulk_change_id)
            .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
            .where(dc.status == S.PROCESSING.value, dc.updated_at < older_than, bulk_change.c.deleted_at.is_(None))
            .group_by(dc.bulk_change_id, bulk_change.c.tenant_id, service_provider.c.carrier)
            .order_by(dc.bulk_change_id)
        ).all()
    return [StuckRows(r.bulk_change_id, r.tenant_id, r.carrier, r.n, r.oldest) for r in rows]


def ids_of(items: Iterable[Any]) -> list[int]:
    """Bulk change ids of check findings, for metadata."""
    return sorted({int(i.bulk_change_id) for i in items})
