"""A run killed half-way and re-executed applies every device exactly once; a 10,000-device
bulk change runs in at most 64 steps (steps grow with batches, not devices)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change

from ..factories import JASPER_KEY, JASPER_USER, make_account, make_bulk_change, make_devices
from .harness import execute, fast_definitions, sensor_then_runs

CHILD = textwrap.dedent(
    """
    import dagster as dg
    from bulkchange_pipeline_tests.defs.harness import execute, fast_definitions
    with dg.DagsterInstance.get() as instance:
        execute(instance, fast_definitions(), {key!r})
    """
)


@pytest.fixture
def jasper_env(monkeypatch):
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)


def _seed(engine, sim, base_url, n, **account):
    ids = make_account(engine, base_url, **account)
    devices = make_devices(engine, ids, n)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    return ids, devices


def test_run_killed_half_way_then_rerun_applies_each_device_once(
    db_url, engine, tmp_path, monkeypatch, jasper_env, _sqlite_dagster_template
):
    n = 240
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=2)
    sim.configure(latency_ms=15)
    home = tmp_path / "dagster_home"
    shutil.copytree(_sqlite_dagster_template, home)  # storage made once per session, not per process
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    with sim.run_in_thread() as handle:
        ids, devices = _seed(engine, sim, handle.base_url, n, max_concurrency=2, batch_size=60)
        bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(key=str(bc_id))],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while sim.stats()["applied_devices"] < n // 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        applied_before = sim.stats()["applied_devices"]
        counts = count_rows_by_status(engine, bc_id)
        assert 0 < applied_before < n, "the run must be killed half-way"
        assert counts.get("PROCESSING", 0) > 0 or counts.get("NEW", 0) > 0

        with dg.DagsterInstance.get() as instance:
            assert execute(instance, fast_definitions(), str(bc_id)).success
        stats = sim.stats()
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": n}
    assert stats["applied_devices"] == n
    assert stats["applied_more_than_once"] == 0
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"


# One backend: the step count does not depend on it, and both are covered by the smaller tests.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ten_thousand_devices_in_at_most_64_steps(engine, dagster_instance, jasper_env):
    n = 10_000
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=0)
    with sim.run_in_thread() as handle:
        ids, devices = _seed(engine, sim, handle.base_url, n, max_concurrency=16, batch_size=200)
        bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        _, runs = sensor_then_runs(dagster_instance, fast_definitions())
        stats = sim.stats()
    assert runs[0].success
    steps = [e for e in runs[0].all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert len(steps) <= 64, len(steps)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": n}
    assert stats["applied_devices"] == n and stats["applied_more_than_once"] == 0
