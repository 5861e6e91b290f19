"""File drops in the database: a tenant's drop settings (inbox, outbox, CSV defaults) and the
record of every file content taken from an inbox.

The record is what makes the drop crash-safe and idempotent together with the bulk change's own
idempotency key (the content hash): the bulk change is stored first, then this record, then the
file is moved and ``moved_at`` set. A tick that finds a file whose hash has a record with
``moved_at`` null and the same name finishes the move; any other file with a recorded hash is a
second copy. ``results_written_at`` makes the outbox write happen once.

A file without a service provider is split by carrier into a submission (``intake.split``): its
record names the submission instead of one bulk change, and its results are due when every child
bulk change is final (one results file for the whole submission).

Every function is scoped by tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus
from .db import run_transaction, utcnow
from .schema import bulk_change, file_drop, file_drop_setting, tenant
from .submissions import get_submission

__all__ = [
    "DropRecord",
    "DropSettings",
    "DueResults",
    "drop_settings",
    "find_drop",
    "list_drop_settings",
    "list_due_results",
    "mark_moved",
    "mark_results_written",
    "record_drop",
    "set_drop_settings",
]


@dataclass(frozen=True)
class DropSettings:
    """A tenant's drop settings; a None URL means the embedded default folder."""

    tenant_id: int
    inbox_url: str | None
    outbox_url: str | None
    credentials_name: str | None
    service_provider_id: int | None
    change_type: int | None
    enabled: bool
    # X12 trading partners: {"<ISA05>:<ISA06>" or "*": settings}, checked by intake.x12.
    partner_settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class DropRecord:
    id: int
    tenant_id: int
    content_sha256: str
    name: str
    format: str
    bulk_change_id: int | None  # exactly one of the two is set
    moved_at: datetime | None
    results_written_at: datetime | None
    submission_id: int | None = None

    @property
    def taken_as(self) -> str:
        """What the file became, for notes and log lines: "bulk change 7" or "submission 3"."""
        return f"submission {self.submission_id}" if self.submission_id else f"bulk change {self.bulk_change_id}"


@dataclass(frozen=True)
class DueResults:
    """A drop whose bulk change is final (or whose submission's children all are) and whose
    results are not in the outbox yet."""

    id: int
    tenant_id: int
    name: str
    format: str
    bulk_change_id: int | None
    status: str | None  # the bulk change's; None for a submission (its status is derived)
    submission_id: int | None = None


def _settings(row: sa.Row[tuple[object, ...]]) -> DropSettings:
    m = row._mapping
    return DropSettings(
        tenant_id=int(m["tenant_id"]),
        inbox_url=m["inbox_url"],
        outbox_url=m["outbox_url"],
        credentials_name=m["credentials_name"],
        service_provider_id=m["service_provider_id"],
        change_type=m["change_type"],
        enabled=bool(m["enabled"]),
        partner_settings=m["partner_settings"],
    )


def set_drop_settings(
    engine: sa.Engine,
    tenant_id: int,
    *,
    inbox_url: str | None = None,
    outbox_url: str | None = None,
    credentials_name: str | None = None,
    service_provider_id: int | None = None,
    change_type: int | None = None,
    enabled: bool = True,
    partner_settings: dict[str, Any] | None = None,
) -> DropSettings:
    """Create or replace a tenant's drop settings (every field as given)."""
    values = {
        "inbox_url": inbox_url,
        "outbox_url": outbox_url,
        "credentials_name": credentials_name,
        "service_provider_id": service_provider_id,
        "change_type": change_type,
        "enabled": enabled,
        "partner_settings": partner_settings,
        "updated_at": utcnow(),
    }

    def work(conn: sa.Connection) -> None:
        if conn.execute(sa.select(tenant.c.id).where(tenant.c.id == tenant_id)).first() is None:
            raise LookupError(f"no tenant {tenant_id}")
        done = conn.execute(
            sa.update(file_drop_setting).where(file_drop_setting.c.tenant_id == tenant_id).values(**values)
        )
        if done.rowcount == 0:
            conn.execute(sa.insert(file_drop_setting).values(tenant_id=tenant_id, **values))

    run_transaction(engine, work)
    found = drop_settings(engine, tenant_id)
    assert found is not None
    return found


def drop_settings(engine: sa.Engine, tenant_id: int) -> DropSettings | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(file_drop_setting).where(file_drop_setting.c.tenant_id == tenant_id)).first()
    return _settings(row) if row else None


def list_drop_settings(engine: sa.Engine) -> list[DropSettings]:
    """Every enabled tenant's drop settings, by tenant id (the inboxes a sensor tick lists)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(file_drop_setting)
            .where(file_drop_setting.c.enabled.is_(True))
            .order_by(file_drop_setting.c.tenant_id)
        ).all()
    return [_settings(r) for r in rows]


def _record(row: sa.Row[tuple[object, ...]]) -> DropRecord:
    m = row._mapping
    return DropRecord(
        id=int(m["id"]),
        tenant_id=int(m["tenant_id"]),
        content_sha256=m["content_sha256"],
        name=m["name"],
        format=m["format"],
        bulk_change_id=_maybe_int(m["bulk_change_id"]),
        moved_at=m["moved_at"],
        results_written_at=m["results_written_at"],
        submission_id=_maybe_int(m["submission_id"]),
    )


def _maybe_int(value: Any) -> int | None:
    return None if value is None else int(value)


def find_drop(engine: sa.Engine, tenant_id: int, content_sha256: str) -> DropRecord | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(file_drop).where(file_drop.c.tenant_id == tenant_id, file_drop.c.content_sha256 == content_sha256)
        ).first()
    return _record(row) if row else None


def record_drop(
    engine: sa.Engine,
    tenant_id: int,
    content_sha256: str,
    name: str,
    format: str,
    bulk_change_id: int | None,
    *,
    submission_id: int | None = None,
) -> DropRecord:
    """Record a taken file (after its bulk change or submission was stored: exactly one of the two
    ids); a record already there for this content (a concurrent tick) wins and is returned."""
    if (bulk_change_id is None) == (submission_id is None):
        raise ValueError("a drop is taken as one bulk change or one submission")

    def work(conn: sa.Connection) -> None:
        exists = conn.execute(
            sa.select(file_drop.c.id).where(
                file_drop.c.tenant_id == tenant_id, file_drop.c.content_sha256 == content_sha256
            )
        ).first()
        if exists is None:
            conn.execute(
                sa.insert(file_drop).values(
                    tenant_id=tenant_id,
                    content_sha256=content_sha256,
                    name=name[:300],
                    format=format,
                    bulk_change_id=bulk_change_id,
                    submission_id=submission_id,
                    received_at=utcnow(),
                )
            )

    try:
        run_transaction(engine, work)
    except sa.exc.IntegrityError:  # lost the race on the unique key: the other record stands
        pass
    found = find_drop(engine, tenant_id, content_sha256)
    assert found is not None
    return found


def mark_moved(engine: sa.Engine, drop_id: int) -> None:
    def work(conn: sa.Connection) -> None:
        conn.execute(
            sa.update(file_drop)
            .where(file_drop.c.id == drop_id, file_drop.c.moved_at.is_(None))
            .values(moved_at=utcnow())
        )

    run_transaction(engine, work)


def list_due_results(engine: sa.Engine, limit: int) -> list[DueResults]:
    """Drops whose results are not written yet and are complete, oldest first: the bulk change is
    final, or (a submission) the submission is final - one results file for the whole submission,
    never one per child, so it waits for the last. "Final" for a submission is
    ``store.submissions.submission_state``'s, the one the API, CLI and console show; the query
    only narrows the candidates to those with no child header still open."""
    final = sorted(BulkChangeStatus.final_values())
    taken = bulk_change.alias("taken")
    status = sa.select(taken.c.status).where(taken.c.id == file_drop.c.bulk_change_id).scalar_subquery().label("status")
    bulk_change_done = sa.exists().where(
        bulk_change.c.id == file_drop.c.bulk_change_id,
        bulk_change.c.status.in_(final),
        bulk_change.c.deleted_at.is_(None),
    )
    child_unfinished = sa.exists().where(
        bulk_change.c.submission_id == file_drop.c.submission_id,
        bulk_change.c.status.not_in(final),
        bulk_change.c.deleted_at.is_(None),
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                file_drop.c.id,
                file_drop.c.tenant_id,
                file_drop.c.name,
                file_drop.c.format,
                file_drop.c.bulk_change_id,
                file_drop.c.submission_id,
                status,
            )
            .where(
                file_drop.c.results_written_at.is_(None),
                sa.or_(
                    sa.and_(file_drop.c.bulk_change_id.is_not(None), bulk_change_done),
                    sa.and_(file_drop.c.submission_id.is_not(None), ~child_unfinished),
                ),
            )
            .order_by(file_drop.c.id)
            .limit(limit)
        ).all()
    return [
        DueResults(
            id=int(r.id),
            tenant_id=int(r.tenant_id),
            name=str(r.name),
            format=str(r.format),
            bulk_change_id=_maybe_int(r.bulk_change_id),
            status=None if r.submission_id is not None else str(r.status),
            submission_id=_maybe_int(r.submission_id),
        )
        for r in rows
        if r.submission_id is None or _submission_final(engine, int(r.submission_id), int(r.tenant_id))
    ]


def _submission_final(engine: sa.Engine, submission_id: int, tenant_id: int) -> bool:
    view = get_submission(engine, submission_id, tenant_id)
    return view is None or view.final  # gone: nothing to wait for (the outbox notes it)


def mark_results_written(engine: sa.Engine, drop_id: int, results_name: str) -> bool:
    """Record that the results file is in the outbox; False when another tick recorded it first."""

    def work(conn: sa.Connection) -> int:
        done = conn.execute(
            sa.update(file_drop)
            .where(file_drop.c.id == drop_id, file_drop.c.results_written_at.is_(None))
            .values(results_written_at=utcnow(), results_name=results_name[:300])
        )
        return int(done.rowcount)

    return run_transaction(engine, work) == 1
