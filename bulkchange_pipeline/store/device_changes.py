"""Repository functions the pipeline uses on device rows: plan, load, claim, record, history.

All writes are set-based: one executemany per table per batch, never a round trip per device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .db import run_transaction, utcnow
from .schema import DEVICE_CHANGE_FIELDS, bulk_change_log, device, device_change, device_history

__all__ = [
    "ACTIONABLE",
    "IdRange",
    "LogRow",
    "RowResult",
    "WaitingRow",
    "WorkRow",
    "add_log",
    "claim",
    "count_polls",
    "count_unfinished",
    "device_history_for",
    "known_device_values",
    "load_batch",
    "plan_id_ranges",
    "record_results",
    "waiting_rows",
]

ACTIONABLE = tuple(s for s in DeviceChangeStatus if not s.is_final)
"""Statuses of rows a run may still have to act on (NEW, SCHEDULED, PROCESSING): every status that is not final."""


def _actionable(now: datetime) -> sa.ColumnElement[bool]:
    """NEW rows, rows an earlier attempt left PROCESSING, and SCHEDULED rows now due.

    A PROCESSING row that carries a carrier request id was accepted by an asynchronous carrier and
    waits for its answer: reconcile settles it, and sending it again would apply it twice.
    """
    return sa.or_(
        device_change.c.status == DeviceChangeStatus.NEW.value,
        sa.and_(
            device_change.c.status == DeviceChangeStatus.PROCESSING.value, device_change.c.carrier_request_id.is_(None)
        ),
        sa.and_(device_change.c.status == DeviceChangeStatus.SCHEDULED.value, device_change.c.effective_at <= now),
    )


def count_unfinished(conn: sa.Connection, bulk_change_id: int, now: datetime | None = None) -> int:
    """Rows a run still has to do (``_actionable``): NEW, left PROCESSING without a carrier request
    id, SCHEDULED and due. Zero means every row is settled or waits on an async carrier."""
    return conn.execute(
        sa.select(sa.func.count())
        .select_from(device_change)
        .where(device_change.c.bulk_change_id == bulk_change_id, _actionable(now or utcnow()))
    ).scalar_one()


@dataclass(frozen=True)
class IdRange:
    """A batch as a closed id range of one bulk change's rows: small to pass between Dagster steps."""

    first_id: int
    last_id: int
    size: int


def plan_id_ranges(
    engine: sa.Engine, bulk_change_id: int, batch_size: int, now: datetime | None = None
) -> list[IdRange]:
    """Split the actionable rows into batches of at most ``batch_size`` consecutive ids."""
    now = now or utcnow()
    with engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == bulk_change_id, _actionable(now))
                .order_by(device_change.c.id)
            )
            .scalars()
            .all()
        )
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


@dataclass
class WaitingRow:
    """A row an asynchronous carrier accepted (PROCESSING with its request id), waiting for the answer."""

    row: WorkRow
    request_id: str
    sent_at: datetime  # the claim's ``updated_at``: when it was sent
    poll_count: int = 0


def _work_rows(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> Sequence[sa.Row[*tuple[Any, ...]]]:
    """Device rows matching ``where`` in id order, each with its device's current values (``cur_<column>``)."""
    current = [device.c[name].label(f"cur_{name}") for name in DEVICE_CHANGE_FIELDS]
    return conn.execute(
        sa.select(device_change, *current)
        .select_from(device_change.outerjoin(device, device.c.id == device_change.c.device_id))
        .where(*where)
        .order_by(device_change.c.id)
    ).all()


def _work_row(m: sa.RowMapping) -> WorkRow:
    """The one mapping of a ``_work_rows`` row to a WorkRow (batches and reconcile both read rows this way)."""
    return WorkRow(
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


def load_batch(engine: sa.Engine, bulk_change_id: int, rng: IdRange, now: datetime | None = None) -> list[WorkRow]:
    """The batch's rows a run still has to do (``_actionable``), with their devices' current values."""
    with engine.connect() as conn:
        rows = _work_rows(
            conn,
            device_change.c.bulk_change_id == bulk_change_id,
            device_change.c.id.between(rng.first_id, rng.last_id),
            _actionable(now or utcnow()),
        )
    return [_work_row(r._mapping) for r in rows]


def waiting_rows(engine: sa.Engine, bulk_change_id: int) -> list[WaitingRow]:
    """The bulk change's rows an asynchronous carrier accepted and has not answered yet (reconcile's work)."""
    with engine.connect() as conn:
        rows = _work_rows(
            conn,
            device_change.c.bulk_change_id == bulk_change_id,
            device_change.c.status == DeviceChangeStatus.PROCESSING.value,
            device_change.c.carrier_request_id.is_not(None),
        )
    return [WaitingRow(_work_row(r._mapping), r.carrier_request_id, r.updated_at, r.poll_count) for r in rows]


def known_device_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are device columns a change may write: a carrier may report more
    (e.g. the customer's name), which our ``device`` table does not hold."""
    return {k: v for k, v in values.items() if k in DEVICE_CHANGE_FIELDS}


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
        .where(device_change.c.status.in_([s.value for s in ACTIONABLE]))
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

        def claim_chunk(conn: sa.Connection, c: list[int] = chunk) -> set[int]:
            return set(conn.execute(stmt, {"ids": c}).scalars())

        claimed |= run_transaction(engine, claim_chunk)
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

        def count_chunk(conn: sa.Connection, c: list[int] = chunk) -> None:
            conn.execute(stmt, {"ids": c})

        run_transaction(engine, count_chunk)


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
    rows = _row_params(results, now)
    logs = _log_params(results, tenant_id=tenant_id, bulk_change_id=bulk_change_id, process_by=process_by, now=now)
    updates, history = _device_params(results, tenant_id=tenant_id, bulk_change_id=bulk_change_id, now=now)
    run_transaction(engine, lambda conn: _write_results(conn, rows, logs, updates, history, now))


def _row_params(results: Sequence[RowResult], now: datetime) -> list[dict[str, Any]]:
    """1. Each device row's outcome; a final one gets its finish time."""
    return [
        {
            "b_id": r.device_change_id,
            "b_status": r.status.value,
            "b_details": (r.status_details or "")[:4000],
            "b_req": r.carrier_request_id,
            "b_processed": now if r.status.is_final else None,
        }
        for r in results
    ]


def _log_params(
    results: Sequence[RowResult], *, tenant_id: int, bulk_change_id: int, process_by: str, now: datetime
) -> list[dict[str, Any]]:
    """2. The log rows (carrier requests and answers, or what was done in the database)."""
    return [
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


def _device_params(
    results: Sequence[RowResult], *, tenant_id: int, bulk_change_id: int, now: datetime
) -> tuple[dict[tuple[str, ...], list[dict[str, Any]]], list[dict[str, Any]]]:
    """3. Device updates grouped by the set of columns written (one executemany each), and a history
    row (before -> after) for every value that changed."""
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
    return updates, history


def _write_results(
    conn: sa.Connection,
    rows: list[dict[str, Any]],
    logs: list[dict[str, Any]],
    updates: dict[tuple[str, ...], list[dict[str, Any]]],
    history: list[dict[str, Any]],
    now: datetime,
) -> None:
    """4. Write all of it in the caller's transaction: one statement per table (per column set)."""
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
        rows,
    )
    if logs:
        conn.execute(sa.insert(bulk_change_log), logs)
    for cols, params in updates.items():
        conn.execute(
            sa.update(device)
            .where(device.c.id == sa.bindparam("b_device_id"))
            .values(updated_at=now, **{c: sa.bindparam(f"b_{c}") for c in cols}),
            params,
        )
    if history:
        conn.execute(sa.insert(device_history), history)


def add_log(
    engine: sa.Engine,
    *,
    tenant_id: int,
    bulk_change_id: int,
    description: str,
    process_by: str,
    has_errors: bool = False,
) -> None:
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
