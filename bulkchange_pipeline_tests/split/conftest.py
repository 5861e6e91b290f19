"""Fixtures for the split tests (issue 21, one submission across carriers): the demo seed on both
backends, and helpers to read what a split stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.store.schema import (
    bulk_change,
    bulk_change_approval,
    device_change,
    submission,
    submission_refused,
)
from bulkchange_pipeline.store.seed import DemoSeed, demo_iccid, seed_demo

DEVICES_PER_CARRIER = 20
UNKNOWN_ICCID = demo_iccid(9, 9, 1)  # a valid ICCID in nobody's inventory (no carrier 9, no tenant 9)


@pytest.fixture
def seed(engine: sa.Engine) -> DemoSeed:
    return seed_demo(engine, devices_per_carrier=DEVICES_PER_CARRIER)


def stored_counts(engine: sa.Engine) -> dict[str, int]:
    """Rows in every table a submission writes (to prove that nothing, or nothing new, was stored)."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (submission, submission_refused, bulk_change, device_change, bulk_change_approval)
        }


def edit_body(devices: list, **extra: object) -> dict:
    """A username / cost center change without a service provider (Jasper, Telegence, Pond, ThingSpace
    and Teal take it; Rev.io does not)."""
    return {"changeType": 10, "devices": devices, "usernameCostCenterUpdate": {"costCenter": "CC-42"}, **extra}
