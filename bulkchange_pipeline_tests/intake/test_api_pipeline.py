"""Cancel and retry-failed over HTTP, end to end: the intake API, the real sensor and job, and the
Jasper simulator (both backends).

- Cancel while a run is half-way: the rows already sent finish, the rows not yet sent become
  CANCELLED and never reach the carrier. The run is stopped at an exact point by holding one
  carrier call (``HoldingJasper``), so the test does not depend on timing.
- Retry-failed after a carrier refusal: the API re-queues only the failed row as a new attempt,
  the sensor requests a new run of the same partition, and that run sends only that row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import JASPER_KEY, JASPER_USER, Park
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.seed import demo_credentials_names, demo_iccid, point_demo_at

from ..defs.harness import fast_definitions
from ..reliability.common import HoldingJasper
from ..waiting import wait_until
from .test_api import Api, make_api

N, BATCH = 40, 10
RUN_CONFIG = {**QUIET, "ops": {"plan_batches_op": {"config": {"batch_size": BATCH}}}}


@dataclass
class World:
    api: Api
    sim: HoldingJasper
    iccids: list[str]


@pytest.fixture
def world(engine: sa.Engine, db_url: str, dagster_instance, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    sim = HoldingJasper({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    for api in make_api(engine, db_url, devices_per_carrier=0):
        with sim.run_in_thread() as handle:
            park = Park({"jasper": sim}, {"jasper": handle})  # pairs the base URL and the credentials env
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
            yield World(api, sim, iccids)


def _submit(w: World) -> int:
    return w.api.submit([{"iccid": i, "targetStatus": "DEACTIVATED"} for i in w.iccids])


def test_cancel_mid_run_over_http_lets_sent_rows_finish_and_sends_nothing_else(world: World, dagster_instance) -> None:
    w = world
    bc_id = _submit(w)
    held = w.iccids[2 * BATCH + 5]  # in the third batch: two batches done, the third sent, one left
    w.sim.hold_when = lambda iccid, body: iccid == held
    answers: list = []

    def operator() -> None:  # what a person does while the run is stuck on the held call
        wait_until(lambda: w.sim.holder.held, what="the held carrier call")
        answers.append(w.api.client.post(f"/bulk-changes/{bc_id}/cancel", headers=w.api.demo))
        w.sim.hold_when = None
        w.sim.holder.released.set()  # answered 503; the client retries it and it is applied

    thread = threading.Thread(target=operator)
    thread.start()
    _, runs = tick_and_run(dagster_instance, fast_definitions(), run_config=RUN_CONFIG)
    thread.join(10)
    assert [r.success for r in runs] == [True]

    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert (answer.json()["cancelled"], answer.json()["stillProcessing"]) == (BATCH, BATCH)
    assert count_rows_by_status(w.api.engine, bc_id) == {"PROCESSED": 3 * BATCH, "CANCELLED": BATCH}
    status = w.api.client.get(f"/bulk-changes/{bc_id}", headers=w.api.demo).json()
    assert status["status"] == "PROCESSED" and status["counts"] == {"PROCESSED": 3 * BATCH, "CANCELLED": BATCH}

    sent, cancelled = w.iccids[: 3 * BATCH], w.iccids[3 * BATCH :]
    assert all(w.sim.device(i)["status"] == "DEACTIVATED" for i in sent)
    assert all(w.sim.device(i)["status"] == "ACTIVATED" and w.sim.puts[i] == 0 for i in cancelled)
    assert max(w.sim.puts.values()) == 1  # the held call was never applied, its retry once


def test_retry_failed_over_http_runs_only_the_failed_row_again(world: World, dagster_instance) -> None:
    w = world
    refused = w.iccids[7]
    w.sim.devices[refused]["status"] = "PURGED"  # the carrier refuses this device
    bc_id = _submit(w)
    defs = fast_definitions()
    first, runs = tick_and_run(dagster_instance, defs, run_config=RUN_CONFIG)
    assert [r.success for r in runs] == [True]
    assert count_rows_by_status(w.api.engine, bc_id) == {"PROCESSED": N - 1, "API_FAILED": 1}
    [failed] = w.api.client.get(
        f"/bulk-changes/{bc_id}/devices", params={"status": "API_FAILED"}, headers=w.api.demo
    ).json()["items"]
    assert failed["iccid"] == refused and "PURGED" in failed["statusDetails"]

    # Nothing is re-sent by a second tick: the bulk change is final.
    again, runs = tick_and_run(dagster_instance, defs, cursor=first.cursor, run_config=RUN_CONFIG)
    assert runs == [] and w.sim.puts[refused] == 1  # the refused PUT, not re-sent

    w.sim.devices[refused]["status"] = "ACTIVATED"  # fixed at the carrier; the operator retries
    r = w.api.client.post(f"/bulk-changes/{bc_id}/retry-failed", headers=w.api.demo)
    assert r.status_code == 200 and (r.json()["requeued"], r.json()["attempt"]) == (1, 1)
    puts_before = sum(w.sim.puts.values())
    retry, runs = tick_and_run(dagster_instance, defs, cursor=again.cursor, run_config=RUN_CONFIG)
    assert [(rr.partition_key, rr.run_key) for rr in retry.run_requests] == [(str(bc_id), f"bc-{bc_id}-a1")]
    assert [r.success for r in runs] == [True]
    assert sum(w.sim.puts.values()) - puts_before == 1 and w.sim.puts[refused] == 2  # only the failed row
    status = w.api.client.get(f"/bulk-changes/{bc_id}", headers=w.api.demo).json()
    assert (status["status"], status["counts"], status["attempt"]) == ("PROCESSED", {"PROCESSED": N}, 1)
    assert w.sim.device(refused)["status"] == "DEACTIVATED"
