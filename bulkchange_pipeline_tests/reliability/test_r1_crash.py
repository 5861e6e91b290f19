"""R1: a run worker killed with SIGKILL at a chosen point; re-running the partition finishes every
device exactly once at the carrier and leaves every row final.

The run executes in a real child process (``worker.py``: the production local runner on a
persistent Dagster instance). Each kill point is reached by watching simulator and database state;
where a point is only milliseconds wide, the test holds what the run needs next, so the kill lands
exactly there: the simulator holds the next carrier call (a held call is never applied), or the
test holds the lock finalize's write needs (PostgreSQL: the header row; SQLite: the write lock):

- before_any_call: the first carrier call of the run is held; rows of batch 1 are claimed.
- mid_batch: batch 2 is half applied at the carrier, its results not yet recorded.
- between_batches: batch 2's results are committed, nothing of batch 3 reached the carrier.
- during_finalize: every batch is recorded, the bulk change header is not yet written.

Jasper (synchronous, one PUT per device; and the same account over SOAP, one EditTerminal per
device, read back with GetTerminalDetails) and ThingSpace (asynchronous activations: one accepted
request per batch, results by callback; an accepted request must never be sent again, reconcile
finishes it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import API_PREFIX as JASPER_API_PREFIX
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import bulk_change, device

from ..defs.harness import execute, fast_definitions, sensor_then_runs
from ..factories import JASPER_USER, make_account, make_bulk_change, make_devices
from ..waiting import wait_until
from .common import (
    WarmWorkers,
    Worker,
    assert_results_consistent,
    row_statuses,
)

KILL_POINTS = ("before_any_call", "mid_batch", "between_batches", "during_finalize")
N, BATCH = 120, 30


def _bulk_status(engine: sa.Engine, bc_id: int) -> str:
    return get_bulk_change(engine, bc_id)["status"]


@contextlib.contextmanager
def finalize_blocked(engine: sa.Engine, bc_id: int, worker: Worker, recorded: Callable[[], bool]) -> Iterator[None]:
    """Yields once every batch is recorded (``recorded()``) and the run's finalize cannot write the
    header: the test holds what that write needs.

    PostgreSQL: a lock on the header row (FOR NO KEY UPDATE, so log rows referencing it can still
    be inserted), taken once the run has marked it PROCESSING; yields when finalize waits on it.
    SQLite: the database write lock (BEGIN IMMEDIATE), grabbed in a tight loop and kept the first
    time it is held with every batch recorded (nothing else writes between the last batch's
    results and finalize, and readers are not blocked in WAL mode).
    """
    if engine.dialect.name == "postgresql":
        wait_until(lambda: _bulk_status(engine, bc_id) == "PROCESSING" or not worker.alive(), what="run started")
        with engine.connect() as conn:
            conn.execute(sa.select(bulk_change.c.id).where(bulk_change.c.id == bc_id).with_for_update(key_share=True))

            def finalize_waiting() -> bool:
                with engine.connect() as probe:
                    return bool(
                        probe.execute(
                            sa.text(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE bulk_change %'"
                            )
                        ).scalar()
                    )

            wait_until(
                lambda: (recorded() and finalize_waiting()) or not worker.alive(),
                timeout=120,
                interval=0.01,
                what="finalize waiting",
            )
            yield
            conn.rollback()
        return
    raw = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 120
        while worker.alive() and time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # the run is writing
                time.sleep(0.001)
                continue
            if recorded():
                break
            raw.execute("ROLLBACK")
            time.sleep(0.002)
        yield
        if raw.in_transaction:
            raw.execute("ROLLBACK")
    finally:
        raw.close()


def _run_until_killed(engine: sa.Engine, bc_id: int, point: str, reached, workers: WarmWorkers) -> Worker:
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    worker = workers.start(str(bc_id))
    try:
        if point == "during_finalize":
            with finalize_blocked(engine, bc_id, worker, reached):
                worker.kill()
        else:
            wait_until(lambda: reached() or not worker.alive(), timeout=120, what=point)
    finally:
        worker.kill()
    assert worker.proc.returncode == -9, f"the worker ended by itself before {point}:\n{worker.output()}"
    return worker


# --- Jasper: synchronous, one PUT (REST) or one EditTerminal (SOAP) per device --------------------

SOAP_PASSWORD, LICENSE_KEY = "r1-soap-PASSWORD-5c", "r1-license-KEY-9d"


@pytest.mark.parametrize("protocol", ["rest", "soap"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_jasper_worker_killed_then_rerun_applies_each_device_once(
    point, protocol, engine, workers, jasper, monkeypatch
):
    """Over SOAP the account is the same Control Center user, with its SOAP password and license
    key in the credentials entry: the run goes through EditTerminal, the re-run's check through
    GetTerminalDetails, and the simulator holds and counts EditTerminal calls as it does PUTs."""
    sim, base_url = jasper
    sim.configure(latency_ms=2)
    if protocol == "soap":
        sim.configure(soap_accounts={JASPER_USER: SOAP_PASSWORD}, license_keys=[LICENSE_KEY])
        monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SOAP_PASSWORD", SOAP_PASSWORD)
        monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_LICENSE_KEY", LICENSE_KEY)
        base_url = base_url.removesuffix(JASPER_API_PREFIX)  # the Control Center host: /ws/service/terminal
    ids = make_account(engine, base_url, max_concurrency=2, batch_size=BATCH, protocol=protocol)
    devices = make_devices(engine, ids, N)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    batch = [{d["iccid"] for d in devices[i : i + BATCH]} for i in range(0, N, BATCH)]

    if point == "before_any_call":
        sim.hold_when = lambda iccid, body: True
        reached = lambda: sim.holder.held
    elif point == "mid_batch":
        sim.hold_when = lambda iccid, body: len(sim.applied_counts) >= BATCH + BATCH // 2
        reached = lambda: sim.holder.held
    elif point == "between_batches":
        sim.hold_when = lambda iccid, body: iccid in batch[2]  # backstop: nothing of batch 3 is applied
        reached = lambda: count_rows_by_status(engine, bc_id).get("PROCESSED", 0) == 2 * BATCH or sim.holder.held
    else:
        reached = lambda: (
            count_rows_by_status(engine, bc_id) == {"PROCESSED": N} and _bulk_status(engine, bc_id) == "PROCESSING"
        )

    _run_until_killed(engine, bc_id, point, reached, workers)
    sim.holder.released.set()
    sim.hold_when = None
    counts, applied = count_rows_by_status(engine, bc_id), dict(sim.applied_counts)
    # Where the kill landed.
    # Rows are claimed a chunk at a time (4 rounds of the account's 2 in flight): a crash leaves at
    # most one chunk PROCESSING for the re-run to check at the carrier, not a whole batch.
    chunk = 8
    if point == "before_any_call":
        assert applied == {} and counts == {"PROCESSING": chunk, "NEW": N - chunk}
    elif point == "mid_batch":
        assert BATCH < len(applied) < 2 * BATCH
        assert (
            counts["PROCESSING"] == chunk and BATCH <= counts["PROCESSED"] < len(applied) <= counts["PROCESSED"] + chunk
        ), counts
        assert counts["NEW"] == N - counts["PROCESSED"] - chunk
    elif point == "between_batches":
        assert set(applied) == batch[0] | batch[1]
        assert (
            counts.get("PROCESSED") == 2 * BATCH and counts.get("NEW", 0) + counts.get("PROCESSING", 0) == N - 2 * BATCH
        )
    else:
        assert len(applied) == N and counts == {"PROCESSED": N}
        assert _bulk_status(engine, bc_id) == "PROCESSING", "the kill landed after finalize"

    with dg.DagsterInstance.get() as instance:
        assert execute(instance, fast_definitions(), str(bc_id)).success
    stats = sim.stats()
    assert stats["applied_devices"] == N and stats["applied_more_than_once"] == 0
    if protocol == "soap":  # it went over SOAP: every change an EditTerminal, no REST call
        assert stats["calls_by_method"].get("PUT", 0) == 0 and stats["soap_calls"]["EditTerminal"] >= N
    assert all(len(sim.edits[d["iccid"]]) == 1 for d in devices)
    # Not even a harmless repeat: a device the carrier already had was read back (GET), not re-sent.
    assert all(sim.puts[d["iccid"]] == 1 for d in devices), [i for i, n in sim.puts.items() if n != 1][:5]
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": N}
    assert _bulk_status(engine, bc_id) == "PROCESSED"
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(device).where(device.c.status == "DEACTIVATED")
            ).scalar()
            == N
        )
    assert_results_consistent(engine, [bc_id], field="status")


# --- ThingSpace: asynchronous, one accepted request per batch, results by callback ------------------

TS_N, TS_BATCH = 100, 25


def _with_request_id(engine: sa.Engine, bc_id: int) -> int:
    return sum(1 for r in row_statuses(engine, bc_id) if r.carrier_request_id)


def _settle(sim, rounds: int = 6) -> list[dg.ExecuteInProcessResult]:
    """Let the carrier finish and its callbacks land, then run async_results_sensor and the
    reconcile runs it requests until it requests none."""
    runs: list[dg.ExecuteInProcessResult] = []
    with dg.DagsterInstance.get() as instance:
        for _ in range(rounds):
            assert sim.wait_idle(30)  # its callbacks are stored by the callback app before it answers them
            result, new = sensor_then_runs(instance, fast_definitions(), sensor_name="async_results_sensor")
            runs += new
            if not result.run_requests:
                break
    return runs


@pytest.mark.parametrize("point", KILL_POINTS)
def test_thingspace_worker_killed_then_rerun_never_resends_accepted_requests(point, engine, workers, thingspace):
    """Activations: the carrier keeps each device "pending activation" for 1.5 s, so during the
    re-run the accepted requests are still pending (only a stored requestId protects them)."""
    sim, base_url = thingspace
    sim.configure(activation_seconds=1.5)
    ids = make_account(
        engine, base_url, integration="thingspace", name="TEST_TS", max_concurrency=2, batch_size=TS_BATCH
    )
    devices = make_devices(engine, ids, TS_N, status="deactive")
    sim.seed_devices({"iccid": d["iccid"], "state": "deactive", "servicePlan": "M2M-4G-1GB"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "active"})
    batch = [{d["iccid"] for d in devices[i : i + TS_BATCH]} for i in range(0, TS_N, TS_BATCH)]

    if point == "before_any_call":
        sim.hold_action = lambda n: "before"
        reached = lambda: sim.holder.held
    elif point == "mid_batch":  # batch 2's request accepted by the carrier; the worker never hears its requestId
        sim.hold_action = lambda n: "after" if n == 1 else None
        reached = lambda: sim.holder.held
    elif point == "between_batches":
        sim.hold_action = lambda n: "before" if n >= 2 else None  # backstop: batch 3 is never accepted
        reached = lambda: _with_request_id(engine, bc_id) == 2 * TS_BATCH or sim.holder.held
    else:
        reached = lambda: _with_request_id(engine, bc_id) == TS_N and _bulk_status(engine, bc_id) == "PROCESSING"

    _run_until_killed(engine, bc_id, point, reached, workers)
    sim.holder.released.set()
    sim.hold_action = lambda n: None
    counts = count_rows_by_status(engine, bc_id)
    accepted = {
        "before_any_call": set(),
        "mid_batch": batch[0] | batch[1],
        "between_batches": batch[0] | batch[1],
        "during_finalize": set().union(*batch),
    }[point]
    wait_until(lambda: set(sim.accepted) == accepted, timeout=10, what="the carrier processing what it accepted")
    if point == "before_any_call":
        assert counts == {"PROCESSING": TS_BATCH, "NEW": TS_N - TS_BATCH} and _with_request_id(engine, bc_id) == 0
    elif point == "mid_batch":
        assert _with_request_id(engine, bc_id) == TS_BATCH
        assert counts == {"PROCESSING": 2 * TS_BATCH, "NEW": TS_N - 2 * TS_BATCH}
        # Accepted, but its requestId never stored: only the device's state can tell the re-run it
        # was applied, so the re-run waits until the carrier finished (see docs: not guaranteed).
        assert sim.wait_idle(30)
    elif point == "between_batches":
        assert _with_request_id(engine, bc_id) == 2 * TS_BATCH
    else:
        assert counts == {"PROCESSING": TS_N} and _bulk_status(engine, bc_id) == "PROCESSING", (
            "the kill landed after finalize"
        )

    with dg.DagsterInstance.get() as instance:  # at once: the accepted activations are still pending
        assert execute(instance, fast_definitions(), str(bc_id)).success
    reconcile_runs = _settle(sim)
    assert reconcile_runs and all(r.success for r in reconcile_runs)
    # Every device was in exactly one accepted request and changed state exactly once.
    assert len(sim.accepted) == TS_N and max(sim.accepted.values()) == 1, sim.accepted.most_common(3)
    assert len(sim.applied_counts) == TS_N and max(sim.applied_counts.values()) == 1
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": TS_N}
    assert _bulk_status(engine, bc_id) == "PROCESSED"
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(device).where(device.c.status == "active")).scalar()
            == TS_N
        )
    assert_results_consistent(engine, [bc_id], field="status")
