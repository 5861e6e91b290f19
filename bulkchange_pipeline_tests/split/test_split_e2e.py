"""Issue 21's "Done when", end to end on both backends: a 3-carrier request (Jasper, Telegence,
Pond, plus a Rev.io line whose carrier cannot do the change and a device in nobody's inventory)
submitted over HTTP without a service provider is split into one bulk change per carrier; the real
sensor and job run each child as its own partition against the simulators; the submission has one
status (PROCESSED) and one results file with every device. Cancel reaches every child of a second
submission before any run, and the sensor then starts none of them."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import ASYNC_SENSOR_NAME, QUIET, tick_and_run
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import Park, start_park
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.schema import device
from bulkchange_pipeline.store.seed import demo_credentials_names, load_demo, point_demo_at, seed_demo

from .conftest import UNKNOWN_ICCID, edit_body

FINAL = {"PROCESSED", "ERROR", "CANCELLED"}


@pytest.fixture(scope="module")
def park():
    with start_park(teal_operation_delay_seconds=0.05, telegence_activation_polls=1) as p:
        yield p


@pytest.fixture
def world(engine: sa.Engine, db_url: str, dagster_instance, park: Park, monkeypatch: pytest.MonkeyPatch):
    with run_app_in_thread(create_app(db_url)) as callbacks:
        seed_demo(engine, devices_per_carrier=20)
        point_demo_at(engine, park.base_urls, unlimited=True)
        seed = load_demo(engine)
        sync_from_database(engine, park, seed.tenant_id)
        for key, value in park.credentials_env(demo_credentials_names(), credential_env_key).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", callbacks.root_url)
        key = create_api_key(engine, seed.tenant_id, "ops")
        with TestClient(create_app(db_url)) as client:
            yield client, {"X-API-Key": key}, seed


def _definitions():
    return build_definitions(
        carriers=CarrierGatewayResource(
            timeout_seconds=5.0,
            max_attempts=4,
            retry_wait_seconds=0.02,
            poll_after_seconds=0,
            async_timeout_seconds=7200,
        )
    )


def _run_until_final(engine: sa.Engine, instance: Any, park: Park, ids: list[int]) -> int:
    """Sensor ticks and runs (and the async sensor, for any carrier that answers later) until every
    child is final; returns how many process runs there were."""
    defs = _definitions()
    _, runs = tick_and_run(instance, defs, run_config=QUIET)
    assert all(r.success for r in runs)
    started = len(runs)
    for _ in range(20):
        if all(get_bulk_change(engine, i)["status"] in FINAL for i in ids):
            return started
        park.wait_idle(30)
        _, runs = tick_and_run(instance, defs, run_config=QUIET, sensor_name=ASYNC_SENSOR_NAME)
        assert all(r.success for r in runs)
        if not runs:
            time.sleep(0.05)
    raise AssertionError({i: get_bulk_change(engine, i)["status"] for i in ids})


def test_a_three_carrier_request_is_split_processed_and_reported_as_one(
    world, engine: sa.Engine, dagster_instance, park: Park
) -> None:
    client, headers, seed = world
    s = seed.sample_iccids
    devices = [s["jasper"][0], s["telegence"][0], s["pond"][0], s["revio"][0], s["jasper"][1], UNKNOWN_ICCID]
    devices += [s["telegence"][1], s["pond"][1], s["jasper"][2], s["telegence"][2], s["pond"][2]]
    body = edit_body(devices, usernameCostCenterUpdate={"username": "truck-17", "costCenter": "CC-42"})
    r = client.post("/bulk-changes", json=body, headers=headers)
    assert r.status_code == 202, r.text
    sid = r.json()["submissionId"]
    kids = {c["integration"]: c for c in r.json()["children"]}
    assert list(kids) == ["jasper", "telegence", "pond", "revio"]
    assert [kids[i]["counts"] for i in ("jasper", "telegence", "pond")] == [{"NEW": 3}] * 3
    assert kids["revio"]["counts"] == {"ERROR": 1} and kids["revio"]["status"] == "ERROR"  # only its rows refused
    assert [e["identifier"] for e in r.json()["refused"]] == [UNKNOWN_ICCID]

    runs = _run_until_final(engine, dagster_instance, park, [c["bulkChangeId"] for c in kids.values()])
    assert runs == 3  # one run per child with devices to send, each its own partition; none for the refused one

    status = client.get(f"/submissions/{sid}", headers=headers).json()
    assert status["status"] == "PROCESSED" and status["counts"] == {"PROCESSED": 9, "ERROR": 2}
    assert [c["status"] for c in status["children"]] == ["PROCESSED", "PROCESSED", "PROCESSED", "ERROR"]

    # At the carriers and in the inventory.
    jasper = park.simulators["jasper"]
    assert all(jasper.device(i)["accountCustom2"] == "CC-42" for i in s["jasper"][:3])
    with engine.connect() as conn:
        changed = conn.execute(
            sa.select(device.c.iccid, device.c.cost_center).where(
                device.c.iccid.in_([d for d in devices if d != UNKNOWN_ICCID and d != s["revio"][0]])
            )
        ).all()
    assert len(changed) == 9 and {c.cost_center for c in changed} == {"CC-42"}

    # One results file: every device, each with its bulk change and carrier.
    text = client.get(f"/submissions/{sid}/devices", params={"format": "csv"}, headers=headers).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["iccid"] for r in rows) == sorted(devices)
    assert {r["status"] for r in rows if r["iccid"] not in (UNKNOWN_ICCID, s["revio"][0])} == {"PROCESSED"}
    assert {r["iccid"]: r["status"] for r in rows if r["status"] == "ERROR"} == {
        s["revio"][0]: "ERROR",
        UNKNOWN_ICCID: "ERROR",
    }
    assert {r["bulkChangeId"] for r in rows if r["iccid"] == UNKNOWN_ICCID} == {""}


def test_cancel_reaches_every_child_and_no_run_starts(world, engine: sa.Engine, dagster_instance, park: Park) -> None:
    client, headers, seed = world
    s = seed.sample_iccids
    r = client.post("/bulk-changes", json=edit_body([s["jasper"][3], s["telegence"][3], s["pond"][3]]), headers=headers)
    assert r.status_code == 202, r.text
    sid = r.json()["submissionId"]
    cancelled = client.post(f"/submissions/{sid}:cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    calls = park.calls()
    _, runs = tick_and_run(dagster_instance, _definitions(), run_config=QUIET)
    assert runs == [] and park.calls() == calls
    assert client.get(f"/submissions/{sid}", headers=headers).json()["counts"] == {"CANCELLED": 3}
