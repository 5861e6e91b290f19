"""Rev.io fixtures: a real Rev.io simulator on a free loopback port (no limits, no faults), an
account pointing at it, and helpers to seed customers and services.

Import the fixtures into a test module (`from ...revio_fixtures import revio_sim`) so pytest
registers them there; no conftest is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bulkchange_pipeline.carriers.base import CarrierAccount, DeviceChange
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.revio import RevioSimulator
from bulkchange_pipeline.simulators.revio_rules import make_numbers  # noqa: F401 - re-export
from bulkchange_pipeline.simulators.server import ServerHandle

REVIO_USER = "apibot@ACME"
REVIO_PASSWORD = "rev-PASSWORD-8d1f20"
REVIO_SUBSCRIPTION_KEY = "apim-SUBKEY-5e7a9c3b"
REVIO_PROVIDER_ID = 14
REVIO_SERVICE_TYPE_ID = 3
CUSTOMER_A = 2001  # Rev customer ids seeded by `revio_sim`
CUSTOMER_B = 2002
PRODUCTS = (101, 102)


def revio_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """An account for the simulator with test-sized waits (retries in milliseconds)."""
    extra = {
        "subscription_key": REVIO_SUBSCRIPTION_KEY,
        "provider_id": str(REVIO_PROVIDER_ID),
        "service_type_id": str(REVIO_SERVICE_TYPE_ID),
        "product_ids": ",".join(str(p) for p in PRODUCTS),
    }
    extra.update(overrides.pop("extra", {}))
    values: dict[str, Any] = {
        "service_provider_id": 6,
        "integration": "revio",
        "base_url": handle.root_url,
        "username": REVIO_USER,
        "secret": REVIO_PASSWORD,
        "rate_per_second": 0.0,
        "max_concurrency": 4,
        "timeout_seconds": 2.0,
        "max_attempts": 4,
        "retry_wait_seconds": 0.01,
        "extra": extra,
    }
    values.update(overrides)
    return CarrierAccount(**values)


def assignment(
    i: int,
    number: str,
    rev_customer: Any = CUSTOMER_A,
    *,
    change_type: int = ChangeType.CUSTOMER_ASSIGNMENT,
    customer_id: int = 7,
    **target: Any,
) -> DeviceChange:
    """A change for device `i` whose MSISDN is `number`; our customer id is `customer_id`."""
    values = {"customer_id": customer_id, "rev_customer_id": rev_customer, **target}
    return DeviceChange(i, i, change_type, None, None, number, None, values)


def seed_service(
    sim: RevioSimulator, number: str, customer: Any, *, products: tuple[int, ...] = (), status: str = "ACTIVE"
) -> int:
    """A pre-existing (not counted) service for `number`, with its products; returns its id."""
    record = sim.book.add_service(
        {"customer_id": customer, "provider_id": REVIO_PROVIDER_ID, "number": number, "status": status}, seeded=True
    )
    for pid in products:
        sim.book.add_service_product({"service_id": record["service_id"], "product_id": pid}, seeded=True)
    return record["service_id"]


@pytest.fixture
def revio_sim() -> Iterator[ServerHandle]:
    """A fresh simulator (no rate limit, no faults) with customers CUSTOMER_A and CUSTOMER_B."""
    sim = RevioSimulator({REVIO_USER: REVIO_PASSWORD}, [REVIO_SUBSCRIPTION_KEY], calls_per_minute=0)
    sim.seed_devices(
        [
            {"type": "customer", "customer_id": CUSTOMER_A, "name": "Acme"},
            {"type": "customer", "customer_id": CUSTOMER_B, "name": "Globex"},
        ]
    )
    sim.configure(providers=[REVIO_PROVIDER_ID], service_types=[REVIO_SERVICE_TYPE_ID])
    with sim.run_in_thread() as handle:
        yield handle
