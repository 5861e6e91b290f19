"""The shared fixtures' cheap resets leave what a fresh database would: the PostgreSQL business
database emptied by DELETE (not TRUNCATE) with every id sequence back at 1, and Dagster's
PostgreSQL storage emptied of runs and events in one statement (not ``instance.wipe()``). Every
other test relies on this isolation, so it is checked directly rather than trusted."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.schema import metadata, tenant

from .conftest import _empty_all, _empty_dagster_tables
from .factories import make_account, make_bulk_change, make_devices


def _row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables
        }


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_emptying_the_business_database_removes_every_row_and_restarts_the_ids(engine: sa.Engine, db_url: str) -> None:
    ids = make_account(engine, "http://127.0.0.1:9")
    devices = make_devices(engine, ids, 3)
    make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    assert sum(_row_counts(engine).values()) > 5

    _empty_all(db_url)

    assert set(_row_counts(engine).values()) == {0}
    assert make_account(engine, "http://127.0.0.1:9") == {"tenant_id": 1, "service_provider_id": 1, "customer_id": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.select(tenant.c.name)).scalars().all() == ["acme"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_emptying_dagster_storage_forgets_runs_events_and_partitions(
    dagster_instance: dg.DagsterInstance, request: pytest.FixtureRequest
) -> None:
    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def tiny() -> None:
        noop()

    dagster_instance.add_dynamic_partitions("bulk_change", ["1"])
    assert tiny.execute_in_process(instance=dagster_instance).success
    assert dagster_instance.get_runs() and dagster_instance.get_dynamic_partitions("bulk_change") == ["1"]

    _empty_dagster_tables(request.getfixturevalue("_pg_dagster_url"))

    assert dagster_instance.get_runs() == [] and dagster_instance.get_dynamic_partitions("bulk_change") == []
    assert dagster_instance.get_run_records() == []
    assert tiny.execute_in_process(instance=dagster_instance).success  # still usable: schema and markers kept


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_dagster_instance_starts_empty_each_time(dagster_instance: dg.DagsterInstance, attempt: int) -> None:
    """Run for both backends; on SQLite the instance is a copy of a session template, which must
    never carry a previous test's runs (each test gets its own copy)."""
    assert dagster_instance.get_runs() == []
    assert dagster_instance.get_dynamic_partitions("bulk_change") == []
    dagster_instance.add_dynamic_partitions("bulk_change", ["x"])  # would show in the next test's copy if shared
