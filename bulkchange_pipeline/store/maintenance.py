"""Housekeeping on the business database: tenant retention settings and the purge of archived
bulk changes. Rebuilding a header from its rows is ``store.rebuild``; the queries behind the asset
checks are ``store.health``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .archive import completed_at, tenant_cutoffs
from .db import run_transaction
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
    "Retention",
    "get_retention",
    "purge_bulk_changes",
    "purgeable",
    "set_retention",
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
