"""Crash recovery, Terminate and launchpad runs through the production shape (issue 14).

One deployment for the whole module, started with the real CLI (``bulkchange deploy-local start``:
code server, daemon with the run queue, run retries and run monitoring, webserver, intake API) on
fresh PostgreSQL databases, with the shipped instance config (``deploy/dagster.postgres.yaml``:
``run_retries`` max 1). The demo tenant's Jasper and ThingSpace accounts point at observing
simulators in this process (``reliability/common.py``); every bulk change is submitted with
``POST /bulk-changes`` and each test uses devices no other test touches.

1. A run worker (the subprocess of the code server that executes the run; its pid is in the run's
   "Started process for run" engine event, and it must belong to the code server's process group)
   is SIGKILLed at an exact point, held there by what the run needs next, never by sleeping:

   - ``before_any_batch``: the plan is done (header PROCESSING), the first claim waits on a row
     lock the test holds on the bulk change's rows: not one row claimed, nothing sent.
   - ``between_batches``: batch 1 recorded, the claim of batch 2 waits on the test's lock on
     batch 2's rows: nothing of batch 2 claimed or sent. The lock is kept after the kill until
     the daemon's retry is blocked on it and ``bulk_change_failure_sensor`` has acted on the
     killed run, so the sensor provably judges a failed run while its retry runs: it must leave
     the header alone (PROCESSING, no "failed" log line).
   - ``mid_batch``: batch 2's fifth PUT is held at the carrier (four applied, not recorded); after
     the kill the held call completes at the carrier (a call in flight the worker never heard of).
   - ``thingspace_after_request_id``: batch 1's request accepted and its requestId stored, batch
     2's request held unaccepted.

   The code server notices its dead worker within a second and fails the run (run monitoring
   cannot: ``DefaultRunLauncher`` has no worker health check); the daemon's run retry follows
   5-10 s later (its event-log and dequeue intervals). With no operator action that one retry
   finishes the bulk change: PROCESSED (for ThingSpace after the callbacks are reconciled), each
   device applied exactly once at the carrier (one PUT per Jasper device: what the carrier
   already had is read back; one accepted request per ThingSpace device), the header never ERROR
   on the way and equal to what the rows say, no row left NEW or PROCESSING.
2. Terminate through the webserver's GraphQL ``terminateRuns`` (what the UI's Terminate button
   sends) while a carrier call is held: the chunk in flight finishes and is recorded, no carrier
   call starts after the stop beyond that chunk, the unsent rows end CANCELLED, the run ends
   CANCELED and the bulk change's log says it was stopped by Terminate.
3. A launchpad run (GraphQL, as the UI builds it: the partition's tags and config asked of the
   code server, then ``launchPipelineExecution``) carries ``bulkchange/carrier_account`` and waits
   in the queue behind an earlier run on the same account (held in progress at its claim), while
   a run on another account launched after it is dequeued; it starts only after the earlier run
   ended, and the carrier saw every edit of the earlier bulk change first. A GraphQL launch naming
   only ``dagster/partition`` (as ``DagsterGraphQLClient`` does) gets the ``bulkchange/*`` tags too:
   the run coordinator (``defs/run_coordinator.py``) adds them before queueing.

Each test was seen to fail against a broken copy of the code: the retry strategy tag removed
(``mid_batch``: the retry re-ran one batch and ended Success with 10 rows NEW), the failure
sensor not checking ``dagster/will_retry`` (``between_batches``: header ERROR under the running
retry), the stop handling of ``defs/stopping.py`` removed (Terminate never reached the step), the
partition's tags function removed (launchpad run without the account tag).

Takes about 3 minutes on 2 CPUs. Skipped without PostgreSQL, except under ``CI=true`` where that
fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
import yaml
from starlette.requests import Request
from starlette.responses import Response

from bulkchange_pipeline.defs.pools import ACCOUNT_TAG, account_tag_value
from bulkchange_pipeline.deploy import (
    LOCATION,
    SERVICES,
    LocalDeployment,
    alive,
    group_alive,
    group_members,
    open_instance,
    read_pid,
)
from bulkchange_pipeline.domain import derive_bulk_status
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators import jasper_rules
from bulkchange_pipeline.simulators.jasper import JasperSimulator, _error
from bulkchange_pipeline.simulators.park import (
    JASPER_KEY,
    JASPER_USER,
    TS_ACCOUNT,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
    Park,
)
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import bulk_change, bulk_change_log, device, device_change, service_provider
from bulkchange_pipeline.store.seed import demo_credentials_names, point_demo_at, seed_demo

from ..conftest import IN_CI, PG_ADMIN_URL
from ..ports import free_port
from ..reliability.common import Hold, HoldingJasper, HoldingThingSpace, assert_results_consistent, row_statuses
from ..waiting import wait_until
from .test_deploy_local import _pg_env, bulkchange

PROCESS_JOB, RECONCILE_JOB = "process_bulk_change_job", "reconcile_async_job"
PARTITION_TAG = "dagster/partition"
SEED_DEVICES = 260  # per carrier; 80% of them ACTIVATED/active, the states the tests change
N, BATCH = 30, 10  # kill tests: 3 batches of 10
FINISH_TIMEOUT = 150.0
QUIET_SECONDS = 30.0
WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


class Jasper(HoldingJasper):
    """``HoldingJasper`` plus: ``put_starts`` (monotonic time, ICCID) of every PUT as it reaches
    the carrier, held or not; ``release_applies``: a held PUT is applied once released (a slow call
    that completes, as a call in flight does) instead of being answered 503 unapplied."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.put_starts: list[tuple[float, str]] = []
        self.release_applies = False

    def reset(self) -> None:
        self.hold_when, self.holder, self.release_applies = None, Hold(), False

    async def _put_device(self, request: Request, account: str) -> Response:
        iccid = request.path_params["iccid"]
        self.put_starts.append((time.monotonic(), iccid))
        if self.hold_when is not None and self.hold_when(iccid, await self._edit_body(request)):
            await self.holder.wait()
            if not self.release_applies:
                return _error(503, jasper_rules.ERR_SERVER, "held by the test: not applied")
        self.puts[iccid] += 1
        return await JasperSimulator._put_device(self, request, account)


def _reset_thingspace(sim: HoldingThingSpace) -> None:
    sim.hold_action, sim.holder = (lambda n: None), Hold()


@dataclass
class Shape:
    """The running deployment and what a test needs to drive and observe it."""

    dep: LocalDeployment
    engine: sa.Engine
    instance: dg.DagsterInstance
    api: httpx.Client
    jasper: Jasper
    thingspace: HoldingThingSpace
    sp: dict[str, int]
    used: set[str] = field(default_factory=set)

    def devices(self, integration: str, n: int, status: str) -> list[str]:
        """``n`` devices in ``status`` no other test has used."""
        with self.engine.connect() as conn:
            found = (
                conn.execute(
                    sa.select(device.c.iccid)
                    .where(device.c.service_provider_id == self.sp[integration], device.c.status == status)
                    .order_by(device.c.id)
                )
                .scalars()
                .all()
            )
        picked = [i for i in found if i not in self.used][:n]
        assert len(picked) == n, f"seed too small: {len(picked)} unused {status} {integration} devices"
        self.used.update(picked)
        return picked

    def submit(self, integration: str, iccids: list[str], change_type: int = 1, **body: Any) -> int:
        r = self.api.post(
            "/bulk-changes",
            json={"serviceProviderId": self.sp[integration], "changeType": change_type, "devices": iccids, **body},
        )
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def provider(self, integration: str, **values: Any) -> None:
        """Set the service provider's batch size / rate (read by each run when it loads the bulk change)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(service_provider).where(service_provider.c.id == self.sp[integration]).values(**values)
            )

    def runs(self, bc_id: int, job: str | None = None) -> list[dg.RunRecord]:
        records = self.instance.get_run_records(dg.RunsFilter(job_name=job, tags={PARTITION_TAG: str(bc_id)}))
        return sorted(records, key=lambda r: r.create_timestamp)

    def header(self, bc_id: int) -> tuple[str, dict[str, int]]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(bulk_change.c.status, bulk_change.c.counts).where(bulk_change.c.id == bc_id)
            ).one()
        return row.status, dict(row.counts or {})

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(
            f"{self.dep.url('webserver')}/graphql", json={"query": query, "variables": variables}, timeout=60.0
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert not body.get("errors"), body
        return body["data"]


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shape]:
    stem = f"bc_crash_{uuid.uuid4().hex[:8]}"
    names = (stem, f"{stem}_dagster")
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means PostgreSQL is not usable
        message = str(exc).splitlines()[0]
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but is not usable: {message}")
        pytest.skip(f"PostgreSQL not reachable: {message}")
    base = sa.engine.make_url(PG_ADMIN_URL)
    db_url, dagster_url = (
        base.set(drivername="postgresql+psycopg2", database=n).render_as_string(hide_password=False) for n in names
    )

    def drop() -> None:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    with contextlib.ExitStack() as stack:
        stack.callback(drop)
        migrate.upgrade(db_url)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        seed = seed_demo(engine, devices_per_carrier=SEED_DEVICES)
        jasper = Jasper({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=0)
        thingspace = HoldingThingSpace(
            {TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)}, activate_per_minute=0
        )
        thingspace.configure(callback_retry_seconds=0.05)
        park = Park(
            {"jasper": jasper, "thingspace": thingspace},
            {"jasper": jasper.run_in_thread(), "thingspace": thingspace.run_in_thread()},
        )
        stack.callback(park.stop)
        stack.callback(lambda: (jasper.holder.released.set(), thingspace.holder.released.set()))
        point_demo_at(engine, park.base_urls)
        sync_from_database(engine, park, seed.tenant_id)
        sp = {k: seed.service_providers[k] for k in ("jasper", "thingspace")}
        key = create_api_key(engine, seed.tenant_id, "crash-recovery-test")

        run_dir = tmp_path_factory.mktemp("crash") / "run"
        dep = LocalDeployment(
            run_dir, code_server_port=free_port(), webserver_port=free_port(), intake_port=free_port()
        )
        names_by_integration = demo_credentials_names()
        env = {**os.environ, **park.credentials_env({k: names_by_integration[k] for k in sp}, credential_env_key)}
        env.pop("DAGSTER_HOME", None)
        env.pop("BULKCHANGE_CALLBACK_BASE_URL", None)  # the deployment points the carriers' callbacks at its intake
        run_dir_args = ["--run-dir", str(dep.run_dir)]

        def stop() -> None:
            pids = {s: read_pid(dep, s) for s in SERVICES}
            stopped = bulkchange("deploy-local", "stop", *run_dir_args, env=env, timeout=120)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert not [s for s, pid in pids.items() if pid and group_alive(pid)]

        started = bulkchange(
            "deploy-local",
            "start",
            *run_dir_args,
            "--database-url",
            db_url,
            "--dagster-database-url",
            dagster_url,
            "--code-server-port",
            str(dep.code_server_port),
            "--webserver-port",
            str(dep.webserver_port),
            "--intake-port",
            str(dep.intake_port),
            env=env,
        )
        stack.callback(stop)
        assert started.returncode == 0, started.stdout + started.stderr
        instance = stack.enter_context(open_instance(dep, {**env, **_pg_env(dagster_url)}))
        api = httpx.Client(base_url=dep.url("intake"), headers={"Authorization": f"Bearer {key}"}, timeout=30.0)
        stack.callback(api.close)
        yield Shape(dep, engine, instance, api, jasper, thingspace, sp)  # type: ignore[arg-type]


@pytest.fixture
def fresh(shape: Shape) -> Iterator[Shape]:
    """The shared deployment with nothing held; whatever a test holds is released at its end."""
    shape.jasper.reset()
    _reset_thingspace(shape.thingspace)
    yield shape
    shape.jasper.hold_when = None
    shape.jasper.holder.released.set()
    shape.thingspace.hold_action = lambda n: None
    shape.thingspace.holder.released.set()


# --- observing the deployment ------------------------------------------------------------------------


def worker_pid(shape: Shape, run_id: str) -> int:
    """The run worker's pid, from the run's "Started process for run (pid: N)" engine event."""
    for record in shape.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if m := WORKER_PID.search(record.message or ""):
            return int(m.group(1))
    raise AssertionError(f"no 'Started process' event for run {run_id}")


def run_messages(shape: Shape, run_id: str) -> list[str]:
    return [r.message or "" for r in shape.instance.all_logs(run_id)]


@contextlib.contextmanager
def rows_locked(engine: sa.Engine, ids: list[int]) -> Iterator[None]:
    """Hold FOR UPDATE locks on device rows: a claim (UPDATE) of any of them waits until released."""
    with engine.connect() as conn:
        locked = (
            conn.execute(sa.select(device_change.c.id).where(device_change.c.id.in_(ids)).with_for_update())
            .scalars()
            .all()
        )
        assert sorted(locked) == sorted(ids)
        try:
            yield
        finally:
            conn.rollback()


def claim_waiting(engine: sa.Engine) -> bool:
    """A run's claim (``UPDATE device_change ...``) is blocked on a row lock."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE device_change%'"
                )
            ).scalar()
        )


def started_run(shape: Shape, bc_id: int) -> dg.RunRecord | None:
    runs = [r for r in shape.runs(bc_id, PROCESS_JOB) if r.dagster_run.status == dg.DagsterRunStatus.STARTED]
    return runs[0] if runs else None


def failure_sensor_acted(shape: Shape, run_id: str) -> bool:
    """bulk_change_failure_sensor has evaluated this failed run (the daemon logs it to the run)."""
    return any('"bulk_change_failure_sensor" acted on run status FAILURE' in m for m in run_messages(shape, run_id))


def retry_blocked(shape: Shape, bc_id: int, killed_run_id: str) -> bool:
    """The daemon's retry of the killed run is running and its claim waits on the test's lock."""
    return any(
        r.dagster_run.parent_run_id == killed_run_id and r.dagster_run.status == dg.DagsterRunStatus.STARTED
        for r in shape.runs(bc_id, PROCESS_JOB)
    ) and claim_waiting(shape.engine)


def wait_settled(shape: Shape, bc_id: int, done: Callable[[str], bool], timeout: float = FINISH_TIMEOUT) -> list[str]:
    """Poll until ``done(header status)`` and no run of the partition is queued or in progress;
    returns the header statuses seen on the way (in order, repeats collapsed). Fails early when
    every run has ended and nothing changed for ``QUIET_SECONDS`` (longer than the daemon's run
    retry, dequeue and async sensor intervals): nothing is coming to finish the bulk change."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    last_change, last_state = time.monotonic(), None
    while True:
        status, _ = shape.header(bc_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        runs = shape.runs(bc_id)
        finished = bool(runs) and all(r.dagster_run.is_finished for r in runs)
        if done(status) and finished:
            return seen
        state = (status, len(runs), finished, tuple(sorted(count_rows_by_status(shape.engine, bc_id).items())))
        if state != last_state:
            last_change, last_state = time.monotonic(), state
        stuck = finished and time.monotonic() - last_change > QUIET_SECONDS
        if stuck or time.monotonic() > deadline:
            described = [
                (r.dagster_run.job_name, r.dagster_run.status.value, r.dagster_run.tags.get("dagster/retry_number"))
                for r in runs
            ]
            logs = {s: shape.dep.log_file(s).read_text(errors="replace")[-2500:] for s in ("daemon", "code-server")}
            why = (
                f"every run ended, nothing changed for {QUIET_SECONDS:.0f} s"
                if stuck
                else f"not settled in {timeout:.0f} s"
            )
            raise AssertionError(
                f"bulk change {bc_id}: {why}: header {seen}, rows "
                f"{count_rows_by_status(shape.engine, bc_id)}, runs {described}\n{logs}"
            )
        time.sleep(0.2)


def assert_header_is_what_rows_say(shape: Shape, bc_id: int, *, is_async: bool = False) -> tuple[str, dict[str, int]]:
    status, stored = shape.header(bc_id)
    counts = count_rows_by_status(shape.engine, bc_id)
    assert stored == counts, (stored, counts)
    assert status == derive_bulk_status(counts, has_pending_async=is_async).value, (status, counts)
    return status, counts


def devices_with(shape: Shape, iccids: list[str], status: str) -> int:
    with shape.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(device).where(device.c.iccid.in_(iccids), device.c.status == status)
        ).scalar_one()


# --- 1. SIGKILL of the run worker; the run retry finishes ---------------------------------------------

KILL_POINTS = ("before_any_batch", "between_batches", "mid_batch", "thingspace_after_request_id")


@pytest.mark.parametrize("point", KILL_POINTS)
def test_run_worker_killed_then_the_run_retry_finishes_without_an_operator(point: str, fresh: Shape) -> None:
    shape, jasper, ts = fresh, fresh.jasper, fresh.thingspace
    is_ts = point.startswith("thingspace")
    integration = "thingspace" if is_ts else "jasper"
    # 3 batches of 10; Jasper at 20/s with one call in flight: a chunk (max(4, 2 s x 20/s)) holds a whole batch.
    shape.provider(integration, batch_size=BATCH, **({} if is_ts else {"rate_per_second": 20.0}))
    target = "suspend" if is_ts else "DEACTIVATED"
    iccids = shape.devices(integration, N, "active" if is_ts else "ACTIVATED")
    batch: list[set[str]] = [set(iccids[i : i + BATCH]) for i in range(0, N, BATCH)]
    actions_before = ts.actions_seen

    with contextlib.ExitStack() as held:
        if point == "mid_batch":  # batch 2's fifth PUT held; released, it completes at the carrier
            jasper.release_applies = True
            jasper.hold_when = lambda iccid, body: iccid in batch[1] and len(batch[1] & set(jasper.applied_counts)) >= 4
        elif is_ts:  # batch 2's request held before the carrier accepts it
            ts.hold_action = lambda n: "before" if n == actions_before + 1 else None
        bc_id = shape.submit(integration, iccids, statusUpdate={"status": target})
        rows = row_statuses(shape.engine, bc_id)
        assert [r.iccid for r in rows] == iccids  # rows are stored in submission order: batch k = iccids[10k:10k+10]
        if point == "before_any_batch":
            held.enter_context(rows_locked(shape.engine, [r.id for r in rows]))
        elif point == "between_batches":
            held.enter_context(rows_locked(shape.engine, [r.id for r in rows[BATCH : 2 * BATCH]]))
        if point in ("before_any_batch", "between_batches"):
            reached = lambda: claim_waiting(shape.engine) and shape.header(bc_id)[0] == "PROCESSING"  # noqa: E731
        else:
            reached = lambda: jasper.holder.held if not is_ts else ts.holder.held  # noqa: E731
        wait_until(
            lambda: reached() or any(r.dagster_run.is_finished for r in shape.runs(bc_id)),
            timeout=90,
            interval=0.01,
            what=f"the run to reach {point}",
        )
        record = started_run(shape, bc_id)
        assert record is not None and reached(), (
            f"the run ended before {point}: {[r.dagster_run.status for r in shape.runs(bc_id)]}"
        )
        killed = record.dagster_run
        pid = worker_pid(shape, killed.run_id)
        code_server = read_pid(shape.dep, "code-server")
        assert code_server and pid in group_members(code_server), f"pid {pid} is not a process of the code server"

        # Where the kill lands, exactly.
        counts, applied = count_rows_by_status(shape.engine, bc_id), set(jasper.applied_counts) & set(iccids)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: not alive(pid), timeout=10, what="the run worker to die")
        if point == "between_batches":
            # The run retry is held at the same claim until bulk_change_failure_sensor has judged
            # the killed run: the sensor acts while the retry provably runs, and must leave the
            # header to it (not ERROR, no "failed" log line).
            wait_until(
                lambda: retry_blocked(shape, bc_id, killed.run_id) and failure_sensor_acted(shape, killed.run_id),
                timeout=120,
                interval=0.1,
                what="the run retry blocked at the claim and the failure sensor done",
            )
            header_while_retrying = shape.header(bc_id)[0]
    # The locks are released (the dead worker's blocked claim was never committed); the held calls go on.
    jasper.hold_when, ts.hold_action = None, (lambda n: None)
    jasper.holder.released.set()
    ts.holder.released.set()
    if point == "before_any_batch":
        assert counts == {"NEW": N} and not applied
        with shape.engine.connect() as conn:  # not even claimed (the claim counts an attempt)
            attempts = conn.execute(
                sa.select(sa.func.max(device_change.c.attempt_count)).where(device_change.c.bulk_change_id == bc_id)
            ).scalar()
        assert attempts == 0, f"{attempts} claims before the kill"
    elif point == "between_batches":
        assert counts == {"PROCESSED": BATCH, "NEW": 2 * BATCH} and applied == batch[0]
        assert header_while_retrying == "PROCESSING", (
            f"the failure sensor wrote {header_while_retrying} under a running retry"
        )
    elif point == "mid_batch":
        assert counts == {"PROCESSED": BATCH, "PROCESSING": BATCH, "NEW": BATCH}
        assert applied - batch[0] < batch[1] and len(applied & batch[1]) == 4
        wait_until(
            lambda: len(batch[1] & set(jasper.applied_counts)) == 5,
            timeout=5,
            what="the call in flight to complete at the carrier",
        )
    else:
        assert counts == {"PROCESSING": 2 * BATCH, "NEW": BATCH}, counts
        assert {r.iccid for r in row_statuses(shape.engine, bc_id) if r.carrier_request_id} == batch[0]
        assert set(ts.accepted) & set(iccids) == batch[0]

    seen = wait_settled(shape, bc_id, lambda s: s == "PROCESSED")
    settled_at = time.time()

    # Within one run retry, started by the daemon: the killed run FAILED (the code server saw its
    # worker die), its retry (same tags, every step re-planned) SUCCEEDED.
    process_runs = shape.runs(bc_id, PROCESS_JOB)
    assert [r.dagster_run.status for r in process_runs] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS], [
        (r.dagster_run.status, r.dagster_run.tags.get("dagster/retry_number")) for r in process_runs
    ]
    first, retry = process_runs[0].dagster_run, process_runs[1].dagster_run
    assert first.run_id == killed.run_id and first.tags.get("dagster/will_retry") == "true"
    assert retry.parent_run_id == killed.run_id and retry.tags.get("dagster/retry_number") == "1"
    assert retry.tags.get(ACCOUNT_TAG) == account_tag_value(demo_credentials_names()[integration])
    crash = [m for m in run_messages(shape, killed.run_id) if "signal 9" in m or "SIGKILL" in m or "exit code" in m]
    assert crash, run_messages(shape, killed.run_id)[-5:]
    # No operator: the header never went ERROR (the failure sensor left it to the retry), every row
    # settled, and the header says what the rows say.
    assert "ERROR" not in seen, seen
    with shape.engine.connect() as conn:
        notes = (
            conn.execute(sa.select(bulk_change_log.c.description).where(bulk_change_log.c.bulk_change_id == bc_id))
            .scalars()
            .all()
        )
    assert not [n for n in notes if f"Run {killed.run_id} failed" in n], (
        "the failure sensor settled a run Dagster retries"
    )
    status, final_counts = assert_header_is_what_rows_say(shape, bc_id, is_async=is_ts)
    assert status == "PROCESSED" and final_counts == {"PROCESSED": N}, (status, final_counts)
    assert devices_with(shape, iccids, target) == N
    assert_results_consistent(shape.engine, [bc_id], field="status")
    # Exactly once at the carrier.
    if is_ts:
        reconciles = shape.runs(bc_id, RECONCILE_JOB)
        assert reconciles and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in reconciles)
        assert {i: ts.accepted[i] for i in iccids} == dict.fromkeys(iccids, 1), "a device was in two accepted requests"
        assert {i: ts.applied_counts[i] for i in iccids} == dict.fromkeys(iccids, 1)
    else:
        assert {i: len(jasper.edits[i]) for i in iccids} == dict.fromkeys(iccids, 1), "a device was changed twice"
        assert {i: jasper.puts[i] for i in iccids} == dict.fromkeys(iccids, 1), "a device was sent a second PUT"
    failed_at = process_runs[0].end_time or 0.0
    print(
        f"\n{point}: failure recorded {failed_at - killed_at:.1f} s after the kill, retry started "
        f"{(process_runs[1].start_time or 0) - killed_at:.1f} s after, PROCESSED {settled_at - killed_at:.1f} s after; header {seen}"
    )


# --- 2. Terminate from the UI -------------------------------------------------------------------------

TERMINATE = """
mutation Terminate($runIds: [String!]!) {
  terminateRuns(runIds: $runIds, terminatePolicy: SAFE_TERMINATE) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename
        ... on TerminateRunSuccess { run { runId } } ... on TerminateRunFailure { message } ... on PythonError { message } } }
    ... on PythonError { message }
  }
}"""


def test_terminate_from_the_ui_cancels_after_the_chunk_in_flight(fresh: Shape) -> None:
    shape, jasper = fresh, fresh.jasper
    # 40 devices, batches of 20, Jasper at 5/s with one call in flight: chunks of max(4, 2 s x 5/s) = 10.
    shape.provider("jasper", batch_size=20, rate_per_second=5.0)
    iccids = shape.devices("jasper", 40, "ACTIVATED")
    everything = set(iccids)
    jasper.release_applies = True  # the held call completes once released, like a slow carrier answer
    jasper.hold_when = lambda iccid, body: iccid in everything and len(everything & set(jasper.applied_counts)) >= 2
    bc_id = shape.submit("jasper", iccids, statusUpdate={"status": "DEACTIVATED"})
    wait_until(lambda: jasper.holder.held, timeout=90, interval=0.01, what="the third PUT held")
    held_iccid = jasper.put_starts[-1][1]
    record = started_run(shape, bc_id)
    assert record is not None
    run_id = record.dagster_run.run_id
    in_flight = {r.iccid for r in row_statuses(shape.engine, bc_id) if r.status == "PROCESSING"}
    assert len(in_flight) == 10 and len(everything & set(jasper.applied_counts)) == 2, in_flight

    stopped_at = time.monotonic()
    answer = shape.graphql(TERMINATE, {"runIds": [run_id]})["terminateRuns"]
    assert [r["__typename"] for r in answer["terminateRunResults"]] == ["TerminateRunSuccess"], answer
    # The stop reached the step (its warning is in the run's log) while the call is still held.
    wait_until(
        lambda: any("run is stopping" in m for m in run_messages(shape, run_id)),
        timeout=30,
        interval=0.05,
        what="apply_batch to report the stop (the 'run is stopping' warning of defs/stopping.py): Terminate did not reach the step",
    )
    # (A client retry of the held call itself, after its 10 s timeout, would belong to the chunk in flight.)
    assert not {i for t, i in jasper.put_starts if t > stopped_at} - {held_iccid}, (
        "a carrier call started after the stop"
    )
    jasper.hold_when = None
    jasper.holder.released.set()

    wait_settled(shape, bc_id, lambda s: s not in ("NEW", "PROCESSING"), timeout=90)
    run = shape.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.CANCELED, run and run.status
    assert [r.dagster_run.run_id for r in shape.runs(bc_id)] == [run_id], "a Canceled run is not retried"
    # Only the chunk in flight reached the carrier after the stop; each of its devices once, the
    # held call's result recorded like the others.
    after = [i for t, i in jasper.put_starts if t > stopped_at]
    assert set(after) <= in_flight, set(after) - in_flight
    assert set(jasper.applied_counts) & everything == in_flight
    assert {i: jasper.puts[i] for i in in_flight} == dict.fromkeys(in_flight, 1)
    rows = row_statuses(shape.engine, bc_id)
    assert {r.iccid: r.status for r in rows} == {i: "PROCESSED" if i in in_flight else "CANCELLED" for i in iccids}
    assert devices_with(shape, sorted(in_flight), "DEACTIVATED") == len(in_flight)
    assert devices_with(shape, sorted(everything - in_flight), "ACTIVATED") == len(everything - in_flight)
    assert_results_consistent(shape.engine, [bc_id], field="status")
    # The header says what the rows say (processed rows and cancelled rows: PROCESSED), and the log who stopped it.
    status, counts = assert_header_is_what_rows_say(shape, bc_id)
    assert status == "PROCESSED" and counts == {"PROCESSED": 10, "CANCELLED": 30}, (status, counts)
    with shape.engine.connect() as conn:
        notes = (
            conn.execute(
                sa.select(bulk_change_log.c.description).where(
                    bulk_change_log.c.bulk_change_id == bc_id, bulk_change_log.c.device_change_id.is_(None)
                )
            )
            .scalars()
            .all()
        )
    assert any(
        f"Stopped by Terminate of Dagster run {run_id}" in n and "30 device rows not yet sent are CANCELLED" in n
        for n in notes
    ), notes


# --- 3. A launchpad run gets the partition's tags and queues on its account ----------------------------

PARTITION_TAGS = """
query PartitionTags($selector: PipelineSelector!, $partition: String!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { partition(partitionName: $partition) {
        runConfigOrError { __typename ... on PartitionRunConfig { yaml } ... on PythonError { message } }
        tagsOrError { __typename ... on PartitionTags { results { key value } } ... on PythonError { message } } } }
    ... on PythonError { message }
  }
}"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on Error { message }
  }
}"""


def _selector(job: str = PROCESS_JOB) -> dict[str, str]:
    return {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "pipelineName": job}


def launch_like_the_launchpad(shape: Shape, partition: str) -> str:
    """What the UI's launchpad does for a partitioned job: ask the code server for the partition's
    config and tags, then launch with them."""
    found = shape.graphql(PARTITION_TAGS, {"selector": _selector(), "partition": partition})["pipelineOrError"]
    assert found["__typename"] == "Pipeline", found
    config, tags = found["partition"]["runConfigOrError"], found["partition"]["tagsOrError"]
    assert config["__typename"] == "PartitionRunConfig" and tags["__typename"] == "PartitionTags", found
    # The bulk changes launched here are held (so the sensor leaves them to the test): the operator
    # sets release_held, as the launchpad asks them to.
    return _launch(shape, {**(yaml.safe_load(config["yaml"]) or {}), **RELEASE_HELD}, tags["results"])


RELEASE_HELD = {"ops": {"plan_batches_op": {"config": {"release_held": True}}}}


def _launch(shape: Shape, run_config: dict[str, Any], tags: list[dict[str, str]]) -> str:
    params = {
        "selector": _selector(),
        "runConfigData": run_config,
        "mode": "default",
        "executionMetadata": {"tags": tags},
    }
    launched = shape.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_launchpad_run_gets_the_account_tag_and_queues_behind_the_earlier_run(fresh: Shape) -> None:
    shape, jasper = fresh, fresh.jasper
    shape.provider("jasper", batch_size=BATCH, rate_per_second=20.0)
    first_devices = shape.devices("jasper", 10, "ACTIVATED")
    later_devices = shape.devices("jasper", 10, "ACTIVATED")
    first = shape.submit("jasper", first_devices, statusUpdate={"status": "DEACTIVATED"})
    # The earlier run is held in progress at its first claim (a row lock: no carrier timeout runs out).
    with rows_locked(shape.engine, [r.id for r in row_statuses(shape.engine, first)]):
        wait_until(
            lambda: started_run(shape, first) is not None and claim_waiting(shape.engine),
            timeout=90,
            interval=0.05,
            what="the earlier run in progress, held at its claim",
        )
        first_run = started_run(shape, first)
        assert first_run is not None

        # Stored, not marked for processing: only an operator's launch runs it. The partition is
        # added as the UI's "add partition" does; then the launchpad run; then a control run on
        # another account (a database-only change on ThingSpace), launched the same way after it.
        later = shape.submit("jasper", later_devices, statusUpdate={"status": "DEACTIVATED"}, processChanges=False)
        control = shape.submit(
            "thingspace",
            shape.devices("thingspace", 3, "active"),
            change_type=10,
            usernameCostCenterUpdate={"costCenter": "CC-LAUNCHPAD"},
            processChanges=False,
        )
        shape.instance.add_dynamic_partitions("bulk_change", [str(later), str(control)])
        later_run_id = launch_like_the_launchpad(shape, str(later))
        later_run = shape.instance.get_run_by_id(later_run_id)
        assert later_run is not None
        assert later_run.tags.get(ACCOUNT_TAG) == account_tag_value(demo_credentials_names()["jasper"]), later_run.tags
        assert later_run.tags.get("bulkchange/bulk_change_id") == str(later) and later_run.tags.get(
            PARTITION_TAG
        ) == str(later)
        control_run_id = launch_like_the_launchpad(shape, str(control))

        # The daemon dequeued the control run, queued after ours, while ours waits behind the held run.
        wait_until(
            lambda: shape.instance.get_run_by_id(control_run_id).status != dg.DagsterRunStatus.QUEUED,  # type: ignore[union-attr]
            timeout=60,
            interval=0.1,
            what="the control run dequeued",
        )
        assert shape.instance.get_run_by_id(later_run_id).status == dg.DagsterRunStatus.QUEUED  # type: ignore[union-attr]
        assert shape.instance.get_run_by_id(first_run.dagster_run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
        assert not set(jasper.applied_counts) & (set(first_devices) | set(later_devices))
    wait_settled(shape, first, lambda s: s == "PROCESSED", timeout=90)
    wait_settled(shape, later, lambda s: s == "PROCESSED", timeout=90)
    wait_settled(shape, control, lambda s: s == "PROCESSED", timeout=90)
    records = {
        r.dagster_run.run_id: r
        for r in shape.instance.get_run_records(dg.RunsFilter(run_ids=[first_run.dagster_run.run_id, later_run_id]))
    }
    a, b = records[first_run.dagster_run.run_id], records[later_run_id]
    assert a.dagster_run.status == b.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert b.start_time is not None and a.end_time is not None and b.start_time >= a.end_time, (
        a.end_time,
        b.start_time,
    )
    # At the carrier: every edit of the earlier bulk change before any of the later one.
    last_first = max(t for i in first_devices for t, _ in jasper.edits[i])
    first_later = min(t for i in later_devices for t, _ in jasper.edits[i])
    assert last_first < first_later
    assert [r.dagster_run.run_id for r in shape.runs(later)] == [later_run_id], (
        "the sensor ran a bulk change not marked for processing"
    )
    for bc_id in (first, later):
        assert assert_header_is_what_rows_say(shape, bc_id) == ("PROCESSED", {"PROCESSED": 10})


def test_graphql_launch_naming_only_the_partition_gets_the_account_tag(fresh: Shape) -> None:
    """A client of the GraphQL API (or ``DagsterGraphQLClient.submit_job_execution``) that names
    only the partition tag, without asking for the partition's tags first as the UI does."""
    shape = fresh
    iccids = shape.devices("jasper", 3, "ACTIVATED")
    bc_id = shape.submit("jasper", iccids, statusUpdate={"status": "DEACTIVATED"}, processChanges=False)
    shape.instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    run_id = _launch(shape, RELEASE_HELD, [{"key": PARTITION_TAG, "value": str(bc_id)}])
    tags = shape.instance.get_run_by_id(run_id).tags  # type: ignore[union-attr]
    wait_settled(shape, bc_id, lambda s: s == "PROCESSED", timeout=90)
    assert tags.get(ACCOUNT_TAG) == account_tag_value(demo_credentials_names()["jasper"]), tags


# --- 4. the daemon crashes while a run works and a submission waits -----------------------------------


def test_daemon_killed_mid_run_then_restarted_loses_nothing(fresh: Shape) -> None:
    """SIGKILL of the daemon (sensors, run queue, run retries) while a run is sending and before a
    second bulk change is submitted. The run in flight belongs to the code server and finishes by
    itself; nothing picks up the new submission while the daemon is down; once the daemon is back
    (``deploy-local restart daemon``, what a supervisor such as Docker's restart policy does), its
    first sensor ticks find the waiting bulk change (no cursor to lose) and it is processed once."""
    shape, jasper = fresh, fresh.jasper
    shape.provider("jasper", batch_size=10, rate_per_second=5.0)
    first_ids = shape.devices("jasper", 20, "ACTIVATED")
    jasper.release_applies = True  # the held PUT completes once released: a slow call in flight
    jasper.hold_when = lambda iccid, _body: iccid == first_ids[2]
    first = shape.submit("jasper", first_ids, statusUpdate={"status": "DEACTIVATED"})
    wait_until(lambda: jasper.holder.held, timeout=FINISH_TIMEOUT, what="the first run's third PUT held")

    daemon = read_pid(shape.dep, "daemon")
    assert daemon and group_alive(daemon)
    os.killpg(daemon, signal.SIGKILL)
    wait_until(lambda: not group_alive(daemon), timeout=30, what="the daemon gone")
    second_ids = shape.devices("jasper", 5, "ACTIVATED")
    second = shape.submit("jasper", second_ids, statusUpdate={"status": "DEACTIVATED"})
    jasper.holder.released.set()

    # The run in flight finishes without the daemon; the new submission waits.
    wait_until(
        lambda: shape.header(first)[0] == "PROCESSED", timeout=FINISH_TIMEOUT, what="the first bulk change processed"
    )
    assert shape.header(second)[0] == "NEW" and not shape.runs(second)

    restarted = bulkchange(
        "deploy-local", "restart", "daemon", "--run-dir", str(shape.dep.run_dir), env=dict(os.environ), timeout=180
    )
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    wait_settled(shape, second, lambda s: s == "PROCESSED")
    for bc_id in (first, second):
        assert assert_header_is_what_rows_say(shape, bc_id)[0] == "PROCESSED"
    assert [r.dagster_run.status for r in shape.runs(second)] == [dg.DagsterRunStatus.SUCCESS]
    assert {i: jasper.puts[i] for i in first_ids + second_ids} == dict.fromkeys(first_ids + second_ids, 1)
    assert devices_with(shape, first_ids + second_ids, "DEACTIVATED") == 25
