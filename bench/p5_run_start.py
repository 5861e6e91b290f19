"""P5: from submission to run start, through the daemon, with the deployment's own settings.

The production shape (``bulkchange_pipeline.deploy``: code server, daemon, webserver and intake
app as separate processes on PostgreSQL, ``deploy/dagster.postgres.yaml``) with the Jasper
simulator in this process. Each of SAMPLES small bulk changes is submitted with ``POST
/bulk-changes``; the clock starts when the API has answered (the bulk change is stored) and stops
at the run's start time in the run storage (the run worker has started executing: RUN_START).
Submissions are one at a time, each after the previous run finished, so no run waits behind another
in the one-run-per-account queue: what is measured is the sensor tick, the queue and the run
worker's launch. Reported: the median and the spread, and for the median sample how the time
divides into sensor (submitted -> run created), queue (created -> launched) and worker start-up
(launched -> started). The daemon is the one ``deploy-local`` runs (``deploy_daemon``: a 1 s
sensor loop) and the run queue is read every second (``deploy/dagster.postgres.yaml``).

    python bench/p5_run_start.py [SAMPLES]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
from harness import free_port, load_average, pg_databases, record

from bulkchange_pipeline.defs.sensors import SENSOR_INTERVAL_SECONDS
from bulkchange_pipeline.deploy import LocalDeployment, open_instance, service_environment, start, stop
from bulkchange_pipeline.deploy_daemon import SENSOR_LOOP_SECONDS
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.park import JASPER_KEY, JASPER_USER, Park
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import device
from bulkchange_pipeline.store.seed import demo_credentials_names, point_demo_at, seed_demo

DEVICES = 5  # per bulk change: the run itself is short, the start latency is what is measured
FINAL = {"PROCESSED", "ERROR", "CANCELLED"}


def run_record(instance: dg.DagsterInstance, bc_id: int, timeout: float = 120.0) -> dg.RunRecord:
    """The bulk change's run once it has started (its start_time is set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(tags={"bulkchange/bulk_change_id": str(bc_id)}))
        if records and records[0].start_time:
            return records[0]
        time.sleep(0.05)
    raise TimeoutError(f"no run started for bulk change {bc_id} within {timeout:.0f} s")


def launched_at(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """When the daemon took the run off the queue (its RUN_STARTING event)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_STARTING).records
    return records[0].timestamp if records else None


def measure(samples: int) -> list[dict[str, float]]:
    jasper = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=16)
    park = Park({"jasper": jasper}, {"jasper": jasper.run_in_thread()})
    try:
        with pg_databases("bc_p5") as (db_url, dagster_url):
            migrate.upgrade(db_url)
            engine = make_engine(db_url)
            seed = seed_demo(engine, devices_per_carrier=DEVICES * samples * 2)
            point_demo_at(engine, park.base_urls, unlimited=True)
            sync_from_database(engine, park, seed.tenant_id)
            sp = seed.service_providers["jasper"]
            with engine.connect() as conn:
                iccids = list(
                    conn.execute(
                        sa.select(device.c.iccid)
                        .where(device.c.service_provider_id == sp, device.c.status == "ACTIVATED")
                        .order_by(device.c.id)
                    ).scalars()
                )
            key = create_api_key(engine, seed.tenant_id, "p5-bench")
            run_dir = Path(tempfile.mkdtemp(prefix="bench-p5-"))
            dep = LocalDeployment(
                run_dir, code_server_port=free_port(), webserver_port=free_port(), intake_port=free_port()
            )
            base = {
                **os.environ,
                **park.credentials_env({"jasper": demo_credentials_names()["jasper"]}, credential_env_key),
            }
            base.pop("DAGSTER_HOME", None)
            env = service_environment(dep, db_url, dagster_url, base)
            start(dep, env)
            try:
                api = httpx.Client(base_url=dep.url("intake"), headers={"Authorization": f"Bearer {key}"}, timeout=30.0)
                results = []
                with open_instance(dep, env) as instance:
                    for i in range(samples):
                        devices = iccids[i * DEVICES : (i + 1) * DEVICES]
                        r = api.post(
                            "/bulk-changes",
                            json={
                                "serviceProviderId": sp,
                                "changeType": 1,
                                "devices": devices,
                                "statusUpdate": {"status": "DEACTIVATED"},
                            },
                        )
                        submitted = time.time()
                        r.raise_for_status()
                        bc_id = r.json()["id"]
                        rec = run_record(instance, bc_id)  # type: ignore[arg-type]
                        launched = launched_at(instance, rec.dagster_run.run_id) or rec.start_time  # type: ignore[arg-type]
                        results.append(
                            {
                                "total": rec.start_time - submitted,
                                "sensor": rec.create_timestamp.timestamp() - submitted,
                                "queue": launched - rec.create_timestamp.timestamp(),
                                "worker": rec.start_time - launched,
                            }
                        )
                        print(f"  sample {i + 1}: {results[-1]['total']:.1f} s", flush=True)
                        while api.get(f"/bulk-changes/{bc_id}").json()["status"] not in FINAL:
                            time.sleep(0.2)
                api.close()
            finally:
                stop(dep)
                engine.dispose()
    finally:
        park.stop()
    return results


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    load_before = load_average()
    results = measure(n)
    totals = [r["total"] for r in results]
    median = statistics.median(totals)
    typical = min(results, key=lambda r: abs(r["total"] - median))
    record(
        "P5 submission to run start through the daemon (bench/p5_run_start.py)",
        [
            f"- {n} bulk changes of {DEVICES} devices through `POST /bulk-changes`, one at a time, on the `deploy-local` "
            f"services (PostgreSQL, sensor interval {SENSOR_INTERVAL_SECONDS} s, sensor loop {SENSOR_LOOP_SECONDS:g} s, "
            f"run queue read every 1 s): **median {median:.1f} s** (min {min(totals):.1f}, max {max(totals):.1f}); "
            "target <= 5 s",
            f"- a typical sample: sensor tick {typical['sensor']:.1f} s, run queue {typical['queue']:.1f} s, "
            f"run worker start-up {typical['worker']:.1f} s",
            "- samples (s): " + ", ".join(f"{t:.1f}" for t in totals),
            f"- machine: {load_before} before, {load_average()} after (other work may share this 2-CPU machine)",
        ],
    )
