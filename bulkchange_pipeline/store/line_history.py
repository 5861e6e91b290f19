"""Per-line counts the carrier rules are checked against (``domain.carrier_rules``).

Why here: a carrier counts what it was sent, and what we are about to send counts just the same,
so a line's count is its rows PROCESSED today plus its rows still waiting in any bulk change (NEW,
PROCESSING, or SCHEDULED to go before the day ends). Set-based like ``store.reference``: one
grouped query per ``IN_CHUNK`` devices, never one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..domain import ChangeType, DeviceChangeStatus
from .reference import IN_CHUNK
from .schema import bulk_change, device_change

__all__ = ["change_counts_today"]

S = DeviceChangeStatus


def change_counts_today(
    engine: sa.Engine, tenant_id: int, change_type: ChangeType, device_ids: Sequence[int], now: datetime
) -> dict[int, int]:
    """Rows of ``change_type`` per device that were processed today (UTC, naive ``now``) or are
    waiting to be sent today, in any of this tenant's bulk changes. Devices with none are absent."""
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + timedelta(days=1)
    dc = device_change.c
    counted = sa.or_(
        sa.and_(dc.status == S.PROCESSED.value, dc.processed_at >= day_start, dc.processed_at < day_end),
        dc.status.in_((S.NEW.value, S.PROCESSING.value)),
        sa.and_(dc.status == S.SCHEDULED.value, sa.or_(dc.effective_at.is_(None), dc.effective_at < day_end)),
    )
    ids = sorted(set(device_ids))
    counts: dict[int, int] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), IN_CHUNK):
            rows = conn.execute(
                sa.select(dc.device_id, sa.func.count())
                .select_from(device_change.join(bulk_change, bulk_change.c.id == dc.bulk_change_id))
                .where(
                    dc.tenant_id == tenant_id,
                    dc.device_id.in_(ids[start : start + IN_CHUNK]),
                    bulk_change.c.change_type == int(change_type),
                    counted,
                )
                .group_by(dc.device_id)
            )
            counts.update({device_id: n for device_id, n in rows})
    return counts
