"""``bulkchange sync-pools``: Dagster pool limits follow the service provider table (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.defs.pools import (
    CARRIER_API_POOL,
    account_pool,
    current_pools,
    desired_pools,
    sync_from_database,
)
from bulkchange_pipeline.store.schema import service_provider
from bulkchange_pipeline.store.seed import seed_demo


def test_pools_follow_the_service_providers(engine: sa.Engine, dagster_instance) -> None:
    seed = seed_demo(engine, devices_per_carrier=0)
    jasper, pond, teal = (seed.service_providers[k] for k in ("jasper", "pond", "teal"))
    r = sync_from_database(dagster_instance, engine, carrier_api_slots=6)
    pools = current_pools(dagster_instance)
    assert pools[CARRIER_API_POOL] == 6 and pools[account_pool(jasper)] == 1 and pools[account_pool(pond)] == 2
    assert pools[account_pool(seed.other_service_provider_id)] == 1 and len(r.changed) == len(pools) == 8

    assert not sync_from_database(dagster_instance, engine, carrier_api_slots=6).changed  # idempotent
    with engine.begin() as conn:
        conn.execute(sa.update(service_provider).where(service_provider.c.id == jasper).values(max_concurrency=3))
        conn.execute(sa.update(service_provider).where(service_provider.c.id == teal).values(max_concurrency=0))
    dry = sync_from_database(dagster_instance, engine, carrier_api_slots=6, dry_run=True)
    assert dry.changed == {account_pool(jasper): (1, 3)} and dry.deleted == [account_pool(teal)]
    assert current_pools(dagster_instance)[account_pool(jasper)] == 1  # a dry run changes nothing
    sync_from_database(dagster_instance, engine, carrier_api_slots=6)
    pools = current_pools(dagster_instance)
    assert pools[account_pool(jasper)] == 3 and account_pool(teal) not in pools  # unlimited: no pool

    dagster_instance.event_log_storage.set_concurrency_slots("someone-elses-pool", 2)
    sync_from_database(dagster_instance, engine)
    assert current_pools(dagster_instance)["someone-elses-pool"] == 2  # only carrier-sp-* are pruned


def test_carrier_api_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        desired_pools([], carrier_api_slots=0)


def test_sync_pools_command(db_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_demo(engine, devices_per_carrier=0)
    runner = CliRunner()
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    r = runner.invoke(main, ["sync-pools", "--database-url", db_url])
    assert r.exit_code == 1 and "DAGSTER_HOME is not set" in r.output
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'storage'}\ntelemetry:\n  enabled: false\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    r = runner.invoke(main, ["sync-pools", "--database-url", db_url, "--carrier-api-slots", "4"])
    assert r.exit_code == 0, r.output
    assert "carrier_api" in r.output and "unset -> 4" in r.output and "changed 8, deleted 0" in r.output
    r = runner.invoke(main, ["sync-pools", "--database-url", db_url, "--carrier-api-slots", "4", "--dry-run"])
    assert r.exit_code == 0 and "would change 0" in r.output, r.output
