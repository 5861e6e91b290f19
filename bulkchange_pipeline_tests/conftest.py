"""Shared fixtures: a clean, migrated business database on SQLite and on PostgreSQL.

Every test that takes ``db_url`` or ``engine`` runs once per backend (ids ``[sqlite]`` and
``[postgresql]``). PostgreSQL comes from ``BULKCHANGE_TEST_PG_ADMIN_URL`` (default: the local
server, trust auth). Outside CI an unreachable server skips those tests; under ``CI=true`` it fails
them, so a missing PostgreSQL can never pass as green.

``sim_clock`` is the simulators' stepped time (see ``waiting.py`` for what is still waited for).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.simulators.clock import ManualClock
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import metadata

PG_ADMIN_URL = os.environ.get("BULKCHANGE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")

# The simulator fixtures (``jasper_sim``, ``thingspace_sim``, ``teal_sim``, ...) for every test, so a
# test module names them as parameters without importing them (an import shadowed by a parameter
# is what ruff's F811 reports, and it would hide a real redefinition).
pytest_plugins = [
    "bulkchange_pipeline_tests.simulators.fixtures",
    "bulkchange_pipeline_tests.simulators.jasper_soap_fixtures",
    "bulkchange_pipeline_tests.simulators.pond_fixtures",
    "bulkchange_pipeline_tests.simulators.revio_fixtures",
    "bulkchange_pipeline_tests.simulators.teal_fixtures",
    "bulkchange_pipeline_tests.simulators.telegence_fixtures",
]


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true but is not usable: {reason}")
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"bc_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means the backend is not usable
        _pg_unavailable(str(exc).splitlines()[0])
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _migrated_pg(pg_database_url: str) -> str:
    migrate.upgrade(pg_database_url)
    return pg_database_url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a migrated, empty business database; the test runs once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "bulkchange.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_migrated_pg")
    _truncate_all(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def _pg_dagster_url(pg_database_url: str) -> Iterator[str]:
    """A separate PostgreSQL database for Dagster's own storage (it has its own alembic_version)."""
    name = sa.engine.make_url(pg_database_url).database + "_dagster"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sim_clock() -> ManualClock:
    """The simulators' time, stepped by the test (``sim_clock.advance(seconds)``) instead of slept
    through. A test that asks for it gets its simulator fixtures (``thingspace_sim``, ``teal_sim``)
    built on it; without it they run in real time, as the carrier clients around them do."""
    return ManualClock()


@pytest.fixture
def dagster_instance(db_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A real Dagster instance whose storage follows the business database's backend, with
    ``BULKCHANGE_DATABASE_URL`` pointing the resources at the test database."""
    import dagster as dg

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    # No compute-log capture: the local manager mirrors each in-process run's stdout/stderr through
    # two `tail -F` children and a watcher process, whose cleanup waited 2 x 30 s under a loaded
    # full run (a run executed in a thread, test_tenant_isolation). No test reads compute logs; the
    # deployment and browser tests run with the real manager.
    overrides: dict[str, object] = {
        "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
    }
    if db_url.startswith("postgresql"):
        url = request.getfixturevalue("_pg_dagster_url")  # keeps +psycopg2: SQLAlchemy 2.1 defaults to psycopg 3
        overrides["storage"] = {"postgres": {"postgres_url": url}}
    with dg.instance_for_test(overrides=overrides) as instance:
        if "storage" in overrides:
            instance.wipe()
            instance.wipe_all_schedules()
        yield instance
