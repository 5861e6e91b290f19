"""Loading a bulk change for processing, sizing its batches, and finalizing it.

Plain functions on the store: the Dagster ops in ``defs/`` are thin wrappers around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..domain import (
    BulkChangeStatus,
    ChangeType,
    DeviceChangeStatus,
    Handling,
    capability,
    derive_bulk_status,
)
from ..store.bulk_changes import attempted_if_only_errors, count_rows_by_status, set_bulk_status
from ..store.device_changes import IdRange, plan_id_ranges
from ..store.reference import ServiceProviderInfo, get_service_provider
from ..store.schema import bulk_change, device_change

# Steps per run grow with batches, not devices (DESIGN P4: <= 64 steps for 100,000 devices):
# a run has load, validate, plan, finalize plus at most this many apply_batch steps.
MAX_BATCHES_PER_RUN = 48


class BulkChangeNotFound(LookupError):
    pass


@dataclass(frozen=True)
class BulkChangeInfo:
    """What every step of a run needs to know about its bulk change (small, picklable)."""

    id: int
    tenant_id: int
    change_type: ChangeType
    status: str
    service_provider: ServiceProviderInfo
    handling: Handling | None  # None: the carrier cannot do this change type
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def account_key(self) -> str:
        """The carrier account a run talks to: used for run tags and concurrency limits."""
        return f"sp-{self.service_provider.id}"


def load_bulk_change(engine: sa.Engine, bulk_change_id: int) -> BulkChangeInfo:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(bulk_change.c.id, bulk_change.c.tenant_id, bulk_change.c.service_provider_id,
                      bulk_change.c.change_type, bulk_change.c.status)
            .where(bulk_change.c.id == bulk_change_id, bulk_change.c.deleted_at.is_(None))
        ).first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_change_id} does not exist (or was archived)")
    sp = get_service_provider(engine, row.tenant_id, row.service_provider_id)
    if sp is None:  # pragma: no cover - a foreign key guarantees it
        raise BulkChangeNotFound(f"bulk change {bulk_change_id}: its service provider is gone")
    change_type = ChangeType(row.change_type)
    cap = capability(change_type, sp.integration)
    return BulkChangeInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        change_type=change_type,
        status=row.status,
        service_provider=sp,
        handling=cap.handling if cap else None,
        counts=count_rows_by_status(engine, bulk_change_id),
    )


def batch_size_for(configured: int, actionable_rows: int, max_batches: int = MAX_BATCHES_PER_RUN) -> int:
    """The carrier-sized batch, grown when needed so a run never exceeds ``max_batches`` batches."""
    if actionable_rows <= 0:
        return max(configured, 1)
    return max(configured, 1, math.ceil(actionable_rows / max_batches))


def plan_batches(engine: sa.Engine, info: BulkChangeInfo, batch_size: int | None = None) -> list[IdRange]:
    """Id ranges of the rows this run should process (NEW, left PROCESSING, or SCHEDULED and due)."""
    configured = batch_size or info.service_provider.batch_size
    actionable = sum(info.counts.get(s.value, 0) for s in (DeviceChangeStatus.NEW, DeviceChangeStatus.PROCESSING, DeviceChangeStatus.SCHEDULED))
    return plan_id_ranges(engine, info.id, batch_size_for(configured, actionable))


def mark_processing(engine: sa.Engine, info: BulkChangeInfo) -> None:
    set_bulk_status(engine, info.id, BulkChangeStatus.PROCESSING)


@dataclass
class FinalizeResult:
    status: BulkChangeStatus
    counts: dict[str, int]
    summary_markdown: str


def finalize(engine: sa.Engine, info: BulkChangeInfo, batch_summaries: list[dict[str, Any]]) -> FinalizeResult:
    """Derive the header status from the device rows and store it with the counts.

    Rows still waiting on an asynchronous carrier leave the bulk change PENDING; SCHEDULED rows not
    yet due leave it SCHEDULED with the next effective date, so the sensor picks it up then.
    """
    counts = count_rows_by_status(engine, info.id)
    with engine.connect() as conn:  # every row ERROR and none ever claimed: nothing was sent, ERROR
        attempted = attempted_if_only_errors(conn, info.id, counts)
    status = derive_bulk_status(counts, has_pending_async=info.handling is Handling.CARRIER_ASYNC, attempted=attempted)
    next_due = None
    if status is BulkChangeStatus.SCHEDULED:
        with engine.connect() as conn:
            next_due = conn.execute(
                sa.select(sa.func.min(device_change.c.effective_at)).where(
                    device_change.c.bulk_change_id == info.id,
                    device_change.c.status == DeviceChangeStatus.SCHEDULED.value,
                )
            ).scalar()
    set_bulk_status(engine, info.id, status, counts=counts, effective_at=next_due, processed=status is BulkChangeStatus.PROCESSED)
    return FinalizeResult(status, counts, summary_markdown(info, status, counts, batch_summaries, first_failures(engine, info.id)))


def first_failures(engine: sa.Engine, bulk_change_id: int, limit: int = 10) -> list[dict[str, str]]:
    """The first failed rows (API_FAILED or ERROR) with their device and reason, for people."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device_change.c.iccid, device_change.c.msisdn, device_change.c.eid, device_change.c.imei,
                      device_change.c.status, device_change.c.status_details)
            .where(
                device_change.c.bulk_change_id == bulk_change_id,
                device_change.c.status.in_((DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value)),
            )
            .order_by(device_change.c.id)
            .limit(limit)
        ).all()
    return [
        {"device": r.iccid or r.msisdn or r.eid or r.imei or "?", "status": r.status, "reason": (r.status_details or "")[:200]}
        for r in rows
    ]


def summary_markdown(
    info: BulkChangeInfo,
    status: BulkChangeStatus,
    counts: dict[str, int],
    batches: list[dict[str, Any]],
    failures: list[dict[str, str]] = (),
) -> str:
    total = sum(counts.values())
    lines = [
        f"### Bulk change {info.id}: {info.change_type.label} on {info.service_provider.name}",
        "",
        f"**Status:** {status.value} ({total} devices)",
        "",
        "| device status | rows |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in sorted(counts.items())],
        "",
        f"Batches this run: {len(batches)}; carrier calls: {sum(b.get('carrier_calls', 0) for b in batches)}; "
        f"seconds in batches: {sum(b.get('seconds', 0.0) for b in batches):.1f}",
    ]
    if failures:
        lines += [
            "",
            "First failures:",
            "",
            "| device | status | reason |",
            "|---|---|---|",
            *[f"| `{f['device']}` | {f['status']} | {f['reason'].replace('|', '/')} |" for f in failures],
        ]
    return "\n".join(lines)
