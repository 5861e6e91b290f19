"""The production shape, end to end: ``bulkchange deploy-local`` on PostgreSQL, fed through the
intake HTTP API, processed by the daemon's sensors and run queue.

Fresh PostgreSQL databases for Dagster's storage and the business database; the demo seed with its
Jasper account (max_concurrency 1) and Pond account pointed at simulators started here (the Jasper
simulator admits one call at a time, so any overrun shows as a refusal and a peak above 1). The
deployment is started with the real CLI (four processes), three bulk changes are submitted with
``POST /bulk-changes`` (two Jasper, one Pond) and polled until PROCESSED. Then, from the Dagster run
records on the same storage: the two Jasper runs never overlapped (tag limit 1 per account), the
Pond run overlapped a Jasper run (different accounts run in parallel). Takes 90-115 s.
Skipped without PostgreSQL, except under ``CI=true`` where that fails.

The checks catch an overrun: with the tag limit removed from dagster.yaml the two Jasper runs
overlap, the simulator refuses a concurrent call and a device ends API_FAILED (tried by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.pools import ACCOUNT_TAG, CARRIER_API_POOL, account_pool, account_tag_value
from bulkchange_pipeline.deploy import SERVICES, LocalDeployment, group_alive, open_instance, read_pid
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.faults import FaultConfig
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.park import JASPER_KEY, JASPER_USER, POND_DISTRIBUTOR, POND_SECRET, POND_USER, Park
from bulkchange_pipeline.simulators.pond import PondSimulator
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import device
from bulkchange_pipeline.store.seed import demo_credentials_names, point_demo_at, seed_demo

from ..conftest import IN_CI, PG_ADMIN_URL
from ..ports import free_port

BIN = Path(sys.executable).parent
DEVICES_PER_CARRIER = 150
JASPER_DEVICES = 60  # per Jasper bulk change: 60 calls at the account's 5/s, about 12 s: most of the run
POND_DEVICES = 60  # about 12 s at 5/s: spans both Jasper runs whatever the sensor tick
LATENCY_MS = 150.0
FINAL = {"PROCESSED", "ERROR", "CANCELLED"}
PROCESS_TIMEOUT = 300.0


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases (business, Dagster storage), dropped afterwards."""
    stem = f"bc_deploy_{uuid.uuid4().hex[:8]}"
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
    yield tuple(
        base.set(drivername="postgresql+psycopg2", database=n).render_as_string(hide_password=False) for n in names
    )  # type: ignore[misc]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Carriers:
    park: Park
    jasper: JasperSimulator
    pond: PondSimulator


@pytest.fixture
def carriers() -> Iterator[Carriers]:
    """Jasper with its real limit (1 call in flight; rate window off so only concurrency is
    judged) and Pond (2 in flight), in threads of this process, so their counters are readable.
    Each call takes 150 ms: two Jasper runs calling at once (5/s each) would then overlap on
    nearly every call and show as refusals, where 2 ms calls could interleave unseen."""
    slow = FaultConfig(latency_ms=LATENCY_MS)
    jasper = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=1, faults=slow)
    pond = PondSimulator(
        {POND_USER: (POND_SECRET, POND_DISTRIBUTOR)},
        rate_per_second=0,
        max_concurrency=2,
        faults=FaultConfig(latency_ms=LATENCY_MS),
    )
    park = Park({"jasper": jasper, "pond": pond}, {"jasper": jasper.run_in_thread(), "pond": pond.run_in_thread()})
    yield Carriers(park, jasper, pond)
    park.stop()


def bulkchange(*args: str, env: dict[str, str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bulkchange"), *args], check=False, env=env, capture_output=True, text=True, timeout=timeout
    )


def activated(engine: sa.Engine, sp_id: int, n: int, skip: int = 0) -> list[str]:
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(device.c.iccid)
                .where(device.c.service_provider_id == sp_id, device.c.status == "ACTIVATED")
                .order_by(device.c.id)
                .offset(skip)
                .limit(n)
            )
            .scalars()
            .all()
        )
    assert len(rows) == n
    return list(rows)


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_three_bulk_changes_through_the_deployment(
    databases: tuple[str, str], carriers: Carriers, tmp_path: Path, record_property
) -> None:
    began = time.monotonic()
    db_url, dagster_url = databases
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    seed = seed_demo(engine, devices_per_carrier=DEVICES_PER_CARRIER)
    point_demo_at(engine, carriers.park.base_urls)  # base URLs only: the seed's limits stay (Jasper 1, Pond 2)
    sync_from_database(engine, carriers.park, seed.tenant_id)
    jasper_sp, pond_sp = seed.service_providers["jasper"], seed.service_providers["pond"]
    key = create_api_key(engine, seed.tenant_id, "deploy-test")

    dep = LocalDeployment(
        tmp_path / "run", code_server_port=free_port(), webserver_port=free_port(), intake_port=free_port()
    )
    names = demo_credentials_names()
    env = {
        **os.environ,
        **carriers.park.credentials_env({"jasper": names["jasper"], "pond": names["pond"]}, credential_env_key),
    }
    env.pop("DAGSTER_HOME", None)
    run_dir_args = ["--run-dir", str(dep.run_dir)]
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
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        startup_seconds = time.monotonic() - began
        status = bulkchange("deploy-local", "status", *run_dir_args, env=env)
        assert status.returncode == 0 and status.stdout.count(" ready ") == len(SERVICES), status.stdout + status.stderr

        api = httpx.Client(base_url=dep.url("intake"), headers={"Authorization": f"Bearer {key}"}, timeout=30.0)
        bodies = [
            (jasper_sp, activated(engine, jasper_sp, JASPER_DEVICES)),
            (jasper_sp, activated(engine, jasper_sp, JASPER_DEVICES, skip=JASPER_DEVICES)),
            (pond_sp, activated(engine, pond_sp, POND_DEVICES)),
        ]
        ids: dict[int, int] = {}  # bulk change id -> service provider id
        for sp_id, iccids in bodies:
            r = api.post(
                "/bulk-changes",
                json={
                    "serviceProviderId": sp_id,
                    "changeType": 1,
                    "devices": iccids,
                    "statusUpdate": {"status": "DEACTIVATED"},
                },
            )
            assert r.status_code == 201, r.text
            ids[r.json()["id"]] = sp_id

        deadline = time.monotonic() + PROCESS_TIMEOUT
        final: dict[int, dict] = {}
        while len(final) < len(ids) and time.monotonic() < deadline:
            for bc_id in ids.keys() - final.keys():
                body = api.get(f"/bulk-changes/{bc_id}").json()
                if body["status"] in FINAL:
                    final[bc_id] = body
            time.sleep(1.0)
        if len(final) < len(ids):  # say where it stuck: the runs' states and the daemon/code server logs
            with open_instance(dep, {**env, **_pg_env(dagster_url)}) as instance:
                runs = [(r.tags.get("dagster/partition"), r.status.value) for r in instance.get_runs()]  # type: ignore[attr-defined]
            logs = {s: dep.log_file(s).read_text(errors="replace")[-3000:] for s in ("daemon", "code-server")}
            pytest.fail(
                f"not processed in {PROCESS_TIMEOUT:.0f} s: {sorted(ids.keys() - final.keys())}; runs {runs}\n{logs}"
            )
        for body in final.values():
            assert body["status"] == "PROCESSED" and body["counts"] == {"PROCESSED": body["total"]}, body
        processed_seconds = time.monotonic() - began

        with open_instance(dep, {**env, **_pg_env(dagster_url)}) as instance:
            import dagster as dg

            records = instance.get_run_records(dg.RunsFilter(job_name="process_bulk_change_job"))
            pools = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
            queue = instance.get_concurrency_config().run_queue_config
        assert sorted(int(r.dagster_run.tags["bulkchange/bulk_change_id"]) for r in records) == sorted(ids)
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        spans = {int(r.dagster_run.tags["bulkchange/bulk_change_id"]): (r.start_time, r.end_time) for r in records}
        queued = {
            int(r.dagster_run.tags["bulkchange/bulk_change_id"]): r.start_time - r.create_timestamp.timestamp()
            for r in records
        }
        by_account = {r.dagster_run.run_id: r.dagster_run.tags[ACCOUNT_TAG] for r in records}
        jasper_runs = [spans[i] for i, sp in ids.items() if sp == jasper_sp]
        pond_run = next(spans[i] for i, sp in ids.items() if sp == pond_sp)
        assert sorted(by_account.values()) == sorted(
            [account_tag_value(names["jasper"])] * 2 + [account_tag_value(names["pond"])]
        )

        jstats, pstats = carriers.jasper.stats(), carriers.pond.stats()
        marks = {
            "jasper_peak_concurrency": jstats["peak_concurrency"],
            "jasper_limit": 1,
            "jasper_calls": jstats["accounts"][JASPER_USER]["calls"],
            "jasper_concurrency_refusals": jstats["accounts"][JASPER_USER]["concurrency_refusals"],
            "pond_peak_concurrency": pstats["peak_concurrency"],
            "pond_limit": 2,
            "jasper_runs_overlapping": overlaps(*jasper_runs),
            "pond_overlaps_jasper_seconds": round(
                max(min(pond_run[1], j[1]) - max(pond_run[0], j[0]) for j in jasper_runs), 1
            ),
            "runs_in_progress_peak": _peak_in_progress(list(spans.values())),
            "second_jasper_run_queued_seconds": round(max(queued[i] for i, sp in ids.items() if sp == jasper_sp), 1),
            "startup_seconds": round(startup_seconds, 1),
            "all_processed_seconds": round(processed_seconds, 1),
        }
        record_property("high_water_marks", json.dumps(marks))
        print(f"\nhigh-water marks: {json.dumps(marks)}")  # the README quotes these

        # Per-account limits never exceeded: the carrier saw at most one Jasper call at a time.
        assert 1 <= jstats["peak_concurrency"] <= 1, jstats
        assert jstats["accounts"][JASPER_USER]["concurrency_refusals"] == 0 and jstats["over_limit_answers"] == 0, (
            jstats
        )
        assert jstats["applied_devices"] == 2 * JASPER_DEVICES and jstats["applied_more_than_once"] == 0, jstats
        assert pstats["peak_concurrency"] <= 2, pstats
        # The run queue held the second Jasper run until the first ended (tag limit 1 per account)...
        assert not overlaps(*jasper_runs), jasper_runs
        # ...while the Pond account's run went ahead in parallel.
        assert any(overlaps(pond_run, j) for j in jasper_runs), (pond_run, jasper_runs)
        # The limits are what the deployment configured and synced.
        assert queue.tag_concurrency_limits == [
            {"key": ACCOUNT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert (
            pools[CARRIER_API_POOL] == 8 and pools[account_pool(jasper_sp)] == 1 and pools[account_pool(pond_sp)] == 2
        )
    finally:
        pids = {s: read_pid(dep, s) for s in SERVICES}
        stopped = bulkchange("deploy-local", "stop", *run_dir_args, env=env, timeout=120)
        engine.dispose()
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(line.split()[1] == "stopped" for line in stopped.stdout.splitlines()), stopped.stdout
    assert not [s for s, pid in pids.items() if pid and group_alive(pid)]
    after = bulkchange("deploy-local", "status", *run_dir_args, env=env)
    assert after.returncode == 1 and " ready " not in after.stdout, after.stdout


def _pg_env(url: str) -> dict[str, str]:
    from bulkchange_pipeline.deploy import dagster_pg_env

    return dagster_pg_env(url)


def _peak_in_progress(spans: list[tuple[float, float]]) -> int:
    """Most runs in progress at one moment (sweep over start/end events)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda ev: (ev[0], ev[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
