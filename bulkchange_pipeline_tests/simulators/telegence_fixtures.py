"""Telegence fixtures: a real Telegence simulator on a free loopback port, accounts pointing at
it, and helpers that seed lines and build activation rows.

Import the fixture into a test module (`from ...telegence_fixtures import telegence_sim`) so pytest
registers it there; no conftest is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bulkchange_pipeline.carriers.base import (
    CarrierAccount,
    DeviceChange,
)
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline.simulators.telegence import TelegenceSimulator
from bulkchange_pipeline.simulators.telegence_rules import (
    make_imeis,
    make_subscriber_numbers,
)

TELEGENCE_APP_ID = "amop-telegence-app"
TELEGENCE_APP_SECRET = "tg-APP-secret-5e71c9a2"
TELEGENCE_BAN = "287012345678"
ICCID_PREFIX = "89011704"


def telegence_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """An account for the simulator with test-sized waits (retries in milliseconds)."""
    extra = {"ban": TELEGENCE_BAN, "service_zip_code": "75001"}
    extra.update(overrides.pop("extra", {}))
    values: dict[str, Any] = {
        "service_provider_id": 3,
        "integration": "telegence",
        "base_url": handle.base_url,
        "username": TELEGENCE_APP_ID,
        "secret": TELEGENCE_APP_SECRET,
        "rate_per_second": 0.0,
        "max_concurrency": 10,
        "timeout_seconds": 2.0,
        "max_attempts": 4,
        "retry_wait_seconds": 0.01,
        "extra": extra,
    }
    values.update(overrides)
    return CarrierAccount(**values)


def seed_lines(sim: TelegenceSimulator, count: int, start: int = 0, **fields: Any) -> list[dict[str, str]]:
    """Seed `count` lines (status A, plan IOTSOC1GB unless `fields` say otherwise); returns
    [{msisdn, iccid, imei}] for each."""
    numbers = make_subscriber_numbers(count, start)
    iccids = make_iccids(count, start=start, prefix=ICCID_PREFIX)
    imeis = make_imeis(count, start)
    sim.seed_devices(
        {"subscriberNumber": n, "sim": i, "BLIMEI": e, **fields} for n, i, e in zip(numbers, iccids, imeis)
    )
    return [{"msisdn": n, "iccid": i, "imei": e} for n, i, e in zip(numbers, iccids, imeis)]


def activation_changes(
    count: int, start: int = 100_000, plan: str = "IOTSOC5GB", first_id: int = 1
) -> list[DeviceChange]:
    """ActivateNewService rows for `count` new devices (ICCID + IMEI, no MSISDN yet)."""
    iccids = make_iccids(count, start=start, prefix=ICCID_PREFIX)
    imeis = make_imeis(count, start)
    return [
        DeviceChange(
            first_id + k,
            first_id + k,
            ChangeType.ACTIVATE_NEW_SERVICE,
            iccid,
            imei,
            None,
            None,
            {"carrier_rate_plan": plan, "service_zip_code": "75201"},
        )
        for k, (iccid, imei) in enumerate(zip(iccids, imeis))
    ]


@pytest.fixture
def telegence_sim() -> Iterator[ServerHandle]:
    """A fresh simulator (no limits, no faults, activations pending for 2 polls)."""
    sim = TelegenceSimulator({TELEGENCE_APP_ID: TELEGENCE_APP_SECRET}, activation_polls=2)
    with sim.run_in_thread() as handle:
        yield handle
