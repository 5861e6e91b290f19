"""Each asset check passes on a healthy database and fails on one prepared to break it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import ArchiveResource, CarrierGatewayResource, DatabaseResource
from bulkchange_pipeline.defs.assets import bulk_change_archive, bulk_change_metrics, retention_purge
from bulkchange_pipeline.defs.checks import lifecycle_checks
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.archive import archive_bulk_changes, archive_files
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import bulk_change, device_change

from ..factories import make_account, make_bulk_change, make_devices
from ..store.test_archive import finished_bulk_change

CHECKS = ("no_device_stuck_in_processing", "bulk_status_matches_rows", "archive_matches_soft_deleted")


def run_checks(instance: dg.DagsterInstance, archive_root: Path) -> dict[str, dg.AssetCheckEvaluation]:
    """Execute only the asset checks, as the UI's "Execute checks" does."""
    defs = dg.Definitions(
        assets=[bulk_change_archive, retention_purge, bulk_change_metrics],
        asset_checks=lifecycle_checks,
        jobs=[dg.define_asset_job("checks_only", selection=dg.AssetSelection.all_asset_checks())],
        resources={
            "database": DatabaseResource(),
            "carriers": CarrierGatewayResource(),
            "archive": ArchiveResource(path=str(archive_root)),
        },
    )
    result = defs.resolve_job_def("checks_only").execute_in_process(instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def healthy(engine: sa.Engine, tmp_path: Path) -> dict:
    """One archived bulk change, one finished, one waiting, one with a row PROCESSING since just now."""
    ids = make_account(engine, "http://127.0.0.1:9/unused")
    devices = make_devices(engine, ids, 8)
    now = utcnow()
    archived = finished_bulk_change(engine, ids, devices[:2], now - timedelta(days=100))
    finished = finished_bulk_change(engine, ids, devices[2:4], now - timedelta(days=1))
    waiting = make_bulk_change(engine, ids, devices[4:6], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    sending = make_bulk_change(engine, ids, devices[6:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == sending)
            .values(status="PROCESSING", attempt_count=1, updated_at=now)
        )
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == sending).values(status="PROCESSING"))
    assert archive_bulk_changes(engine, tmp_path, now).bulk_changes == 1
    return {"archived": archived, "finished": finished, "waiting": waiting, "sending": sending, "root": tmp_path}


def test_all_checks_pass_on_a_healthy_database(engine, dagster_instance, healthy) -> None:
    results = run_checks(dagster_instance, healthy["root"])
    assert {name: results[name].passed for name in CHECKS} == {name: True for name in CHECKS}


def test_row_stuck_in_processing_past_the_timeout_fails(engine, dagster_instance, healthy) -> None:
    limit = CarrierGatewayResource().async_timeout_seconds + CarrierGatewayResource().poll_after_seconds
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == healthy["sending"])
            .values(updated_at=utcnow() - timedelta(seconds=limit + 60))
        )
    result = run_checks(dagster_instance, healthy["root"])["no_device_stuck_in_processing"]
    assert not result.passed
    assert result.metadata["stuck_rows"].value == 2 and result.metadata["bulk_changes"].value == [healthy["sending"]]


@pytest.mark.parametrize("breakage", ["finished_header_rows_open", "stale_counts", "never_finalized"])
def test_status_disagreeing_with_rows_fails(engine, dagster_instance, healthy, breakage) -> None:
    with engine.begin() as conn:
        if breakage == "finished_header_rows_open":  # says PROCESSED while rows wait to be sent
            conn.execute(
                sa.update(bulk_change).where(bulk_change.c.id == healthy["waiting"]).values(status="PROCESSED")
            )
            broken = healthy["waiting"]
        elif breakage == "stale_counts":
            conn.execute(
                sa.update(bulk_change).where(bulk_change.c.id == healthy["finished"]).values(counts={"NEW": 2})
            )
            broken = healthy["finished"]
        else:  # every row final for an hour, header still PROCESSING: a run died before finalize
            conn.execute(
                sa.update(device_change)
                .where(device_change.c.bulk_change_id == healthy["sending"])
                .values(
                    status="PROCESSED",
                    processed_at=utcnow() - timedelta(hours=1),
                    updated_at=utcnow() - timedelta(hours=1),
                )
            )
            broken = healthy["sending"]
    results = run_checks(dagster_instance, healthy["root"])
    assert not results["bulk_status_matches_rows"].passed
    assert [d["id"] for d in results["bulk_status_matches_rows"].metadata["sample"].value] == [broken]
    assert results["no_device_stuck_in_processing"].passed and results["archive_matches_soft_deleted"].passed


@pytest.mark.parametrize("breakage", ["soft_deleted_not_archived", "archive_file_lost_a_row"])
def test_archive_not_matching_soft_deleted_rows_fails(engine, dagster_instance, healthy, breakage) -> None:
    if breakage == "soft_deleted_not_archived":
        with engine.begin() as conn:
            conn.execute(
                sa.update(bulk_change).where(bulk_change.c.id == healthy["finished"]).values(deleted_at=utcnow())
            )
        broken = healthy["finished"]
    else:
        [path] = archive_files(healthy["root"], "device_change")
        table = pq.read_table(path)
        pq.write_table(table.slice(0, table.num_rows - 1), path)
        broken = healthy["archived"]
    result = run_checks(dagster_instance, healthy["root"])["archive_matches_soft_deleted"]
    assert not result.passed
    assert {m["id"] for m in result.metadata["sample"].value} == {broken}
