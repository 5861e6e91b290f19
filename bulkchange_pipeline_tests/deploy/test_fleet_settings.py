"""The production shape's settings that let many carrier accounts run at their limits at once
(issue 22, P6) and a submission start within seconds (P5), each checked where it takes effect:
the instance ``deploy-local`` generates, the pools it syncs, the daemon it runs, what a run
worker imports. ``bench/p6_fleet.py`` and ``bench/p5_run_start.py`` measure the effect."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.pools import (
    CARRIER_API_POOL,
    DEFAULT_CARRIER_API_SLOTS,
    current_pools,
    desired_pools,
    sized_carrier_api_slots,
    sync_from_database,
)
from bulkchange_pipeline.deploy import (
    CODE_SERVER_MODULE,
    DAEMON_MODULE,
    LocalDeployment,
    _is_daemon,
    dagster_pg_env,
    open_instance,
    prepare,
    service_environment,
)
from bulkchange_pipeline.deploy_code_server import PRELOAD, fork_run_workers
from bulkchange_pipeline.deploy_daemon import SENSOR_LOOP_SECONDS, shorten_sensor_loop
from bulkchange_pipeline.store.reference import AccountLimit
from bulkchange_pipeline.store.schema import service_provider
from bulkchange_pipeline.store.seed import seed_demo

ACCOUNTS = 24  # the fleet P6 measures


def accounts(n: int) -> list[AccountLimit]:
    return [AccountLimit(i + 1, 1, f"account {i + 1}", 1) for i in range(n)]


def test_carrier_api_is_sized_to_the_service_providers() -> None:
    # A fixed 8 slots held 24 accounts to a third of their summed limits: one slot per account.
    assert desired_pools(accounts(ACCOUNTS))[CARRIER_API_POOL] == ACCOUNTS
    assert sized_carrier_api_slots(accounts(3)) == DEFAULT_CARRIER_API_SLOTS  # room for accounts added later
    assert desired_pools(accounts(ACCOUNTS), carrier_api_slots=5)[CARRIER_API_POOL] == 5  # the operator's cap


def test_sync_without_slots_sizes_carrier_api(engine: sa.Engine, dagster_instance) -> None:
    seed = seed_demo(engine, devices_per_carrier=0)
    with engine.begin() as conn:
        row = conn.execute(sa.select(service_provider).where(service_provider.c.id == seed.service_providers["jasper"]))
        template = {k: v for k, v in row.one()._mapping.items() if k != "id"}
        for i in range(ACCOUNTS):
            conn.execute(sa.insert(service_provider).values({**template, "name": f"fleet {i}"}))
        count = conn.execute(sa.select(sa.func.count()).select_from(service_provider)).scalar_one()
    sync_from_database(dagster_instance, engine)
    assert current_pools(dagster_instance)[CARRIER_API_POOL] == count > ACCOUNTS


@pytest.fixture
def pg_dagster_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("_pg_dagster_url")


def test_generated_instance_queues_runs_for_pool_slots(tmp_path: Path, pg_dagster_url: str) -> None:
    """The instance ``deploy-local start`` writes: runs (not steps) take carrier_api slots and wait
    for them in the queue, the queue is read every second and launches in parallel, and it has
    room for every account of the fleet plus other runs."""
    import dagster as dg
    from dagster._core.instance.config import PoolGranularity

    dep = LocalDeployment(tmp_path / "run")
    env = service_environment(dep, "postgresql://app@db:5432/business", pg_dagster_url, base={})
    prepare(dep, env)
    with open_instance(dep, {**env, **dagster_pg_env(pg_dagster_url)}) as instance:
        assert isinstance(instance, dg.DagsterInstance)
        config = instance.get_concurrency_config()
        coordinator = instance.run_coordinator
        assert config.pool_config.pool_granularity == PoolGranularity.RUN
        assert config.run_queue_config is not None and config.run_queue_config.max_concurrent_runs >= ACCOUNTS + 4
        assert isinstance(coordinator, dg.QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        assert coordinator.dequeue_use_threads and (coordinator.dequeue_num_workers or 0) >= 8


def test_deploy_local_runs_the_daemon_with_a_one_second_sensor_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster._daemon.sensor as sensor_daemon

    # The constant still paces the loop in this Dagster (a rename or a new setting fails here).
    assert "MIN_INTERVAL_LOOP_TIME" in inspect.getsource(sensor_daemon.execute_sensor_iteration_loop)
    monkeypatch.setattr(sensor_daemon, "MIN_INTERVAL_LOOP_TIME", 5)
    shorten_sensor_loop()
    assert sensor_daemon.MIN_INTERVAL_LOOP_TIME == SENSOR_LOOP_SECONDS == 1

    argv = LocalDeployment(tmp_path / "run").commands()["daemon"]
    assert argv[1:5] == ["-m", DAEMON_MODULE, "run", "-w"]
    usage = subprocess.run([*argv[:4], "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "--workspace" in usage.stdout, usage.stderr  # dagster-daemon run's own options
    # `status` and `restart` recognise it as the daemon (find_service) however it was started.
    dummy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", DAEMON_MODULE, "run"])
    try:
        deadline = time.monotonic() + 10
        while not _is_daemon(dummy.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _is_daemon(dummy.pid)
    finally:
        dummy.kill()
        dummy.wait()


def test_a_run_worker_does_not_load_pandas() -> None:
    """Every run is a fresh process that imports the code location: pandas and pyarrow (only the
    nightly archive needs them) cost each of them about 100 MB and a second of start-up."""
    code = "import sys, bulkchange_pipeline.defs; print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_the_fork_server_preloads_what_a_worker_loads_once_it_calls_a_carrier() -> None:
    """What a run worker loaded after it started (httpcore and anyio's asyncio backend when httpx
    builds its first client, psycopg2, the shared TLS context: about 0.35 CPU-seconds a worker, 8
    when 24 accounts start at once) is in the fork server's preload, so every worker is forked
    with it; and the preload opens no database connection and starts no thread to fork with."""
    code = (
        "import sys, threading, bulkchange_pipeline.deploy_preload\n"
        "from bulkchange_pipeline.carriers.http import shared_tls_context\n"
        "mods = ('httpcore', 'anyio._backends._asyncio', 'psycopg2')\n"
        "print([m for m in mods if m not in sys.modules], shared_tls_context.cache_info().currsize,"
        " threading.active_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[-2] == "[] 1 1", out.stdout
    assert "bulkchange_pipeline.deploy_preload" in PRELOAD


def test_deploy_local_code_server_forks_run_workers_from_a_preloaded_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawned, each run worker imported Dagster and the code location again (about 3 CPU-seconds:
    24 at once took a minute to start); forked from the preloaded fork server it starts at once."""
    import logging
    import threading

    from dagster._core.utils import FuturesAwareThreadPoolExecutor
    from dagster._grpc import server

    monkeypatch.setattr(server.DagsterApiServer, "__init__", server.DagsterApiServer.__init__)  # restored after
    fork_run_workers(preload=["json"])
    fork_run_workers(preload=["json"])  # once is enough: a second call does not wrap again
    with FuturesAwareThreadPoolExecutor(max_workers=1) as pool:
        api = server.DagsterApiServer(threading.Event(), logging.getLogger(__name__), pool)
    ctx = api._mp_ctx
    assert ctx.get_start_method() == "forkserver"
    worker = ctx.Process(target=time.sleep, args=(0,))  # a run worker is started exactly like this
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert {"dagster", "dagster_postgres", "bulkchange_pipeline.defs"} <= set(PRELOAD)

    argv = LocalDeployment(tmp_path / "run").commands()["code-server"]
    assert argv[1:5] == ["-m", CODE_SERVER_MODULE, "api", "grpc"]
    usage = subprocess.run([*argv[:5], "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "--location-name" in usage.stdout, usage.stderr
