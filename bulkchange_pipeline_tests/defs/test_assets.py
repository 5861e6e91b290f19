"""The lifecycle assets end to end: a bulk change processed by the real job on the Jasper simulator
is archived, then purged, by the nightly ``retention_job`` with its clock moved forward; the
Parquet files hold every row, and the rows, runs and partitions are gone afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from bulkchange_pipeline.defs import ArchiveResource, build_definitions
from bulkchange_pipeline.defs.schedules import retention_schedule
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.archive import ARCHIVED_TABLES, archive_records
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import bulk_change

from ..factories import make_account, make_bulk_change, make_devices
from ..store.test_archive import db_rows
from .harness import FAST_CARRIERS, sensor_then_runs

N = 25


def _nightly(defs: dg.Definitions, instance: dg.DagsterInstance, now: datetime) -> dg.ExecuteInProcessResult:
    """The schedule's run, with the archive's and purge's clocks set to ``now`` (the metrics partition
    is yesterday's real date: a day in the moved-forward future has no partition yet)."""
    clock = {"config": {"now": now.isoformat()}}
    return defs.resolve_job_def("retention_job").execute_in_process(
        instance=instance,
        partition_key=(utcnow() - timedelta(days=1)).strftime("%Y-%m-%d"),
        run_config={"ops": {"bulk_change_archive": clock, "retention_purge": clock, "bulk_change_metrics": clock}},
    )


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def _partition_runs(instance: dg.DagsterInstance, key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key})))


def test_processed_bulk_change_is_archived_then_purged(engine, dagster_instance, jasper, tmp_path: Path) -> None:
    sim, base_url = jasper
    ids = make_account(engine, base_url)
    devices = make_devices(engine, ids, N)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices
    )
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = build_definitions(carriers=FAST_CARRIERS, archive=ArchiveResource(path=str(tmp_path / "archive")))
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs[0].success
    key = str(bc_id)
    assert _partition_runs(dagster_instance, key) and key in dagster_instance.get_dynamic_partitions("bulk_change")

    before = db_rows(engine, bc_id)
    assert before["bulk_change"][0]["status"] == "PROCESSED"
    assert (
        len(before["device_change"]) == N and len(before["device_history"]) == N and len(before["bulk_change_log"]) >= N
    )
    done = before["bulk_change"][0]["processed_at"]

    # Day 91 (tenant default: archive after 90 days, purge after 365): archived and soft-deleted.
    first = _nightly(defs, dagster_instance, done + timedelta(days=91))
    assert first.success
    meta = _metadata(first, "bulk_change_archive")
    assert meta["archived_bulk_changes"] == 1
    assert {t: meta[f"archived_rows/{t}"] for t in ARCHIVED_TABLES} == {t: len(rows) for t, rows in before.items()}
    assert meta["archive_root"] == str(tmp_path / "archive")
    month = f"{before['bulk_change'][0]['created_at']:%Y-%m}"
    assert meta["partitions"] == [f"tenant={ids['tenant_id']}/month={month}"]
    for table, rows in before.items():
        assert archive_records(tmp_path / "archive", table, ids["tenant_id"], month) == rows
    assert _metadata(first, "retention_purge")["purged_bulk_changes"] == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(bulk_change.c.deleted_at).where(bulk_change.c.id == bc_id)).scalar() is not None
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {
        "archive_matches_soft_deleted": True,
        "no_device_stuck_in_processing": True,
        "bulk_status_matches_rows": True,
    }

    # Day 366: purged from the database and from Dagster; the archive keeps it.
    second = _nightly(defs, dagster_instance, done + timedelta(days=366))
    assert second.success
    purge = _metadata(second, "retention_purge")
    assert purge["purged_bulk_changes"] == 1
    assert {t: purge[f"purged_rows/{t}"] for t in ARCHIVED_TABLES} == {t: len(rows) for t, rows in before.items()}
    assert purge["deleted_runs"] == len(runs) and purge["deleted_partitions"] == 1
    assert db_rows(engine, bc_id) == {t: [] for t in ARCHIVED_TABLES}
    assert _partition_runs(dagster_instance, key) == []
    assert key not in dagster_instance.get_dynamic_partitions("bulk_change")
    assert archive_records(tmp_path / "archive", "device_change") == before["device_change"]
    assert all(e.passed for e in second.get_asset_check_evaluations())


def test_retention_schedule_runs_nightly_for_yesterday() -> None:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("retention_schedule")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "retention_job"
    job = defs.resolve_job_def("retention_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "bulk_change_archive",
        "retention_purge",
        "bulk_change_metrics",
    }
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 11, 2, 0, tzinfo=UTC))
    request = retention_schedule(context)
    assert request.partition_key == "2026-03-10" and request.run_key == "retention-2026-03-10"


def test_todays_metrics_cover_the_day_so_far(engine, dagster_instance, jasper, tmp_path: Path) -> None:
    """Today's partition exists and the hourly schedule fills it with what finished so far today."""
    from bulkchange_pipeline.defs.assets import metrics_partitions
    from bulkchange_pipeline.defs.schedules import metrics_today_schedule

    sim, base_url = jasper
    ids = make_account(engine, base_url)
    devices = make_devices(engine, ids, 7)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices
    )
    make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = build_definitions(carriers=FAST_CARRIERS, archive=ArchiveResource(path=str(tmp_path / "archive")))
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs[0].success

    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%d")
    assert metrics_partitions.get_last_partition_key() == today  # without end_offset=1: yesterday
    request = metrics_today_schedule(dg.build_schedule_context(scheduled_execution_time=now))
    assert request.partition_key == today and request.run_key == f"metrics-{now:%Y-%m-%dT%H}"
    result = defs.resolve_job_def("metrics_today_job").execute_in_process(
        instance=dagster_instance, partition_key=request.partition_key
    )
    assert result.success
    values = _metadata(result, "bulk_change_metrics")
    assert values["rows_finished"] == 7
    assert values["error_rate/att_pod19/api_failed"] == 0.0 and values["carrier_calls"] >= 7


def test_metrics_today_schedule_is_hourly_and_on() -> None:
    schedule = build_definitions().resolve_schedule_def("metrics_today_schedule")
    assert schedule.cron_schedule == "5 * * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "metrics_today_job"
