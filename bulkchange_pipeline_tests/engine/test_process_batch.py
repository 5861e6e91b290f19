"""engine/: process_batch, batch sizing and finalize, on SQLite and PostgreSQL, against a real
Jasper simulator on 127.0.0.1 (no mocks of our code or the database)."""

from __future__ import annotations

import base64
import math
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeStatus, ChangeType
from bulkchange_pipeline.engine import finalize, load_bulk_change, plan_batches, process_batch
from bulkchange_pipeline.engine.bulk_change import MAX_BATCHES_PER_RUN, batch_size_for
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_changes import IdRange
from bulkchange_pipeline.store.schema import (
    bulk_change,
    bulk_change_log,
    customer_rate_plan,
    customer_rate_pool,
    device,
    device_change,
    device_history,
)
from bulkchange_pipeline_tests.factories import make_account, make_bulk_change, make_devices
from bulkchange_pipeline_tests.simulators.fixtures import JASPER_API_KEY, JASPER_USER, jasper_account

PROCESS_BY = "test-engine"


# -- helpers --------------------------------------------------------------------------------------


def _setup_jasper(engine, handle, n, *, status="ACTIVATED"):
    """Account pointing at the simulator, n devices in our DB and the same n at the simulator."""
    ids = make_account(engine, handle.base_url)
    devices = make_devices(engine, ids, n, status=status)
    handle.simulator.seed_devices(
        {"iccid": d["iccid"], "status": status, "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"} for d in devices
    )
    account = jasper_account(handle, service_provider_id=ids["service_provider_id"])
    return ids, devices, account


def _full_range(engine, bc_id) -> IdRange:
    with engine.connect() as conn:
        lo, hi, n = conn.execute(
            sa.select(sa.func.min(device_change.c.id), sa.func.max(device_change.c.id), sa.func.count()).where(
                device_change.c.bulk_change_id == bc_id
            )
        ).one()
    return IdRange(lo, hi, n)


def _rows(engine, table, *where, order=None):
    with engine.connect() as conn:
        q = sa.select(table).where(*where).order_by(order if order is not None else table.c.id)
        return [dict(r._mapping) for r in conn.execute(q)]


def _log_counts_by_device_change(engine, bc_id) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(bulk_change_log.c.device_change_id, sa.func.count())
            .where(bulk_change_log.c.bulk_change_id == bc_id)
            .group_by(bulk_change_log.c.device_change_id)
        ).all()
    return {dc: n for dc, n in rows}


# -- database-only change type --------------------------------------------------------------------


def test_db_only_change_writes_values_history_and_one_log_per_device(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 4)
    with engine.begin() as conn:
        plan_id = conn.execute(
            sa.insert(customer_rate_plan)
            .values(tenant_id=ids["tenant_id"], name="Gold", data_allocation_mb=1024)
            .returning(customer_rate_plan.c.id)
        ).scalar_one()
        pool_id = conn.execute(
            sa.insert(customer_rate_pool)
            .values(tenant_id=ids["tenant_id"], name="Pool A")
            .returning(customer_rate_pool.c.id)
        ).scalar_one()
    target = {"customer_rate_plan_id": plan_id, "customer_rate_pool_id": pool_id, "data_allocation_mb": 1024}
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.CUSTOMER_RATE_PLAN_CHANGE, target)
    info = load_bulk_change(engine, bc_id)
    assert info.handling.value == "db"
    calls_before = sim.total_calls

    # A real account is passed: a DB-only change must still not call the carrier.
    summary = process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY)

    assert (summary.rows, summary.processed, summary.api_failed, summary.carrier_calls) == (4, 4, 0, 0)
    assert sim.total_calls == calls_before
    assert sum(sim.applied_counts.values()) == 0

    changes = _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)
    assert {c["status"] for c in changes} == {"PROCESSED"}
    assert all(c["processed_at"] is not None and c["attempt_count"] == 1 for c in changes)

    dev_rows = _rows(engine, device, device.c.id.in_([d["id"] for d in devices]))
    for d in dev_rows:
        assert (d["customer_rate_plan_id"], d["customer_rate_pool_id"], d["data_allocation_mb"]) == (
            plan_id,
            pool_id,
            1024,
        )
        assert d["status"] == "ACTIVATED"  # untouched

    history = _rows(engine, device_history, device_history.c.bulk_change_id == bc_id)
    assert len(history) == 4 * 3
    by_device: dict[int, set] = {}
    for h in history:
        by_device.setdefault(h["device_id"], set()).add((h["field"], h["old_value"], h["new_value"]))
    assert by_device == {
        d["id"]: {
            ("customer_rate_plan_id", None, str(plan_id)),
            ("customer_rate_pool_id", None, str(pool_id)),
            ("data_allocation_mb", None, "1024"),
        }
        for d in devices
    }

    assert _log_counts_by_device_change(engine, bc_id) == {c["id"]: 1 for c in changes}
    logs = _rows(engine, bulk_change_log, bulk_change_log.c.bulk_change_id == bc_id)
    assert all(not log["has_errors"] and log["process_by"] == PROCESS_BY for log in logs)
    assert all("CustomerRatePlanChange" in log["description"] and log["request_text"] is None for log in logs)


def test_db_only_change_needs_no_account(engine):
    ids = make_account(engine, "http://127.0.0.1:9/unused")
    devices = make_devices(engine, ids, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.ARCHIVAL, {})
    info = load_bulk_change(engine, bc_id)
    summary = process_batch(engine, info, _full_range(engine, bc_id), None, process_by=PROCESS_BY)
    assert summary.processed == 3
    assert all(d["archived_at"] is not None for d in _rows(engine, device, device.c.id.in_([d["id"] for d in devices])))


# -- Jasper (carrier) change type -----------------------------------------------------------------


def test_jasper_status_update_processes_rows_and_redacts_logs(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 5)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    info = load_bulk_change(engine, bc_id)

    summary = process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY)

    assert (summary.rows, summary.processed, summary.api_failed, summary.recovered) == (5, 5, 0, 0)
    assert summary.carrier_calls == 5
    assert sim.calls_by_method["PUT"] == 5
    for d in devices:
        assert sim.device(d["iccid"])["status"] == "DEACTIVATED"
        assert sim.applied_counts[d["iccid"]] == 1

    changes = _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)
    assert {c["status"] for c in changes} == {"PROCESSED"}
    assert all(c["status_details"].startswith("applied: status=DEACTIVATED") for c in changes)
    assert {d["status"] for d in _rows(engine, device, device.c.id.in_([d["id"] for d in devices]))} == {"DEACTIVATED"}
    history = _rows(engine, device_history, device_history.c.bulk_change_id == bc_id)
    assert sorted((h["device_id"], h["field"], h["old_value"], h["new_value"]) for h in history) == sorted(
        (d["id"], "status", "ACTIVATED", "DEACTIVATED") for d in devices
    )

    assert _log_counts_by_device_change(engine, bc_id) == {c["id"]: 1 for c in changes}
    token = base64.b64encode(f"{JASPER_USER}:{JASPER_API_KEY}".encode()).decode()
    iccid_by_change = {c["id"]: c["iccid"] for c in changes}
    for log in _rows(engine, bulk_change_log, bulk_change_log.c.bulk_change_id == bc_id):
        req, resp = log["request_text"], log["response_text"]
        assert req and resp
        assert req.startswith("PUT ") and iccid_by_change[log["device_change_id"]] in req
        assert '"status"' in req and "DEACTIVATED" in req  # the body is kept...
        for text in (req, resp, log["description"]):
            assert JASPER_API_KEY not in text and token not in text  # ...the credential is not
        assert "***" in req  # the Authorization header is there, masked
        assert log["response_status"] == "200" and not log["has_errors"]


def test_jasper_refusal_is_api_failed_with_carrier_message(engine, jasper_sim):
    ids, devices, account = _setup_jasper(engine, jasper_sim, 3)
    jasper_sim.simulator.seed_devices([{"iccid": devices[1]["iccid"], "status": "PURGED"}])
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    info = load_bulk_change(engine, bc_id)

    summary = process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY)

    assert (summary.processed, summary.api_failed) == (2, 1)
    changes = {c["iccid"]: c for c in _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)}
    failed = changes[devices[1]["iccid"]]
    assert failed["status"] == "API_FAILED"
    assert "PURGED" in failed["status_details"] and "20000019" in failed["status_details"]
    assert summary.sample_failures == [{"device": str(failed["id"]), "reason": failed["status_details"][:200]}]
    # the refused device keeps its value in our database and gets no history
    dev = _rows(engine, device, device.c.id == devices[1]["id"])[0]
    assert dev["status"] == "ACTIVATED"
    assert not _rows(engine, device_history, device_history.c.device_id == devices[1]["id"])
    logs = _rows(engine, bulk_change_log, bulk_change_log.c.device_change_id == failed["id"])
    assert len(logs) == 1 and logs[0]["has_errors"] and logs[0]["response_status"] == "400"

    result = finalize(engine, load_bulk_change(engine, bc_id), [summary])
    assert result.status is BulkChangeStatus.PROCESSED
    assert result.counts == {"PROCESSED": 2, "API_FAILED": 1}
    assert "First failures" in result.summary_markdown
    assert f"| `{failed['iccid']}` | API_FAILED |" in result.summary_markdown


def test_rerun_of_same_range_does_nothing(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 4)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    info = load_bulk_change(engine, bc_id)
    rng = _full_range(engine, bc_id)
    first = process_batch(engine, info, rng, account, process_by=PROCESS_BY)
    assert first.processed == 4
    calls = sim.total_calls
    logs_before = _log_counts_by_device_change(engine, bc_id)
    changes_before = _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)

    again = process_batch(engine, info, rng, account, process_by=PROCESS_BY)

    assert (again.rows, again.processed, again.carrier_calls) == (0, 0, 0)
    assert sim.total_calls == calls
    assert sim.stats()["applied_more_than_once"] == 0
    assert _log_counts_by_device_change(engine, bc_id) == logs_before
    assert _rows(engine, device_change, device_change.c.bulk_change_id == bc_id) == changes_before
    assert len(_rows(engine, device_history, device_history.c.bulk_change_id == bc_id)) == 4
    assert plan_batches(engine, load_bulk_change(engine, bc_id)) == []


def test_rows_left_processing_are_recovered_without_a_second_put(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    # A crashed attempt: all rows were claimed; the carrier applied the first two, not the third.
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == bc_id)
            .values(status="PROCESSING", attempt_count=1)
        )
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "DEACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices[:2]
    )
    applied_before = dict(sim.applied_counts)
    info = load_bulk_change(engine, bc_id)

    summary = process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY)

    assert summary.rows == 3
    assert summary.recovered == 2
    assert summary.processed == 3
    assert sim.calls_by_method["PUT"] == 1  # only the device the carrier did not hold
    assert sim.applied_counts[devices[2]["iccid"]] == 1
    assert {k: v for k, v in sim.applied_counts.items() if k != devices[2]["iccid"]} == applied_before
    assert all(sim.device(d["iccid"])["status"] == "DEACTIVATED" for d in devices)

    changes = {c["iccid"]: c for c in _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)}
    assert {c["status"] for c in changes.values()} == {"PROCESSED"}
    for d in devices[:2]:
        assert changes[d["iccid"]]["status_details"].startswith("already in effect at Jasper")
        assert changes[d["iccid"]]["attempt_count"] == 1  # not claimed again
    assert changes[devices[2]["iccid"]]["attempt_count"] == 2
    # our database catches up for every device, recovered ones included
    assert {d["status"] for d in _rows(engine, device, device.c.id.in_([d["id"] for d in devices]))} == {"DEACTIVATED"}
    assert len(_rows(engine, device_history, device_history.c.bulk_change_id == bc_id)) == 3


def test_all_rows_held_by_carrier_means_no_put_at_all(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 2)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change).where(device_change.c.bulk_change_id == bc_id).values(status="PROCESSING")
        )
    sim.seed_devices({"iccid": d["iccid"], "status": "DEACTIVATED"} for d in devices)
    summary = process_batch(
        engine, load_bulk_change(engine, bc_id), _full_range(engine, bc_id), account, process_by=PROCESS_BY
    )
    assert summary.recovered == 2 and summary.processed == 2
    assert sim.calls_by_method.get("PUT", 0) == 0
    assert sum(sim.applied_counts.values()) == 0


# -- batch sizing ---------------------------------------------------------------------------------


def test_max_batches_per_run_is_48():
    assert MAX_BATCHES_PER_RUN == 48


@pytest.mark.parametrize("configured", [1, 100, 250, 2_000, 10_000])
@pytest.mark.parametrize("rows", [1, 47, 48, 49, 1_000, 12_001, 99_999, 100_000, 1_000_000])
def test_batch_size_never_exceeds_max_batches(configured, rows):
    size = batch_size_for(configured, rows)
    assert size >= configured  # never smaller than the carrier-sized batch
    assert math.ceil(rows / size) <= MAX_BATCHES_PER_RUN
    if math.ceil(rows / configured) <= MAX_BATCHES_PER_RUN:
        assert size == configured  # grown only when needed


def test_batch_size_for_100k_rows():
    size = batch_size_for(250, 100_000)
    assert size == math.ceil(100_000 / 48) == 2084
    assert math.ceil(100_000 / size) == 48


def test_batch_size_edge_cases():
    assert batch_size_for(250, 0) == 250
    assert batch_size_for(0, 0) == 1
    assert batch_size_for(0, 10) == 1
    assert batch_size_for(-5, -1) == 1
    assert batch_size_for(10, 1_000, max_batches=4) == 250


def test_plan_batches_caps_batches_and_covers_every_row_once(engine):
    ids = make_account(engine, "http://127.0.0.1:9/unused", batch_size=1)
    devices = make_devices(engine, ids, 200)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.ARCHIVAL, {})
    info = load_bulk_change(engine, bc_id)
    ranges = plan_batches(engine, info)
    assert len(ranges) == math.ceil(200 / math.ceil(200 / 48)) == 40
    assert sum(r.size for r in ranges) == 200
    all_ids = [c["id"] for c in _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)]
    covered = [i for r in ranges for i in all_ids if r.first_id <= i <= r.last_id]
    assert sorted(covered) == all_ids  # each row in exactly one range
    # explicit batch size honoured when it already fits
    assert len(plan_batches(engine, info, batch_size=50)) == 4


# -- finalize and scheduled rows ------------------------------------------------------------------


def test_finalize_derives_processed_and_writes_counts(engine, jasper_sim):
    ids, devices, account = _setup_jasper(engine, jasper_sim, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    info = load_bulk_change(engine, bc_id)
    assert info.status == "NEW"
    summaries = [process_batch(engine, info, r, account, process_by=PROCESS_BY) for r in plan_batches(engine, info)]

    result = finalize(engine, info, summaries)

    assert result.status is BulkChangeStatus.PROCESSED
    assert result.counts == {"PROCESSED": 3}
    header = _rows(engine, bulk_change, bulk_change.c.id == bc_id)[0]
    assert header["status"] == "PROCESSED"
    assert header["counts"] == {"PROCESSED": 3}
    assert header["processed_at"] is not None
    assert header["effective_at"] is None
    assert "**Status:** PROCESSED (3 devices)" in result.summary_markdown
    assert "carrier calls: 3" in result.summary_markdown


def test_finalize_with_unprocessed_rows_is_not_processed(engine):
    ids = make_account(engine, "http://127.0.0.1:9/unused")
    devices = make_devices(engine, ids, 4)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.ARCHIVAL, {})
    info = load_bulk_change(engine, bc_id)
    rng = _full_range(engine, bc_id)
    process_batch(engine, info, IdRange(rng.first_id, rng.first_id + 1, 2), None, process_by=PROCESS_BY)
    result = finalize(engine, info, [])
    assert result.status is BulkChangeStatus.PROCESSING
    assert result.counts == {"PROCESSED": 2, "NEW": 2}
    header = _rows(engine, bulk_change, bulk_change.c.id == bc_id)[0]
    assert header["status"] == "PROCESSING" and header["processed_at"] is None


def test_scheduled_rows_not_due_are_untouched_and_stay_scheduled(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 3)
    when = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    bc_id = make_bulk_change(
        engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"}, effective_at=when
    )
    info = load_bulk_change(engine, bc_id)
    assert info.status == "SCHEDULED"
    before = _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)

    assert plan_batches(engine, info) == []
    summary = process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY)

    assert (summary.rows, summary.carrier_calls) == (0, 0)
    assert sim.total_calls == 0
    assert _rows(engine, device_change, device_change.c.bulk_change_id == bc_id) == before
    assert all(c["status"] == "SCHEDULED" and c["attempt_count"] == 0 for c in before)
    assert not _rows(engine, bulk_change_log, bulk_change_log.c.bulk_change_id == bc_id)

    result = finalize(engine, info, [summary])
    assert result.status is BulkChangeStatus.SCHEDULED
    header = _rows(engine, bulk_change, bulk_change.c.id == bc_id)[0]
    assert header["status"] == "SCHEDULED"
    assert header["effective_at"] == when
    assert header["processed_at"] is None
    assert header["counts"] == {"SCHEDULED": 3}


def test_due_scheduled_rows_are_processed_and_later_ones_wait(engine, jasper_sim):
    sim = jasper_sim.simulator
    ids, devices, account = _setup_jasper(engine, jasper_sim, 4)
    past = (utcnow() - timedelta(minutes=5)).replace(microsecond=0)
    future = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    bc_id = make_bulk_change(
        engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"}, effective_at=future
    )
    due_ids = [c["id"] for c in _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)][:2]
    with engine.begin() as conn:
        conn.execute(sa.update(device_change).where(device_change.c.id.in_(due_ids)).values(effective_at=past))
    info = load_bulk_change(engine, bc_id)

    ranges = plan_batches(engine, info)
    assert sum(r.size for r in ranges) == 2
    summaries = [process_batch(engine, info, r, account, process_by=PROCESS_BY) for r in ranges]
    # even a range spanning every row leaves the not-yet-due ones alone
    assert process_batch(engine, info, _full_range(engine, bc_id), account, process_by=PROCESS_BY).rows == 0

    assert sim.calls_by_method["PUT"] == 2
    statuses = {c["id"]: c["status"] for c in _rows(engine, device_change, device_change.c.bulk_change_id == bc_id)}
    assert [statuses[i] for i in due_ids] == ["PROCESSED", "PROCESSED"]
    assert sorted(s for i, s in statuses.items() if i not in due_ids) == ["SCHEDULED", "SCHEDULED"]

    result = finalize(engine, info, summaries)
    assert result.status is BulkChangeStatus.SCHEDULED
    assert result.counts == {"PROCESSED": 2, "SCHEDULED": 2}
    header = _rows(engine, bulk_change, bulk_change.c.id == bc_id)[0]
    assert header["effective_at"] == future


@pytest.mark.parametrize(
    ("integration", "rate", "in_flight", "chunk"),
    [
        ("jasper", 5.0, 1, 10),  # 2 s at Jasper's published 5 calls/s
        ("jasper", 0.0, 8, 32),  # no rate limit: four rounds of the calls in flight
        ("jasper", 0.0, 0, 256),  # no limit at all: the clients run 64 at once
        ("jasper", 100.0, 4, 200),
        ("thingspace", 5.0, 1, 700),  # asynchronous: the whole batch is one request
    ],
)
def test_claim_chunk_is_about_two_seconds_of_the_accounts_rate(engine, integration, rate, in_flight, chunk):
    from bulkchange_pipeline.carriers import CarrierAccount
    from bulkchange_pipeline.engine.batch import claim_chunk_size

    ids = make_account(
        engine, "http://127.0.0.1:9", integration=integration, rate_per_second=rate, max_concurrency=in_flight
    )
    bc_id = make_bulk_change(
        engine, ids, make_devices(engine, ids, 1), ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"}
    )
    info = load_bulk_change(engine, bc_id)
    account = CarrierAccount(
        info.service_provider.id,
        integration,
        "http://127.0.0.1:9",
        "u",
        "s",
        rate_per_second=rate,
        max_concurrency=in_flight,
    )
    assert claim_chunk_size(info, account, 700) == chunk


def test_summary_says_how_many_failures_it_does_not_show_and_where_they_are() -> None:
    """Twelve failures, ten shown: the summary counts the other two and names the commands that list all."""
    from types import SimpleNamespace

    from bulkchange_pipeline.engine.bulk_change import summary_markdown

    info = SimpleNamespace(id=42, change_type=ChangeType.STATUS_UPDATE, service_provider=SimpleNamespace(name="Acme"))
    failures = [{"device": f"89{i:018d}", "status": "API_FAILED", "reason": "refused"} for i in range(10)]
    text = summary_markdown(
        info, BulkChangeStatus.PROCESSED, {"PROCESSED": 5, "API_FAILED": 9, "ERROR": 3}, [], failures
    )
    assert "First failures (10 of 12):" in text
    assert "2 more failed devices are not shown" in text
    assert "bulkchange results 42 --csv -" in text and "/bulk-changes/42/devices?status=API_FAILED" in text

    all_shown = summary_markdown(info, BulkChangeStatus.PROCESSED, {"API_FAILED": 1}, [], failures[:1])
    assert "First failures (1 of 1):" in all_shown and "not shown" not in all_shown
