"""Reading a tenant's bulk change for its results: one page of device rows, whether it exists,
when a row last changed; and ``BulkChangeNotFound``, the one "not found" of store and engine.

Split from ``store.operations`` (the actions that change a bulk change): the API's results
endpoint, the console and the event messages page through rows here without the actions' rules.
Every lookup is scoped by tenant: another tenant's bulk change is "not found", never "forbidden".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .device_rows import RESULT_COLUMNS
from .schema import bulk_change, device_change

__all__ = [
    "MAX_PAGE_SIZE",
    "BulkChangeNotFound",
    "DevicePage",
    "bulk_change_exists",
    "last_updated",
    "page_device_results",
]

MAX_PAGE_SIZE = 1000


class BulkChangeNotFound(LookupError):
    """No such bulk change (in this tenant), or it was archived: the one "not found" of store and engine."""


@dataclass
class DevicePage:
    items: list[dict[str, Any]]
    total: int  # rows matching the filter
    page: int
    page_size: int


def page_device_results(
    engine: sa.Engine,
    tenant_id: int,
    bulk_change_id: int,
    *,
    status: DeviceChangeStatus | None = None,
    page: int = 1,
    page_size: int = 100,
) -> DevicePage:
    """One page (1-based) of a bulk change's device rows in id order, optionally of one status."""
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}")
    where = [device_change.c.bulk_change_id == bulk_change_id, device_change.c.tenant_id == tenant_id]
    if status is not None:
        where.append(device_change.c.status == status.value)
    with engine.connect() as conn:
        if not _exists(conn, tenant_id, bulk_change_id):
            raise BulkChangeNotFound(f"no bulk change {bulk_change_id} in this tenant")
        total = conn.execute(sa.select(sa.func.count()).select_from(device_change).where(*where)).scalar_one()
        rows = conn.execute(
            sa.select(*RESULT_COLUMNS)
            .where(*where)
            .order_by(device_change.c.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).all()
    return DevicePage([dict(r._mapping) for r in rows], total, page, page_size)


def bulk_change_exists(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> bool:
    """True when this tenant has a live (not archived) bulk change with this id."""
    with engine.connect() as conn:
        return _exists(conn, tenant_id, bulk_change_id)


def _exists(conn: sa.Connection, tenant_id: int, bulk_change_id: int) -> bool:
    return (
        conn.execute(
            sa.select(bulk_change.c.id).where(
                bulk_change.c.id == bulk_change_id,
                bulk_change.c.tenant_id == tenant_id,
                bulk_change.c.deleted_at.is_(None),
            )
        ).first()
        is not None
    )


def last_updated(engine: sa.Engine, bulk_change_id: int) -> datetime | None:
    """When any device row of the bulk change last changed (for status timings)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.max(device_change.c.updated_at)).where(device_change.c.bulk_change_id == bulk_change_id)
        ).scalar()
