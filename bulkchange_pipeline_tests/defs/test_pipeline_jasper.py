"""The pipeline end to end: sensor -> partitioned job -> Jasper simulator -> results in the store.

Real parts only: the Jasper simulator over HTTP on 127.0.0.1, a real Dagster instance (SQLite or
PostgreSQL storage, following the business database's backend) and the business database.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import bulk_change, bulk_change_log, device, device_change, device_history

from ..factories import JASPER_KEY, JASPER_USER, make_account, make_bulk_change, make_devices
from .harness import evaluate_sensor, execute, fast_definitions, sensor_then_runs


def _seed(engine, sim, base_url, n, status="ACTIVATED", **account):
    ids = make_account(engine, base_url, **account)
    devices = make_devices(engine, ids, n, status=status)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": status, "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"} for d in devices
    )
    return ids, devices


def test_sensor_to_processed_status_update(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 120)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = fast_definitions()

    result, runs = sensor_then_runs(dagster_instance, defs)
    assert [rr.partition_key for rr in result.run_requests] == [str(bc_id)]
    # The account tag comes from the partition (the stored bulk change), as for a launchpad run.
    run = dagster_instance.get_run_by_id(runs[0].run_id)
    assert run.tags["bulkchange/carrier_account"] == "cred-TEST_JASPER"  # the credentials entry
    assert run.tags["bulkchange/bulk_change_id"] == str(bc_id)
    # ... and says in words whose runs they are, for an operator filtering the runs page.
    assert run.tags["bulkchange/tenant_name"] == "acme"
    assert run.tags["bulkchange/carrier_account_name"] == "TEST_JASPER account"
    assert run.tags["bulkchange/change_type_name"] == ChangeType.STATUS_UPDATE.label
    assert dagster_instance.get_dynamic_partitions("bulk_change") == [str(bc_id)]
    assert runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 120}
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    assert all(sim.device(d["iccid"])["status"] == "DEACTIVATED" for d in devices)
    assert sim.stats()["applied_more_than_once"] == 0 and sim.stats()["applied_devices"] == 120
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(device).where(device.c.status == "DEACTIVATED")
            ).scalar()
            == 120
        )
        hist = conn.execute(sa.select(device_history).where(device_history.c.device_id == devices[0]["id"])).all()
    assert [(h.field, h.old_value, h.new_value) for h in hist] == [("status", "ACTIVATED", "DEACTIVATED")]

    # The cursor moved: the next tick requests nothing; re-executing the finished partition applies nothing twice.
    again = evaluate_sensor(dagster_instance, defs, cursor=result.cursor)
    assert not again.run_requests
    assert execute(dagster_instance, defs, str(bc_id)).success
    assert sim.stats()["applied_more_than_once"] == 0
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 120}


@pytest.mark.parametrize(
    "change_type,target,check",
    [
        (
            ChangeType.CARRIER_RATE_PLAN_CHANGE,
            {"carrier_rate_plan": "IOT-5GB", "communication_plan": "CP-Plus"},
            lambda d: d["ratePlan"] == "IOT-5GB" and d["communicationPlan"] == "CP-Plus",
        ),
        (
            ChangeType.CUSTOMER_ASSIGNMENT,
            {"customer_id": None, "customer_name": "Fleet Co"},
            lambda d: d["customer"] == "Fleet Co",
        ),
        (ChangeType.EDIT_USERNAME_COST_CENTER, {"username": "truck-17", "cost_center": "CC-42"}, None),
    ],
)
def test_jasper_change_types(engine, dagster_instance, jasper, change_type, target, check):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 30)
    if "customer_id" in target:
        target = {**target, "customer_id": ids["customer_id"]}
    bc_id = make_bulk_change(engine, ids, devices, change_type, target)
    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 30}
    for d in devices:
        state = sim.device(d["iccid"])
        assert check is None or check(state), state
    with engine.connect() as conn:
        row = conn.execute(sa.select(device).where(device.c.id == devices[0]["id"])).one()
    if change_type is ChangeType.CUSTOMER_ASSIGNMENT:
        assert row.customer_id == ids["customer_id"]
    if change_type is ChangeType.EDIT_USERNAME_COST_CENTER:
        assert (row.username, row.cost_center) == ("truck-17", "CC-42")
    if change_type is ChangeType.CARRIER_RATE_PLAN_CHANGE:
        assert (row.carrier_rate_plan, row.communication_plan) == ("IOT-5GB", "CP-Plus")
    assert sim.stats()["applied_more_than_once"] == 0


def test_database_only_changes_immediate_and_scheduled(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 20)
    now_bc = make_bulk_change(
        engine,
        ids,
        devices[:10],
        ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
        {"customer_rate_plan_id": None, "customer_rate_pool_id": None, "data_allocation_mb": 1024},
    )
    later = utcnow() + timedelta(days=2)
    sched_bc = make_bulk_change(
        engine,
        ids,
        devices[10:],
        ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
        {"data_allocation_mb": 2048},
        effective_at=later,
    )
    archive_bc = make_bulk_change(engine, ids, devices[:3], ChangeType.ARCHIVAL, {"override_usage_check": False})
    defs = fast_definitions()

    result, runs = sensor_then_runs(dagster_instance, defs)
    assert sorted(int(r.partition_key) for r in result.run_requests) == [now_bc, archive_bc]
    assert all(r.success for r in runs)
    assert count_rows_by_status(engine, now_bc) == {"PROCESSED": 10}
    assert count_rows_by_status(engine, archive_bc) == {"PROCESSED": 3}
    assert get_bulk_change(engine, sched_bc)["status"] == "SCHEDULED"
    assert sim.stats()["total_calls"] == 0  # database-only: the carrier is never called
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(device).where(device.c.archived_at.is_not(None))
            ).scalar()
            == 3
        )

    # When the effective date comes, the sensor requests the scheduled bulk change once.
    with engine.begin() as conn:
        past = utcnow() - timedelta(minutes=1)
        conn.execute(
            sa.update(device_change).where(device_change.c.bulk_change_id == sched_bc).values(effective_at=past)
        )
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == sched_bc).values(effective_at=past))
    due, due_runs = sensor_then_runs(dagster_instance, defs, cursor=result.cursor)
    assert [int(r.partition_key) for r in due.run_requests] == [sched_bc]
    assert due_runs[0].success
    assert count_rows_by_status(engine, sched_bc) == {"PROCESSED": 10}
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(device).where(device.c.data_allocation_mb == 2048)
            ).scalar()
            == 10
        )


def test_transient_faults_still_processed_business_refusals_api_failed(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 200, status="DEACTIVATED")
    # Five devices were purged at the carrier behind our back: the carrier refuses those.
    for d in devices[:5]:
        sim.devices[d["iccid"]]["status"] = "PURGED"
    sim.configure(
        error_rate=0.04, burst_rate=0.02, timeout_rate=0.02, timeout_hold_seconds=3.0, malformed_rate=0.02, seed=7
    )
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "ACTIVATED"})

    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert runs[0].success
    stats = sim.stats()
    assert sum(stats["injected"].values()) >= 10, stats["injected"]  # faults really happened
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 195, "API_FAILED": 5}
    assert stats["applied_more_than_once"] == 0
    with engine.connect() as conn:
        failed = conn.execute(
            sa.select(device_change.c.iccid, device_change.c.status_details).where(
                device_change.c.status == "API_FAILED"
            )
        ).all()
    assert {f.iccid for f in failed} == {d["iccid"] for d in devices[:5]}
    assert all("PURGED" in f.status_details for f in failed), failed[0].status_details


def test_writes_disabled_refuses_without_calling(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 5, write_enabled=False)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"API_FAILED": 5}
    assert sim.stats()["total_calls"] == 0


def test_no_credential_in_logs_event_log_or_run_config(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 25)
    sim.configure(error_rate=0.2, seed=3)  # failures log request/response text too
    make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    basic = base64.b64encode(f"{JASPER_USER}:{JASPER_KEY}".encode()).decode()
    needles = [JASPER_KEY, basic]

    with engine.connect() as conn:
        logs = conn.execute(sa.select(bulk_change_log)).all()
        everything = " ".join(
            str(tuple(r))
            for t in (bulk_change_log, device_change, bulk_change, device)
            for r in conn.execute(sa.select(t)).all()
        )
    assert any(log.request_text for log in logs)  # the exchanges were captured...
    assert all(log.response_ms is not None and log.response_ms >= 0 for log in logs if log.request_text)  # ...and timed
    assert not [n for n in needles if n in everything]  # ...without the secret
    run = dagster_instance.get_run_by_id(runs[0].run_id)
    events = dagster_instance.all_logs(runs[0].run_id)
    dumped = str(run.run_config) + str(run.tags) + " ".join(dg.serialize_value(e) for e in events)
    assert len(events) > 10
    assert not [n for n in needles if n in dumped]


def test_requeued_bulk_change_runs_again_once_per_attempt(engine, dagster_instance, jasper):
    """A bulk change put back to NEW on a later attempt (retry-failed) sits below the sensor's
    cursor; the sensor still finds it, once per attempt."""
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 10)
    sim.devices[devices[0]["iccid"]]["status"] = "PURGED"  # the carrier refuses this one
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = fast_definitions()
    first, _ = sensor_then_runs(dagster_instance, defs)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 9, "API_FAILED": 1}

    sim.devices[devices[0]["iccid"]]["status"] = "ACTIVATED"  # fixed at the carrier; retry it
    with engine.begin() as conn:
        conn.execute(sa.update(device_change).where(device_change.c.status == "API_FAILED").values(status="NEW"))
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(status="NEW", attempt=1))
    retry, runs = sensor_then_runs(dagster_instance, defs, cursor=first.cursor)
    assert [(r.partition_key, r.run_key) for r in retry.run_requests] == [(str(bc_id), f"bc-{bc_id}-a1")]
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 10}
    assert sim.stats()["applied_more_than_once"] == 0
    again, _ = sensor_then_runs(dagster_instance, defs, cursor=retry.cursor)
    assert not again.run_requests


def _launchpad(**config):
    return {"ops": {"plan_batches_op": {"config": config}}}


def test_launchpad_dry_run_and_retry_failed_only(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 8)
    sim.devices[devices[0]["iccid"]]["status"] = "PURGED"
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = fast_definitions()
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])

    assert execute(dagster_instance, defs, str(bc_id), run_config=_launchpad(dry_run=True)).success
    assert sim.stats()["total_calls"] == 0  # a dry run calls no carrier...
    assert count_rows_by_status(engine, bc_id) == {"NEW": 8}  # ...and changes nothing
    assert get_bulk_change(engine, bc_id)["status"] == "NEW"

    assert execute(dagster_instance, defs, str(bc_id)).success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 7, "API_FAILED": 1}

    sim.devices[devices[0]["iccid"]]["status"] = "ACTIVATED"  # fixed at the carrier
    run = execute(dagster_instance, defs, str(bc_id), run_config=_launchpad(retry_failed_only=True, batch_size=5))
    assert run.success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 8}
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    assert sim.stats()["applied_more_than_once"] == 0
    md = run.output_for_node("finalize_bulk_change")
    assert md == "PROCESSED"


@pytest.mark.parametrize(
    ("resource", "config", "named"),
    [
        ("carriers", {"max_attempts": 1000}, "max_attempts"),
        ("carriers", {"timeout_seconds": 31_536_000.0}, "timeout_seconds"),
        ("carriers", {"retry_wait_seconds": -1.0}, "retry_wait_seconds"),
        ("carriers", {"poll_after_seconds": -5}, "poll_after_seconds"),
        ("carriers", {"async_timeout_seconds": 10**9}, "async_timeout_seconds"),
        ("database", {"url_env": "BULKCHANGE_CRED_TEST_JASPER_SECRET"}, "url_env"),
        ("database", {"url_env": "HOME"}, "url_env"),
    ],
)
def test_launchpad_config_beyond_bounds_fails_before_any_carrier_call(
    engine, dagster_instance, jasper, resource, config, named
):
    """The launchpad can set resource config: out-of-bounds settings (or a credentials variable as
    the database URL) fail the run at resource start, naming the setting; nothing reaches the carrier
    and no secret is echoed."""
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    crafted = {"resources": {resource: {"config": config}}}

    try:
        result = execute(dagster_instance, fast_definitions(), str(bc_id), run_config=crafted, raise_on_error=False)
    except (dg.DagsterInvalidConfigError, dg.DagsterResourceFunctionError) as exc:
        message = str(exc)
    else:
        assert not result.success
        failures = [e for e in result.all_events if e.is_failure]
        message = " ".join(str(e.event_specific_data) for e in failures)
    assert named in message
    assert JASPER_KEY not in message
    assert sim.stats()["total_calls"] == 0
    assert count_rows_by_status(engine, bc_id) == {"NEW": 3}


def test_progress_moves_within_a_batch(engine, dagster_instance, jasper, monkeypatch):
    """One batch of 100 rows at 25 calls/s (about 4 s): its rows are committed chunk by chunk, and
    the step logs the running counts while it works, not only at its end."""
    from bulkchange_pipeline.defs import progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.3)
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 100, rate_per_second=25.0, max_concurrency=1, batch_size=1000)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])

    result = execute(dagster_instance, fast_definitions(), str(bc_id))
    assert result.success
    lines = [
        e.message
        for e in dagster_instance.all_logs(result.run_id)
        if e.message and e.step_key and e.step_key.startswith("apply_batch") and "rows recorded" in e.message
    ]
    recorded = [int(line.split(": ", 1)[1].split("/", 1)[0]) for line in lines]
    assert len(recorded) >= 2, lines
    assert recorded == sorted(recorded) and len(set(recorded)) == len(recorded), lines
    assert 0 < recorded[0] < 100, lines  # logged while the batch was still working
    assert all("/100 rows recorded" in line for line in lines)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 100}


def test_held_bulk_change_runs_only_after_release_from_the_cli(engine, dagster_instance, jasper, db_url, monkeypatch):
    """Held (processChanges=false): the sensor leaves it alone; ``bulkchange release`` lets the next
    tick start it, and it is processed like any other."""
    from click.testing import CliRunner

    from bulkchange_pipeline.cli import main as cli

    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 4)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(process_changes=False))
    defs = fast_definitions()
    assert not evaluate_sensor(dagster_instance, defs).run_requests

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    out = CliRunner().invoke(cli, ["release", str(bc_id), "--tenant", "acme"])
    assert out.exit_code == 0 and "released; the sensor starts it on its next tick" in out.output, out.output
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert [r.success for r in runs] == [True]
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 4}
    again = CliRunner().invoke(cli, ["release", str(bc_id), "--tenant", "acme"])
    assert again.exit_code != 0 and "is not held" in again.output
