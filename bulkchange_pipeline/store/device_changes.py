"""Repository functions the pipeline uses on device rows: plan, load, claim, record, history.

All writes are set-based: one executemany per table per batch, never a round trip per device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .db import run_transaction, utcnow
from .schema import DEVICE_CHANGE_FIELDS, bulk_change_log, device, device_change, device_history

ACTIONABLE = (DeviceChangeStatus.NEW.value, DeviceChangeStatus.PROCESSING.value, DeviceChangeStatus.SCHEDULED.value)


def _actionable(now: datetime) -> sa.ColumnElement[bool]:
    """NEW rows, rows an earlier attempt left PROCESSING, and SCHEDULED rows now due.

    A PROCESSING row that carries a carrier request id was accepted by an asynchronous carrier and
    waits for its answer: reconcile settles it, and sending it again would apply it twice.
    """
    return sa.or_(
        device_change.c.status == DeviceChangeStatus.NEW.value,
        sa.and_(device_change.c.status == DeviceChangeStatus.PROCESSING.value, device_change.c.carrier_request_id.is_(None)),
        sa.and_(device_change.c.status == DeviceChangeStatus.SCHEDULED.value, device_change.c.effective_at <= now),
    )


def count_unfinished(conn: sa.Connection, bulk_change_id: int, now: datetime | None = None) -> int:
    """Rows a run still has to do (``_actionable``): NEW, left PROCESSING without a carrier request
    id, SCHEDULED and due. Zero means every row is settled or waits on an async carrier."""
    return conn.execute(
        sa.select(sa.func.count()).select_from(device_change)
        .where(device_change.c.bulk_change_id == bulk_change_id, _actionable(now or utcnow()))
    ).scalar_one()


@dataclass(frozen=True)
class IdRange:
    """A batch as a closed id range of one bulk change's rows: small to pass between Dagster steps."""

    first_id: int
    last_id: int
    size: int


def plan_id_ranges(engine: sa.Engine, bulk_change_id: int, batch_size: int, now: datetime | None = None) -> list[IdRange]:
    """Split the actionable rows into batches of at most ``batch_size`` consecutive ids."""
    now = now or utcnow()
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(device_change.c.id)
            .where(device_change.c.bulk_change_id == bulk_change_id, _actionable(now))
            .order_by(device_change.c.id)
        ).scalars().all()
    return [
        IdRange(chunk[0], chunk[-1], len(chunk))
        for chunk in (ids[i : i + batch_size] for i in range(0, len(ids), batch_size))
    ]


@dataclass
class WorkRow:
    """A device row with the device's current values, as a batch needs it."""

    id: int
    device_id: int | None
    status: str
    iccid: str | None
    msisdn: str | None
    imei: str | None
    eid: str | None
    change_request: dict[str, Any]
    attempt_count: int
    current: dict[str, Any] = field(default_factory=dict)  # device columns before the change


def load_batch(engine: sa.Engine, bulk_change_id: int, rng: IdRange, now: datetime | None = None) -> list[WorkRow]:
    now = now or utcnow()
    cols = [device.c[name].label(f"cur_{name}") for name in DEVICE_CHANGE_FIELDS]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                device_change.c.id,
                device_change.c.device_id,
                device_change.c.status,
                device_change.c.iccid,
                device_change.c.msisdn,
                device_change.c.imei,
                device_change.c.eid,
                device_change.c.change_request,
                device_change.c.attempt_count,
                *cols,
            )
            .select_from(device_change.outerjoin(device, device.c.id == device_change.c.device_id))
            .where(
                device_change.c.bulk_change_id == bulk_change_id,
                device_change.c.id.between(rng.first_id, rng.last_id),
                _actionable(now),
            )
            .order_by(device_change.c.id)
        ).all()
    out = []
    for r in rows:
        m = r._mapping
        out.append(
            WorkRow(
                id=m["id"],
                device_id=m["device_id"],
                status=m["status"],
                iccid=m["iccid"],
                msisdn=m["msisdn"],
                imei=m["imei"],
                eid=m["eid"],
                change_request=m["change_request"] or {},
                attempt_count=m["attempt_count"],
                current={name: m[f"cur_{name}"] for name in DEVICE_CHANGE_FIELDS},
            )
        )
    return out


def claim(engine: sa.Engine, ids: Sequence[int]) -> set[int]:
    """Mark rows PROCESSING (and count the attempt) before any carrier call, in its own commit.

    Returns the ids actually claimed: a row cancelled (or finished by another attempt) since the
    batch was loaded is not claimed, and the caller must not send it. A crash after this point
    leaves the rows PROCESSING, which tells the next attempt to ask the carrier for the current
    state before sending again.
    """
    if not ids:
        return set()
    stmt = (
        sa.update(device_change)
        .where(device_change.c.id.in_(sa.bindparam("ids", expanding=True)))
        .where(device_change.c.status.in_((DeviceChangeStatus.NEW.value, DeviceChangeStatus.SCHEDULED.value, DeviceChangeStatus.PROCESSING.value)))
        .values(
            status=DeviceChangeStatus.PROCESSING.value,
            attempt_count=device_change.c.attempt_count + 1,
            updated_at=utcnow(),
        )
        .returning(device_change.c.id)
    )
    claimed: set[int] = set()
    for start in range(0, len(ids), 900):
        chunk = list(ids[start : start + 900])
        claimed |= run_transaction(engine, lambda conn, c=chunk: set(conn.execute(stmt, {"ids": c}).scalars()))
    return claimed


def count_polls(engine: sa.Engine, ids: Sequence[int]) -> None:
    """One more status poll found these asynchronous rows still pending (send time unchanged)."""
    stmt = (
        sa.update(device_change)
        .where(device_change.c.id.in_(sa.bindparam("ids", expanding=True)))
        .values(poll_count=device_change.c.poll_count + 1)
    )
    for start in range(0, len(ids), 900):
        chunk = list(ids[start : start + 900])
        run_transaction(engine, lambda conn, c=chunk: conn.execute(stmt, {"ids": c}))


@dataclass
class LogRow:
    description: str
    request_text: str | None = None
    response_text: str | None = None
    response_status: str | None = None
    has_errors: bool = False
    response_ms: float | None = None
    attempt: int | None = None
    sent_at: datetime | None = None


@dataclass
class RowResult:
    """The outcome of one device row, to be written with the rest of its batch."""

    device_change_id: int
    status: DeviceChangeStatus
    status_details: str
    device_id: int | None = None
    carrier_request_id: str | None = None
    new_values: dict[str, Any] = field(default_factory=dict)  # device columns to set
    old_values: dict[str, Any] = field(default_factory=dict)  # their values before, for history
    logs: list[LogRow] = field(default_factory=list)


def record_results(
    engine: sa.Engine,
    *,
    tenant_id: int,
    bulk_change_id: int,
    results: Sequence[RowResult],
    process_by: str,
) -> None:
    """Write a batch's results: device rows, log rows, device updates and history, in one transaction.

    Set-based: one executemany per table (device updates grouped by the set of columns written).
    """
    if not results:
        return
    now = utcnow()
    final = {s.value for s in DeviceChangeStatus if s.is_final}
    change_params = [
        {
            "b_id": r.device_change_id,
            "b_status": r.status.value,
            "b_details": (r.status_details or "")[:4000],
            "b_req": r.carrier_request_id,
            "b_processed": now if r.status.value in final else None,
        }
        for r in results
    ]
    log_params = [
        {
            "tenant_id": tenant_id,
            "bulk_change_id": bulk_change_id,
            "device_change_id": r.device_change_id,
            "description": log.description,
            "process_by": process_by,
            "request_text": log.request_text,
            "response_text": log.response_text,
            "has_errors": log.has_errors,
            "response_status": log.response_status,
            "response_ms": log.response_ms,
            "attempt": log.attempt,
            "sent_at": log.sent_at,
            "created_at": now,
        }
        for r in results
        for log in r.logs
    ]
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    history: list[dict[str, Any]] = []
    for r in results:
        if r.device_id is None or not r.new_values:
            continue
        cols = tuple(sorted(r.new_values))
        updates[cols].append({"b_device_id": r.device_id, **{f"b_{c}": r.new_values[c] for c in cols}})
        for c in cols:
            old, new = r.old_values.get(c), r.new_values[c]
            if old != new:
                history.append(
                    {
                        "tenant_id": tenant_id,
                        "device_id": r.device_id,
                        "field": c,
                        "old_value": None if old is None else str(old),
                        "new_value": None if new is None else str(new),
                        "bulk_change_id": bulk_change_id,
                        "changed_at": now,
                    }
                )

    def work(conn: sa.Connection) -> None:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                status_details=sa.bindparam("b_details"),
                carrier_request_id=sa.func.coalesce(sa.bindparam("b_req"), device_change.c.carrier_request_id),
                processed_at=sa.bindparam("b_processed"),
                updated_at=now,
            ),
            change_params,
        )
        if log_params:
            conn.execute(sa.insert(bulk_change_log), log_params)
        for cols, params in updates.items():
            conn.execute(
                sa.update(device)
                .where(device.c.id == sa.bindparam("b_device_id"))
                .values(updated_at=now, **{c: sa.bindparam(f"b_{c}") for c in cols}),
                params,
            )
        if history:
            conn.execute(sa.insert(device_history), history)

    run_transaction(engine, work)


def add_log(engine: sa.Engine, *, tenant_id: int, bulk_change_id: int, description: str, process_by: str, has_errors: bool = False) -> None:
    """A bulk-change-level log row (no device row), e.g. a run failure."""
    run_transaction(
        engine,
        lambda conn: conn.execute(
            sa.insert(bulk_change_log).values(
                tenant_id=tenant_id,
                bulk_change_id=bulk_change_id,
                description=description,
                process_by=process_by,
                has_errors=has_errors,
                created_at=utcnow(),
            )
        ),
    )


def device_history_for(engine: sa.Engine, tenant_id: int, device_id: int) -> list[dict[str, Any]]:
    """The audit trail of one device, oldest first: field, old value -> new value, bulk change."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device_history)
            .where(device_history.c.tenant_id == tenant_id, device_history.c.device_id == device_id)
            .order_by(device_history.c.id)
        )
        return [dict(r._mapping) for r in rows]
