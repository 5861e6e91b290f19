"""Asynchronous carriers end to end: process run -> rows PROCESSING, bulk change PENDING ->
carrier callbacks to the real callback endpoint -> async_results_sensor -> reconcile run ->
PROCESSED. ThingSpace (per-device callbacks) and Teal (operation result), over real HTTP."""

from __future__ import annotations

import base64
import time

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs import clock as defs_clock
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.domain.clock import ManualClock
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.simulators.teal import TealSimulator
from bulkchange_pipeline.simulators.teal_rules import make_eids
from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import bulk_change_log, carrier_callback, device, device_change

from ..factories import make_account, make_bulk_change, make_devices
from ..simulators.fixtures import (
    TS_ACCOUNT,
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
)
from .harness import sensor_then_runs
from .test_outcome import partition_state

TEAL_KEY, TEAL_SECRET = "teal-key-77", "teal-SECRET-0b9d"


def _defs(poll_after: int = 3600, timeout: int = 7200):
    carriers = CarrierGatewayResource(
        timeout_seconds=5.0,
        max_attempts=6,
        retry_wait_seconds=0.02,
        poll_after_seconds=poll_after,
        async_timeout_seconds=timeout,
    )
    return build_definitions(carriers=carriers)


@pytest.fixture
def callback_app(db_url, monkeypatch):
    with run_app_in_thread(create_app(db_url)) as handle:
        monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", handle.root_url)
        yield handle


@pytest.fixture
def thingspace(monkeypatch, callback_app):
    sim = ThingSpaceSimulator({TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)})
    sim.configure(callback_retry_seconds=0.05)
    for key, value in {
        "USERNAME": TS_USER,
        "SECRET": TS_PASSWORD,
        "CLIENT_ID": TS_CLIENT_ID,
        "CLIENT_SECRET": TS_CLIENT_SECRET,
        "ACCOUNT_NAME": TS_ACCOUNT,
        "CALLBACK_USERNAME": TS_CB_USER,
        "CALLBACK_PASSWORD": TS_CB_PASSWORD,
    }.items():
        monkeypatch.setenv(f"BULKCHANGE_CRED_TEST_TS_{key}", value)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
    sim.close()


def _ts_seed(engine, sim, base_url, n, state="active"):
    ids = make_account(engine, base_url, integration="thingspace", name="TEST_TS", max_concurrency=4, batch_size=10_000)
    devices = make_devices(engine, ids, n, status=state)
    sim.seed_devices({"iccid": d["iccid"], "state": state, "servicePlan": "M2M-4G-1GB"} for d in devices)
    return ids, devices


def _stop_time(monkeypatch) -> ManualClock:
    """From now on the sensors and reconcile runs see time stand still until the test advances it."""
    clock = ManualClock()
    monkeypatch.setattr(defs_clock, "CLOCK", clock)
    return clock


def _settle(instance, defs, sim, rounds=5):
    """Let callbacks land, then run the async sensor and its reconcile runs until nothing is requested."""
    runs = []
    for _ in range(rounds):
        sim.wait_idle(30)
        time.sleep(0.2)
        result, new_runs = sensor_then_runs(instance, defs, sensor_name="async_results_sensor")
        runs += new_runs
        if not result.run_requests:
            break
    return runs


def test_thingspace_status_update_5000_devices_via_callbacks(engine, dagster_instance, thingspace):
    sim, base_url = thingspace
    ids, devices = _ts_seed(engine, sim, base_url, 5_000)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    defs = _defs()

    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSING": 5_000}
    assert get_bulk_change(engine, bc_id)["status"] == "PENDING"  # waiting on the carrier, no run waiting

    reconcile_runs = _settle(dagster_instance, defs, sim)
    assert reconcile_runs and all(r.success for r in reconcile_runs)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 5_000}
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    assert max(sim.applied_counts.values()) == 1 and len(sim.applied_counts) == 5_000
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(device).where(device.c.status == "suspend")).scalar()
            == 5_000
        )


def test_thingspace_duplicate_out_of_order_delayed_and_dropped_callbacks(
    engine, dagster_instance, thingspace, monkeypatch
):
    sim, base_url = thingspace
    ids, devices = _ts_seed(engine, sim, base_url, 300)
    sim.configure(duplicate_rate=0.3, shuffle_callbacks=True, callback_delay_seconds=0.3, drop_rate=0.05, seed=11)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    # Polls confirm nothing before the timeout here (bulk requests have no per-device status), so
    # rows whose callback was dropped must end API_FAILED once the timeout passes.
    defs = _defs(poll_after=1, timeout=2)

    sensor_then_runs(dagster_instance, defs)
    clock = _stop_time(monkeypatch)  # every row is sent by now
    _settle(dagster_instance, defs, sim)
    clock.advance(2.2)  # past the 2 s timeout: rows whose callback never came end API_FAILED
    _settle(dagster_instance, defs, sim)
    counts = count_rows_by_status(engine, bc_id)
    dropped = sim.stats()["callbacks_dropped"]
    assert dropped > 0 and sim.stats()["callbacks_duplicated"] > 0
    assert sum(counts.values()) == 300 and "PROCESSING" not in counts
    assert counts.get("API_FAILED", 0) <= dropped  # only rows whose answer never came (or a poll confirmed)
    with engine.connect() as conn:
        failed = (
            conn.execute(sa.select(device_change.c.status_details).where(device_change.c.status == "API_FAILED"))
            .scalars()
            .all()
        )
        stored = conn.execute(sa.select(carrier_callback.c.payload)).scalars().all()
        logs = " ".join(str(r) for r in conn.execute(sa.select(bulk_change_log)).all())
    assert all("no answer" in f for f in failed)
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    # Stored callbacks and logs hold neither the callback credentials nor the account's secrets.
    dump = str(stored) + logs
    for secret in (
        TS_CB_PASSWORD,
        TS_PASSWORD,
        TS_CLIENT_SECRET,
        base64.b64encode(f"{TS_CLIENT_ID}:{TS_CLIENT_SECRET}".encode()).decode(),
    ):
        assert secret not in dump


def test_callback_with_wrong_credentials_is_refused(engine, thingspace, callback_app):
    import httpx

    sim, base_url = thingspace
    _ts_seed(engine, sim, base_url, 1)
    body = {
        "username": TS_CB_USER,
        "password": "wrong",
        "requestId": "r-1",
        "deviceIds": [{"kind": "iccid", "id": "1"}],
        "status": "Success",
        "deviceResponse": {"activateResponse": {"deviceIds": []}},
    }
    assert httpx.post(f"{callback_app.root_url}/callbacks/thingspace", json=body).status_code == 401
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(carrier_callback)).scalar() == 0


@pytest.fixture
def teal(monkeypatch, callback_app):
    sim = TealSimulator({TEAL_KEY: TEAL_SECRET}, calls_per_minute=0, operation_delay_seconds=0.2)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_USERNAME", TEAL_KEY)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_SECRET", TEAL_SECRET)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
    sim.close()


@pytest.mark.parametrize(
    "change_type,target,expect,start,drop",
    [
        (ChangeType.STATUS_UPDATE, {"status": "stopped"}, lambda d: d["deviceStatus"] == "STOPPED", "online", 0.0),
        (ChangeType.STATUS_UPDATE, {"status": "online"}, lambda d: d["deviceStatus"] == "ONLINE", "stopped", 0.0),
        (ChangeType.CARRIER_RATE_PLAN_CHANGE, None, None, "online", 0.0),
        # Every callback lost: the operation-result poll settles the rows once they are overdue.
        (ChangeType.STATUS_UPDATE, {"status": "stopped"}, lambda d: d["deviceStatus"] == "STOPPED", "online", 1.0),
    ],
)
def test_teal_through_operation_result(
    engine, dagster_instance, teal, monkeypatch, change_type, target, expect, start, drop
):
    sim, base_url = teal
    sim.configure(drop_callback_rate=drop)
    ids = make_account(engine, base_url, integration="teal", name="TEST_TEAL", max_concurrency=4, batch_size=100)
    devices = make_devices(engine, ids, 60, status=start)
    eids = make_eids(60)
    with engine.begin() as conn:
        for d, eid in zip(devices, eids):
            conn.execute(sa.update(device).where(device.c.id == d["id"]).values(eid=eid))
    sim.seed_devices({"eid": e, "iccid": d["iccid"], "deviceStatus": start} for d, e in zip(devices, eids))
    if target is None:
        plan = list(sim.plans)[1]  # devices are seeded on the first plan
        target = {"carrier_rate_plan": plan}
        expect = lambda d: d["planUuid"] == plan  # noqa: E731
    bc_id = make_bulk_change(engine, ids, [{**d, "eid": e} for d, e in zip(devices, eids)], change_type, target)
    with engine.begin() as conn:
        for d, eid in zip(devices, eids):
            conn.execute(sa.update(device_change).where(device_change.c.device_id == d["id"]).values(eid=eid))
    defs = _defs(poll_after=1 if drop else 3600)
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs[0].success
    assert get_bulk_change(engine, bc_id)["status"] == "PENDING"
    waiting = partition_state(dagster_instance, str(bc_id))
    assert (waiting["outcome"], waiting["settled"]) == ("waiting_on_carrier", "failed:WARN")
    if drop:
        _stop_time(monkeypatch).advance(1.2)  # overdue: the sensor requests a poll run
    _settle(dagster_instance, defs, sim)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 60}
    # The final outcome is on the partition, written by the reconcile run that settled it.
    final = partition_state(dagster_instance, str(bc_id))
    assert (final["outcome"], final["settled"], final["no_failed_devices"]) == ("done", "passed", "passed")
    assert max(sim.applied_counts.values()) == 1
    if expect:
        assert all(expect(sim.device(e)) for e in eids)
    with engine.connect() as conn:
        dump = " ".join(str(r) for t in (bulk_change_log, carrier_callback) for r in conn.execute(sa.select(t)).all())
    assert TEAL_SECRET not in dump
