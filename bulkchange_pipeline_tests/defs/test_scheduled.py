"""Effective dates end to end: submit (``intake.submit.submit``) -> sensor -> run -> store/carrier.

- A change the carrier can date itself (Jasper, Telegence) is sent at once with ``effectiveDate``:
  the simulators hold it as a scheduled edit and our row says so.
- Any other future-dated change (here: a database-only customer rate plan change due one minute
  later) waits in SCHEDULED: the sensor does not request it before it is due, requests it exactly
  once after (run key ``bc-<id>-due-<time>``), and the run processes it; until then it can be
  cancelled, and a cancelled one is never requested.

Nobody waits for a clock: "one minute later" comes by moving the stored times one minute back.
Real parts: Jasper and Telegence simulators over HTTP, a real Dagster instance and the business
database, both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.local_runner import QUIET
from bulkchange_pipeline.domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.telegence import TelegenceSimulator
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.operations import cancel_bulk_change
from bulkchange_pipeline.store.schema import (
    bulk_change,
    device,
    device_change,
    service_provider,
)
from bulkchange_pipeline.store.seed import DemoSeed, seed_demo

from .harness import evaluate_sensor, fast_definitions, sensor_then_runs

CT = ChangeType
JASPER_USER, JASPER_KEY = "demo-jasper", "demo-jasper-key-1"
TG_APP, TG_SECRET = "demo-telegence", "demo-telegence-secret-1"


@pytest.fixture
def world(engine, dagster_instance, monkeypatch):
    """The demo seed (20 devices per carrier) with its Jasper and Telegence providers pointed at
    simulators that hold the same devices."""
    seed = seed_demo(engine, devices_per_carrier=20)
    jasper = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    telegence = TelegenceSimulator({TG_APP: TG_SECRET})
    for name, user, secret in (("DEMO_JASPER", JASPER_USER, JASPER_KEY), ("DEMO_TELEGENCE", TG_APP, TG_SECRET)):
        monkeypatch.setenv(f"BULKCHANGE_CRED_{name}_USERNAME", user)
        monkeypatch.setenv(f"BULKCHANGE_CRED_{name}_SECRET", secret)
    with jasper.run_in_thread() as jh, telegence.run_in_thread() as th:
        with engine.begin() as conn:
            for integration, url in (("jasper", jh.base_url), ("telegence", th.base_url)):
                conn.execute(
                    sa.update(service_provider)
                    .where(service_provider.c.id == seed.service_providers[integration])
                    .values(base_url=url, rate_per_second=0, max_concurrency=8)
                )
            devices = {
                i: [
                    dict(r._mapping)
                    for r in conn.execute(
                        sa.select(device)
                        .where(device.c.service_provider_id == seed.service_providers[i])
                        .order_by(device.c.id)
                    )
                ]
                for i in ("jasper", "telegence")
            }
        jasper.seed_devices(
            {"iccid": d["iccid"], "status": d["status"], "ratePlan": d["carrier_rate_plan"]} for d in devices["jasper"]
        )
        telegence.seed_devices(
            {"subscriberNumber": d["msisdn"], "sim": d["iccid"], "status": d["status"], "plan": d["carrier_rate_plan"]}
            for d in devices["telegence"]
            if d["status"] in ("A", "S")
        )
        yield seed, dagster_instance, jasper, telegence, devices


def _submit(engine, seed: DemoSeed, integration: str, ct: ChangeType, devices: list, **payload) -> int:
    body = {
        "serviceProviderId": seed.service_providers[integration],
        "changeType": int(ct),
        "devices": devices,
        PAYLOAD_KEYS[ct]: payload,
    }
    outcome = submit(engine, seed.tenant_id, BulkChangeRequest.model_validate(body), "test")
    assert outcome.created and not outcome.report.errors, outcome.report.errors
    return outcome.bulk_change_id


def _rows(engine, seed: DemoSeed, bc_id: int) -> list[dict]:
    return list(iter_device_results(engine, seed.tenant_id, bc_id))


def _move_clock(engine, bc_id: int, seconds: float) -> None:
    """Make ``seconds`` pass for one bulk change: every stored time of it moves that far back."""
    back = timedelta(seconds=seconds)
    with engine.begin() as conn:  # computed here, not in SQL: SQLite has no datetime arithmetic on these columns
        for table, key, cols in (
            (device_change, device_change.c.bulk_change_id, ("effective_at", "updated_at")),
            (bulk_change, bulk_change.c.id, ("effective_at", "created_at")),
        ):
            for row in conn.execute(sa.select(table.c.id, *(table.c[c] for c in cols)).where(key == bc_id)).all():
                moved = {c: row._mapping[c] - back for c in cols if row._mapping[c] is not None}
                conn.execute(sa.update(table).where(table.c.id == row.id).values(**moved))


def test_carrier_dated_changes_are_sent_at_once_with_the_date(engine, world) -> None:
    seed, instance, jasper, telegence, devices = world
    when = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    far = when + timedelta(days=190)  # beyond Jasper's 180 days: waits here instead
    active = [d for d in devices["jasper"] if d["status"] == "ACTIVATED"][:4]
    jasper_bc = _submit(
        engine,
        seed,
        "jasper",
        CT.STATUS_UPDATE,
        [d["iccid"] for d in active[:3]] + [{"iccid": active[3]["iccid"], "effectiveDate": far.isoformat()}],
        status="DEACTIVATED",
        effectiveDate=when.isoformat(),
    )
    lines = [d for d in devices["telegence"] if d["status"] == "A" and d["carrier_rate_plan"] != "IOTSOC5GB"][:2]
    tg_bc = _submit(
        engine,
        seed,
        "telegence",
        CT.CARRIER_RATE_PLAN_CHANGE,
        [d["iccid"] for d in lines],
        carrierRatePlan="IOTSOC5GB",
        effectiveDate=when.isoformat(),
    )
    assert count_rows_by_status(engine, jasper_bc) == {"NEW": 3, "SCHEDULED": 1}
    assert count_rows_by_status(engine, tg_bc) == {"NEW": 2}

    result, runs = sensor_then_runs(instance, fast_definitions(), run_config=QUIET)
    assert sorted(int(r.partition_key) for r in result.run_requests) == [jasper_bc, tg_bc]
    assert all(r.success for r in runs)

    # Jasper holds the three edits as scheduled for the date; the devices are unchanged until then.
    for d in active[:3]:
        assert jasper.scheduled[d["iccid"]] == [(when, {"status": "DEACTIVATED"})]
        assert jasper.device(d["iccid"])["status"] == "ACTIVATED"
    assert active[3]["iccid"] not in jasper.scheduled
    rows = _rows(engine, seed, jasper_bc)
    assert [r["status"] for r in rows] == ["PROCESSED"] * 3 + ["SCHEDULED"]
    assert all(r["status_details"].startswith(f"scheduled by Jasper for {when:%Y-%m-%dT%H:%M:%S}") for r in rows[:3])
    head = get_bulk_change(engine, jasper_bc)
    assert (head["status"], head["effective_at"]) == ("SCHEDULED", far.replace(tzinfo=None))  # the far row still waits

    for d in lines:
        assert telegence.scheduled[d["msisdn"]] == [(when.date(), {"singleUserCode": "IOTSOC5GB"})]
        assert telegence.device(d["msisdn"])["singleUserCode"] != "IOTSOC5GB"
    tg_rows = _rows(engine, seed, tg_bc)
    assert [r["status"] for r in tg_rows] == ["PROCESSED"] * 2
    assert all(r["status_details"].startswith(f"scheduled by Telegence for {when:%Y-%m-%d}Z") for r in tg_rows)
    assert get_bulk_change(engine, tg_bc)["status"] == "PROCESSED"
    assert jasper.stats()["applied_more_than_once"] == 0 and telegence.stats()["applied_more_than_once"] == 0

    # Nothing more to request until the far row is due.
    assert not evaluate_sensor(instance, fast_definitions(), cursor=result.cursor).run_requests


def test_database_only_change_due_one_minute_later(engine, world) -> None:
    seed, instance, jasper, _, devices = world
    plan = seed.customer_rate_plans["Fleet Plus 5GB"]
    picked = devices["jasper"][:5]
    due = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    bc_id = _submit(
        engine,
        seed,
        "jasper",
        CT.CUSTOMER_RATE_PLAN_CHANGE,
        [d["iccid"] for d in picked],
        customerRatePlanId=plan,
        effectiveDate=due.isoformat(),
    )
    head = get_bulk_change(engine, bc_id)
    assert (head["status"], head["effective_at"], head["counts"]) == (
        "SCHEDULED",
        due.replace(tzinfo=None),
        {"SCHEDULED": 5},
    )
    defs = fast_definitions()

    # Not due yet: the sensor requests nothing (twice, to be sure the cursor does not matter).
    first = evaluate_sensor(instance, defs)
    assert not first.run_requests
    assert not evaluate_sensor(instance, defs, cursor=first.cursor).run_requests

    left = (due.replace(tzinfo=None) - utcnow()).total_seconds()
    assert 45 < left <= 60
    _move_clock(engine, bc_id, left - 10)  # ten seconds before due
    assert not evaluate_sensor(instance, defs, cursor=first.cursor).run_requests
    _move_clock(engine, bc_id, 11)  # (at least) one second after

    # Due: requested once, under a run key tied to the due time (a second tick asks for the same
    # key, which Dagster runs once), and processed end to end without calling the carrier.
    tick = evaluate_sensor(instance, defs, cursor=first.cursor)
    key = f"bc-{bc_id}-due-{get_bulk_change(engine, bc_id)['effective_at']:%Y%m%dT%H%M%S}"
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [(str(bc_id), key)]
    assert [r.run_key for r in evaluate_sensor(instance, defs, cursor=first.cursor).run_requests] == [key]
    result, runs = sensor_then_runs(instance, defs, cursor=first.cursor, run_config=QUIET)
    assert len(runs) == 1 and runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 5}
    head = get_bulk_change(engine, bc_id)
    assert head["status"] == "PROCESSED" and head["effective_at"] is None
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(device.c.customer_rate_plan_id, device.c.data_allocation_mb).where(
                device.c.id.in_([d["id"] for d in picked])
            )
        ).all()
    assert sorted(got) == [(plan, 5120)] * 5
    assert jasper.stats()["total_calls"] == 0  # database only

    # Never again.
    assert not evaluate_sensor(instance, defs, cursor=result.cursor).run_requests


def test_scheduled_change_is_cancellable_until_due(engine, world) -> None:
    seed, instance, jasper, _, devices = world
    due = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    picked = devices["jasper"][5:8]
    bc_id = _submit(
        engine,
        seed,
        "jasper",
        CT.CUSTOMER_RATE_PLAN_CHANGE,
        [d["iccid"] for d in picked],
        customerRatePlanId=seed.customer_rate_plans["Fleet Plus 5GB"],
        effectiveDate=due.isoformat(),
    )
    assert get_bulk_change(engine, bc_id)["status"] == "SCHEDULED"

    result = cancel_bulk_change(engine, seed.tenant_id, bc_id, by="ops@example")
    assert (result.cancelled, result.status) == (3, "CANCELLED")
    assert [r["status"] for r in _rows(engine, seed, bc_id)] == ["CANCELLED"] * 3

    _move_clock(engine, bc_id, 120)  # its date has come and gone
    assert not evaluate_sensor(instance, fast_definitions()).run_requests
    assert count_rows_by_status(engine, bc_id) == {"CANCELLED": 3}
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count())
                .select_from(device)
                .where(device.c.id.in_([d["id"] for d in picked]), device.c.data_allocation_mb == 5120)
            ).scalar()
            == 0
        )
    assert jasper.stats()["total_calls"] == 0
