"""State reconstruction: rebuild a bulk change's header from its device rows and bulk-level log.

The seed's recovery procedure: after a restore, headers may be older or newer than their device
rows; the rows (and the bulk-level log) are the truth, so each header's status, counts,
processed_at and effective_at are derived again from them. Run it with no runs in flight: a
header mid-run legitimately differs from its rows. ``store.health`` asks the same question of
every header for the asset checks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus
from .archive import COMPLETED
from .db import run_transaction
from .headers import is_async, status_from_counts
from .maintenance import CHUNK
from .schema import bulk_change, bulk_change_log, device_change, service_provider

__all__ = [
    "Rebuilt",
    "RowFacts",
    "live_heads",
    "plan_rebuild",
    "rebuild_status",
    "row_facts",
    "status_from_rows",
]

S = DeviceChangeStatus


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


def live_heads(conn: sa.Connection, tenant_id: int | None, ids: Sequence[int] | None) -> list[sa.Row[*tuple[Any, ...]]]:
    """The headers a rebuild (and ``store.health``) examines: live ones of a tenant, or of the given
    ids, or all; AWAITING_APPROVAL left out."""
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
        heads = live_heads(conn, tenant_id, ids)
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
