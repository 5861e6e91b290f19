"""Fixtures of the reliability tests: a persistent Dagster home for run-worker processes, carrier
credentials in the environment only, the callback app, and the observing simulators."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.server import ServerHandle, run_app_in_thread
from bulkchange_pipeline.simulators.teal import TealSimulator

from ..factories import JASPER_KEY, JASPER_USER
from ..simulators.fixtures import (
    TS_ACCOUNT,
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
)
from .common import HoldingJasper, HoldingThingSpace, WarmWorkers

ROOT = Path(__file__).resolve().parents[2]
TEAL_KEY, TEAL_SECRET = "teal-key-reliab", "teal-SECRET-r3l1ab-77"

SECRETS = {
    "jasper api key": JASPER_KEY,
    "thingspace password": TS_PASSWORD,
    "thingspace client secret": TS_CLIENT_SECRET,
    "thingspace callback password": TS_CB_PASSWORD,
    "teal secret": TEAL_SECRET,
}


@pytest.fixture
def carrier_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every carrier secret only in the environment (BULKCHANGE_CRED_<credentials name>_*)."""
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)
    for key, value in {
        "USERNAME": TS_USER,
        "SECRET": TS_PASSWORD,
        "CLIENT_ID": TS_CLIENT_ID,
        "CLIENT_SECRET": TS_CLIENT_SECRET,
        "ACCOUNT_NAME": TS_ACCOUNT,
        "CALLBACK_USERNAME": TS_CB_USER,
        "CALLBACK_PASSWORD": TS_CB_PASSWORD,
        "SERVICE_PLAN": "M2M-4G-1GB",
    }.items():
        monkeypatch.setenv(f"BULKCHANGE_CRED_TEST_TS_{key}", value)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_USERNAME", TEAL_KEY)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_SECRET", TEAL_SECRET)


@pytest.fixture
def worker_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, db_url: str, carrier_env: None
) -> Path:
    """DAGSTER_HOME of a persistent instance (SQLite storage, the repository's concurrency settings)
    shared by this process and the run workers it starts; BULKCHANGE_DATABASE_URL names the test's
    business database."""
    # On tmpfs when there is one: Dagster's SQLite storage syncs every event, which on a virtual
    # disk costs seconds per run; nothing here needs to survive the machine.
    shm = Path("/dev/shm")
    home = Path(tempfile.mkdtemp(prefix="bc-dagster-", dir=shm if shm.is_dir() else tmp_path))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    # Storage already made and stamped (the session's template): the first process to open the
    # instance would otherwise spend 1-2 s of CPU creating it, under load far more.
    shutil.copytree(request.getfixturevalue("_sqlite_dagster_template"), home, dirs_exist_ok=True)
    # The repository's instance settings (run queue, pools), as a deployment reads them.
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"telemetry": {"enabled": False}, "concurrency": config["concurrency"]})
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    return home


@pytest.fixture
def callback_app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    with run_app_in_thread(create_app(db_url)) as handle:
        monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", handle.root_url)
        yield handle


@pytest.fixture
def jasper() -> Iterator[tuple[HoldingJasper, str]]:
    sim = HoldingJasper({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=0)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
        sim.holder.released.set()


@pytest.fixture
def thingspace(callback_app: ServerHandle) -> Iterator[tuple[HoldingThingSpace, str]]:
    sim = HoldingThingSpace({TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)})
    sim.configure(callback_retry_seconds=0.05)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
        sim.holder.released.set()
    sim.close()


@pytest.fixture(scope="session")
def warm_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmWorkers]:
    pool = WarmWorkers(tmp_path_factory.mktemp("workers"))
    yield pool
    pool.close()


@pytest.fixture
def workers(warm_workers: WarmWorkers, worker_home: Path) -> WarmWorkers:
    """Run workers for this test (they get the test's environment when they are started)."""
    return warm_workers


@pytest.fixture
def teal(callback_app: ServerHandle) -> Iterator[tuple[TealSimulator, str]]:
    sim = TealSimulator({TEAL_KEY: TEAL_SECRET}, calls_per_minute=0, operation_delay_seconds=0.1)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
    sim.close()
