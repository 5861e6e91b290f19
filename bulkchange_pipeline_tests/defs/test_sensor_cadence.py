"""``bulk_change_sensor`` ticks every second (issue 22, P5): a tick requests runs for submitted bulk
changes every time, and does the slower housekeeping (showing held and scheduled bulk changes,
expiring approvals) only when the cursor says ``HOUSEKEEPING_SECONDS`` have passed."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bulkchange_pipeline.defs.partitions import bulk_change_partitions
from bulkchange_pipeline.defs.sensors import HOUSEKEEPING_SECONDS, SENSOR_INTERVAL_SECONDS, _housekeeping_due
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.schema import bulk_change

from ..factories import make_account, make_bulk_change, make_devices
from .harness import evaluate_sensor, fast_definitions


def test_housekeeping_cadence() -> None:
    now = 1_000_000.0
    assert _housekeeping_due(None, now) == (True, f"{now:.3f}")  # no cursor (local runner, first tick)
    assert _housekeeping_due("not a time", now)[0]
    assert _housekeeping_due(f"{now - 1:.3f}", now) == (False, f"{now - 1:.3f}")  # cursor kept
    assert _housekeeping_due(f"{now - HOUSEKEEPING_SECONDS:.3f}", now)[0]
    assert _housekeeping_due(f"{now + 60:.3f}", now)[0]  # a cursor from the future (clock stepped back)
    assert SENSOR_INTERVAL_SECONDS == 1


def test_a_tick_between_housekeeping_still_requests_runs(engine, dagster_instance, jasper) -> None:
    sim, base_url = jasper
    ids = make_account(engine, base_url)
    devices = make_devices(engine, ids, 4)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    held = make_bulk_change(engine, ids, devices[:2], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == held).values(process_changes=False))
    new = make_bulk_change(engine, ids, devices[2:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = fast_definitions()

    recent = f"{time.time() - 1:.3f}"
    tick = evaluate_sensor(dagster_instance, defs, cursor=recent)
    assert [r.partition_key for r in tick.run_requests] == [str(new)]  # the submission does not wait
    assert tick.cursor == recent
    assert not dagster_instance.has_dynamic_partition(bulk_change_partitions.name, str(held))  # not yet shown

    tick = evaluate_sensor(dagster_instance, defs, cursor=f"{time.time() - HOUSEKEEPING_SECONDS - 1:.3f}")
    assert dagster_instance.has_dynamic_partition(bulk_change_partitions.name, str(held))  # housekeeping ran
    assert tick.cursor is not None and float(tick.cursor) > time.time() - 5
