"""Fixtures shared by the Dagster definition tests."""

import pytest

from bulkchange_pipeline.simulators.jasper import JasperSimulator

from ..factories import JASPER_KEY, JASPER_USER


@pytest.fixture
def jasper(monkeypatch):
    """A Jasper simulator on a free loopback port with the test account's credentials in the
    environment; yields (simulator, base URL)."""
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
