"""What an undo needs from the store: the original bulk change, its device rows, the before-values its
history recorded, and whatever changed the same devices' same fields after it.

Read-only and set-based (one query per table, not one per device), so the undo of a 5,000-device
bulk change costs a handful of statements. The decisions (what is restored, what is left out and
why) are ``intake.undo``'s; this module only answers questions about what was recorded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .operations import BulkChangeNotFound
from .schema import bulk_change, device_change, device_history, service_provider

__all__ = ["FieldChange", "OriginalBulkChange", "OriginalRow", "existing_undo", "load_original"]


@dataclass(frozen=True)
class FieldChange:
    """One recorded device_history row: ``field`` went from ``old`` to ``new`` by ``bulk_change_id``."""

    history_id: int
    field: str
    old: str | None
    new: str | None
    bulk_change_id: int | None


@dataclass
class OriginalRow:
    """One device row of the original, what its bulk change recorded for the device, and the later
    changes of those same fields by other bulk changes (oldest first)."""

    device_change_id: int
    device_id: int | None
    identifier: str
    status: str
    change_request: dict[str, Any]
    recorded: dict[str, FieldChange] = field(default_factory=dict)  # field -> the original's change
    later: list[FieldChange] = field(default_factory=list)


@dataclass
class OriginalBulkChange:
    id: int
    tenant_id: int
    service_provider_id: int
    integration: str
    change_type: int
    status: str
    undo_of: int | None
    rows: list[OriginalRow]


def load_original(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> OriginalBulkChange:
    """The original with its rows and history; ``BulkChangeNotFound`` for another tenant's, a
    deleted one or an unknown id (the three are one answer: nothing to say about ids not yours)."""
    with engine.connect() as conn:
        head = conn.execute(
            sa.select(
                bulk_change.c.id,
                bulk_change.c.service_provider_id,
                bulk_change.c.change_type,
                bulk_change.c.status,
                bulk_change.c.undo_of,
                service_provider.c.integration,
            )
            .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
            .where(
                bulk_change.c.id == bulk_change_id,
                bulk_change.c.tenant_id == tenant_id,
                bulk_change.c.deleted_at.is_(None),
            )
        ).first()
        if head is None:
            raise BulkChangeNotFound(bulk_change_id)
        rows = [
            OriginalRow(
                device_change_id=r.id,
                device_id=r.device_id,
                identifier=r.iccid or r.msisdn or r.imei or r.eid or "",
                status=r.status,
                change_request=dict(r.change_request or {}),
            )
            for r in conn.execute(
                sa.select(
                    device_change.c.id,
                    device_change.c.device_id,
                    device_change.c.iccid,
                    device_change.c.msisdn,
                    device_change.c.imei,
                    device_change.c.eid,
                    device_change.c.status,
                    device_change.c.change_request,
                )
                .where(device_change.c.bulk_change_id == bulk_change_id)
                .order_by(device_change.c.id)
            )
        ]
        _attach_history(conn, tenant_id, bulk_change_id, rows)
    return OriginalBulkChange(
        id=head.id,
        tenant_id=tenant_id,
        service_provider_id=head.service_provider_id,
        integration=head.integration,
        change_type=head.change_type,
        status=head.status,
        undo_of=head.undo_of,
        rows=rows,
    )


def _attach_history(conn: sa.Connection, tenant_id: int, bulk_change_id: int, rows: list[OriginalRow]) -> None:
    """The original's history rows per device, then every later history row of the same devices
    (by any other bulk change), kept only for the fields the original changed."""
    by_device: dict[int, OriginalRow] = {r.device_id: r for r in rows if r.device_id is not None}
    if not by_device:
        return
    first_id: int | None = None
    for h in conn.execute(
        sa.select(device_history)
        .where(device_history.c.tenant_id == tenant_id, device_history.c.bulk_change_id == bulk_change_id)
        .order_by(device_history.c.id)
    ):
        row = by_device.get(h.device_id)
        if row is not None:
            row.recorded[h.field] = FieldChange(h.id, h.field, h.old_value, h.new_value, h.bulk_change_id)
            first_id = h.id if first_id is None else min(first_id, h.id)
    if first_id is None:
        return
    later: dict[int, list[FieldChange]] = defaultdict(list)
    ids = list(by_device)
    for start in range(0, len(ids), 5_000):  # bounded IN lists (SQLite's variable limit)
        for h in conn.execute(
            sa.select(device_history)
            .where(
                device_history.c.tenant_id == tenant_id,
                device_history.c.device_id.in_(ids[start : start + 5_000]),
                device_history.c.id > first_id,
                sa.or_(device_history.c.bulk_change_id.is_(None), device_history.c.bulk_change_id != bulk_change_id),
            )
            .order_by(device_history.c.id)
        ):
            later[h.device_id].append(FieldChange(h.id, h.field, h.old_value, h.new_value, h.bulk_change_id))
    for device_id, changes in later.items():
        row = by_device[device_id]
        row.later = [c for c in changes if c.field in row.recorded and c.history_id > row.recorded[c.field].history_id]


def existing_undo(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> tuple[int, str] | None:
    """The undo already made of this bulk change (id, status), newest first, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(bulk_change.c.id, bulk_change.c.status)
            .where(
                bulk_change.c.tenant_id == tenant_id,
                bulk_change.c.undo_of == bulk_change_id,
                bulk_change.c.deleted_at.is_(None),
            )
            .order_by(bulk_change.c.id.desc())
            .limit(1)
        ).first()
    return None if row is None else (row.id, row.status)
