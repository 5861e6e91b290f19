"""The partitions tell the truth at a glance: each bulk change's state on its ``bulk_change`` asset
partition (materialization or observation metadata, two partitioned checks) and on its run's
``bulkchange/outcome`` tag, for every state an operator needs to tell apart."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.outcome import BULK_CHANGE_ASSET, OUTCOME_TAG
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.operations import cancel_bulk_change
from bulkchange_pipeline.store.schema import bulk_change

from ..factories import JASPER_KEY, JASPER_USER, make_account, make_bulk_change, make_devices
from .harness import evaluate_sensor, execute, fast_definitions, sensor_then_runs


@pytest.fixture
def jasper(monkeypatch):
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url


def partition_state(instance: dg.DagsterInstance, key: str) -> dict:
    """What the UI shows for one partition: the latest materialization's (or, before any run, the
    observation's) metadata, and each check's latest result for that partition."""
    filt = dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET, asset_partitions=[key])
    mats = instance.fetch_materializations(filt, limit=1).records
    obs = instance.fetch_observations(filt, limit=1).records
    record = (mats or obs or [None])[0]
    state: dict = {"event": None}
    if record is not None:
        event = record.asset_materialization or record.asset_observation
        state = {"event": "materialization" if mats else "observation"}
        state.update({k: v.value for k, v in event.metadata.items()})
    for name in ("no_failed_devices", "settled"):
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(BULK_CHANGE_ASSET, name), limit=100
        )
        mine = [h for h in history if h.partition == key]
        if mine:
            evaluation = mine[0].event.dagster_event.event_specific_data
            state[name] = "passed" if evaluation.passed else f"failed:{evaluation.severity.value}"
    return state


def _seed(engine, sim, base_url, n, statuses=None):
    ids = make_account(engine, base_url)
    devices = make_devices(engine, ids, n)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": (statuses or {}).get(i, "ACTIVATED"), "ratePlan": "IOT-1GB"}
        for i, d in enumerate(devices)
    )
    return ids, devices


def test_done_and_done_with_failures_differ_on_the_partition(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 6, statuses={4: "PURGED", 5: "PURGED"})
    clean = make_bulk_change(engine, ids, devices[:4], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    failing = make_bulk_change(engine, ids, devices[2:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert [r.success for r in runs] == [True, True]  # both runs did their job: green runs

    done = partition_state(dagster_instance, str(clean))
    assert (done["event"], done["outcome"], done["status"]) == ("materialization", "done", "PROCESSED")
    assert (done["no_failed_devices"], done["settled"]) == ("passed", "passed")
    failed = partition_state(dagster_instance, str(failing))
    assert (failed["outcome"], failed["status"], failed["failed_devices"]) == ("done_with_failures", "PROCESSED", 2)
    assert (failed["no_failed_devices"], failed["settled"]) == ("failed:ERROR", "passed")
    assert f"bulkchange results {failing} --csv -" in failed["what_next"]
    tags = {r.tags["dagster/partition"]: r.tags.get(OUTCOME_TAG) for r in dagster_instance.get_runs()}
    assert tags == {str(clean): "done", str(failing): "done_with_failures"}


def test_held_and_scheduled_are_visible_before_any_run_and_a_launch_releases_the_held_one(
    engine, dagster_instance, jasper
):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 4)
    held = make_bulk_change(engine, ids, devices[:2], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == held).values(process_changes=False))
    later = utcnow() + timedelta(days=3)
    scheduled = make_bulk_change(
        engine, ids, devices[2:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"}, effective_at=later
    )
    defs = fast_definitions()

    tick = evaluate_sensor(dagster_instance, defs)
    assert not tick.run_requests
    partitions = set(dagster_instance.get_dynamic_partitions("bulk_change"))
    assert {str(held), str(scheduled)} <= partitions
    h, s = partition_state(dagster_instance, str(held)), partition_state(dagster_instance, str(scheduled))
    assert (h["event"], h["outcome"], h["settled"]) == ("observation", "held", "failed:WARN")
    assert f"bulkchange release {held}" in h["what_next"]
    assert (s["event"], s["outcome"], s["settled"]) == ("observation", "scheduled", "failed:WARN")
    assert s["next_effective_at"].startswith(later.strftime("%Y-%m-%dT%H:%M"))
    # Shown once: a second tick records nothing new for them.
    before = len(
        dagster_instance.fetch_observations(dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET), limit=100).records
    )
    evaluate_sensor(dagster_instance, defs)
    after = len(
        dagster_instance.fetch_observations(dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET), limit=100).records
    )
    assert after == before

    # An operator launches the held partition from the UI: that releases it, and the run settles it.
    assert execute(dagster_instance, defs, str(held)).success
    assert get_bulk_change(engine, held)["process_changes"] is True
    assert partition_state(dagster_instance, str(held))["outcome"] == "done"


def test_cancelled_is_its_own_state(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    cancel_bulk_change(engine, ids["tenant_id"], bc_id, by="test")
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    assert execute(dagster_instance, fast_definitions(), str(bc_id)).success
    state = partition_state(dagster_instance, str(bc_id))
    assert (state["outcome"], state["status"], state["settled"]) == ("cancelled", "CANCELLED", "failed:WARN")
    assert state["no_failed_devices"] == "passed"
