"""X12 interchanges taken from the drop inboxes, and the control numbers of those we send.

- ``next_control_number``: the tenant's counter for the ISA13/GS06 of every 997 and 824 we send.
  One UPDATE ... RETURNING per number: on PostgreSQL the row lock makes concurrent callers wait
  for each other, so no two get the same number and the numbers only grow (after 999999999 it
  starts again at 1, as ISA13 holds 9 digits).
- ``record_interchange`` and ``find_interchange``: (tenant, sender, ISA13) is unique, so an
  interchange is processed once; a resend finds the record and is only acknowledged.
- ``add_bulk_change`` and ``mark_advice_written``: the steps of the interchange (one bulk change
  per configured change, one after the other) and the 824, written once.

Every function is scoped by tenant or by the record's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .db import run_transaction, utcnow
from .schema import x12_control_number, x12_interchange

__all__ = [
    "MAX_CONTROL_NUMBER",
    "InterchangeRecord",
    "add_bulk_change",
    "find_interchange",
    "list_open_interchanges",
    "mark_advice_written",
    "next_control_number",
    "record_interchange",
]

MAX_CONTROL_NUMBER = 999_999_999


@dataclass(frozen=True)
class InterchangeRecord:
    id: int
    tenant_id: int
    sender: str
    control: str
    name: str
    content: str
    requests: list[dict[str, Any]]
    serial_qualifiers: list[str]
    bulk_change_ids: list[int]
    received_at: datetime
    advice_name: str | None
    advice_written_at: datetime | None


def _record(row: sa.Row[tuple[object, ...]]) -> InterchangeRecord:
    m = row._mapping
    return InterchangeRecord(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        sender=str(m["sender"]),
        control=str(m["control"]),
        name=str(m["name"]),
        content=str(m["content"]),
        requests=list(m["requests"]),
        serial_qualifiers=[str(q) for q in m["serial_qualifiers"]],
        bulk_change_ids=[int(i) for i in m["bulk_change_ids"]],
        received_at=m["received_at"],
        advice_name=m["advice_name"],
        advice_written_at=m["advice_written_at"],
    )


def next_control_number(engine: sa.Engine, tenant_id: int) -> int:
    """A new control number for the tenant: unique and increasing (1 after 999999999)."""

    def work(conn: sa.Connection) -> int | None:
        bump = sa.case(
            (x12_control_number.c.last_value >= MAX_CONTROL_NUMBER, 1), else_=x12_control_number.c.last_value + 1
        )
        return conn.execute(
            sa.update(x12_control_number)
            .where(x12_control_number.c.tenant_id == tenant_id)
            .values(last_value=bump)
            .returning(x12_control_number.c.last_value)
        ).scalar_one_or_none()

    number = run_transaction(engine, work)
    if number is not None:
        return int(number)
    try:  # the tenant's first number
        run_transaction(
            engine, lambda conn: conn.execute(sa.insert(x12_control_number).values(tenant_id=tenant_id, last_value=1))
        )
        return 1
    except sa.exc.IntegrityError:  # a concurrent caller created the row first: take the next one
        number = run_transaction(engine, work)
        assert number is not None
        return int(number)


def find_interchange(engine: sa.Engine, tenant_id: int, sender: str, control: str) -> InterchangeRecord | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(x12_interchange).where(
                x12_interchange.c.tenant_id == tenant_id,
                x12_interchange.c.sender == sender[:40],
                x12_interchange.c.control == control[:20],
            )
        ).first()
    return _record(row) if row else None


def record_interchange(
    engine: sa.Engine,
    tenant_id: int,
    *,
    sender: str,
    control: str,
    name: str,
    content: str,
    requests: list[dict[str, Any]],
    serial_qualifiers: list[str],
    first_bulk_change_id: int,
) -> tuple[InterchangeRecord, bool]:
    """Record a taken interchange with its first bulk change; (record, created). A record already
    there for (tenant, sender, ISA13), a concurrent tick's, wins: created is False."""
    values = {
        "tenant_id": tenant_id,
        "sender": sender[:40],
        "control": control[:20],
        "name": name[:300],
        "content": content,
        "requests": requests,
        "serial_qualifiers": serial_qualifiers,
        "bulk_change_ids": [first_bulk_change_id],
        "received_at": utcnow(),
    }
    created = True
    try:
        run_transaction(engine, lambda conn: conn.execute(sa.insert(x12_interchange).values(**values)))
    except sa.exc.IntegrityError:
        created = False
    found = find_interchange(engine, tenant_id, sender, control)
    assert found is not None
    return found, created


def list_open_interchanges(engine: sa.Engine, limit: int) -> list[InterchangeRecord]:
    """Interchanges whose 824 is not written yet, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(x12_interchange)
            .where(x12_interchange.c.advice_written_at.is_(None))
            .order_by(x12_interchange.c.id)
            .limit(limit)
        ).all()
    return [_record(r) for r in rows]


def add_bulk_change(engine: sa.Engine, record: InterchangeRecord, bulk_change_id: int) -> bool:
    """Append the next step's bulk change; False when another tick appended one first (the
    step's idempotency key made both submissions the same bulk change)."""
    ids = [*record.bulk_change_ids, bulk_change_id]

    def work(conn: sa.Connection) -> bool:
        current = conn.execute(
            sa.select(x12_interchange.c.bulk_change_ids).where(x12_interchange.c.id == record.id).with_for_update()
        ).scalar_one()
        if [int(i) for i in current] != record.bulk_change_ids:
            return False
        conn.execute(sa.update(x12_interchange).where(x12_interchange.c.id == record.id).values(bulk_change_ids=ids))
        return True

    return run_transaction(engine, work)


def mark_advice_written(engine: sa.Engine, record_id: int, advice_name: str) -> bool:
    """Record that the 824 is in the outbox; False when another tick recorded it first."""

    def work(conn: sa.Connection) -> int:
        done = conn.execute(
            sa.update(x12_interchange)
            .where(x12_interchange.c.id == record_id, x12_interchange.c.advice_written_at.is_(None))
            .values(advice_written_at=utcnow(), advice_name=advice_name[:300])
        )
        return int(done.rowcount)

    return run_transaction(engine, work) == 1
