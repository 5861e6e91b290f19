"""Shared fixtures: a clean, migrated business database on SQLite and on PostgreSQL.

Every test that takes ``db_url`` or ``engine`` runs once per backend (ids ``[sqlite]`` and
``[postgresql]``). PostgreSQL comes from ``BULKCHANGE_TEST_PG_ADMIN_URL`` (default: the local
server, trust auth). Outside CI an unreachable server skips those tests; under ``CI=true`` it fails
them, so a missing PostgreSQL can never pass as green.

``sim_clock`` is the simulators' stepped time (see ``waiting.py`` for what is still waited for).
"""

from __future__ import annotations

import graphlib
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


# Every id sequence of the schema back to 1, as TRUNCATE ... RESTART IDENTITY did (found at run time,
# so a test that migrated the database down and up again still gets them all).
_RESTART_SEQUENCES = """DO $$ DECLARE s text; BEGIN
  FOR s IN SELECT quote_ident(sequence_schema) || '.' || quote_ident(sequence_name)
           FROM information_schema.sequences WHERE sequence_schema = current_schema() LOOP
    EXECUTE 'ALTER SEQUENCE ' || s || ' RESTART';
  END LOOP;
END $$;"""


def _empty_all(url: str) -> None:
    """Every business table emptied and its ids restarted, in one round trip. DELETE, children
    first, rather than TRUNCATE: TRUNCATE gives each of the ~30 tables a new file on disk, which
    cost 0.35-0.6 s per PostgreSQL test under a loaded full run; deleting the few rows a test
    wrote costs 0.05-0.15 s."""
    deletes = "".join(f'DELETE FROM "{t.name}";' for t in reversed(metadata.sorted_tables))
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(deletes + _RESTART_SEQUENCES)
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a migrated, empty business database; the test runs once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "bulkchange.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_migrated_pg")
    _empty_all(url)
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
def dagster_instance(db_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A real Dagster instance whose storage follows the business database's backend, with
    ``BULKCHANGE_DATABASE_URL`` pointing the resources at the test database."""
    import dagster as dg

    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    overrides = dict(_INSTANCE_OVERRIDES)
    if db_url.startswith("postgresql"):
        url = request.getfixturevalue("_pg_dagster_url")  # keeps +psycopg2: SQLAlchemy 2.1 defaults to psycopg 3
        overrides["storage"] = {"postgres": {"postgres_url": url}}
        with dg.instance_for_test(overrides=overrides) as instance:
            _empty_dagster_tables(url)
            yield instance
        return
    # SQLite: a copy of a session's freshly made storage (creating and stamping the run, event and
    # schedule databases cost 1-2 s per test under load; the copy is milliseconds and just as new).
    home = tmp_path / "dagster_home"
    shutil.copytree(request.getfixturevalue("_sqlite_dagster_template"), home)
    with dg.instance_for_test(overrides=overrides, temp_dir=str(home)) as instance:
        yield instance


# No compute-log capture: the local manager mirrors each in-process run's stdout/stderr through two
# `tail -F` children and a watcher process, whose cleanup waited 2 x 30 s under a loaded full run (a
# run executed in a thread, test_tenant_isolation). No test reads compute logs; the deployment and
# browser tests run with the real manager.
_INSTANCE_OVERRIDES: dict[str, object] = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}
# What Dagster's PostgreSQL storage keeps across a wipe: its schema version, its data-migration
# markers and the instance's identity. Everything else (runs, events, ticks, cursors) is emptied.
_DAGSTER_KEPT_TABLES = ("alembic_version", "secondary_indexes", "instance_info", "kvs")


def _empty_dagster_tables(url: str) -> None:
    """What ``instance.wipe()`` + ``wipe_all_schedules()`` did (and the few tables they leave, like
    asset check executions and pending steps), in one round trip instead of ~15 (0.35-0.5 s);
    tables that others reference (runs -> snapshots) after the tables referencing them."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        tables = (
            conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars().all()
        )
        order = graphlib.TopologicalSorter({t: set() for t in tables})
        for child, parent in conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
                " WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
            )
        ):
            order.add(parent, child)  # the referencing table emptied first
        conn.exec_driver_sql(
            "".join(f'DELETE FROM "{t}";' for t in order.static_order() if t not in _DAGSTER_KEPT_TABLES)
        )
    engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_dagster_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Dagster home whose SQLite run, event-index and schedule storage exist and are stamped."""
    import dagster as dg

    home = tmp_path_factory.mktemp("dagster_template")
    with dg.instance_for_test(overrides=_INSTANCE_OVERRIDES, temp_dir=str(home)) as instance:
        instance.get_runs(limit=1)  # the storage is made on first use
        instance.all_instigator_state()
    (home / "dagster.yaml").unlink()  # instance_for_test writes the test's own
    return home
