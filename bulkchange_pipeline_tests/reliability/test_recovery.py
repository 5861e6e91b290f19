"""Issue 14: nothing lost, nothing left half-done.

- The sensor finds a bulk change that commits after a later one (PostgreSQL takes ids at insert,
  not at commit): two real transactions interleaved around a sensor evaluation, the earlier one held
  open by a row lock its insert needs.
- A long queue of bulk changes already requested hides nothing (page through, ask run storage).
- After a run ends without finishing, the header says what the rows say (failure sensor, stop
  sensor, resume), never ERROR over PROCESSED or PENDING, never under a retry or a newer attempt.
- A cancel reaches a batch that has started (rows are claimed in chunks), held at an exact point
  by a held carrier call.
"""

from __future__ import annotations

import signal
import threading

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main as cli
from bulkchange_pipeline.defs import DatabaseResource, bulk_change_failure_sensor, bulk_change_stopped_sensor
from bulkchange_pipeline.defs import sensors as sensors_module
from bulkchange_pipeline.defs.local_runner import evaluate_sensor
from bulkchange_pipeline.domain import BulkChangeStatus, ChangeType, DeviceChangeStatus
from bulkchange_pipeline.engine import load_bulk_change
from bulkchange_pipeline.engine.batch import process_batch
from bulkchange_pipeline.store.bulk_changes import get_bulk_change, set_bulk_status
from bulkchange_pipeline.store.device_changes import IdRange, RowResult, claim, record_results
from bulkchange_pipeline.store.operations import OperationRefused, cancel_bulk_change, resume_bulk_change
from bulkchange_pipeline.store.run_settle import settle_after_run
from bulkchange_pipeline.store.schema import bulk_change_log, device_change

from ..defs.harness import FAST_CARRIERS, fast_definitions, sensor_then_runs
from ..factories import make_account, make_bulk_change, make_devices
from ..waiting import wait_until

S = DeviceChangeStatus
STATUS = {"status": "DEACTIVATED"}


def _requested(result: dg.SensorResult) -> list[str]:
    return [rr.run_key for rr in result.run_requests or []]


def _daemon_creates_runs(instance: dg.DagsterInstance, defs: dg.Definitions, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's requests before a run starts: a queued run per request,
    tagged with its run key (the run itself is not needed here)."""
    job = defs.resolve_job_def("process_bulk_change_job")
    for rr in result.run_requests or []:
        instance.create_run_for_job(
            job,
            tags={"dagster/run_key": rr.run_key, "dagster/partition": rr.partition_key},
            status=dg.DagsterRunStatus.NOT_STARTED,
        )


def _rows(engine: sa.Engine, bc_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(device_change).where(device_change.c.bulk_change_id == bc_id).order_by(device_change.c.id)
        ).all()


def _logs(engine: sa.Engine, bc_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(bulk_change_log.c.description)
                .where(bulk_change_log.c.bulk_change_id == bc_id)
                .order_by(bulk_change_log.c.id)
            ).scalars()
        )


# --- 1. the sensor: no submission is skipped, whatever the commit order ----------------------------


def test_sensor_finds_a_bulk_change_that_commits_below_an_id_already_seen(engine, db_url, dagster_instance):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: ids are handed out in commit order there")
    ids = make_account(engine, "http://127.0.0.1:9")
    devices = make_devices(engine, ids, 8)
    defs = fast_definitions()
    # The large upload's transaction inserts its header (taking id N), then blocks inserting its
    # device rows: the test holds a lock on a device row their foreign key check needs.
    holder = engine.connect()
    holder.begin()
    holder.execute(sa.text("SELECT id FROM device WHERE id = :id FOR UPDATE"), {"id": devices[0]["id"]})
    large: dict[str, int] = {}
    upload = threading.Thread(
        target=lambda: large.setdefault(
            "id", make_bulk_change(engine, ids, devices[:6], ChangeType.STATUS_UPDATE, STATUS)
        )
    )
    upload.start()
    try:

        def upload_waits() -> bool:
            # A new connection each time: pg_stat_activity is a snapshot taken once per transaction.
            with engine.connect() as probe:
                return bool(
                    probe.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                    ).scalar()
                )

        wait_until(lambda: upload_waits() or not upload.is_alive(), what="the upload waits on the held row lock")
        assert upload.is_alive(), "the upload finished without waiting on the held lock"
        # Meanwhile a small submission takes id N+1 and commits first; the sensor sees only it.
        small = make_bulk_change(engine, ids, devices[6:], ChangeType.STATUS_UPDATE, STATUS)
        first = evaluate_sensor(dagster_instance, defs)
        assert _requested(first) == [f"bc-{small}-a0"]
        _daemon_creates_runs(dagster_instance, defs, first)
    finally:
        # The upload commits, below the id the sensor already saw.
        holder.rollback()
        holder.close()
        upload.join(30)
    assert large["id"] < small
    second = evaluate_sensor(dagster_instance, defs, cursor=first.cursor)
    assert _requested(second) == [f"bc-{large['id']}-a0"]
    _daemon_creates_runs(dagster_instance, defs, second)
    assert not _requested(evaluate_sensor(dagster_instance, defs, cursor=second.cursor))


def test_a_queue_longer_than_a_sensor_page_hides_nothing(engine, dagster_instance, monkeypatch):
    monkeypatch.setattr(sensors_module, "SENSOR_PAGE", 2)
    monkeypatch.setattr(sensors_module, "SCAN_PAGE", 2)
    ids = make_account(engine, "http://127.0.0.1:9")
    devices = make_devices(engine, ids, 5)
    bcs = [make_bulk_change(engine, ids, [d], ChangeType.STATUS_UPDATE, STATUS) for d in devices]
    defs = fast_definitions()
    seen: list[str] = []
    for expected in ([bcs[0], bcs[1]], [bcs[2], bcs[3]], [bcs[4]], []):
        # The runs wait in the queue (the bulk changes stay NEW), yet each tick finds the next ones.
        tick = evaluate_sensor(dagster_instance, defs)
        assert _requested(tick) == [f"bc-{b}-a0" for b in expected]
        _daemon_creates_runs(dagster_instance, defs, tick)
        seen += _requested(tick)
    assert len(seen) == len(set(seen)) == 5


# --- 2. after a run ends without finishing: the header says what the rows say ----------------------


def _half_done(engine) -> tuple[dict, list[dict], int]:
    """A Jasper bulk change of 6 rows as a crashed run leaves it: 2 PROCESSED, 2 PROCESSING (claimed,
    fate unknown), 2 NEW; header PROCESSING."""
    ids = make_account(engine, "http://127.0.0.1:9")
    devices = make_devices(engine, ids, 6)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, STATUS)
    rows = [r.id for r in _rows(engine, bc_id)]
    claim(engine, rows[:4])
    record_results(
        engine,
        tenant_id=ids["tenant_id"],
        bulk_change_id=bc_id,
        process_by="test",
        results=[RowResult(i, S.PROCESSED, "done") for i in rows[:2]],
    )
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSING)
    return ids, devices, bc_id


def test_settle_after_a_failed_run_follows_the_rows(engine):
    ids, _, bc_id = _half_done(engine)
    # Unfinished rows: ERROR, and the log says how to finish.
    settled = settle_after_run(engine, bc_id, attempt=0, note="Run r1 failed: boom", by="test")
    assert (settled.status, settled.unfinished, settled.changed) == ("ERROR", 4, True)
    assert f"bulkchange resume {bc_id}" in _logs(engine, bc_id)[-1]
    # Every row settled (here: the carrier answered): a failure after the work does not make it ERROR.
    rows = [r.id for r in _rows(engine, bc_id)]
    claim(engine, rows[4:])
    record_results(
        engine,
        tenant_id=ids["tenant_id"],
        bulk_change_id=bc_id,
        process_by="test",
        results=[RowResult(i, S.PROCESSED, "done") for i in rows[2:]],
    )
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSED)
    assert settle_after_run(engine, bc_id, attempt=0, note="Run r2 failed in finalize", by="test").status == "PROCESSED"
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"


def test_settle_leaves_pending_async_rows_pending_and_a_newer_attempt_alone(engine):
    ids = make_account(engine, "http://127.0.0.1:9", integration="thingspace")
    devices = make_devices(engine, ids, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, STATUS)
    rows = [r.id for r in _rows(engine, bc_id)]
    claim(engine, rows)
    record_results(
        engine,
        tenant_id=ids["tenant_id"],
        bulk_change_id=bc_id,
        process_by="test",
        results=[RowResult(i, S.PROCESSING, "accepted", carrier_request_id="req-1") for i in rows],
    )
    set_bulk_status(engine, bc_id, BulkChangeStatus.PENDING)
    # Accepted by the async carrier: reconcile settles them, so the header stays PENDING (was ERROR,
    # and reconcile only looks at PENDING bulk changes).
    assert settle_after_run(engine, bc_id, attempt=0, note="Run failed", by="test").status == "PENDING"
    # A newer attempt (resume, retry-failed) owns the header: an older run's failure leaves it.
    set_bulk_status(engine, bc_id, BulkChangeStatus.NEW)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE bulk_change SET attempt = 1 WHERE id = :id"), {"id": bc_id})
    settled = settle_after_run(engine, bc_id, attempt=0, note="Run of attempt 0 failed", by="test")
    assert (settled.changed, get_bulk_change(engine, bc_id)["status"]) == (False, "NEW")


def _failed_run(
    instance: dg.DagsterInstance, bc_id: int, tags: dict[str, str]
) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    job = fast_definitions().resolve_job_def("process_bulk_change_job")
    run = instance.create_run_for_job(
        job, tags={"dagster/partition": str(bc_id), **tags}, status=dg.DagsterRunStatus.STARTED
    )
    event = instance.report_run_failed(run, "worker died")
    return instance.get_run_by_id(run.run_id), event


def test_failure_sensor_waits_for_a_retry_and_otherwise_marks_unfinished_work_error(engine, dagster_instance):
    _, _, bc_id = _half_done(engine)
    run, event = _failed_run(
        dagster_instance, bc_id, {"dagster/run_key": f"bc-{bc_id}-a0", "dagster/will_retry": "true"}
    )
    context = dg.build_run_status_sensor_context(
        "bulk_change_failure_sensor", event, dagster_instance, run
    ).for_run_failure()
    bulk_change_failure_sensor(context, database=DatabaseResource())
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSING"  # the retry finishes it: left alone
    run, event = _failed_run(
        dagster_instance, bc_id, {"dagster/run_key": f"bc-{bc_id}-a0", "dagster/will_retry": "false"}
    )
    context = dg.build_run_status_sensor_context(
        "bulk_change_failure_sensor", event, dagster_instance, run
    ).for_run_failure()
    bulk_change_failure_sensor(context, database=DatabaseResource())
    assert get_bulk_change(engine, bc_id)["status"] == "ERROR"


def _terminated_run(instance: dg.DagsterInstance, job_name: str, bc_id: int) -> dg.DagsterRun:
    """A started run of ``job_name`` for the partition, terminated (CANCELING, then CANCELED), and
    ``bulk_change_stopped_sensor`` evaluated on it."""
    job = fast_definitions().resolve_job_def(job_name)
    run = instance.create_run_for_job(job, tags={"dagster/partition": str(bc_id)}, status=dg.DagsterRunStatus.STARTED)
    instance.report_run_canceling(run)
    instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    run = instance.get_run_by_id(run.run_id)
    [record] = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED).records
    context = dg.build_run_status_sensor_context(
        "bulk_change_stopped_sensor", record.event_log_entry.dagster_event, instance, run
    )
    bulk_change_stopped_sensor(context, database=DatabaseResource())
    return run


def test_stopped_sensor_cancels_what_was_not_sent(engine, dagster_instance):
    _, _, bc_id = _half_done(engine)
    run = _terminated_run(dagster_instance, "process_bulk_change_job", bc_id)
    assert [r.status for r in _rows(engine, bc_id)] == ["PROCESSED"] * 2 + ["PROCESSING"] * 2 + ["CANCELLED"] * 2
    # The two claimed rows may have reached the carrier: the header says unfinished, resume checks them.
    assert get_bulk_change(engine, bc_id)["status"] == "ERROR"
    assert f"Stopped by Terminate of Dagster run {run.run_id}" in _logs(engine, bc_id)[-1]


# --- 3. resume: a crashed bulk change finishes, nothing applied twice ------------------------------


def _jasper_devices(engine, sim, base_url, n, **account):
    ids = make_account(engine, base_url, **account)
    devices = make_devices(engine, ids, n)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices
    )
    return ids, devices


def test_resume_through_cli_and_api_finishes_a_crashed_bulk_change_once(
    engine, dagster_instance, jasper, carrier_env, db_url, monkeypatch
):
    sim, base_url = jasper
    ids, devices = _jasper_devices(engine, sim, base_url, 6)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, STATUS)
    rows = [r.id for r in _rows(engine, bc_id)]
    claim(engine, rows[:2])  # a crashed run claimed two rows; the carrier got one of them
    sim.seed_devices(
        [
            {
                "iccid": devices[0]["iccid"],
                "status": "DEACTIVATED",
                "ratePlan": "IOT-1GB",
                "communicationPlan": "CP-Basic",
            }
        ]
    )
    set_bulk_status(engine, bc_id, BulkChangeStatus.ERROR)
    defs = fast_definitions()
    _daemon_creates_runs(
        dagster_instance,
        defs,
        dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"bc-{bc_id}-a0", partition_key=str(bc_id))]),
    )
    assert not evaluate_sensor(dagster_instance, defs).run_requests  # ERROR: nothing restarts it by itself

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    tenant = "acme"  # make_account's tenant name
    out = CliRunner().invoke(cli, ["resume", str(bc_id), "--tenant", tenant])
    assert out.exit_code == 0, out.output
    assert "6 unfinished device rows queued as attempt 1" in out.output
    again = CliRunner().invoke(cli, ["resume", str(bc_id), "--tenant", tenant])
    assert again.exit_code != 0 and "already queued" in again.output

    tick, runs = sensor_then_runs(dagster_instance, defs)
    assert _requested(tick) == [f"bc-{bc_id}-a1"] and all(r.success for r in runs)
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    assert [r.status for r in _rows(engine, bc_id)] == ["PROCESSED"] * 6
    puts = sim.puts
    assert puts.get(devices[0]["iccid"], 0) == 0  # the carrier already had it: read back, not re-sent
    assert all(puts[d["iccid"]] == 1 for d in devices[1:])
    done = CliRunner().invoke(cli, ["resume", str(bc_id), "--tenant", tenant])
    assert done.exit_code != 0 and "nothing to resume" in done.output
    with pytest.raises(OperationRefused, match="nothing to resume"):
        resume_bulk_change(engine, ids["tenant_id"], bc_id, by="test")


# --- 4. cancel reaches a batch that has started ------------------------------------------------------


def test_cancel_reaches_a_running_batch_within_one_chunk(engine, jasper, carrier_env):
    sim, base_url = jasper
    ids, devices = _jasper_devices(engine, sim, base_url, 300, rate_per_second=5.0, max_concurrency=1, batch_size=300)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, STATUS)
    info = load_bulk_change(engine, bc_id)
    account = FAST_CARRIERS.account(info.service_provider)
    rows = _rows(engine, bc_id)
    sim.hold_when = lambda iccid, _body: iccid == devices[3]["iccid"]  # the 4th PUT waits at the carrier
    summary: dict = {}
    worker = threading.Thread(
        target=lambda: summary.setdefault(
            "s", process_batch(engine, info, IdRange(rows[0].id, rows[-1].id, len(rows)), account, process_by="test")
        )
    )
    worker.start()
    wait_until(lambda: sim.holder.held, what="the 4th PUT is held")
    # One 300-device batch has started. Was: "nothing to cancel: 300 PROCESSING".
    result = cancel_bulk_change(engine, ids["tenant_id"], bc_id, by="ops")
    chunk = 10  # 2 s at 5 calls/s
    assert (result.cancelled, result.still_processing) == (300 - chunk, chunk)
    sim.hold_when = None
    sim.holder.released.set()  # the held PUT is answered 503 (not applied); the client's retry applies it
    worker.join(60)
    statuses = [r.status for r in _rows(engine, bc_id)]
    assert statuses == ["PROCESSED"] * chunk + ["CANCELLED"] * (300 - chunk)
    assert sum(sim.puts.values()) == chunk  # no cancelled row reached the carrier
    assert summary["s"].chunks == 1


# --- 5. Terminate means cancel: a real run worker, stopped as Dagster's terminate does -------------


def test_terminate_lets_the_call_in_flight_finish_cancels_the_rest_and_ends_canceled(engine, workers, jasper):
    """Dagster terminates a run by marking it CANCELING and interrupting its worker (SIGINT). Was:
    the interrupted batch went to its retry policy, the other batches kept sending, the run ended
    Success with every row PROCESSED."""
    sim, base_url = jasper
    ids = make_account(engine, base_url, rate_per_second=5.0, max_concurrency=1, batch_size=20)
    devices = make_devices(engine, ids, 40)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, STATUS)
    sim.hold_when = lambda iccid, _body: iccid == devices[3]["iccid"]  # the 4th PUT: in flight at the stop
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
        worker = workers.start(str(bc_id))
        try:
            wait_until(lambda: sim.holder.held or not worker.alive(), timeout=120, what="the 4th PUT is held")
            [record] = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": str(bc_id)}))
            instance.report_run_canceling(record.dagster_run)  # what Terminate does first...
            worker.proc.send_signal(signal.SIGINT)  # ...then the interrupt the launcher sends the worker
            wait_until(
                lambda: any("run is stopping" in e.user_message for e in instance.all_logs(record.dagster_run.run_id)),
                timeout=60,
                interval=0.05,
                what="the worker seeing the stop while the call is still in flight",
            )
            sim.hold_when = None
            sim.holder.released.set()  # the held PUT answers 503; the client's retry applies it
            assert worker.wait(60) != 0
        finally:
            worker.kill()
        run = instance.get_run_by_id(record.dagster_run.run_id)
        assert run.status == dg.DagsterRunStatus.CANCELED, worker.output()
        assert not [
            r
            for r in instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": str(bc_id)}))
            if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        ]
    chunk = 10  # 2 s at 5 calls/s
    statuses = [r.status for r in _rows(engine, bc_id)]
    assert statuses == ["PROCESSED"] * chunk + ["CANCELLED"] * (40 - chunk), statuses
    assert sum(sim.puts.values()) == chunk  # the chunk in flight finished; nothing else was sent
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"  # every row final: 10 done, 30 cancelled
    assert any(f"Stopped by Terminate of Dagster run {run.run_id}" in line for line in _logs(engine, bc_id))


def test_failure_sensor_leaves_the_header_to_a_newer_run_of_the_same_job(engine, dagster_instance):
    _, _, bc_id = _half_done(engine)
    defs = fast_definitions()
    run, event = _failed_run(dagster_instance, bc_id, {"dagster/will_retry": "false"})
    reconcile = defs.resolve_job_def("reconcile_async_job")
    dagster_instance.create_run_for_job(
        reconcile, tags={"dagster/partition": str(bc_id)}, status=dg.DagsterRunStatus.NOT_STARTED
    )
    context = dg.build_run_status_sensor_context(
        "bulk_change_failure_sensor", event, dagster_instance, run
    ).for_run_failure()
    bulk_change_failure_sensor(context, database=DatabaseResource())
    assert get_bulk_change(engine, bc_id)["status"] == "ERROR"  # a reconcile run does not finish unsent rows
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSING)
    newer = defs.resolve_job_def("process_bulk_change_job")
    dagster_instance.create_run_for_job(
        newer, tags={"dagster/partition": str(bc_id)}, status=dg.DagsterRunStatus.NOT_STARTED
    )
    bulk_change_failure_sensor(context, database=DatabaseResource())
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSING"  # the newer processing run owns it


def test_a_terminated_reconcile_pass_cancels_nothing(engine, dagster_instance):
    _, _, bc_id = _half_done(engine)
    _terminated_run(dagster_instance, "reconcile_async_job", bc_id)
    assert [r.status for r in _rows(engine, bc_id)] == ["PROCESSED"] * 2 + ["PROCESSING"] * 2 + ["NEW"] * 2
