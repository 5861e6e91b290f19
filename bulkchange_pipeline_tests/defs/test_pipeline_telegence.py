"""A 1,000-line Telegence ActivateNewService through the pipeline, to the end (issue #5).

Telegence activates new lines asynchronously and sends no callbacks: the process run POSTs the
lines in arrays of 200 and leaves every row PROCESSING with its activation id; then
``async_results_sensor`` requests a ``reconcile_async_job`` run per poll, each run asks Telegence
for every activation still pending, and the retry policy ends a line still pending after 6 polls
as API_FAILED. Everything is real: the intake's ``submit`` (validation), the Dagster sensors and
jobs on a Dagster instance, the Telegence simulator over HTTP, SQLite and PostgreSQL.

The simulator settles an activation on its second status poll (``telegence_activation_polls=1``),
rejects the SIMs it is told to with a reason, and keeps one SIM pending forever; its per-activation
poll count proves the forever-pending line was asked about exactly 6 times, and its per-ICCID
activation count that no line was activated twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import ASYNC_SENSOR_NAME, QUIET, tick_and_run
from bulkchange_pipeline.domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import Park, start_park
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import bulk_change, device, device_change, device_history
from bulkchange_pipeline.store.seed import demo_iccid, demo_imei

pytestmark = pytest.mark.timeout(120)

LINES = 1_000
PLAN = "IOTSOC5GB"
REJECTED = (17, 404, 777)  # serials of the SIMs the simulator rejects
FOREVER = 999  # the serial of the SIM whose activation never leaves pending
REASON = "IMEI is blacklisted"
MAX_POLLS = 6  # the seed's "service activation: 6 retries" (TelegenceClient.max_polls)
CREDENTIALS = "E2E_TELEGENCE"


@pytest.fixture(scope="module")
def park() -> Iterator[Park]:
    """The simulators, shared by both backends; activations settle on their second status poll."""
    with start_park(telegence_activation_polls=1) as p:
        yield p


def _seed_inventory(engine: sa.Engine, park: Park) -> tuple[int, int]:
    """A tenant with one Telegence account (batches of 200, no rate limit) and 1,000 SIMs in stock
    (status INVENTORY, ICCID + IMEI, no line yet); returns (tenant id, service provider id)."""
    tenant_id = ref.create_tenant(engine, "fleet-co")
    sp_id = ref.create_service_provider(
        engine,
        tenant_id,
        name="AT&T Telegence",
        integration="telegence",
        carrier="att_telegence",
        base_url=park.base_urls["telegence"],
        credentials_name=CREDENTIALS,
        portal_type=2,
        rate_per_second=0,
        max_concurrency=8,
        batch_size=200,
    )
    for code in ("IOTSOC1GB", PLAN):
        ref.create_carrier_rate_plan(engine, tenant_id, sp_id, code=code, name=code)
    ref.insert_devices(
        engine,
        tenant_id,
        sp_id,
        [
            {
                "iccid": demo_iccid(3, 0, i),
                "imei": demo_imei(3, 0, i),
                "status": "INVENTORY",
                "username": f"sensor-{i:04d}",
            }
            for i in range(LINES)
        ],
    )
    return tenant_id, sp_id


def _rows(engine: sa.Engine, bc_id: int) -> dict[str, dict[str, Any]]:
    """Device rows of the bulk change with their device's columns, by ICCID."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                device_change.c.iccid,
                device_change.c.status,
                device_change.c.status_details,
                device_change.c.carrier_request_id,
                device_change.c.poll_count,
                device.c.status.label("device_status"),
                device.c.msisdn,
                device.c.carrier_rate_plan,
            )
            .join(device, device.c.id == device_change.c.device_id)
            .where(device_change.c.bulk_change_id == bc_id)
        ).all()
    return {r.iccid: dict(r._mapping) for r in rows}


def test_activation_of_1000_lines_completes_through_polling(engine, dagster_instance, park: Park, monkeypatch) -> None:
    tenant_id, sp_id = _seed_inventory(engine, park)
    sync_from_database(engine, park, tenant_id)  # its plans; no line exists yet for these SIMs
    for key, value in park.credentials_env({"telegence": CREDENTIALS}, credential_env_key).items():
        monkeypatch.setenv(key, value)
    sim = park.simulators["telegence"]
    sim.reset_counters()  # the park is shared with the other backend's run
    iccids = [demo_iccid(3, 0, i) for i in range(LINES)]
    rejected, forever = {iccids[i] for i in REJECTED}, iccids[FOREVER]
    sim.configure(reject_iccids=sorted(rejected), pending_iccids=[forever], rejection_reason=REASON)

    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": sp_id,
            "changeType": int(ChangeType.ACTIVATE_NEW_SERVICE),
            "devices": [{"iccid": i} for i in iccids],
            PAYLOAD_KEYS[ChangeType.ACTIVATE_NEW_SERVICE]: {"carrierRatePlan": PLAN},
        }
    )
    bc_id = submit(engine, tenant_id, request, created_by="telegence-e2e").bulk_change_id
    assert count_rows_by_status(engine, bc_id) == {"NEW": LINES}

    defs = build_definitions(
        carriers=CarrierGatewayResource(
            timeout_seconds=5.0,
            max_attempts=4,
            retry_wait_seconds=0.02,
            poll_after_seconds=0,
            async_timeout_seconds=7200,
        )
    )
    _, runs = tick_and_run(dagster_instance, defs, run_config=QUIET)
    assert len(runs) == 1 and runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"PROCESSING": LINES}
    assert get_bulk_change(engine, bc_id)["status"] == "PENDING"  # no run waits for Telegence
    assert sim.activation_requests == LINES // 200 and sim.status_polls == 0

    reconcile_runs = 0
    while get_bulk_change(engine, bc_id)["status"] == "PENDING":
        assert reconcile_runs < MAX_POLLS, _rows(engine, bc_id)[forever]
        _, runs = tick_and_run(dagster_instance, defs, run_config=QUIET, sensor_name=ASYNC_SENSOR_NAME)
        assert len(runs) == 1 and runs[0].success
        reconcile_runs += 1
    # Poll 1: everything pending; poll 2: all but one settled; polls 3-6: the last one alone.
    assert reconcile_runs == MAX_POLLS

    rows = _rows(engine, bc_id)
    done = {i: r for i, r in rows.items() if i not in rejected and i != forever}
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": LINES - 4, "API_FAILED": 4}
    for iccid, row in done.items():
        assert row["status"] == "PROCESSED", row
        assert (row["device_status"], row["carrier_rate_plan"]) == ("A", PLAN)
        line = sim.device(row["msisdn"])
        assert (line["sim"], line["subscriberStatus"], line["singleUserCode"]) == (iccid, "A", PLAN)
    assert len({r["msisdn"] for r in done.values()}) == len(done)  # each got its own number

    for iccid in rejected:
        row = rows[iccid]
        assert row["status"] == "API_FAILED" and f"activation rejected by Telegence: {REASON}" in row["status_details"]
        assert (row["device_status"], row["msisdn"]) == ("INVENTORY", None)
        assert sim.activations[row["carrier_request_id"]].polls == 2

    stuck = rows[forever]
    assert stuck["status"] == "API_FAILED", stuck
    assert stuck["status_details"].startswith(
        f"still pending at telegence after {MAX_POLLS} status polls (request {stuck['carrier_request_id']})"
    )
    assert (stuck["device_status"], stuck["msisdn"]) == ("INVENTORY", None)
    assert sim.activations[stuck["carrier_request_id"]].polls == MAX_POLLS  # asked exactly 6 times
    assert sim.status_polls == 2 * (LINES - 1) + MAX_POLLS

    # Nothing activated twice: one activation per SIM, no replayed submission, one id per row.
    assert [sim.applied_counts[i] for i in iccids] == [1] * LINES
    assert sim.stats()["applied_more_than_once"] == 0 and sim.activation_replays == 0
    assert len({r["carrier_request_id"] for r in rows.values()}) == LINES

    header = get_bulk_change(engine, bc_id)
    with engine.connect() as conn:
        stored_counts = conn.execute(sa.select(bulk_change.c.counts).where(bulk_change.c.id == bc_id)).scalar_one()
        history = conn.execute(
            sa.select(sa.func.count())
            .select_from(device_history)
            .where(device_history.c.bulk_change_id == bc_id, device_history.c.field == "msisdn")
        ).scalar_one()
    assert header["status"] == "PROCESSED" and header["processed_at"] is not None
    assert stored_counts == header["counts"] == {"PROCESSED": LINES - 4, "API_FAILED": 4}
    assert history == len(done)  # the audit trail records each new number
