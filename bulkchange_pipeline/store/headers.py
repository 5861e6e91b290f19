"""What a bulk change header says, derived from its device rows: one rule for every writer.

A run's finalize, an operator's cancel, the settle after a failed or stopped run, rebuild-status
and the ``bulk_status_matches_rows`` asset check all derive the header here, so they cannot
disagree about what the same rows mean (the check flags a header another writer derived
differently). ``domain.derive_bulk_status`` summarises counts; this module adds what only the
database knows: whether any row was ever claimed, the carrier's handling, the next due date.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..domain import (
    BulkChangeStatus,
    ChangeType,
    DeviceChangeStatus,
    Handling,
    Integration,
    capability,
    derive_bulk_status,
)
from .bulk_changes import attempted_if_only_errors, counts_by_status
from .db import run_transaction, utcnow
from .notifications import enqueue_settled
from .schema import bulk_change, device_change

__all__ = ["derive_header", "finalize_header", "is_async", "status_from_counts", "write_header"]


def is_async(change_type: int, integration: str) -> bool:
    """The carrier answers this change later (callback or poll): its rows left PROCESSING make the header PENDING."""
    try:
        cap = capability(ChangeType(change_type), Integration.parse(integration))
    except ValueError:
        return False
    return cap is not None and cap.handling is Handling.CARRIER_ASYNC


def status_from_counts(counts: dict[str, int], *, async_carrier: bool, attempted: int | None) -> BulkChangeStatus:
    """The header status these row counts say.

    CANCELLED when every row that passed validation was cancelled (refusals do not make a cancelled
    bulk change look processed); otherwise ``derive_bulk_status``, which says ERROR when every row
    was refused and none was ever claimed (``attempted`` 0: nothing was sent).
    """
    live = {k for k, v in counts.items() if v and k != DeviceChangeStatus.ERROR.value}
    if live == {DeviceChangeStatus.CANCELLED.value}:
        return BulkChangeStatus.CANCELLED
    return derive_bulk_status(counts, has_pending_async=async_carrier, attempted=attempted)


def derive_header(
    conn: sa.Connection, bulk_change_id: int, *, async_carrier: bool
) -> tuple[BulkChangeStatus, dict[str, int]]:
    """The status the bulk change's rows say now, with the counts it was derived from."""
    counts = counts_by_status(conn, bulk_change_id)
    attempted = attempted_if_only_errors(conn, bulk_change_id, counts)
    return status_from_counts(counts, async_carrier=async_carrier, attempted=attempted), counts


def write_header(conn: sa.Connection, bulk_change_id: int, status: BulkChangeStatus, counts: dict[str, int]) -> None:
    """Store a derived header: a SCHEDULED one gets its earliest waiting row's date (when the
    sensor starts it again), a PROCESSED or CANCELLED one its finish time. A header AWAITING_APPROVAL
    is left alone unless the rows say CANCELLED (cancel, reject, expiry). A header that settles
    the bulk change enqueues its completion notifications in the same transaction
    (``notifications.enqueue_settled``)."""
    values: dict[str, Any] = {"status": status.value, "counts": counts, "effective_at": None}
    if status is BulkChangeStatus.SCHEDULED:
        values["effective_at"] = conn.execute(
            sa.select(sa.func.min(device_change.c.effective_at)).where(
                device_change.c.bulk_change_id == bulk_change_id,
                device_change.c.status == DeviceChangeStatus.SCHEDULED.value,
            )
        ).scalar()
    if status in (BulkChangeStatus.CANCELLED, BulkChangeStatus.PROCESSED):
        values["processed_at"] = utcnow()
    stmt = sa.update(bulk_change).where(bulk_change.c.id == bulk_change_id)
    if status is not BulkChangeStatus.CANCELLED:
        # Only approval moves a header out of AWAITING_APPROVAL (``store.approvals``); rows derive
        # NEW there, and a finalize or settle (a run launched by hand) must not release it that way.
        stmt = stmt.where(bulk_change.c.status != BulkChangeStatus.AWAITING_APPROVAL.value)
    if not conn.execute(stmt.values(**values)).rowcount:
        return
    enqueue_settled(conn, bulk_change_id, status, counts)  # a settled header's notifications, same transaction


def finalize_header(
    engine: sa.Engine, bulk_change_id: int, *, async_carrier: bool
) -> tuple[BulkChangeStatus, dict[str, int]]:
    """Derive the header from the rows and store it, in one transaction (a run's last step)."""

    def work(conn: sa.Connection) -> tuple[BulkChangeStatus, dict[str, int]]:
        status, counts = derive_header(conn, bulk_change_id, async_carrier=async_carrier)
        write_header(conn, bulk_change_id, status, counts)
        return status, counts

    return run_transaction(engine, work)
