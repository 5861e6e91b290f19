"""Fixtures for intake tests: a small demo seed on both backends (via the root ``engine`` fixture)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.store.schema import bulk_change, bulk_change_log, device, device_change, device_history
from bulkchange_pipeline.store.seed import DemoSeed, seed_demo

DEVICES_PER_CARRIER = 20


@pytest.fixture
def seed(engine: sa.Engine) -> DemoSeed:
    return seed_demo(engine, devices_per_carrier=DEVICES_PER_CARRIER)


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Row counts of the tables a submission could write (to prove a dry run writes nothing)."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (bulk_change, device_change, bulk_change_log, device_history, device)
        }
