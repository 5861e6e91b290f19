"""Issue 14: callbacks after a receiver restart, and run keys that do not depend on commit order.

- A start of the callback receiver (the app that serves ``/callbacks/...``) is recorded in the
  business database by its lifespan; rows of PENDING bulk changes sent before that start (their
  callbacks may have been lost while it was down) are polled by one reconcile run right away,
  not after ``poll_after_seconds``.
- ``async_results_sensor`` keys callback runs on the *set* of unapplied callbacks: a callback that
  commits after a higher id was seen (PostgreSQL takes ids at insert, not at commit) still gets a
  run, and callbacks a run left unapplied never hold back the poll.

Real HTTP (Teal and ThingSpace simulators, the real app under uvicorn or TestClient), real Dagster
instance and runs, both backends; the interleaving test holds a real PostgreSQL transaction open.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import evaluate_sensor, execute
from bulkchange_pipeline.defs.reconcile import POLL_SENT_BEFORE_TAG
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.simulators.teal import TealSimulator
from bulkchange_pipeline.simulators.teal_rules import make_eids
from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.callbacks import AUTHENTICATED_AS, latest_receiver_start, record_receiver_start
from bulkchange_pipeline.store.db import make_engine, shared_engine, utcnow
from bulkchange_pipeline.store.schema import (
    bulk_change,
    callback_receiver_start,
    carrier_callback,
    device,
    device_change,
)

from ..factories import make_account, make_bulk_change, make_devices
from ..ports import free_port
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

ASYNC = "async_results_sensor"
RECONCILE = "reconcile_async_job"
TEAL_KEY, TEAL_SECRET = "teal-key-14", "teal-SECRET-14c"


def _defs(poll_after: int = 3600):
    return build_definitions(
        carriers=CarrierGatewayResource(
            timeout_seconds=5.0,
            max_attempts=4,
            retry_wait_seconds=0.02,
            poll_after_seconds=poll_after,
            async_timeout_seconds=7200,
        )
    )


@contextmanager
def serve_receiver(db_url: str, port: int) -> Iterator[str]:
    """``bulkchange serve`` in a thread: the real app under uvicorn, lifespan on, on ``port``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(db_url),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the callback receiver did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _tick(instance, defs) -> list:
    return list(evaluate_sensor(instance, defs, sensor_name=ASYNC).run_requests or [])


def _run(instance, defs, requests) -> None:
    for rr in requests:
        assert execute(instance, defs, rr.partition_key, dict(rr.tags), job_name=RECONCILE).success


# --- the receiver records its start ------------------------------------------------------------------


def test_receiver_start_is_recorded_before_it_serves_and_its_stop_on_shutdown(db_url, engine):
    assert latest_receiver_start(engine) is None
    before = utcnow()
    with TestClient(create_app(db_url)) as client:
        first = latest_receiver_start(engine)
        assert first is not None and before <= first.started_at <= utcnow()  # recorded before the first request
        assert client.get("/healthz").status_code == 200
    with TestClient(create_app(db_url)):  # a restart
        second = latest_receiver_start(engine)
        assert second.id != first.id and second.started_at >= first.started_at
    with engine.connect() as conn:
        rows = conn.execute(sa.select(callback_receiver_start).order_by(callback_receiver_start.c.id)).all()
    assert [r.id for r in rows] == [first.id, second.id]
    assert all(r.stopped_at is not None and r.process for r in rows)  # clean shutdowns are recorded too


def test_receiver_start_is_recorded_once_the_database_accepts_it(tmp_path, monkeypatch):
    """The receiver serves even if the start cannot be written yet (here: the schema is one
    migration behind), and records it, with its original time, as soon as it can."""
    from bulkchange_pipeline.intake import callbacks as intake_callbacks

    monkeypatch.setattr(intake_callbacks, "START_RECORD_RETRY_SECONDS", 0.05)
    url = f"sqlite:///{tmp_path / 'bc.db'}"
    migrate.upgrade(url, "0005")
    eng = make_engine(url)
    try:
        before = utcnow()
        with TestClient(create_app(url)) as client:
            assert client.get("/healthz").status_code == 200
            migrate.upgrade(url)
            deadline = time.monotonic() + 10
            while (start := latest_receiver_start(eng)) is None:
                assert time.monotonic() < deadline, "the start was never recorded"
                time.sleep(0.05)
            assert before <= start.started_at <= utcnow()
    finally:
        eng.dispose()
        shared_engine(url).dispose()


# --- rows sent while the receiver was down are polled right after its restart ----------------------


@pytest.fixture
def teal(monkeypatch):
    sim = TealSimulator({TEAL_KEY: TEAL_SECRET}, calls_per_minute=0, operation_delay_seconds=0.1)
    sim.configure(callback_attempts=2, callback_retry_seconds=0.02)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_USERNAME", TEAL_KEY)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_SECRET", TEAL_SECRET)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
    sim.close()


def _teal_bulk_change(engine, sim, ids, count, start):
    devices = make_devices(engine, ids, count, status="online", start=start)
    eids = make_eids(count, start=start)
    with engine.begin() as conn:
        for d, eid in zip(devices, eids):
            conn.execute(sa.update(device).where(device.c.id == d["id"]).values(eid=eid))
    sim.seed_devices({"eid": e, "iccid": d["iccid"], "deviceStatus": "online"} for d, e in zip(devices, eids))
    bc_id = make_bulk_change(
        engine, ids, [{**d, "eid": e} for d, e in zip(devices, eids)], ChangeType.STATUS_UPDATE, {"status": "stopped"}
    )
    with engine.begin() as conn:
        for d, eid in zip(devices, eids):
            conn.execute(sa.update(device_change).where(device_change.c.device_id == d["id"]).values(eid=eid))
    return bc_id, eids


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_rows_sent_while_the_receiver_was_down_are_polled_once_right_after_its_restart(
    db_url, engine, dagster_instance, teal, monkeypatch
):
    sim, base_url = teal
    port = free_port()  # the receiver's address, with nothing listening yet: it is down
    monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", f"http://127.0.0.1:{port}")
    ids = make_account(engine, base_url, integration="teal", name="TEST_TEAL", max_concurrency=4, batch_size=100)
    defs = _defs(poll_after=3600)  # the normal poll is an hour away

    lost_bc, lost_eids = _teal_bulk_change(engine, sim, ids, 20, start=0)
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs and all(r.success for r in runs)
    assert get_bulk_change(engine, lost_bc)["status"] == "PENDING"
    sim.wait_idle(15)
    _wait(lambda: sim.stats()["callbacks_failed"] >= 1)  # Teal called back while the receiver was down: lost
    assert _tick(dagster_instance, defs) == []  # nothing to do but wait for the poll, an hour later

    with serve_receiver(db_url, port):  # `bulkchange serve` restarted
        start = latest_receiver_start(engine)
        assert start is not None
        # A bulk change sent after the restart is not polled early: its callbacks reach the receiver
        # (here Teal loses them itself, so its rows stay waiting).
        sim.configure(drop_callback_rate=1.0)
        later_bc, _ = _teal_bulk_change(engine, sim, ids, 5, start=20)
        _, runs = sensor_then_runs(dagster_instance, defs)
        assert runs and all(r.success for r in runs) and get_bulk_change(engine, later_bc)["status"] == "PENDING"
        sim.wait_idle(15)

        first, again = _tick(dagster_instance, defs), _tick(dagster_instance, defs)
        key = f"bc-{lost_bc}-restart-{start.id}"
        assert [r.run_key for r in first] == [key]  # only the bulk change sent before the restart
        assert [r.run_key for r in again] == [key]  # the same key every tick: the daemon runs it once
        assert first[0].tags[POLL_SENT_BEFORE_TAG] == start.started_at.isoformat()
        assert first[0].tags["bulkchange/carrier_account"] == "cred-TEST_TEAL"
        assert first[0].tags["bulkchange/carrier_account_name"] == "TEST_TEAL account"
        assert first[0].tags["bulkchange/tenant_name"] == "acme"
        _run(dagster_instance, defs, first)

    assert count_rows_by_status(engine, lost_bc) == {"PROCESSED": 20}  # the operation-result poll settled them
    assert get_bulk_change(engine, lost_bc)["status"] == "PROCESSED"
    assert all(sim.device(e)["deviceStatus"] == "STOPPED" for e in lost_eids)
    assert max(sim.applied_counts.values()) == 1
    assert count_rows_by_status(engine, later_bc) == {"PROCESSING": 5}  # not polled before poll_after

    # Each restart is one more poll of the rows still waiting, under a new key.
    with serve_receiver(db_url, port):
        restarted = latest_receiver_start(engine)
    assert restarted.id != start.id
    assert [r.run_key for r in _tick(dagster_instance, defs)] == [f"bc-{later_bc}-restart-{restarted.id}"]


def test_only_integrations_that_call_back_are_polled_after_a_restart(engine, dagster_instance):
    """A restart cannot have lost an answer of a carrier that never calls back (Telegence polls,
    and gives up after 6 polls): its waiting rows are not polled early."""
    ids = make_account(engine, "http://127.0.0.1:9", integration="telegence", name="TEST_TG")
    devices = make_devices(engine, ids, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    sent = utcnow() - timedelta(minutes=1)
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == bc_id)
            .values(status="PROCESSING", carrier_request_id="tg-1", updated_at=sent)
        )
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(status="PENDING"))
    record_receiver_start(engine, "test:1")
    assert _tick(dagster_instance, _defs()) == []


# --- run keys that do not depend on commit order ----------------------------------------------------


@pytest.fixture
def thingspace(monkeypatch, db_url):
    sim = ThingSpaceSimulator({TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)})
    sim.configure(drop_rate=1.0)  # every callback is injected by the test, in the order it chooses
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
    with run_app_in_thread(create_app(db_url)) as app, sim.run_in_thread() as handle:
        monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", app.root_url)
        yield sim, handle.base_url, app.root_url
    sim.close()


def _pending_thingspace(engine, instance, defs, sim, base_url, n):
    ids = make_account(engine, base_url, integration="thingspace", name="TEST_TS", max_concurrency=4, batch_size=10_000)
    devices = make_devices(engine, ids, n, status="active")
    sim.seed_devices({"iccid": d["iccid"], "state": "active", "servicePlan": "M2M-4G-1GB"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    _, runs = sensor_then_runs(instance, defs)
    assert runs and all(r.success for r in runs)
    assert get_bulk_change(engine, bc_id)["status"] == "PENDING"
    with engine.connect() as conn:
        requests = dict(
            conn.execute(
                sa.select(device_change.c.iccid, device_change.c.carrier_request_id).where(
                    device_change.c.bulk_change_id == bc_id
                )
            ).all()
        )
    assert all(requests.values())
    return bc_id, [d["iccid"] for d in devices], requests


def _callback(request_id: str, iccid: str) -> dict:
    """A ThingSpace success callback for one device, as the carrier sends it."""
    return {
        "username": TS_CB_USER,
        "password": TS_CB_PASSWORD,
        "requestId": request_id,
        "deviceIds": [{"kind": "iccid", "id": iccid}],
        "status": "Success",
        "deviceResponse": {"suspendResponse": {"deviceIds": [{"kind": "iccid", "id": iccid}]}},
    }


@pytest.mark.parametrize("first_run", ["applied", "lost"])
def test_callback_committed_after_a_higher_id_was_seen_still_gets_a_run(
    db_url, engine, dagster_instance, thingspace, first_run
):
    """Callback A takes its id first but commits last (an intake transaction held open); B takes
    the next id and commits at once; the sensor sees B only. ``applied``: the run for B ran before
    A commits. ``lost``: that run never applied B (cancelled while queued, or its worker killed
    before it marked the callbacks applied), the case where keying on the newest id (B's) asks
    for the very key already used, so A and B waited for the poll."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: ids commit in the order they are taken")
    sim, base_url, receiver = thingspace
    defs = _defs(poll_after=3600)
    bc_id, (iccid_a, iccid_b), requests = _pending_thingspace(engine, dagster_instance, defs, sim, base_url, 2)
    body_a = _callback(requests[iccid_a], iccid_a)
    stored_a = {k: v for k, v in body_a.items() if k not in ("username", "password")} | {AUTHENTICATED_AS: ["TEST_TS"]}

    holder = make_engine(db_url)
    conn_a = holder.connect()
    try:
        tx_a = conn_a.begin()  # A: inserted (id taken), not committed
        id_a = conn_a.execute(
            sa.insert(carrier_callback)
            .values(
                integration="thingspace",
                request_id=requests[iccid_a],
                device_key=iccid_a,
                payload=stored_a,
                received_at=utcnow(),
            )
            .returning(carrier_callback.c.id)
        ).scalar_one()
        answer = httpx.post(
            f"{receiver}/callbacks/thingspace", json=_callback(requests[iccid_b], iccid_b)
        )  # B: the real endpoint
        assert answer.status_code == 200 and answer.json()["stored"] == 1
        with engine.connect() as conn:
            id_b = conn.execute(
                sa.select(carrier_callback.c.id).where(carrier_callback.c.device_key == iccid_b)
            ).scalar_one()
        assert id_b > id_a  # B's id is higher, yet B is the one committed

        seen = _tick(dagster_instance, defs)
        assert [r.partition_key for r in seen] == [str(bc_id)]
        used = {r.run_key for r in seen}
        if first_run == "applied":
            _run(dagster_instance, defs, seen)
            assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 1, "PROCESSING": 1}
            assert _tick(dagster_instance, defs) == []  # A is not visible yet: nothing new
        tx_a.commit()
    finally:
        conn_a.close()
        holder.dispose()

    after = _tick(dagster_instance, defs)
    new = [r for r in after if r.run_key not in used]
    assert new, f"A committed after {sorted(used)} was requested, and no new run key came: {[r.run_key for r in after]}"
    _run(dagster_instance, defs, new)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 2}
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(carrier_callback).where(carrier_callback.c.applied_at.is_(None))
            ).scalar_one()
            == 0
        )


def test_callbacks_a_run_left_unapplied_do_not_hold_back_the_poll(engine, dagster_instance, thingspace):
    """The run requested for stored callbacks never applied them (cancelled, or killed): the
    callback key stays the same, so the daemon does not request it again; the poll must still
    come when it is due (before, a pending callback suppressed the poll key, and with it the
    timeout, which reconcile runs apply: the bulk change stayed PENDING for good)."""
    sim, base_url, receiver = thingspace
    defs = _defs(poll_after=3600)
    bc_id, iccids, requests = _pending_thingspace(engine, dagster_instance, defs, sim, base_url, 2)
    assert (
        httpx.post(f"{receiver}/callbacks/thingspace", json=_callback(requests[iccids[0]], iccids[0])).status_code
        == 200
    )
    first = _tick(dagster_instance, defs)
    assert len(first) == 1 and "-cb-" in first[0].run_key  # requested, then never applied
    with engine.begin() as conn:  # an hour later
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == bc_id)
            .values(updated_at=utcnow() - timedelta(hours=1, minutes=1))
        )
    later = _tick(dagster_instance, defs)
    new = [r for r in later if r.run_key != first[0].run_key]
    assert [r.run_key.split("-")[2] for r in new] == ["poll"], [r.run_key for r in later]
    _run(dagster_instance, defs, new)
    assert count_rows_by_status(engine, bc_id).get("PROCESSED", 0) >= 1  # the stored callback was applied
