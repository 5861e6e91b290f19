"""Archive and purge as plain functions (both backends), with the clock passed in: Parquet files
hold every row and read back equal to the database; purge removes only archived, old-enough rows."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus
from bulkchange_pipeline.store.archive import (
    ARCHIVED_TABLES,
    archive_bulk_changes,
    archive_files,
    archive_mismatches,
    archive_records,
    read_archive,
    to_archive_row,
)
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.callbacks import store_callback
from bulkchange_pipeline.store.maintenance import get_retention, purge_bulk_changes, purgeable, set_retention
from bulkchange_pipeline.store.schema import (
    bulk_change,
    bulk_change_log,
    carrier_callback,
    device_change,
    device_history,
)

from ..factories import make_account, make_bulk_change, make_devices

S = DeviceChangeStatus
T0 = datetime(2026, 3, 14, 9, 30, 15, 123456)


def finished_bulk_change(
    engine: sa.Engine,
    ids: dict[str, int],
    devices: list[dict[str, Any]],
    done_at: datetime,
    statuses: list[S] | None = None,
    created_at: datetime | None = None,
) -> int:
    """A StatusUpdate bulk change in the state a finished run leaves it: final rows, a log row per
    device (request, response, status), device history, a bulk-level log, a PROCESSED header."""
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    statuses = statuses or [S.PROCESSED] * len(devices)
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(device_change.c.id, device_change.c.device_id)
            .where(device_change.c.bulk_change_id == bc_id)
            .order_by(device_change.c.id)
        ).all()
        for (dc_id, device_id), status in zip(rows, statuses):
            conn.execute(
                sa.update(device_change)
                .where(device_change.c.id == dc_id)
                .values(
                    status=status.value,
                    processed_at=done_at,
                    updated_at=done_at,
                    attempt_count=1,
                    status_details=f"done {dc_id}",
                )
            )
            conn.execute(
                sa.insert(bulk_change_log).values(
                    tenant_id=ids["tenant_id"],
                    bulk_change_id=bc_id,
                    device_change_id=dc_id,
                    description="PUT status",
                    process_by="test",
                    request_text='PUT /devices/x {"status":"DEACTIVATED"}',
                    response_text="HTTP 200 OK",
                    has_errors=status is not S.PROCESSED,
                    response_status="200",
                    created_at=done_at,
                )
            )
            conn.execute(
                sa.insert(device_history).values(
                    tenant_id=ids["tenant_id"],
                    device_id=device_id,
                    field="status",
                    old_value="ACTIVATED",
                    new_value="DEACTIVATED",
                    bulk_change_id=bc_id,
                    changed_at=done_at,
                )
            )
        conn.execute(
            sa.insert(bulk_change_log).values(
                tenant_id=ids["tenant_id"],
                bulk_change_id=bc_id,
                description="finished",
                process_by="test",
                created_at=done_at,
            )
        )
    with engine.begin() as conn:
        conn.execute(
            sa.update(bulk_change)
            .where(bulk_change.c.id == bc_id)
            .values(
                status="PROCESSED",
                processed_at=done_at,
                counts=count_rows_by_status(engine, bc_id),
                created_at=created_at or done_at - timedelta(minutes=5),
            )
        )
    return bc_id


def db_rows(engine: sa.Engine, bc_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of a bulk change per archived table, in id order, as the archive stores them."""
    out = {}
    with engine.connect() as conn:
        for name, table in ARCHIVED_TABLES.items():
            owner = table.c.id if table is bulk_change else table.c.bulk_change_id
            rows = conn.execute(sa.select(table).where(owner == bc_id).order_by(table.c.id)).all()
            out[name] = [to_archive_row(table, dict(r._mapping)) for r in rows]
    return out


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as plain Python values (NA -> None, Timestamp -> datetime)."""

    def plain(v: Any) -> Any:
        if v is pd.NA or v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NaT:
            return None
        if isinstance(v, pd.Timestamp):
            return v.to_pydatetime()
        return v.item() if hasattr(v, "item") else v

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


@pytest.fixture
def account(engine: sa.Engine) -> tuple[dict[str, int], list[dict[str, Any]]]:
    ids = make_account(engine, "http://127.0.0.1:9/unused")
    return ids, make_devices(engine, ids, 6)


def test_archive_writes_every_row_and_reads_back_equal(engine, account, tmp_path: Path) -> None:
    ids, devices = account
    old = finished_bulk_change(engine, ids, devices[:4], T0, [S.PROCESSED, S.PROCESSED, S.API_FAILED, S.CANCELLED])
    recent = finished_bulk_change(engine, ids, devices[4:], T0 + timedelta(days=60))
    before = db_rows(engine, old)

    not_yet = archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=89))
    assert not_yet.bulk_changes == 0 and archive_files(tmp_path, "bulk_change") == []

    result = archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=91))
    assert result.bulk_changes == 1 and result.skipped == []
    assert result.rows == {"bulk_change": 1, "device_change": 4, "bulk_change_log": 5, "device_history": 4}
    assert result.partitions == [f"tenant={ids['tenant_id']}/month=2026-03"]
    for name in ARCHIVED_TABLES:
        assert archive_records(tmp_path, name) == before[name]
        assert frame_records(read_archive(tmp_path, name, ids["tenant_id"], "2026-03")) == before[name]
        files = archive_files(tmp_path, name, ids["tenant_id"], "2026-03")
        assert len(files) == 1 and files[0].parent.name == "month=2026-03"
        assert len(pd.read_parquet(files[0])) == len(before[name])  # plain pandas reads them too
    with engine.connect() as conn:
        deleted = dict(conn.execute(sa.select(bulk_change.c.id, bulk_change.c.deleted_at)).all())
    assert deleted == {old: T0 + timedelta(days=91), recent: None}
    assert archive_mismatches(engine, tmp_path) == []

    again = archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=91))
    assert again.bulk_changes == 0  # archived once only
    assert len(archive_records(tmp_path, "device_change")) == 4


def test_purge_removes_only_archived_rows_past_the_purge_age(engine, account, tmp_path: Path) -> None:
    ids, devices = account
    old = finished_bulk_change(engine, ids, devices[:3], T0)
    unarchived = finished_bulk_change(engine, ids, devices[3:], T0)
    archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=91))
    with engine.begin() as conn:  # pretend the second one was retried after the archive pass picked its peers
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == unarchived).values(deleted_at=None))
    assert purgeable(engine, T0 + timedelta(days=364)) == []
    assert purgeable(engine, T0 + timedelta(days=366)) == [old]

    # Callbacks a carrier sent for the rows' requests: the purged bulk change's go with it; the
    # other bulk change's, and another carrier's that reuse the same request id, stay.
    for bc_id, request in ((old, "req-old"), (unarchived, "req-kept")):
        with engine.begin() as conn:
            conn.execute(
                sa.update(device_change)
                .where(device_change.c.bulk_change_id == bc_id)
                .values(carrier_request_id=request)
            )
    for integration, request, device_key in (
        ("jasper", "req-old", "a"),
        ("jasper", "req-old", "b"),
        ("jasper", "req-kept", "a"),
        ("teal", "req-old", "a"),
    ):
        assert store_callback(engine, integration, request, device_key, {"status": "done"})

    deleted = purge_bulk_changes(engine, [old, unarchived])  # a bulk change not soft-deleted is never purged
    assert deleted == {
        "bulk_change": 1,
        "device_change": 3,
        "bulk_change_log": 4,
        "device_history": 3,
        "carrier_callback": 2,
    }
    assert db_rows(engine, old) == {name: [] for name in ARCHIVED_TABLES}
    assert len(db_rows(engine, unarchived)["device_change"]) == 3
    with engine.connect() as conn:
        left = conn.execute(
            sa.select(carrier_callback.c.integration, carrier_callback.c.request_id).order_by(
                carrier_callback.c.integration
            )
        ).all()
    assert [tuple(r) for r in left] == [("jasper", "req-kept"), ("teal", "req-old")]
    assert len(archive_records(tmp_path, "device_change")) == 6  # the archive keeps everything


def test_retention_is_per_tenant_and_validated(engine, tmp_path: Path) -> None:
    a = make_account(engine, "http://127.0.0.1:9/a", tenant_name="short")
    b = make_account(engine, "http://127.0.0.1:9/b", tenant_name="long", name="OTHER")
    set_retention(engine, a["tenant_id"], archive_after_days=7, purge_after_days=30)
    with pytest.raises(ValueError, match="must not be shorter"):
        set_retention(engine, a["tenant_id"], purge_after_days=3)
    assert (
        get_retention(engine, a["tenant_id"]).archive_after_days,
        get_retention(engine, a["tenant_id"]).purge_after_days,
    ) == (7, 30)
    bc_a = finished_bulk_change(engine, a, make_devices(engine, a, 2), T0)
    finished_bulk_change(engine, b, make_devices(engine, b, 2), T0)

    result = archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=8))
    assert result.bulk_changes == 1 and result.partitions == [f"tenant={a['tenant_id']}/month=2026-03"]
    assert [r["id"] for r in archive_records(tmp_path, "bulk_change")] == [bc_a]
    assert purgeable(engine, T0 + timedelta(days=31)) == [bc_a]


def test_unfinished_or_changed_bulk_changes_are_not_archived(engine, account, tmp_path: Path) -> None:
    ids, devices = account
    stuck = finished_bulk_change(engine, ids, devices[:2], T0)
    with engine.begin() as conn:  # a PROCESSED header with a row still in flight is not complete
        conn.execute(
            sa.update(device_change).where(device_change.c.bulk_change_id == stuck).values(status="PROCESSING")
        )
    assert archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=200)).bulk_changes == 0
    assert archive_files(tmp_path, "bulk_change") == []


def test_soft_delete_without_archive_is_a_mismatch_and_is_not_purged(engine, account, tmp_path: Path) -> None:
    ids, devices = account
    bc_id = finished_bulk_change(engine, ids, devices[:2], T0)
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(deleted_at=T0))
    found = {(m.table, m.in_database, m.in_archive) for m in archive_mismatches(engine, tmp_path)}
    assert found == {
        ("bulk_change", 1, 0),
        ("device_change", 2, 0),
        ("bulk_change_log", 3, 0),
        ("device_history", 2, 0),
    }


def test_leftovers_of_a_crashed_pass_are_settled(engine, account, tmp_path: Path) -> None:
    ids, devices = account
    bc_id = finished_bulk_change(engine, ids, devices[:2], T0)
    archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=91))
    committed = archive_files(tmp_path, "device_change")[0]
    # A crash after the commit but before the rename leaves .tmp files of soft-deleted bulk changes...
    for path in list(committed.parent.glob("*.parquet")):
        path.replace(path.with_name(path.name + ".tmp"))
        os.utime(path.with_name(path.name + ".tmp"), (time.time() - 7200, time.time() - 7200))
    # ...and one before the commit leaves .tmp files of bulk changes still live.
    orphan = committed.parent / "device_change-20260101T000000-deadbeef.parquet.tmp"
    pq.write_table(pq.read_table(committed.with_name(committed.name + ".tmp")), orphan)
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert archive_mismatches(engine, tmp_path)  # the renamed-away files are missing

    result = archive_bulk_changes(engine, tmp_path, now=T0 + timedelta(days=92))
    assert result.recovered_files == 5 and result.bulk_changes == 0
    assert not list(tmp_path.rglob("*.tmp"))
    assert archive_mismatches(engine, tmp_path) == []
    assert [r["id"] for r in archive_records(tmp_path, "bulk_change")] == [bc_id]
