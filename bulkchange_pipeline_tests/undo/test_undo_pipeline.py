"""Undo end to end (issue 21 "Done when"), on both backends: the intake API, the real sensor and
job, and the Jasper simulator over HTTP.

A CarrierRatePlanChange of devices on two different plans is processed; one device is changed again
by a later bulk change; the undo (dry run first: nothing stored) restores every other device's own
previous plan at the simulator and in the device table, with history naming the undo, links to the
original, is made once however often it is asked, and leaves the re-changed device out with the
later bulk change named. A StatusUpdate undo leaves out the deactivation (irreversible) and the
row never processed; the undo of a reactivation is itself a deactivation, so the approval policy
holds it until a second key approves, then it restores the statuses. The CLI shows and submits the same undo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.park import JASPER_KEY, JASPER_USER, Park
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.approvals import set_policy
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.schema import bulk_change, device, device_history
from bulkchange_pipeline.store.seed import demo_credentials_names, demo_iccid, point_demo_at

from ..defs.harness import fast_definitions
from ..intake.test_api import Api, make_api

N = 24
PLANS = {"IOT-1GB": "CP-IOT-DATA", "IOT-10GB-SMS": "CP-IOT-DATA-SMS"}  # the demo seed's Jasper plans


@dataclass
class World:
    api: Api
    sim: JasperSimulator
    iccids: list[str]
    before: dict[str, str]  # iccid -> its plan before the change

    def post(self, path: str, **kw):
        return self.api.client.post(path, headers=self.api.demo, **kw)

    def run(self, dagster_instance) -> None:
        _, runs = tick_and_run(dagster_instance, fast_definitions(), run_config=QUIET)
        assert runs and all(r.success for r in runs)


@pytest.fixture
def world(engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    for api in make_api(engine, db_url, devices_per_carrier=0):
        with sim.run_in_thread() as handle:
            park = Park({"jasper": sim}, {"jasper": handle})
            names = {"jasper": demo_credentials_names()["jasper"]}
            for key, value in park.credentials_env(names, credential_env_key).items():
                monkeypatch.setenv(key, value)
            point_demo_at(engine, park.base_urls, unlimited=True)
            iccids = [demo_iccid(1, 0, i) for i in range(N)]
            before = {i: list(PLANS)[n % 2] for n, i in enumerate(iccids)}
            status = {i: "ACTIVATED" for i in iccids}
            ref.insert_devices(
                engine,
                api.seed.tenant_id,
                api.jasper,
                [
                    {"iccid": i, "status": status[i], "carrier_rate_plan": p, "communication_plan": PLANS[p]}
                    for i, p in before.items()
                ],
            )
            sim.seed_devices(
                {"iccid": i, "status": status[i], "ratePlan": p, "communicationPlan": PLANS[p]}
                for i, p in before.items()
            )
            yield World(api, sim, iccids, before)


def _plan_change(w: World, devices: list[str], plan: str) -> int:
    body = {
        "serviceProviderId": w.api.jasper,
        "changeType": 7,
        "devices": devices,
        "carrierRatePlanUpdate": {"carrierRatePlan": plan},
    }
    r = w.post("/bulk-changes", json=body)
    assert r.status_code == 201 and r.json()["status"] == "NEW", r.text
    return r.json()["id"]


def _bulk_change_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one()


def _device_rows(engine: sa.Engine, iccids: list[str]) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        return {r.iccid: r for r in conn.execute(sa.select(device).where(device.c.iccid.in_(iccids)))}


def test_undo_of_a_rate_plan_change_restores_every_devices_previous_plan_at_the_carrier_and_inventory(
    world: World, dagster_instance
) -> None:
    w, engine = world, world.api.engine
    original = _plan_change(w, w.iccids, "IOT-5GB")
    w.run(dagster_instance)
    assert count_rows_by_status(engine, original) == {"PROCESSED": N}
    assert {w.sim.device(i)["ratePlan"] for i in w.iccids} == {"IOT-5GB"}

    changed_again = w.iccids[0]
    later = _plan_change(w, [changed_again], "IOT-10GB-SMS")
    w.run(dagster_instance)
    assert w.sim.device(changed_again)["ratePlan"] == "IOT-10GB-SMS"

    # Dry run: what would be restored and what is left out; nothing stored, nothing sent.
    stored_before, calls_before = _bulk_change_count(engine), w.sim.stats()["total_calls"]
    dry = w.post(f"/bulk-changes/{original}/undo", params={"dryRun": "true"})
    assert dry.status_code == 200, dry.text
    shown = dry.json()
    assert shown["stored"] is False and shown["bulkChange"] is None and shown["originalId"] == original
    restored = {d["device"]: d for d in shown["restored"]}
    assert set(restored) == set(w.iccids[1:])
    for i in w.iccids[1:]:
        assert restored[i]["carrier_rate_plan"] == w.before[i]
        # the communication plan is restored where the change moved it (IOT-5GB shares CP-IOT-DATA)
        moved = "CP-IOT-DATA-SMS" if w.before[i] == "IOT-10GB-SMS" else None
        assert restored[i].get("communication_plan") == moved
    [left] = shown["leftOut"]
    assert left["device"] == changed_again
    assert "changed again since" in left["reason"] and f"bulk change {later}" in left["reason"]
    assert shown["validation"]["accepted"] == N - 1 and shown["validation"]["refused"] == 0
    assert _bulk_change_count(engine) == stored_before and w.sim.stats()["total_calls"] == calls_before

    # The undo: a new bulk change linked to the original; a double click makes one undo.
    made = w.post(f"/bulk-changes/{original}/undo")
    assert made.status_code == 201, made.text
    undo_id = made.json()["bulkChange"]["id"]
    assert made.json()["bulkChange"]["status"] == "NEW" and made.headers["Location"] == f"/bulk-changes/{undo_id}"
    again = w.post(f"/bulk-changes/{original}/undo")
    assert again.status_code == 200 and again.json()["bulkChange"]["id"] == undo_id, again.text
    assert again.json()["bulkChange"]["created"] is False
    with engine.connect() as conn:
        links = dict(conn.execute(sa.select(bulk_change.c.id, bulk_change.c.undo_of)).all())
    assert links[undo_id] == original and links[original] is None and links[later] is None
    seen = w.api.client.get(f"/bulk-changes/{undo_id}", headers=w.api.demo).json()
    assert (seen["undoOf"], seen["idempotencyKey"], seen["changeType"]) == (original, f"undo-of-{original}", 7)
    assert _bulk_change_count(engine) == stored_before + 1

    w.run(dagster_instance)
    assert count_rows_by_status(engine, undo_id) == {"PROCESSED": N - 1}
    rows = _device_rows(engine, w.iccids)
    for i in w.iccids[1:]:
        at_carrier = w.sim.device(i)
        assert (at_carrier["ratePlan"], at_carrier["communicationPlan"]) == (w.before[i], PLANS[w.before[i]]), i
        assert (rows[i].carrier_rate_plan, rows[i].communication_plan) == (w.before[i], PLANS[w.before[i]]), i
    assert w.sim.device(changed_again)["ratePlan"] == "IOT-10GB-SMS"  # the later change stands
    assert rows[changed_again].carrier_rate_plan == "IOT-10GB-SMS"
    with engine.connect() as conn:
        hist = conn.execute(
            sa.select(device_history)
            .where(device_history.c.device_id == rows[w.iccids[1]].id, device_history.c.field == "carrier_rate_plan")
            .order_by(device_history.c.id)
        ).all()
    assert [(h.old_value, h.new_value, h.bulk_change_id) for h in hist] == [
        (w.before[w.iccids[1]], "IOT-5GB", original),
        ("IOT-5GB", w.before[w.iccids[1]], undo_id),
    ]
    # Asked again after it ran: still the one undo, nothing new.
    third = w.post(f"/bulk-changes/{original}/undo")
    assert third.status_code == 200 and third.json()["bulkChange"]["id"] == undo_id


def _status_change(w: World, devices: list) -> int:
    body = {"serviceProviderId": w.api.jasper, "changeType": 1, "devices": devices, "statusUpdate": {}}
    r = w.post("/bulk-changes", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_status_update_undo_leaves_out_the_irreversible_and_the_unprocessed(world: World, dagster_instance) -> None:
    w, engine = world, world.api.engine
    unknown = demo_iccid(1, 0, 999)  # not in the inventory: refused at validation, an ERROR row
    deactivation = _status_change(w, [{"device": i, "status": "DEACTIVATED"} for i in w.iccids[:4]] + [unknown])
    w.run(dagster_instance)
    assert count_rows_by_status(engine, deactivation) == {"PROCESSED": 4, "ERROR": 1}

    nothing = w.post(f"/bulk-changes/{deactivation}/undo")
    assert nothing.status_code == 200, nothing.text
    left = {x["device"]: x["reason"] for x in nothing.json()["leftOut"]}
    assert "not PROCESSED" in left[unknown]
    for i in w.iccids[:4]:
        assert "cannot reverse" in left[i] and "Control Center: deactivation" in left[i], left[i]
    assert nothing.json()["bulkChange"] is None and "nothing to undo" in nothing.json()["message"]

    reactivation = _status_change(w, [{"device": i, "status": "ACTIVATED"} for i in w.iccids[:3]])
    w.run(dagster_instance)
    dry = w.post(f"/bulk-changes/{reactivation}/undo", params={"dryRun": "true"}).json()
    assert dry["restored"] == [{"device": i, "status": "DEACTIVATED"} for i in w.iccids[:3]]
    assert dry["leftOut"] == [] and dry["stored"] is False

    # The undo deactivates: under a policy holding irreversible changes it waits for a second key.
    set_policy(engine, w.api.seed.tenant_id, ApprovalPolicy(irreversible=True))
    made = w.post(f"/bulk-changes/{reactivation}/undo")
    assert made.status_code == 201, made.text
    undo_id = made.json()["bulkChange"]["id"]
    assert made.json()["bulkChange"]["status"] == "AWAITING_APPROVAL"
    approver = {"Authorization": f"Bearer {create_api_key(engine, w.api.seed.tenant_id, 'bob', ['approver'])}"}
    approved = w.api.client.post(f"/bulk-changes/{undo_id}/approve", headers=approver)
    assert approved.status_code == 200 and approved.json()["status"] == "NEW", approved.text
    w.run(dagster_instance)
    assert count_rows_by_status(engine, undo_id) == {"PROCESSED": 3}
    rows = _device_rows(engine, w.iccids[:4])
    assert [w.sim.device(i)["status"] for i in w.iccids[:4]] == ["DEACTIVATED"] * 4
    assert [rows[i].status for i in w.iccids[:4]] == ["DEACTIVATED"] * 4


def test_the_cli_shows_and_submits_the_same_undo(world: World, dagster_instance, db_url: str) -> None:
    w, engine = world, world.api.engine
    original = _plan_change(w, w.iccids[:3], "IOT-5GB")
    runner = CliRunner()
    base = ["--tenant", "demo", "--database-url", db_url]
    early = runner.invoke(main, ["undo", str(original), *base])
    assert early.exit_code == 1 and "is NEW: undo it once it is finished" in early.output, early.output
    w.run(dagster_instance)

    stored = _bulk_change_count(engine)
    dry = runner.invoke(main, ["undo", str(original), "--dry-run", *base])
    assert dry.exit_code == 0, dry.output
    for i in w.iccids[:3]:
        assert f"restore {i}: carrier_rate_plan={w.before[i]}" in dry.output
    assert "dry run: nothing stored" in dry.output and _bulk_change_count(engine) == stored

    made = runner.invoke(main, ["undo", str(original), *base])
    assert made.exit_code == 0 and "created bulk change" in made.output, made.output
    twice = runner.invoke(main, ["undo", str(original), *base])
    assert twice.exit_code == 0 and "already undone as bulk change" in twice.output
    assert _bulk_change_count(engine) == stored + 1
    missing = runner.invoke(main, ["undo", "999999", *base])
    assert missing.exit_code == 1 and "999999" in missing.output
