"""Four-eyes approval end to end (issue 21 "Done when"), on both backends: the intake API, the real
sensor and job, and the Jasper simulator.

A 5,000-device deactivation under a policy that holds big and irreversible changes waits in
AWAITING_APPROVAL: the sensor starts no run (its partition says ``awaiting_approval``) and nothing
reaches the carrier; the submitter's own approval is refused (403, the four-eyes rule), as are a
viewer's and a submitter-only key's; a second key approves it and it is processed end to end, with
who submitted and approved it in the log, the status answer and the run's summary. An expiry
ends one nobody acts on, from the sensor's tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import clock as defs_clock
from bulkchange_pipeline.defs.local_runner import QUIET, evaluate_sensor, tick_and_run
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.domain.clock import ManualClock
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import JASPER_KEY, JASPER_USER, Park
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.approvals import set_policy
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import bulk_change_log
from bulkchange_pipeline.store.seed import demo_credentials_names, demo_iccid, point_demo_at

from ..defs.harness import fast_definitions
from ..defs.test_outcome import partition_state
from ..intake.test_api import Api, make_api
from ..reliability.common import HoldingJasper

N = 5_000
RUN_CONFIG = {**QUIET, "ops": {"plan_batches_op": {"config": {"batch_size": 500}}}}


@dataclass
class World:
    api: Api
    sim: HoldingJasper
    iccids: list[str]
    keys: dict[str, dict[str, str]]  # name -> headers: alice (submitter+approver), bob (approver), sam, vic

    def post(self, path: str, who: str, **kw):
        return self.api.client.post(path, headers=self.keys[who], **kw)

    def status(self, bc_id: int) -> dict:
        return self.api.client.get(f"/bulk-changes/{bc_id}", headers=self.keys["vic"]).json()


@pytest.fixture
def world(engine: sa.Engine, db_url: str, dagster_instance, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    sim = HoldingJasper({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=16)
    for api in make_api(engine, db_url, devices_per_carrier=0):
        with sim.run_in_thread() as handle:
            park = Park({"jasper": sim}, {"jasper": handle})
            for key, value in park.credentials_env(
                {"jasper": demo_credentials_names()["jasper"]}, credential_env_key
            ).items():
                monkeypatch.setenv(key, value)
            point_demo_at(engine, park.base_urls, unlimited=True)
            iccids = [demo_iccid(1, 0, i) for i in range(N)]
            ref.insert_devices(
                engine, api.seed.tenant_id, api.jasper, [{"iccid": i, "status": "ACTIVATED"} for i in iccids]
            )
            sim.seed_devices({"iccid": i, "status": "ACTIVATED"} for i in iccids)
            set_policy(engine, api.seed.tenant_id, ApprovalPolicy(max_devices=1000, irreversible=True))
            tenant = api.seed.tenant_id
            keys = {
                name: {"Authorization": f"Bearer {create_api_key(engine, tenant, name, roles)}"}
                for name, roles in (
                    ("alice", ["submitter", "approver"]),
                    ("bob", ["approver"]),
                    ("sam", ["submitter"]),
                    ("vic", ["viewer"]),
                )
            }
            yield World(api, sim, iccids, keys)


def _deactivate(w: World, devices: list[str], who: str = "alice") -> dict:
    body = {**w.api.status_body(devices), "statusUpdate": {"status": "DEACTIVATED"}}
    r = w.post("/bulk-changes", who, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _log(engine: sa.Engine, bc_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(bulk_change_log.c.description)
                .where(bulk_change_log.c.bulk_change_id == bc_id, bulk_change_log.c.device_change_id.is_(None))
                .order_by(bulk_change_log.c.id)
            ).scalars()
        )


def _summary(run: dg.ExecuteInProcessResult) -> str:
    [output] = [e for e in run.all_node_events if e.step_key == "finalize_bulk_change" and e.is_successful_output]
    return output.step_output_data.metadata["summary"].value


def test_a_5000_device_deactivation_waits_is_refused_to_its_submitter_and_runs_once_a_second_key_approves(
    world: World, dagster_instance
) -> None:
    w = world
    submitted = _deactivate(w, w.iccids)
    bc_id = submitted["id"]
    assert submitted["status"] == "AWAITING_APPROVAL" and submitted["counts"] == {"NEW": N}
    status = w.status(bc_id)
    assert (status["status"], status["outcome"]) == ("AWAITING_APPROVAL", "awaiting_approval")
    approval = status["approval"]
    assert approval["state"] == "pending" and approval["submittedBy"] == "api-key:alice"
    assert "5000 devices is more than the policy's 1000" in approval["neededBecause"]
    assert "cannot be reversed: Control Center: deactivation" in approval["neededBecause"]

    # The sensor starts no run; the partition says why it waits; nothing reaches the carrier.
    defs = fast_definitions()
    tick, runs = tick_and_run(dagster_instance, defs, run_config=RUN_CONFIG)
    assert runs == [] and not tick.run_requests
    state = partition_state(dagster_instance, str(bc_id))
    assert (state["event"], state["outcome"]) == ("observation", "awaiting_approval")
    assert f"bulkchange approve {bc_id}" in state["what_next"]
    assert w.sim.stats()["total_calls"] == 0

    # Refused: the submitter itself (even with the approver role), a viewer, a submitter-only key.
    own = w.post(f"/bulk-changes/{bc_id}/approve", "alice")
    assert own.status_code == 403 and "four-eyes rule" in own.json()["detail"], own.text
    for who in ("vic", "sam"):
        r = w.post(f"/bulk-changes/{bc_id}/approve", who)
        assert r.status_code == 403 and "needs the approver role" in r.json()["detail"], r.text
    assert w.status(bc_id)["status"] == "AWAITING_APPROVAL"

    # A second key approves: NEW, the sensor starts it, every device is deactivated at the carrier.
    ok = w.post(f"/bulk-changes/{bc_id}/approve", "bob")
    assert ok.status_code == 200, ok.text
    assert (ok.json()["state"], ok.json()["status"], ok.json()["decidedBy"]) == ("approved", "NEW", "api-key:bob")
    again = w.post(f"/bulk-changes/{bc_id}/approve", "bob")
    assert again.status_code == 409 and "approved by api-key:bob" in again.json()["detail"]

    _, runs = tick_and_run(dagster_instance, defs, run_config=RUN_CONFIG)
    assert [r.success for r in runs] == [True]
    assert count_rows_by_status(w.api.engine, bc_id) == {"PROCESSED": N}
    assert all(w.sim.device(i)["status"] == "DEACTIVATED" for i in w.iccids)
    assert w.sim.stats()["total_calls"] >= N

    status = w.status(bc_id)
    assert (status["status"], status["outcome"]) == ("PROCESSED", "done")
    approval = status["approval"]
    assert (approval["state"], approval["submittedBy"], approval["decidedBy"]) == (
        "approved",
        "api-key:alice",
        "api-key:bob",
    )
    assert approval["requestedAt"] <= approval["decidedAt"]
    log = _log(w.api.engine, bc_id)
    assert log[0].startswith("Submitted by api-key:alice; awaiting approval because 5000 devices")
    assert any(line.startswith("Approved by api-key:bob (submitted by api-key:alice)") for line in log)
    summary = _summary(runs[0])
    assert "**Approval:** approved" in summary
    assert "submitted by api-key:alice at" in summary and "approved by api-key:bob at" in summary


def test_small_reversible_changes_need_no_approval(world: World, dagster_instance) -> None:
    w = world
    r = w.post(
        "/bulk-changes", "sam", json={**w.api.status_body(w.iccids[:3]), "statusUpdate": {"status": "ACTIVATED"}}
    )
    assert r.status_code == 201 and r.json()["status"] == "NEW", r.text
    assert w.status(r.json()["id"])["approval"] is None


def test_the_sensor_ends_an_approval_nobody_acted_on(
    world: World, dagster_instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    set_policy(w.api.engine, w.api.seed.tenant_id, ApprovalPolicy(max_devices=1, expires_after_hours=2))
    bc_id = _deactivate(w, w.iccids[:5], who="sam")["id"]
    clock = ManualClock(utcnow())
    monkeypatch.setattr(defs_clock, "CLOCK", clock)
    defs = fast_definitions()
    evaluate_sensor(dagster_instance, defs)
    assert w.status(bc_id)["status"] == "AWAITING_APPROVAL"  # not yet due

    clock.advance(timedelta(hours=2, minutes=1))
    tick = evaluate_sensor(dagster_instance, defs)
    assert not tick.run_requests
    status = w.status(bc_id)
    assert (status["status"], status["counts"]) == ("CANCELLED", {"CANCELLED": 5})
    approval = status["approval"]
    assert (approval["state"], approval["decidedBy"]) == ("expired", "approval-expiry")
    assert approval["reason"] == "nobody approved or rejected it within 2 hours"
    assert _log(w.api.engine, bc_id)[-1] == (
        "Approval expired (submitted by api-key:sam): nobody approved or rejected it within 2 hours"
    )
    late = w.post(f"/bulk-changes/{bc_id}/approve", "bob")
    assert late.status_code == 409 and "expired by approval-expiry" in late.json()["detail"]
    evaluate_sensor(dagster_instance, defs)
    assert partition_state(dagster_instance, str(bc_id))["outcome"] == "cancelled"
    assert w.sim.stats()["total_calls"] == 0
