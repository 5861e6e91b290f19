"""The queries of the operators' console (``bulkchange_pipeline.console``): lists, searches and drill-downs.

The console's pages ask questions the API does not: bulk changes filtered and paged with their
service provider and live counts, every bulk change that touched one device, one device row's
carrier exchanges. They live here because SQL lives in the store. Every function takes the
signed-in tenant's id and never returns another tenant's rows (another tenant's bulk change or
device is simply not found, as in the API); every list is paged or bounded, so a page costs a few
indexed queries whatever the tenant's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .api_keys import ApiKeyIdentity, stored_roles
from .db import utcnow
from .operations import retryable_condition
from .schema import (
    api_key,
    bulk_change,
    bulk_change_log,
    console_session_revoked,
    device,
    device_change,
    device_history,
    service_provider,
)

__all__ = [
    "IDENTIFIER_COLUMNS",
    "MAX_LIST_PAGE_SIZE",
    "BulkChangeFilter",
    "BulkChangeListPage",
    "BulkChangeSummary",
    "DeviceView",
    "Exchange",
    "RowDrillDown",
    "bulk_change_summary",
    "device_view",
    "find_devices_by_identifier",
    "list_bulk_changes",
    "live_session",
    "retryable_count",
    "revoke_session",
    "row_exchanges",
]

MAX_LIST_PAGE_SIZE = 200
MAX_DEVICE_MATCHES = 50
MAX_DEVICE_CHANGES = 500  # a device touched more often than this shows its latest ones
MAX_EXCHANGES = 200
IDENTIFIER_COLUMNS = ("iccid", "imei", "msisdn", "eid")
UNFINISHED = (DeviceChangeStatus.NEW.value, DeviceChangeStatus.PROCESSING.value, DeviceChangeStatus.SCHEDULED.value)


def live_session(engine: sa.Engine, tenant_id: int, key_id: int, session_id: str) -> ApiKeyIdentity | None:
    """The key a console session names, if the key is still live and still the tenant's and the
    session was not signed out (``revoke_session``): a revoked key ends its sessions at their next
    request, not when they expire. One indexed query per page, whichever replica serves it."""
    revoked = sa.exists().where(console_session_revoked.c.session_id == session_id)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_key.c.id, api_key.c.tenant_id, api_key.c.name, api_key.c.roles).where(
                api_key.c.id == key_id,
                api_key.c.tenant_id == tenant_id,
                api_key.c.revoked_at.is_(None),
                ~revoked,
            )
        ).first()
    return ApiKeyIdentity(row.id, row.tenant_id, row.name, stored_roles(row.roles)) if row else None


def revoke_session(engine: sa.Engine, session_id: str, expires_at: datetime) -> None:
    """Record a signed-out session until it would have expired anyway, and drop the records of
    sessions past their expiry (their cookies are refused on the expiry alone), so the table holds
    at most one session lifetime of sign-outs. Signing out twice at once is one record."""
    with engine.begin() as conn:
        conn.execute(console_session_revoked.delete().where(console_session_revoked.c.expires_at < utcnow()))
    try:
        with engine.begin() as conn:
            conn.execute(console_session_revoked.insert().values(session_id=session_id, expires_at=expires_at))
    except sa.exc.IntegrityError:
        pass  # signed out already (another tab, a double click): it is revoked either way


@dataclass
class BulkChangeSummary:
    """A bulk change as the list and the page header show it (counts are live, from the rows)."""

    id: int
    status: str
    change_type: int
    service_provider_id: int
    service_provider_name: str
    integration: str
    carrier: str
    created_by: str
    created_at: datetime
    processed_at: datetime | None
    effective_at: datetime | None
    process_changes: bool
    attempt: int
    counts: dict[str, int] = field(default_factory=dict)
    submission_id: int | None = None  # the submission it is one child of (a request split by carrier)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Rows that reached a final status (the progress bar's numerator)."""
        return self.total - sum(self.counts.get(s, 0) for s in UNFINISHED)

    @property
    def held(self) -> bool:
        return not self.process_changes


@dataclass(frozen=True)
class BulkChangeFilter:
    """The list's filters; None is "any"."""

    status: str | None = None
    service_provider_id: int | None = None
    change_type: int | None = None
    created_from: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


@dataclass
class BulkChangeListPage:
    items: list[BulkChangeSummary]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _summary_select() -> sa.Select[Any]:
    bc, sp = bulk_change, service_provider
    return sa.select(
        bc.c.id,
        bc.c.status,
        bc.c.change_type,
        bc.c.service_provider_id,
        sp.c.name.label("service_provider_name"),
        sp.c.integration,
        sp.c.carrier,
        bc.c.created_by,
        bc.c.created_at,
        bc.c.processed_at,
        bc.c.effective_at,
        bc.c.process_changes,
        bc.c.attempt,
        bc.c.submission_id,
    ).join(sp, sp.c.id == bc.c.service_provider_id)


def _counts(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    rows = conn.execute(
        sa.select(device_change.c.bulk_change_id, device_change.c.status, sa.func.count())
        .where(device_change.c.bulk_change_id.in_(ids))
        .group_by(device_change.c.bulk_change_id, device_change.c.status)
    )
    for bc_id, status, n in rows:
        out[bc_id][status] = int(n)
    return out


def list_bulk_changes(
    engine: sa.Engine,
    tenant_id: int,
    filters: BulkChangeFilter = BulkChangeFilter(),
    *,
    page: int = 1,
    page_size: int = 25,
) -> BulkChangeListPage:
    """One page (1-based; one past the end is the last) of the tenant's live bulk changes, newest
    first, with live counts."""
    if page < 1 or not 1 <= page_size <= MAX_LIST_PAGE_SIZE:
        raise ValueError(f"page must be >= 1 and page_size between 1 and {MAX_LIST_PAGE_SIZE}")
    bc = bulk_change
    where: list[sa.ColumnElement[bool]] = [bc.c.tenant_id == tenant_id, bc.c.deleted_at.is_(None)]
    if filters.status is not None:
        where.append(bc.c.status == filters.status)
    if filters.service_provider_id is not None:
        where.append(bc.c.service_provider_id == filters.service_provider_id)
    if filters.change_type is not None:
        where.append(bc.c.change_type == filters.change_type)
    if filters.created_from is not None:
        where.append(bc.c.created_at >= filters.created_from)
    if filters.created_before is not None:
        where.append(bc.c.created_at < filters.created_before)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(bc).where(*where)).scalar_one()
        page = min(page, max(1, -(-int(total) // page_size)))  # past the end (a stale link): the last page
        rows = conn.execute(
            _summary_select().where(*where).order_by(bc.c.id.desc()).offset((page - 1) * page_size).limit(page_size)
        ).all()
        counts = _counts(conn, [r.id for r in rows])
    items = [BulkChangeSummary(**r._mapping, counts=counts[r.id]) for r in rows]
    return BulkChangeListPage(items, int(total), page, page_size)


def bulk_change_summary(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> BulkChangeSummary | None:
    """One live bulk change of the tenant with its service provider and live counts, or None."""
    bc = bulk_change
    with engine.connect() as conn:
        row = conn.execute(
            _summary_select().where(bc.c.id == bulk_change_id, bc.c.tenant_id == tenant_id, bc.c.deleted_at.is_(None))
        ).first()
        if row is None:
            return None
        return BulkChangeSummary(**row._mapping, counts=_counts(conn, [row.id])[row.id])


def retryable_count(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> int:
    """How many rows a retry-failed would put back (the rule of ``operations.retryable_condition``)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(device_change)
                .where(
                    device_change.c.bulk_change_id == bulk_change_id,
                    device_change.c.tenant_id == tenant_id,
                    retryable_condition(),
                )
            ).scalar_one()
        )


# --- devices --------------------------------------------------------------------------------------


def find_devices_by_identifier(engine: sa.Engine, tenant_id: int, value: str) -> list[dict[str, Any]]:
    """The tenant's devices whose ICCID, IMEI, MSISDN or EID is ``value`` (several: a recycled
    MSISDN, an archived twin), each with ``matched`` naming the identifier that matched."""
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    cols = (device.c.id, device.c.iccid, device.c.imei, device.c.msisdn, device.c.eid, device.c.status)
    with engine.connect() as conn:
        for name in IDENTIFIER_COLUMNS:
            rows = conn.execute(
                sa.select(*cols, service_provider.c.name.label("service_provider_name"))
                .join(service_provider, service_provider.c.id == device.c.service_provider_id)
                .where(
                    (device.c.tenant_id + 0) == tenant_id, device.c[name] == value
                )  # + 0: see reference.find_devices
                .order_by(device.c.id)
                .limit(MAX_DEVICE_MATCHES)
            )
            for r in rows:
                if r.id not in seen:
                    seen.add(r.id)
                    out.append({**r._mapping, "matched": name})
    return out[:MAX_DEVICE_MATCHES]


@dataclass
class DeviceView:
    """A device, every bulk change row that touched it (newest first) and its field history."""

    device: dict[str, Any]
    changes: list[dict[str, Any]]
    history: list[dict[str, Any]]


def device_view(engine: sa.Engine, tenant_id: int, device_id: int) -> DeviceView | None:
    """The device page's data, or None when the tenant has no such device."""
    dc, bc = device_change, bulk_change
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(device, service_provider.c.name.label("service_provider_name"))
            .join(service_provider, service_provider.c.id == device.c.service_provider_id)
            .where(device.c.id == device_id, device.c.tenant_id == tenant_id)
        ).first()
        if found is None:
            return None
        changes = conn.execute(
            sa.select(
                dc.c.id,
                dc.c.bulk_change_id,
                dc.c.status,
                dc.c.status_details,
                dc.c.change_request,
                dc.c.processed_at,
                bc.c.change_type,
                bc.c.created_at,
                bc.c.created_by,
            )
            .join(bc, bc.c.id == dc.c.bulk_change_id)
            .where(dc.c.device_id == device_id, dc.c.tenant_id == tenant_id, bc.c.deleted_at.is_(None))
            .order_by(dc.c.id.desc())
            .limit(MAX_DEVICE_CHANGES)
        ).all()
        history = conn.execute(
            sa.select(device_history)
            .where(device_history.c.tenant_id == tenant_id, device_history.c.device_id == device_id)
            .order_by(device_history.c.id.desc())
            .limit(MAX_DEVICE_CHANGES)
        ).all()
    return DeviceView(dict(found._mapping), [dict(r._mapping) for r in changes], [dict(r._mapping) for r in history])


@dataclass
class Exchange:
    """One bulk_change_log row of a device row: a carrier request and answer (redacted when
    stored), or what was done in the database."""

    id: int
    description: str
    process_by: str
    request_text: str | None
    response_text: str | None
    response_status: str | None
    has_errors: bool
    response_ms: float | None
    attempt: int | None
    sent_at: datetime | None
    created_at: datetime


@dataclass
class RowDrillDown:
    row: dict[str, Any]
    exchanges: list[Exchange]


def row_exchanges(engine: sa.Engine, tenant_id: int, bulk_change_id: int, device_change_id: int) -> RowDrillDown | None:
    """One device row of the tenant's bulk change with its carrier exchanges in the order they were
    recorded, or None (no such row in this tenant's bulk change)."""
    dc, log = device_change, bulk_change_log
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(dc)
            .join(bulk_change, bulk_change.c.id == dc.c.bulk_change_id)
            .where(
                dc.c.id == device_change_id,
                dc.c.bulk_change_id == bulk_change_id,
                dc.c.tenant_id == tenant_id,
                bulk_change.c.deleted_at.is_(None),
            )
        ).first()
        if row is None:
            return None
        logs = conn.execute(
            sa.select(*(log.c[name] for name in Exchange.__dataclass_fields__))
            .where(log.c.device_change_id == device_change_id, log.c.tenant_id == tenant_id)
            .order_by(log.c.id)
            .limit(MAX_EXCHANGES)
        ).all()
    return RowDrillDown(dict(row._mapping), [Exchange(**r._mapping) for r in logs])
