"""Archival: completed bulk changes past their tenant's archive age go to Parquet, then are soft-deleted.

Layout under the archive root: ``tenant=<id>/month=<YYYY-MM>/<table>-<stamp>.parquet``, one file
per table per archive pass and partition (month of the bulk change's ``created_at``), so a pass
never rewrites what an earlier one wrote. Tables: bulk_change, device_change, bulk_change_log,
device_history (the rows whose ``bulk_change_id`` is the archived one). Column types follow the
schema (JSON columns as JSON text, timestamps as naive UTC microseconds), so the files read back
equal to the database rows; ``read_archive`` / ``archive_records`` read them.

Crash safety: a pass writes ``*.parquet.tmp`` files, soft-deletes in one transaction that first
re-counts the rows it wrote (a bulk change retried in the meantime is left alone), then renames the
files. Leftover ``.tmp`` files of a crashed pass are settled by the next one: renamed when their bulk
changes were soft-deleted, removed otherwise. Archives should not run concurrently (the nightly
schedule runs one at a time).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus
from .db import run_transaction, utcnow
from .device_changes import ACTIONABLE
from .schema import bulk_change, bulk_change_log, device_change, device_history, tenant

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# pandas and pyarrow (about 180 MB of RSS and 300 modules) are imported by the functions that
# write or read Parquet, not here: the CLI and the intake paths import this module (through
# ``store.maintenance`` and the commands that show archive settings) without ever archiving.

ARCHIVED_TABLES: dict[str, sa.Table] = {
    "bulk_change": bulk_change,
    "device_change": device_change,
    "bulk_change_log": bulk_change_log,
    "device_history": device_history,
}
COMPLETED = (BulkChangeStatus.PROCESSED.value, BulkChangeStatus.CANCELLED.value)
NOT_FINAL_ROWS = tuple(s.value for s in ACTIONABLE)
FILE_GROUP = 500  # bulk changes per file set: bounded IN lists and transactions
READ_PAGE = 50_000  # rows per Parquet row group while streaming a table out
STALE_TMP = timedelta(hours=1)  # a .tmp file older than this belongs to a crashed pass


def is_completed() -> sa.ColumnElement[bool]:
    """A finished bulk change: PROCESSED, CANCELLED, or ERROR with nothing ever sent (every row
    refused at validation: all rows ERROR, none claimed by a run). An ERROR a run left behind
    (rows unfinished, to resume) is not finished."""
    others = sa.exists().where(
        device_change.c.bulk_change_id == bulk_change.c.id,
        sa.or_(device_change.c.status != DeviceChangeStatus.ERROR.value, device_change.c.attempt_count > 0),
    )
    return sa.or_(
        bulk_change.c.status.in_(COMPLETED), sa.and_(bulk_change.c.status == BulkChangeStatus.ERROR.value, ~others)
    )


def completed_at() -> sa.ColumnElement[Any]:
    """When a bulk change finished; a cancelled one may have no processed_at, so fall back to created_at."""
    return sa.func.coalesce(bulk_change.c.processed_at, bulk_change.c.created_at)


# --- Parquet shape ------------------------------------------------------------------------------


def _arrow_type(column: sa.Column[Any]) -> pa.DataType:
    import pyarrow as pa

    t = column.type
    if isinstance(t, sa.JSON):
        return pa.string()
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us")
    if isinstance(t, sa.String):
        return pa.string()
    raise TypeError(f"no Parquet type for {column.table.name}.{column.name} ({t!r})")  # pragma: no cover


def arrow_schema(table: sa.Table) -> pa.Schema:
    """The Parquet schema of an archived table: every column, typed as in the database."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c), nullable=True) for c in table.columns])


def _json_columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns if isinstance(c.type, sa.JSON)]


def to_archive_row(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """A database row as it is archived: JSON columns as JSON text (None stays null)."""
    out = dict(row)
    for name in _json_columns(table):
        if out.get(name) is not None:
            out[name] = json.dumps(out[name], sort_keys=True)
    return out


def _owner_column(table: sa.Table) -> sa.Column[Any]:
    return table.c.id if table is bulk_change else table.c.bulk_change_id


# --- writing ------------------------------------------------------------------------------------


@dataclass
class ArchiveResult:
    """What one archive pass did; the asset publishes it as metadata."""

    root: str
    bulk_changes: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {name: 0 for name in ARCHIVED_TABLES})
    files: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # changed while being archived; tried again next pass
    recovered_files: int = 0


def tenant_cutoffs(conn: sa.Connection, now: datetime, column: sa.Column[Any]) -> dict[int, datetime]:
    """Per tenant, the instant before which its data is old enough (``column``: a days setting)."""
    return {tid: now - timedelta(days=days) for tid, days in conn.execute(sa.select(tenant.c.id, column))}


def archivable(engine: sa.Engine, now: datetime, limit: int = 10_000) -> list[tuple[int, int, str]]:
    """(id, tenant_id, month) of completed, not yet archived bulk changes older than their tenant's
    archive age, oldest first. A bulk change with a row still unfinished is never archived."""
    unfinished = sa.exists().where(
        device_change.c.bulk_change_id == bulk_change.c.id, device_change.c.status.in_(NOT_FINAL_ROWS)
    )
    out: list[tuple[int, int, str]] = []
    with engine.connect() as conn:
        for tenant_id, cutoff in sorted(tenant_cutoffs(conn, now, tenant.c.archive_after_days).items()):
            rows = conn.execute(
                sa.select(bulk_change.c.id, bulk_change.c.created_at)
                .where(
                    bulk_change.c.tenant_id == tenant_id,
                    bulk_change.c.deleted_at.is_(None),
                    is_completed(),
                    completed_at() <= cutoff,
                    ~unfinished,
                )
                .order_by(bulk_change.c.id)
                .limit(limit - len(out))
            ).all()
            out += [(r.id, tenant_id, f"{r.created_at:%Y-%m}") for r in rows]
            if len(out) >= limit:
                break
    return out


class _Changed(Exception):
    """A bulk change of the group changed between writing its files and soft-deleting it."""


def _group_paths(directory: Path, stamp: str) -> dict[str, Path]:
    return {name: directory / f"{name}-{stamp}.parquet" for name in ARCHIVED_TABLES}


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _write_table(conn: sa.Connection, table: sa.Table, ids: Sequence[int], path: Path) -> int:
    """Stream the rows of ``ids`` into one Parquet file, a row group per page; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    result = conn.execution_options(yield_per=READ_PAGE).execute(
        sa.select(table).where(_owner_column(table).in_(list(ids))).order_by(table.c.id)
    )
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for part in result.partitions(READ_PAGE):
            rows = [to_archive_row(table, dict(r._mapping)) for r in part]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            written += len(rows)
    return written


def _db_counts(conn: sa.Connection, table: sa.Table, ids: Sequence[int]) -> dict[int, int]:
    owner = _owner_column(table)
    out: dict[int, int] = {}
    for start in range(0, len(ids), FILE_GROUP):
        chunk = list(ids[start : start + FILE_GROUP])
        out.update(conn.execute(sa.select(owner, sa.func.count()).where(owner.in_(chunk)).group_by(owner)).all())
    return out


def archive_bulk_changes(
    engine: sa.Engine, root: Path, now: datetime | None = None, limit: int = 10_000
) -> ArchiveResult:
    """Archive every completed bulk change past its tenant's archive age (at most ``limit`` per pass)."""
    now = now or utcnow()
    root = Path(root)
    result = ArchiveResult(root=str(root))
    result.recovered_files = settle_leftovers(engine, root)
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for bc_id, tenant_id, month in archivable(engine, now, limit):
        groups[(tenant_id, month)].append(bc_id)
    for (tenant_id, month), ids in sorted(groups.items()):
        directory = root / f"tenant={tenant_id}" / f"month={month}"
        directory.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(ids), FILE_GROUP):
            chunk = ids[start : start + FILE_GROUP]
            if _archive_group(engine, directory, chunk, now, result):
                result.partitions.append(f"tenant={tenant_id}/month={month}")
    result.partitions = sorted(set(result.partitions))
    return result


def _archive_group(engine: sa.Engine, directory: Path, ids: list[int], now: datetime, result: ArchiveResult) -> bool:
    paths = _group_paths(directory, f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
    with engine.connect() as conn:
        written = {name: _write_table(conn, table, ids, _tmp(paths[name])) for name, table in ARCHIVED_TABLES.items()}

    def soft_delete(conn: sa.Connection) -> None:
        for name, table in ARCHIVED_TABLES.items():
            if sum(_db_counts(conn, table, ids).values()) != written[name]:
                raise _Changed(name)
        updated = conn.execute(
            sa.update(bulk_change)
            .where(bulk_change.c.id.in_(ids), bulk_change.c.deleted_at.is_(None), is_completed())
            .values(deleted_at=now)
        ).rowcount
        if updated != len(ids):
            raise _Changed("bulk_change status")

    try:
        run_transaction(engine, soft_delete)
    except _Changed:
        for path in paths.values():
            _tmp(path).unlink(missing_ok=True)
        result.skipped += ids
        return False
    for name, path in paths.items():
        if written[name]:
            _tmp(path).replace(path)
            result.files.append(str(path))
        else:
            _tmp(path).unlink()  # no rows of this table: no file
        result.rows[name] += written[name]
    result.bulk_changes += len(ids)
    return True


def settle_leftovers(engine: sa.Engine, root: Path, older_than: timedelta = STALE_TMP) -> int:
    """Finish what a crashed pass left: its ``.tmp`` files are renamed when their bulk changes were
    soft-deleted (the commit happened), removed otherwise. Returns how many files were settled."""
    groups: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for tmp in Path(root).glob("tenant=*/month=*/*.parquet.tmp"):
        if time.time() - tmp.stat().st_mtime >= older_than.total_seconds():
            groups[(tmp.parent, tmp.name.split("-", 1)[1].removesuffix(".parquet.tmp"))].append(tmp)
    settled = 0
    for (directory, stamp), files in groups.items():
        import pyarrow.parquet as pq

        bc_file = _tmp(_group_paths(directory, stamp)["bulk_change"])
        committed = False
        if bc_file.exists():
            ids = pq.read_table(bc_file, columns=["id"]).column("id").to_pylist()
            with engine.connect() as conn:
                deleted = conn.execute(
                    sa.select(sa.func.count()).where(bulk_change.c.id.in_(ids), bulk_change.c.deleted_at.is_not(None))
                ).scalar_one()
            committed = bool(ids) and deleted == len(ids)
        for tmp in files:
            if committed and pq.read_metadata(tmp).num_rows:
                tmp.replace(tmp.with_name(tmp.name.removesuffix(".tmp")))
            else:
                tmp.unlink()
            settled += 1
    return settled


# --- reading ------------------------------------------------------------------------------------


def archive_files(root: Path, table: str, tenant_id: int | None = None, month: str | None = None) -> list[Path]:
    """The Parquet files of one archived table, optionally of one tenant and/or month."""
    if table not in ARCHIVED_TABLES:
        raise ValueError(f"{table!r} is not archived; archived tables: {', '.join(ARCHIVED_TABLES)}")
    pattern = f"tenant={'*' if tenant_id is None else tenant_id}/month={month or '*'}/{table}-*.parquet"
    return sorted(Path(root).glob(pattern))


def read_archive_table(
    root: Path, table: str, tenant_id: int | None = None, month: str | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """An archived table as one Arrow table (empty, with the full schema, when nothing is archived)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(ARCHIVED_TABLES[table]) if table in ARCHIVED_TABLES else None
    files = archive_files(root, table, tenant_id, month)
    if columns is not None and schema is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if not files:
        return schema.empty_table()  # type: ignore[union-attr]
    return pa.concat_tables(
        [pq.read_table(f, columns=list(columns) if columns else None, schema=schema) for f in files]
    )


def read_archive(root: Path, table: str, tenant_id: int | None = None, month: str | None = None) -> pd.DataFrame:
    """An archived table as a pandas DataFrame with nullable dtypes (integers stay integers)."""
    import pandas as pd
    import pyarrow as pa

    nullable_types = {
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(),
        pa.float64(): pd.Float64Dtype(),
    }
    return read_archive_table(root, table, tenant_id, month).to_pandas(types_mapper=nullable_types.get)


def archive_records(
    root: Path, table: str, tenant_id: int | None = None, month: str | None = None
) -> list[dict[str, Any]]:
    """Archived rows as plain dicts (datetimes, ints, None), in file then id order."""
    records: list[dict[str, Any]] = read_archive_table(root, table, tenant_id, month).to_pylist()
    return records


# --- verification -------------------------------------------------------------------------------


@dataclass
class ArchiveMismatch:
    """A soft-deleted bulk change whose archived row count of one table differs from the database."""

    bulk_change_id: int
    table: str
    in_database: int
    in_archive: int


def archive_mismatches(engine: sa.Engine, root: Path, ids: Iterable[int] | None = None) -> list[ArchiveMismatch]:
    """Compare, per soft-deleted bulk change (all of them, or ``ids``), the rows still in the
    database with the rows in its archive partition. Empty means the archive holds everything that
    was soft-deleted, so purging it loses nothing."""
    query = sa.select(bulk_change.c.id, bulk_change.c.tenant_id, bulk_change.c.created_at).where(
        bulk_change.c.deleted_at.is_not(None)
    )
    wanted = None if ids is None else sorted(set(ids))
    import pandas as pd

    with engine.connect() as conn:
        if wanted is None:
            heads = conn.execute(query).all()
        else:
            heads = [
                r
                for start in range(0, len(wanted), FILE_GROUP)
                for r in conn.execute(query.where(bulk_change.c.id.in_(wanted[start : start + FILE_GROUP])))
            ]
        partitions: dict[tuple[int, str], list[int]] = defaultdict(list)
        for r in heads:
            partitions[(r.tenant_id, f"{r.created_at:%Y-%m}")].append(r.id)
        out: list[ArchiveMismatch] = []
        for (tenant_id, month), bc_ids in sorted(partitions.items()):
            for name, table in ARCHIVED_TABLES.items():
                owner = _owner_column(table).name
                archived = pd.Series(
                    read_archive_table(root, name, tenant_id, month, columns=[owner]).column(owner).to_pylist(),
                    dtype="Int64",
                ).value_counts()
                in_db = _db_counts(conn, table, bc_ids)
                for bc_id in bc_ids:
                    n_db, n_ar = in_db.get(bc_id, 0), int(archived.get(bc_id, 0))
                    if n_db != n_ar:
                        out.append(ArchiveMismatch(bc_id, name, n_db, n_ar))
    return out
