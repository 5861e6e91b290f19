"""Device rows of a bulk change: written in bulk (``COPY`` on PostgreSQL, executemany elsewhere)
and read back in id order.

Apart from ``store.bulk_changes`` (the bulk change header, its status and its queues) because the
row writer is the one place that knows the wire format of ``COPY``, and the reads are what the
results API, the CSV export and the run summary share.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import DeviceChangeStatus
from .schema import device_change

__all__ = [
    "INSERT_CHUNK",
    "NewDeviceChange",
    "RESULT_COLUMNS",
    "first_failures",
    "iter_device_results",
    "write_rows",
]

INSERT_CHUNK = 5_000


@dataclass
class NewDeviceChange:
    """A validated device row, ready to store (status NEW, SCHEDULED or ERROR)."""

    change_request: dict[str, Any]
    status: DeviceChangeStatus
    device_id: int | None = None
    iccid: str | None = None
    msisdn: str | None = None
    imei: str | None = None
    eid: str | None = None
    status_details: str | None = None
    effective_at: datetime | None = None


_COPY_COLUMNS = (
    "tenant_id",
    "bulk_change_id",
    "device_id",
    "iccid",
    "msisdn",
    "imei",
    "eid",
    "change_request",
    "status",
    "status_details",
    "effective_at",
    "processed_at",
    "updated_at",
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def write_rows(conn: sa.Connection, tenant_id: int, bc_id: int, rows: Sequence[NewDeviceChange], now: datetime) -> None:
    """Insert device rows in the caller's transaction: one ``COPY`` on PostgreSQL (about four
    times the rows per second of a multi-row INSERT, and no parameter objects per value), one
    executemany elsewhere."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        _copy_rows(conn, tenant_id, bc_id, rows, now)
        return
    insert = _tuple_rows if conn.dialect.name == "sqlite" else _insert_rows
    for start in range(0, len(rows), INSERT_CHUNK):  # executemany's parameters: one slice at a time
        insert(conn, tenant_id, bc_id, rows[start : start + INSERT_CHUNK], now)


_INSERT_SQL = f"INSERT INTO device_change ({', '.join(_COPY_COLUMNS)}) VALUES ({', '.join('?' for _ in _COPY_COLUMNS)})"


def _tuple_rows(
    conn: sa.Connection, tenant_id: int, bc_id: int, rows: Sequence[NewDeviceChange], now: datetime
) -> None:
    """SQLite's executemany with one tuple per row, its values bound by the columns' own processors
    (JSON text, SQLite's datetime strings) as ``_insert_rows`` would bind them: building SQLAlchemy
    parameters row by row was a quarter of a million-row file's time."""
    dialect = conn.dialect
    as_json = device_change.c.change_request.type.dialect_impl(dialect).bind_processor(dialect)
    as_date = device_change.c.effective_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert as_json is not None and as_date is not None
    stamp = as_date(now)
    conn.exec_driver_sql(
        _INSERT_SQL,
        [
            (
                tenant_id,
                bc_id,
                r.device_id,
                r.iccid,
                r.msisdn,
                r.imei,
                r.eid,
                as_json(r.change_request),
                r.status.value,
                r.status_details,
                None if r.effective_at is None else as_date(r.effective_at),
                stamp if r.status.is_final else None,
                stamp,
            )
            for r in rows
        ],
    )


def _insert_rows(
    conn: sa.Connection, tenant_id: int, bc_id: int, rows: Sequence[NewDeviceChange], now: datetime
) -> None:
    conn.execute(
        sa.insert(device_change),
        [
            {
                "tenant_id": tenant_id,
                "bulk_change_id": bc_id,
                "device_id": r.device_id,
                "iccid": r.iccid,
                "msisdn": r.msisdn,
                "imei": r.imei,
                "eid": r.eid,
                "change_request": r.change_request,
                "status": r.status.value,
                "status_details": r.status_details,
                "effective_at": r.effective_at,
                "processed_at": now if r.status.is_final else None,
                "updated_at": now,
            }
            for r in rows
        ],
    )


def _copy_rows(conn: sa.Connection, tenant_id: int, bc_id: int, rows: Sequence[NewDeviceChange], now: datetime) -> None:
    """``COPY device_change FROM STDIN`` in PostgreSQL's text format (``\\N`` is NULL; backslash,
    tab and line breaks escaped), through the connection's own psycopg2 cursor."""

    def cell(value: Any) -> str:
        return "\\N" if value is None else str(value).translate(_COPY_ESCAPES)

    stamp = cell(now)
    head = f"{tenant_id}\t{bc_id}\t"
    buf = io.StringIO()
    for r in rows:
        buf.write(
            head
            + "\t".join(
                (
                    cell(r.device_id),
                    cell(r.iccid),
                    cell(r.msisdn),
                    cell(r.imei),
                    cell(r.eid),
                    cell(json.dumps(r.change_request)),
                    r.status.value,
                    cell(r.status_details),
                    cell(r.effective_at),
                    stamp if r.status.is_final else "\\N",
                    stamp,
                )
            )
            + "\n"
        )
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY device_change ({', '.join(_COPY_COLUMNS)}) FROM STDIN", buf)
    finally:
        cursor.close()


# A device row as the API pages it and the CSV export streams it.
RESULT_COLUMNS = (
    device_change.c.id,
    device_change.c.device_id,
    device_change.c.iccid,
    device_change.c.msisdn,
    device_change.c.imei,
    device_change.c.eid,
    device_change.c.status,
    device_change.c.status_details,
    device_change.c.attempt_count,
    device_change.c.carrier_request_id,
    device_change.c.change_request,
    device_change.c.effective_at,
    device_change.c.processed_at,
)


def iter_device_results(
    engine: sa.Engine, tenant_id: int, bulk_change_id: int, page: int = 5_000
) -> Iterator[dict[str, Any]]:
    """Every device row of a bulk change in id order, streamed page by page (for CSV export)."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(*RESULT_COLUMNS)
                .where(
                    device_change.c.bulk_change_id == bulk_change_id,
                    device_change.c.tenant_id == tenant_id,
                    device_change.c.id > last,
                )
                .order_by(device_change.c.id)
                .limit(page)
            ).all()
        if not rows:
            return
        for r in rows:
            yield dict(r._mapping)
        last = rows[-1].id


def first_failures(engine: sa.Engine, bulk_change_id: int, limit: int = 10) -> list[dict[str, str]]:
    """The first failed rows (API_FAILED or ERROR) with their device and reason, for the run summary people read."""
    failed = (DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                device_change.c.iccid,
                device_change.c.msisdn,
                device_change.c.eid,
                device_change.c.imei,
                device_change.c.status,
                device_change.c.status_details,
            )
            .where(device_change.c.bulk_change_id == bulk_change_id, device_change.c.status.in_(failed))
            .order_by(device_change.c.id)
            .limit(limit)
        ).all()
    return [
        {
            "device": r.iccid or r.msisdn or r.eid or r.imei or "?",
            "status": r.status,
            "reason": (r.status_details or "")[:200],
        }
        for r in rows
    ]
