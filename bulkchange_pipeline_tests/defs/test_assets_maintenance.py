"""State reconstruction and retention settings through the ``bulkchange`` CLI (both backends):
headers put out of step with their rows, as a restore can leave them, are rebuilt from the rows and logs."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_changes import add_log
from bulkchange_pipeline.store.rebuild import plan_rebuild
from bulkchange_pipeline.store.schema import bulk_change, device_change

from ..factories import make_account, make_bulk_change, make_devices
from ..store.test_archive import T0, finished_bulk_change


@pytest.fixture
def run(db_url: str):
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(
            main, [*args, "--tenant", "acme", "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False
        )

    return invoke


def _set(engine: sa.Engine, bc_id: int, header: dict | None = None, rows: dict | None = None) -> None:
    with engine.begin() as conn:
        if rows:
            conn.execute(sa.update(device_change).where(device_change.c.bulk_change_id == bc_id).values(**rows))
        if header:
            conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(**header))


def test_rebuild_status_restores_headers_from_rows_and_logs(engine, run) -> None:
    jasper = make_account(engine, "http://127.0.0.1:9/j")
    thingspace = make_account(engine, "http://127.0.0.1:9/t", integration="thingspace", name="TS")
    jd, td = make_devices(engine, jasper, 11), make_devices(engine, thingspace, 3)
    target = {"status": "DEACTIVATED"}
    # A restore brought back headers older than their rows:
    done = finished_bulk_change(engine, jasper, jd[:3], T0)
    _set(engine, done, {"status": "PROCESSING", "counts": {"NEW": 3}, "processed_at": None})
    failed = make_bulk_change(engine, jasper, jd[3:5], ChangeType.STATUS_UPDATE, target)
    _set(engine, failed, {"status": "PROCESSING"}, {"updated_at": utcnow() - timedelta(minutes=5)})
    add_log(
        engine,
        tenant_id=jasper["tenant_id"],
        bulk_change_id=failed,
        description="Run x failed",
        process_by="t",
        has_errors=True,
    )
    waiting_async = make_bulk_change(engine, thingspace, td, ChangeType.STATUS_UPDATE, target)
    _set(
        engine,
        waiting_async,
        {"status": "PROCESSED"},
        {"status": "PROCESSING", "attempt_count": 1, "carrier_request_id": "r1"},
    )
    due = utcnow() + timedelta(days=3)
    scheduled = make_bulk_change(engine, jasper, jd[5:7], ChangeType.STATUS_UPDATE, target, effective_at=due)
    _set(engine, scheduled, {"status": "NEW", "effective_at": None})
    healthy = make_bulk_change(engine, jasper, jd[7:9], ChangeType.STATUS_UPDATE, target)
    cancelled = make_bulk_change(engine, jasper, jd[9:], ChangeType.STATUS_UPDATE, target)
    _set(
        engine,
        cancelled,
        {"status": "CANCELLED", "counts": {"CANCELLED": 1, "ERROR": 1}},
        {"status": "CANCELLED", "processed_at": T0},
    )
    with engine.begin() as conn:  # one row was refused at validation: still CANCELLED, as cancel leaves it
        first = conn.execute(
            sa.select(sa.func.min(device_change.c.id)).where(device_change.c.bulk_change_id == cancelled)
        ).scalar()
        conn.execute(sa.update(device_change).where(device_change.c.id == first).values(status="ERROR"))

    dry = run("rebuild-status", "--all", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "examined 6 bulk changes; would rebuild 4; 2 already matched" in dry.output
    assert "PROCESSING -> PROCESSED" in dry.output and "PROCESSED -> PENDING" in dry.output
    assert get_bulk_change(engine, done)["status"] == "PROCESSING"  # a dry run writes nothing

    result = run("rebuild-status", "--all")
    assert result.exit_code == 0 and "rebuilt 4" in result.output
    head = get_bulk_change(engine, done)
    assert (head["status"], head["processed_at"]) == ("PROCESSED", T0)
    with engine.connect() as conn:
        assert conn.execute(sa.select(bulk_change.c.counts).where(bulk_change.c.id == done)).scalar() == {
            "PROCESSED": 3
        }
    assert get_bulk_change(engine, failed)["status"] == "ERROR"  # the run failure is the newest event
    assert get_bulk_change(engine, waiting_async)["status"] == "PENDING"
    head = get_bulk_change(engine, scheduled)
    assert (head["status"], head["effective_at"]) == ("SCHEDULED", due)
    assert get_bulk_change(engine, healthy)["status"] == "NEW"
    assert get_bulk_change(engine, cancelled)["status"] == "CANCELLED"
    assert not any(r.changed for r in plan_rebuild(engine))

    one = run("rebuild-status", str(healthy))
    assert one.exit_code == 0 and "examined 1 bulk changes; rebuilt 0" in one.output
    assert run("rebuild-status", "999999").exit_code == 1
    assert "give one BULK_CHANGE_ID or --all" in run("rebuild-status").output


def test_tenant_retention_shown_changed_and_validated(engine, run) -> None:
    make_account(engine, "http://127.0.0.1:9/j")
    shown = run("tenant", "retention")
    assert shown.exit_code == 0 and "archive 90 days after completion, purge 365 days" in shown.output
    changed = run("tenant", "retention", "--archive-days", "30", "--purge-days", "400")
    assert changed.exit_code == 0 and "archive 30 days after completion, purge 400 days" in changed.output
    refused = run("tenant", "retention", "--purge-days", "10")
    assert refused.exit_code == 1 and "must not be shorter than archive age (30 days)" in refused.output
    assert run("tenant", "retention", "--archive-days", "0").exit_code == 2  # click's range check
    assert "purge 400 days" in run("tenant", "retention").output
