"""The partitions tell the truth at a glance: each bulk change's state on its ``bulk_change`` asset
partition (materialization or observation metadata, two partitioned checks) and on its run's
``bulkchange/outcome`` tag, for every state an operator needs to tell apart."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from bulkchange_pipeline.defs.outcome import BULK_CHANGE_ASSET, OUTCOME_TAG
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.operations import cancel_bulk_change
from bulkchange_pipeline.store.schema import bulk_change

from ..factories import make_account, make_bulk_change, make_devices
from .harness import evaluate_sensor, execute, fast_definitions, sensor_then_runs


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


def test_held_and_scheduled_are_visible_before_any_run_and_only_release_held_releases_one(
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
    assert (h["event"], h["outcome"]) == ("observation", "held")
    assert f"bulkchange release {held}" in h["what_next"]
    assert (s["event"], s["outcome"]) == ("observation", "scheduled")
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

    # A run of the held partition without release_held (a backfill, a launch by mistake) sends nothing.
    assert execute(dagster_instance, defs, str(held)).success
    assert get_bulk_change(engine, held)["process_changes"] is False
    assert sim.stats()["total_calls"] == 0
    assert partition_state(dagster_instance, str(held))["outcome"] == "held"
    # The operator launches it from the launchpad with release_held: released, processed, settled.
    release = {"ops": {"plan_batches_op": {"config": {"release_held": True}}}}
    assert execute(dagster_instance, defs, str(held), run_config=release).success
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


def test_a_held_one_cancelled_without_a_run_stops_saying_held(engine, dagster_instance, jasper):
    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 2)
    held = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == held).values(process_changes=False))
    defs = fast_definitions()
    evaluate_sensor(dagster_instance, defs)
    assert partition_state(dagster_instance, str(held))["outcome"] == "held"

    cancel_bulk_change(engine, ids["tenant_id"], held, by="test")
    evaluate_sensor(dagster_instance, defs)
    state = partition_state(dagster_instance, str(held))
    assert (state["event"], state["outcome"], state["status"]) == ("materialization", "cancelled", "CANCELLED")
    before = len(
        dagster_instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET), limit=50).records
    )
    evaluate_sensor(dagster_instance, defs)  # recorded once
    after = len(
        dagster_instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET), limit=50).records
    )
    assert after == before


def test_a_failed_run_leaves_the_partition_saying_unfinished(engine, dagster_instance, jasper):
    """A run that failed before finishing: the failure sensor settles the header and records
    ``unfinished`` on the partition, with what to do (resume)."""
    from bulkchange_pipeline.defs.sensors import bulk_change_failure_sensor

    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 3)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(bc_id)])
    defs = fast_definitions()
    # A run that fails at its carrier resource (launchpad settings beyond bounds): nothing sent.
    bad = {"resources": {"carriers": {"config": {"max_attempts": 1000}}}}
    result = execute(dagster_instance, defs, str(bc_id), run_config=bad, raise_on_error=False)
    assert not result.success
    run = dagster_instance.get_run_by_id(result.run_id)
    failure = next(
        e for e in dagster_instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_run_failure
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="bulk_change_failure_sensor",
        dagster_instance=dagster_instance,
        dagster_run=run,
        dagster_event=failure.dagster_event,
        resources=dict(defs.resources or {}),
    ).for_run_failure()
    bulk_change_failure_sensor(context)
    state = partition_state(dagster_instance, str(bc_id))
    assert (state["outcome"], state["status"]) == ("unfinished", "ERROR")
    assert f"bulkchange resume {bc_id}" in state["what_next"]


def test_a_run_releasing_a_held_one_never_shows_it_to_the_sensor_as_new(engine, dagster_instance, jasper):
    """The run's release turns the header PROCESSING in the same transaction: between that release
    and the run's first batch the sensor must not see a NEW, released bulk change without a run of
    its own (it would start a second run)."""
    from bulkchange_pipeline.store.bulk_changes import list_waiting
    from bulkchange_pipeline.store.operations import release_bulk_change

    sim, base_url = jasper
    ids, devices = _seed(engine, sim, base_url, 2)
    held = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == held).values(process_changes=False))
    release_bulk_change(engine, ids["tenant_id"], held, by="a run", processing=True)
    assert get_bulk_change(engine, held)["status"] == "PROCESSING"
    assert held not in [q.id for q in list_waiting(engine, 0, 100)]
    assert not evaluate_sensor(dagster_instance, fast_definitions()).run_requests
