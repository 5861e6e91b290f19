"""Teal fixtures: a real Teal simulator on a free loopback port, accounts pointing at it, and a
tiny callback receiver that records what Teal POSTs to `/callbacks/teal`.

Import the fixtures into a test module (`from ...teal_fixtures import teal_sim, callbacks`) so
pytest registers them there; no conftest is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bulkchange_pipeline.carriers.base import CarrierAccount
from bulkchange_pipeline.simulators.server import ServerHandle, run_app_in_thread
from bulkchange_pipeline.simulators.teal import TealSimulator
from bulkchange_pipeline.simulators.teal_rules import make_eids
from bulkchange_pipeline_tests.simulators.fixtures import requested_clock

TEAL_API_KEY = "teal-key-3b9e"
TEAL_API_SECRET = "tS3cr3t-ApiSecret-91c2f0"
OPERATION_DELAY = 0.3


def teal_account(handle: ServerHandle, callback_base_url: str | None = None, **overrides: Any) -> CarrierAccount:
    """An account for the simulator with test-sized waits (retries in milliseconds)."""
    values: dict[str, Any] = {
        "service_provider_id": 7,
        "integration": "teal",
        "base_url": handle.base_url,
        "username": TEAL_API_KEY,
        "secret": TEAL_API_SECRET,
        "rate_per_second": 0.0,
        "max_concurrency": 4,
        "timeout_seconds": 2.0,
        "max_attempts": 4,
        "retry_wait_seconds": 0.01,
        "callback_base_url": callback_base_url,
    }
    values.update(overrides)
    return CarrierAccount(**values)


def seed_teal(sim: TealSimulator, count: int, start: int = 0, **fields: Any) -> list[str]:
    """Seed `count` eSIMs with the given fields; returns their EIDs."""
    eids = make_eids(count, start=start)
    sim.seed_devices({"eid": e, **fields} for e in eids)
    return eids


@pytest.fixture
def teal_sim(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """A fresh simulator (no rate limit, no faults, 0.3 s operations); `.simulator` is its state.
    On the test's `sim_clock` if it asks for one (then operations complete when it advances)."""
    sim = TealSimulator(
        {TEAL_API_KEY: TEAL_API_SECRET},
        calls_per_minute=0,
        operation_delay_seconds=OPERATION_DELAY,
        clock=requested_clock(request),
    )
    try:
        with sim.run_in_thread() as handle:
            yield handle
    finally:
        sim.close()


class CallbackReceiver:
    """Records every callback as `{"path", "query", "body"}`, the shape a callback store keeps."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self.handle: ServerHandle | None = None

    @property
    def base_url(self) -> str:
        assert self.handle is not None
        return self.handle.root_url

    async def _receive(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = await request.json() if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._arrived:
            self.received.append({"path": request.url.path, "query": dict(request.query_params), "body": body})
            self._arrived.notify_all()
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/callbacks/{carrier}", self._receive, methods=["POST"])])

    def request_ids(self) -> list[str]:
        with self._arrived:
            return [c["query"].get("requestId", "") for c in self.received]

    def wait_for(self, request_ids: set[str], timeout: float = 5.0) -> bool:
        """Wait until a callback for every id arrived; True if it did in time."""
        with self._arrived:
            return self._arrived.wait_for(lambda: request_ids <= set(self.request_ids()), timeout)


@pytest.fixture
def callbacks() -> Iterator[CallbackReceiver]:
    """A running callback receiver; pass `callbacks.base_url` as the account's callback base."""
    receiver = CallbackReceiver()
    with run_app_in_thread(receiver.app()) as handle:
        receiver.handle = handle
        yield receiver
