"""Pond fixtures: a real (provisional) Pond simulator on a free loopback port and accounts
pointing at it.

Import the fixtures into a test module (`from ...pond_fixtures import pond_sim`) so pytest
registers them there; no conftest is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bulkchange_pipeline.carriers.base import CarrierAccount
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline.simulators.pond import PondSimulator
from bulkchange_pipeline.simulators.server import ServerHandle

POND_USER = "pond-ops"
POND_SECRET = "pond-SECRET-5e71a9"
POND_DISTRIBUTOR = "4711"
OLD_PLAN = 2001
NEW_PLAN = 2002


def pond_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """An account for the simulator with test-sized waits (retries in milliseconds)."""
    extra = {"distributor_id": POND_DISTRIBUTOR, **overrides.pop("extra", {})}
    values: dict[str, Any] = {
        "service_provider_id": 5,
        "integration": "pond",
        "base_url": handle.base_url,
        "username": POND_USER,
        "secret": POND_SECRET,
        "rate_per_second": 0.0,
        "max_concurrency": 2,
        "timeout_seconds": 2.0,
        "max_attempts": 4,
        "retry_wait_seconds": 0.01,
        "extra": extra,
    }
    values.update(overrides)
    return CarrierAccount(**values)


def seed_pond(sim: PondSimulator, count: int, start: int = 0, **fields: Any) -> list[str]:
    """Seed `count` SIMs (default: one ACTIVE package of type 2001, services on); their ICCIDs."""
    iccids = make_iccids(count, start=start, prefix="89440001")
    sim.seed_devices({"iccid": i, **fields} for i in iccids)
    return iccids


@pytest.fixture
def pond_sim() -> Iterator[ServerHandle]:
    """A fresh simulator (no limits, no faults, no stated waits) for one test."""
    sim = PondSimulator({POND_USER: (POND_SECRET, POND_DISTRIBUTOR)}, rate_per_second=0, max_concurrency=0)
    sim.configure(retry_after_seconds=None)
    with sim.run_in_thread() as handle:
        yield handle
