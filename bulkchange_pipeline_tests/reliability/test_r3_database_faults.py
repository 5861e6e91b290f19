"""R3 (with R8's SQL policy): database connections dropped during a batch, on PostgreSQL.

The test holds a row lock that the run's next write needs, so the run's transaction is provably
in flight (its statements executed, not committed) when the test terminates every other backend
of the business database (``pg_terminate_backend``), the run's included. The transaction is
retried whole (1 try + 3 retries, exponential backoff 0.2 s, 0.4 s, 0.8 s); nothing of a failed
attempt is ever visible; when all four attempts fail, Dagster's step retry re-runs the batch and
the rows the carrier already applied are confirmed, not re-sent. A permanent outage fails the run
cleanly (claimed rows stay re-runnable), and a re-run after the database is back completes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.sensors import bulk_change_failure_sensor
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import (
    bulk_change_log,
    device,
    device_change,
    device_history,
)

from ..conftest import PG_ADMIN_URL
from ..defs.harness import execute, fast_definitions
from ..factories import make_account, make_bulk_change, make_devices
from ..waiting import wait_until
from .common import assert_results_consistent

N, BATCH = 90, 30
SQL_ATTEMPTS = (
    4  # DESIGN R8: SQL transient errors, 3 retries with exponential backoff (not read from the code under test)
)


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("connection termination is a PostgreSQL test (SQLite has no server connections)")
    return db_url


@pytest.fixture
def setup(pg_url, engine, dagster_instance, jasper, carrier_env):
    sim, base_url = jasper
    # 8 in flight: a claim chunk (4 rounds of the concurrency, 32 rows) covers a whole 30-row batch,
    # so a batch is one claim and one result transaction, as these faults target.
    ids = make_account(engine, base_url, max_concurrency=8, batch_size=BATCH)
    devices = make_devices(engine, ids, N)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device_change.c.id, device_change.c.device_id)
            .where(device_change.c.bulk_change_id == bc_id)
            .order_by(device_change.c.id)
        ).all()
    return sim, bc_id, devices, rows


class RunInThread:
    """The run, executed in this process (a thread) while the test injects the faults."""

    def __init__(self, instance: dg.DagsterInstance, bc_id: int) -> None:
        self.result: dg.ExecuteInProcessResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(instance, str(bc_id)), daemon=True)
        self._thread.start()

    def _run(self, instance: dg.DagsterInstance, key: str) -> None:
        try:
            self.result = execute(instance, fast_definitions(), key, raise_on_error=False)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 120) -> dg.ExecuteInProcessResult:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the run did not finish"
        if self.error:
            raise self.error
        assert self.result is not None
        return self.result


def _waiting_backends(conn: sa.Connection, statement: str) -> list[tuple[int, Any]]:
    """(pid, xact_start) of backends of this database waiting on a lock in ``statement``."""
    conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # fresh activity, not this transaction's snapshot
    return [
        tuple(r)
        for r in conn.execute(
            sa.text(
                "SELECT pid, xact_start FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND wait_event_type = 'Lock' AND query ILIKE :q"
            ),
            {"q": statement + "%"},
        ).all()
    ]


def _terminate_all_others(conn: sa.Connection) -> int:
    """What the brief calls a dropped connection: every other backend of the database is killed."""
    return len(
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    )


def _lock(conn: sa.Connection, table: sa.Table, ids: list[int]) -> None:
    conn.execute(sa.select(table.c.id).where(table.c.id.in_(ids)).with_for_update())


def _visible(pg_url: str, change_ids: list[int], device_ids: list[int]) -> dict[str, Any]:
    """What another session sees of a batch: statuses, log rows and history (committed data only)."""
    eng = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            return {
                "statuses": set(
                    conn.execute(sa.select(device_change.c.status).where(device_change.c.id.in_(change_ids))).scalars()
                ),
                "logs": conn.execute(
                    sa.select(sa.func.count())
                    .select_from(bulk_change_log)
                    .where(bulk_change_log.c.device_change_id.in_(change_ids))
                ).scalar(),
                "history": conn.execute(
                    sa.select(sa.func.count())
                    .select_from(device_history)
                    .where(device_history.c.device_id.in_(device_ids))
                ).scalar(),
                "device_status": set(
                    conn.execute(sa.select(device.c.status).where(device.c.id.in_(device_ids))).scalars()
                ),
            }
    finally:
        eng.dispose()


def _drop_connections_while_waiting(
    pg_url: str,
    engine: sa.Engine,
    run: RunInThread,
    lock_table: sa.Table,
    lock_ids: list[int],
    statement: str,
    drops: int,
    check,
) -> list[float]:
    """Hold the lock; each time the run's transaction waits on it, check what others see, then
    terminate every other backend. Returns the seconds from each termination to the next attempt."""
    gaps: list[float] = []
    with engine.connect() as holder:
        _lock(holder, lock_table, lock_ids)
        seen: set[int] = set()
        dropped_at = None
        while len(gaps) < drops or dropped_at is not None:
            waiting = wait_until(
                lambda: [w for w in _waiting_backends(holder, statement) if w[0] not in seen] or not run.alive(),
                timeout=60,
                interval=0.01,
                what=f"a transaction waiting in {statement}",
            )
            assert run.alive(), "the run ended instead of retrying"
            if dropped_at is not None:
                gaps.append(time.monotonic() - dropped_at)
                dropped_at = None
                if len(gaps) == drops:
                    break
            seen.update(pid for pid, _ in waiting)
            check()  # the attempt in flight has written its statements; none of it may be visible
            _terminate_all_others(holder)
            dropped_at = time.monotonic()
        holder.rollback()
    return gaps


def _step_retries(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


@pytest.mark.parametrize("target", ["claim", "record_results"])
def test_dropped_connection_mid_batch_is_retried_with_backoff_and_nothing_half_written(
    pg_url, engine, dagster_instance, setup, target
):
    sim, bc_id, _, rows = setup
    batch2 = rows[BATCH : 2 * BATCH]
    change_ids, device_ids = [r.id for r in batch2], [r.device_id for r in batch2]
    if target == "claim":  # batch 2's claim (NEW -> PROCESSING) waits on its rows
        lock_table, lock_ids, statement = device_change, change_ids, "UPDATE device_change"
        expect = {"statuses": {"NEW"}, "logs": 0, "history": 0, "device_status": {"ACTIVATED"}}
    else:  # batch 2's result transaction waits on one of its devices, after writing rows and logs
        lock_table, lock_ids, statement = device, device_ids[-1:], "UPDATE device"
        expect = {"statuses": {"PROCESSING"}, "logs": 0, "history": 0, "device_status": {"ACTIVATED"}}

    def nothing_half_written() -> None:
        assert _visible(pg_url, change_ids, device_ids) == expect

    run = RunInThread(dagster_instance, bc_id)
    drops = SQL_ATTEMPTS - 1
    gaps = _drop_connections_while_waiting(
        pg_url, engine, run, lock_table, lock_ids, statement, drops, nothing_half_written
    )
    result = run.join()

    assert result.success
    assert _step_retries(result) == []  # the transaction retries sufficed: no step retry
    # Exponential backoff between attempts: 0.2 s, 0.4 s, 0.8 s (plus reconnecting and re-running).
    for gap, wait in zip(gaps, (0.2, 0.4, 0.8)):
        assert wait * 0.9 <= gap < wait + 2.0, gaps
    assert gaps == sorted(gaps), gaps
    assert sim.stats()["applied_devices"] == N and sim.stats()["applied_more_than_once"] == 0
    assert sim.stats()["calls_by_method"] == {"PUT": N}
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": N}
    assert_results_consistent(engine, [bc_id], field="status", one_exchange_per_row=True)


def test_retries_exhausted_then_step_retry_confirms_instead_of_resending(pg_url, engine, dagster_instance, setup):
    sim, bc_id, _, rows = setup
    batch2 = rows[BATCH : 2 * BATCH]
    change_ids, device_ids = [r.id for r in batch2], [r.device_id for r in batch2]
    expect = {"statuses": {"PROCESSING"}, "logs": 0, "history": 0, "device_status": {"ACTIVATED"}}

    run = RunInThread(dagster_instance, bc_id)
    gaps = _drop_connections_while_waiting(
        pg_url,
        engine,
        run,
        device,
        device_ids[-1:],
        "UPDATE device",
        SQL_ATTEMPTS,
        lambda: _visible(pg_url, change_ids, device_ids) == expect or pytest.fail("half-written"),
    )
    result = run.join()

    assert result.success
    assert len(gaps) == SQL_ATTEMPTS  # 4 attempts of the transaction failed...
    [retried] = _step_retries(result)  # ...then Dagster retried the step once
    assert retried == f"apply_batch[ids_{change_ids[0]}_{change_ids[-1]}]"
    # The batch's devices were applied by the first attempt; the retry read them back, sent nothing.
    stats = sim.stats()
    assert stats["applied_devices"] == N and stats["applied_more_than_once"] == 0
    assert stats["calls_by_method"] == {"PUT": N, "GET": BATCH}
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": N}
    with engine.connect() as conn:
        details = (
            conn.execute(sa.select(device_change.c.status_details).where(device_change.c.id.in_(change_ids)))
            .scalars()
            .all()
        )
    assert all(d.startswith("already in effect at Jasper") for d in details), details[:2]
    assert_results_consistent(engine, [bc_id], field="status", one_exchange_per_row=True)


@pytest.fixture
def outage(pg_url: str) -> Iterator[Any]:
    """``outage()`` makes the business database refuse every connection (and drops the existing
    ones) until the test ends or calls ``outage.end()``."""
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    class Outage:
        def __call__(self, keep_pid: int | None = None) -> None:
            """No new connection from now on; every existing one dropped except ``keep_pid``."""
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> :keep"
                    ),
                    {"n": name, "keep": keep_pid or 0},
                )

        def end(self) -> None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    o = Outage()
    yield o
    o.end()
    admin.dispose()


def test_permanent_outage_fails_the_run_cleanly_and_a_rerun_completes(pg_url, engine, dagster_instance, setup, outage):
    sim, bc_id, _, rows = setup
    batch2 = rows[BATCH : 2 * BATCH]
    run = RunInThread(dagster_instance, bc_id)
    holder = engine.connect()  # stop batch 2 in its result transaction, then take the database away
    _lock(holder, device, [batch2[-1].device_id])
    wait_until(
        lambda: _waiting_backends(holder, "UPDATE device") or not run.alive(), timeout=60, what="batch 2 recording"
    )
    outage(keep_pid=holder.execute(sa.text("SELECT pg_backend_pid()")).scalar())  # the run's transaction dies waiting
    holder.invalidate()  # then the lock goes too (nobody can connect any more)
    holder.close()
    result = run.join(180)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    step_failure = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE][-1]
    assert "is not currently accepting connections" in str(step_failure.event_specific_data.error), step_failure
    # Back online: the failure sensor records the failure on the bulk change; claimed rows wait.
    outage.end()
    engine.dispose()
    context = dg.build_run_status_sensor_context(
        sensor_name="bulk_change_failure_sensor",
        dagster_instance=dagster_instance,
        dagster_run=dagster_instance.get_run_by_id(result.run_id),
        dagster_event=failure,
        resources=fast_definitions().resources,
    ).for_run_failure()
    bulk_change_failure_sensor(context)
    assert get_bulk_change(engine, bc_id)["status"] == "ERROR"
    counts = count_rows_by_status(engine, bc_id)
    assert counts == {"PROCESSED": BATCH, "PROCESSING": BATCH, "NEW": N - 2 * BATCH}, counts
    with engine.connect() as conn:
        note = conn.execute(
            sa.select(bulk_change_log.c.description).where(bulk_change_log.c.device_change_id.is_(None))
        ).scalar_one()
    assert f"Run {result.run_id} failed" in note and f"bulkchange resume {bc_id}" in note

    assert execute(dagster_instance, fast_definitions(), str(bc_id)).success
    stats = sim.stats()
    assert stats["applied_devices"] == N and stats["applied_more_than_once"] == 0
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": N}
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    assert_results_consistent(engine, [bc_id], field="status", one_exchange_per_row=True)
