"""The health queries behind the asset checks: headers that contradict their rows (a finalize that
never happened), and rows left PROCESSING long after they were sent. Read-only; the checks report
what these find and an operator acts (``bulkchange rebuild-status``, reconcile).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .archive import COMPLETED
from .db import utcnow
from .headers import is_async
from .rebuild import RowFacts, live_heads, row_facts, status_from_rows
from .schema import bulk_change, device_change, service_provider

__all__ = ["Disagreement", "StuckRows", "ids_of", "status_disagreements", "stuck_processing"]

S = DeviceChangeStatus


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
        heads = live_heads(conn, None, None)
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
