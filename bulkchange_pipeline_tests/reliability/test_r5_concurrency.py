"""R5: two bulk changes touching the same devices apply in submission order, never interleaved;
unrelated bulk changes run in parallel.

Where the guarantee comes from: not from the engine. A run claims and sends its own bulk change's
rows; two runs on the same devices at the same time would interleave (the third test shows it,
deterministically). The order comes from the run queue: the sensor tags every run with its carrier
account (``bulkchange/carrier_account``) and the instance configuration (``dagster.yaml``,
``deploy/dagster.postgres.yaml``) limits that tag to one run per value, so runs on one account
start one after the other in submission order (the queue is FIFO), while other accounts' runs
start at once. The first test drives the daemon's own dequeue logic with the repository's
configuration and executes the runs in the order it releases them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import resolved_tags
from bulkchange_pipeline.domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import device, device_history

from ..defs.harness import evaluate_sensor, execute, fast_definitions
from ..factories import iccid, make_account, make_bulk_change, make_devices
from ..waiting import wait_until
from .common import (
    HoldingJasper,
    add_devices,
    assert_results_consistent,
    busy_overlap,
    busy_time,
)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_TAG = "bulkchange/carrier_account"
N = 500
EDIT = ChangeType.EDIT_USERNAME_COST_CENTER


def _submit_edit(engine: sa.Engine, ids: dict[str, int], devices: list[dict[str, Any]], username: str) -> int:
    """Through intake (validation and storage, as the API and the CLI submit)."""
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": ids["service_provider_id"],
            "changeType": int(EDIT),
            "devices": [d["iccid"] for d in devices],
            PAYLOAD_KEYS[EDIT]: {"username": username, "costCenter": f"CC-{username}"},
        }
    )
    outcome = submit(engine, ids["tenant_id"], request, "test")
    assert outcome.created and outcome.report.accepted == len(devices)
    return outcome.bulk_change_id


def _order_per_device(sim: HoldingJasper, devices: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {
        d["iccid"]: [e["accountCustom1"] for _, e in sim.edits[d["iccid"]] if "accountCustom1" in e] for d in devices
    }


class Queue:
    """The daemon's run queue over this instance: queued runs with the sensor's tags, released by
    ``QueuedRunCoordinatorDaemon``'s own dequeue logic under the instance's concurrency config.
    (``_get_runs_to_dequeue`` is Dagster-internal; the Dagster family is pinned to 1.13.27.)"""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
        from dagster._core.remote_origin import (
            InProcessCodeLocationOrigin,
            RemoteJobOrigin,
            RemoteRepositoryOrigin,
        )
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
            QueuedRunCoordinatorDaemon,
        )

        self.instance = instance
        self.defs = defs
        self.job = defs.resolve_job_def("process_bulk_change_job")
        location = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="bulkchange_pipeline.defs", attribute="defs")
        )
        self.origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), self.job.name)
        self.daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

    def enqueue(self, request: dg.RunRequest) -> dg.DagsterRun:
        return self.instance.create_run_for_job(
            job_def=self.job,
            status=dg.DagsterRunStatus.QUEUED,
            remote_job_origin=self.origin,
            tags={**resolved_tags(self.defs, request), "dagster/partition": request.partition_key},
        )

    def releasable(self) -> list[dg.DagsterRun]:
        return self.daemon._get_runs_to_dequeue(self.instance, self.instance.get_concurrency_config(), None)

    def mark(self, run: dg.DagsterRun, event: dg.DagsterEventType) -> None:
        self.instance.run_storage.handle_run_event(
            run.run_id, dg.DagsterEvent(event_type_value=event.value, job_name=run.job_name)
        )


@pytest.fixture
def queued_instance(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """An instance with the repository's dagster.yaml concurrency settings (the run queue)."""
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", db_url)
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        yield instance


def test_instance_configs_limit_one_run_per_carrier_account():
    """The limit is instance configuration; both shipped configurations carry it."""
    for path in (ROOT / "dagster.yaml", ROOT / "deploy" / "dagster.postgres.yaml"):
        runs = yaml.safe_load(path.read_text())["concurrency"]["runs"]
        assert {"key": ACCOUNT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in runs[
            "tag_concurrency_limits"
        ], path
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides={k: local[k] for k in ("concurrency", "run_coordinator")}) as inst:
        assert type(inst.run_coordinator).__name__ == "BulkChangeRunCoordinator"
        assert isinstance(inst.run_coordinator, dg.QueuedRunCoordinator)
        limits = inst.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert limits == [{"key": ACCOUNT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


def test_same_500_devices_apply_in_submission_order_through_the_run_queue(
    engine, queued_instance, jasper, carrier_env, monkeypatch
):
    sim, base_url = jasper
    ids = make_account(engine, base_url, max_concurrency=8, batch_size=100)
    devices = make_devices(engine, ids, N)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    # Another tenant's carrier account: its own credentials entry (and login at the carrier).
    sim.configure(accounts={**sim.accounts, "beta-ops": "beta-jasper-key-77"})
    monkeypatch.setenv("BULKCHANGE_CRED_BETA_JASPER_USERNAME", "beta-ops")
    monkeypatch.setenv("BULKCHANGE_CRED_BETA_JASPER_SECRET", "beta-jasper-key-77")
    other = make_account(engine, base_url, name="BETA_JASPER", tenant_name="beta")
    other_devices = add_devices(engine, other, [iccid(N + i) for i in range(20)])
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in other_devices)
    first = _submit_edit(engine, ids, devices, "first")
    unrelated = _submit_edit(engine, other, other_devices, "unrelated")
    second = _submit_edit(engine, ids, devices, "second")
    defs = fast_definitions()

    tick = evaluate_sensor(queued_instance, defs)
    assert [int(r.partition_key) for r in tick.run_requests] == [first, unrelated, second]
    queue = Queue(queued_instance, defs)
    queued = {int(r.partition_key): queue.enqueue(r) for r in tick.run_requests}
    assert queued[first].tags[ACCOUNT_TAG] == queued[second].tags[ACCOUNT_TAG] != queued[unrelated].tags[ACCOUNT_TAG]

    # A mini daemon: launch what the queue releases, run it, report it finished, ask again.
    released_in_order: list[list[int]] = []
    while pending := [r for r in queue.releasable()]:
        keys = [int(r.tags["dagster/partition"]) for r in pending]
        released_in_order.append(keys)
        for run in pending:
            queue.mark(run, dg.DagsterEventType.RUN_START)
        assert queue.releasable() == []  # while they run, nothing else on their accounts starts
        for run in pending:
            assert execute(queued_instance, defs, run.tags["dagster/partition"], tags=dict(run.tags)).success
            queue.mark(run, dg.DagsterEventType.RUN_SUCCESS)
    assert released_in_order == [[first, unrelated], [second]]  # same account: one after the other; others at once

    order = _order_per_device(sim, devices)
    assert all(o == ["first", "second"] for o in order.values()), [
        o for o in order.values() if o != ["first", "second"]
    ][:3]
    last_first = max(t for d in devices for t, e in sim.edits[d["iccid"]] if e.get("accountCustom1") == "first")
    first_second = min(t for d in devices for t, e in sim.edits[d["iccid"]] if e.get("accountCustom1") == "second")
    assert last_first < first_second  # never interleaved: the second bulk change starts after the first ends
    for bc in (first, second, unrelated):
        assert count_rows_by_status(engine, bc) == {"PROCESSED": N if bc != unrelated else 20}
    with engine.connect() as conn:
        assert set(
            conn.execute(
                sa.select(device.c.username).where(device.c.service_provider_id == ids["service_provider_id"])
            ).scalars()
        ) == {"second"}
        hist = conn.execute(
            sa.select(device_history.c.device_id, device_history.c.new_value, device_history.c.bulk_change_id)
            .where(device_history.c.field == "username")
            .order_by(device_history.c.id)
        ).all()
    per_device: dict[int, list[int]] = {}
    for h in hist:
        per_device.setdefault(h.device_id, []).append(h.bulk_change_id)
    assert all(per_device[d["id"]] == [first, second] for d in devices)
    assert_results_consistent(engine, [first, second], field="username")


def test_rest_and_soap_providers_of_one_account_share_its_run_slot(engine, queued_instance, carrier_env):
    """Jasper counts an account's REST and SOAP calls against one limit, so two service providers
    naming one credentials entry (the account over REST and over SOAP; here also spelled two ways)
    are one account to the run queue: their runs wait for each other, while a provider with other
    credentials runs beside them. Nothing is sent (the runs are only queued and released)."""
    rest = make_account(engine, "http://127.0.0.1:9/rws/api/v1", name="TEST_JASPER", account_name="Jasper REST")
    soap = make_account(engine, "http://127.0.0.1:9", name="test-jasper", account_name="Jasper SOAP", protocol="soap")
    other = make_account(engine, "http://127.0.0.1:9/rws/api/v1", name="OTHER_JASPER", account_name="Other")
    bcs = {}
    for label, ids in (("rest", rest), ("soap", soap), ("other", other)):
        devices = make_devices(engine, ids, 2)
        bcs[label] = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    defs = fast_definitions()
    tick = evaluate_sensor(queued_instance, defs)
    assert sorted(int(r.partition_key) for r in tick.run_requests) == sorted(bcs.values())
    queue = Queue(queued_instance, defs)
    queued = {int(r.partition_key): queue.enqueue(r) for r in tick.run_requests}
    tag = {label: queued[bc].tags[ACCOUNT_TAG] for label, bc in bcs.items()}
    assert tag == {"rest": "cred-TEST_JASPER", "soap": "cred-TEST_JASPER", "other": "cred-OTHER_JASPER"}

    released = queue.releasable()
    assert sorted(int(r.tags["dagster/partition"]) for r in released) == sorted([bcs["rest"], bcs["other"]])
    for run in released:
        queue.mark(run, dg.DagsterEventType.RUN_START)
    assert queue.releasable() == []  # the SOAP provider's run waits while the REST one is in progress
    for run in released:
        queue.mark(run, dg.DagsterEventType.RUN_SUCCESS)
    assert [int(r.tags["dagster/partition"]) for r in queue.releasable()] == [bcs["soap"]]


def test_without_the_run_queue_the_engine_does_not_order_changes_to_the_same_device(engine, workers, jasper):
    """What the engine alone guarantees when two runs on one account execute at the same time
    (bypassing the queue): each bulk change applies each device exactly once and every row ends
    final, but nothing orders the two bulk changes per device. The first run (a run worker
    process) is held at the carrier half-way; the second, submitted later, overtakes it."""
    sim, base_url = jasper
    ids = make_account(engine, base_url, max_concurrency=4, batch_size=N // 2)
    devices = make_devices(engine, ids, N)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    first = _submit_edit(engine, ids, devices, "first")
    second = _submit_edit(engine, ids, devices, "second")
    late_half = {d["iccid"] for d in devices[N // 2 :]}
    sim.hold_when = lambda iccid, body: iccid in late_half and body.get("accountCustom1") == "first"
    patient = {"timeout_seconds": 60, "max_attempts": 6, "retry_wait_seconds": 0.02}  # held calls must not time out
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("bulk_change", [str(first), str(second)])
        worker = workers.start(str(first), carriers=patient)
        wait_until(lambda: sim.holder.held or not worker.alive(), what="the first run held half-way")
        assert execute(instance, build_definitions(carriers=CarrierGatewayResource(**patient)), str(second)).success
    sim.hold_when = None
    sim.holder.released.set()  # the held calls fail (503) and are retried
    assert worker.wait(120) == 0, worker.output()

    assert count_rows_by_status(engine, first) == count_rows_by_status(engine, second) == {"PROCESSED": N}
    assert sim.stats()["applied_more_than_once"] == N  # two edits per device, one from each bulk change
    order = _order_per_device(sim, devices)
    assert all(order[i] == ["first", "second"] for i in order if i not in late_half)
    assert all(order[i] == ["second", "first"] for i in late_half)  # out of submission order


def test_unrelated_bulk_changes_on_two_carriers_run_in_parallel(engine, workers, jasper, thingspace):
    """Two run workers at once (the queue starts runs of different accounts together, and the
    instance's carrier_api pool has room for both): Jasper and ThingSpace are called at the same
    time, measured at the carriers as the time both had a call in flight."""
    jsim, jurl = jasper
    tsim, turl = thingspace
    jsim.configure(latency_ms=15)
    tsim.configure(latency_ms=1000)  # login, callback registration and one 60-device request: busy ~3 s in one step
    j_ids = make_account(engine, jurl, max_concurrency=2, batch_size=40)
    j_devices = make_devices(engine, j_ids, 160)
    jsim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in j_devices)
    t_ids = make_account(engine, turl, integration="thingspace", name="TEST_TS", max_concurrency=1, batch_size=60)
    t_devices = add_devices(engine, t_ids, [iccid(1000 + i) for i in range(60)], status="active")
    tsim.seed_devices({"iccid": d["iccid"], "state": "active", "servicePlan": "M2M-4G-1GB"} for d in t_devices)
    j_bc = _submit_edit(engine, j_ids, j_devices, "fleet")
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": t_ids["service_provider_id"],
            "changeType": 1,
            "devices": [d["iccid"] for d in t_devices],
            "statusUpdate": {"status": "suspend"},
        }
    )
    t_bc = submit(engine, t_ids["tenant_id"], request, "test").bulk_change_id
    with dg.DagsterInstance.get() as instance:
        tick = evaluate_sensor(instance, fast_definitions())
    assert (
        len({resolved_tags(fast_definitions(), r)[ACCOUNT_TAG] for r in tick.run_requests}) == 2
    )  # different accounts: the queue starts both

    pair = [workers.take(), workers.take()]
    wait_until(lambda: all(w.ready() for w in pair), timeout=60, interval=0.05, what="two warm run workers")
    pair[0].order(str(j_bc))
    pair[1].order(str(t_bc))
    assert [w.wait(120) for w in pair] == [0, 0], [w.output() for w in pair]
    # Measured at the carriers: the time during which both had one of our calls in flight.
    both = busy_overlap(jsim.intervals, tsim.intervals)
    shorter = min(busy_time(jsim.intervals), busy_time(tsim.intervals))
    assert both > 0.5 * shorter, (both, busy_time(jsim.intervals), busy_time(tsim.intervals))
    assert count_rows_by_status(engine, j_bc) == {"PROCESSED": 160}
    assert count_rows_by_status(engine, t_bc) == {"PROCESSING": 60}  # accepted; callbacks settle them later
    assert get_bulk_change(engine, t_bc)["status"] == "PENDING"
