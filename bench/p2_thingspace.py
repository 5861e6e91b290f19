"""P2 batch carrier: an N-device ThingSpace activation (pre-active -> active) with one callback per
device, from run start to every row final. The ThingSpace simulator and the callback endpoint
(`bulkchange serve`) run in their own processes, as they would in production.

    python bench/p2_thingspace.py [N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import httpx
from harness import ROOT, database, engine_for, free_port, iccid, record, seed_account, submit

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status

CREDS = {
    "USERNAME": "demo-uws",
    "SECRET": "demo-uws-password",
    "CLIENT_ID": "demo-client",
    "CLIENT_SECRET": "demo-client-secret",
    "ACCOUNT_NAME": "0000123456-00001",
    "SERVICE_PLAN": "M2M-4G-1GB",
    "CALLBACK_USERNAME": "bench-cb",
    "CALLBACK_PASSWORD": "bench-cb-password",
}


def _wait(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def main(n: int) -> None:
    for key, value in CREDS.items():
        os.environ[f"BULKCHANGE_CRED_BENCH_TS_{key}"] = value
    sim_port, app_port = free_port(), free_port()
    with database("sqlite") as url:
        os.environ["BULKCHANGE_DATABASE_URL"] = url
        os.environ["BULKCHANGE_CALLBACK_BASE_URL"] = f"http://127.0.0.1:{app_port}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bulkchange_pipeline.simulators",
                    "thingspace",
                    "--port",
                    str(sim_port),
                    "--activate-per-minute",
                    "0",
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [str(Path(sys.executable).with_name("bulkchange")), "serve", "--port", str(app_port)],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            sim = f"http://127.0.0.1:{sim_port}"
            _wait(f"{sim}/_sim/stats")
            _wait(f"http://127.0.0.1:{app_port}/healthz")
            engine = engine_for(url)
            ids, devices = seed_account(
                engine,
                sim,
                n,
                concurrency=4,
                batch_size=10_000,
                status="pre-active",
                integration="thingspace",
                credentials_name="BENCH_TS",
            )
            for start in range(0, n, 20_000):
                chunk = [
                    {"iccid": iccid(i), "state": "pre-active", "servicePlan": "M2M-4G-1GB"}
                    for i in range(start, min(n, start + 20_000))
                ]
                httpx.post(f"{sim}/_sim/devices", json=chunk, timeout=120).raise_for_status()
            bc = submit(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "active"})
            home = tempfile.mkdtemp(prefix="bench-dagster-")
            defs = build_definitions(carriers=CarrierGatewayResource(poll_after_seconds=3600))
            with dg.instance_for_test(temp_dir=home) as instance:
                started = time.perf_counter()
                _, runs = tick_and_run(instance, defs, run_config=QUIET)
                sent = time.perf_counter() - started
                reconciles = 0
                while count_rows_by_status(engine, bc).get("PROCESSING") and time.perf_counter() - started < 1800:
                    _, more = tick_and_run(instance, defs, run_config=QUIET, sensor_name="async_results_sensor")
                    reconciles += len(more)
                    if not more:
                        time.sleep(1)
                seconds = time.perf_counter() - started
            counts = count_rows_by_status(engine, bc)
            stats = httpx.get(f"{sim}/_sim/stats", timeout=30).json()
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    assert counts == {"PROCESSED": n}, counts
    record(
        f"P2 batch carrier: {n:,}-device ThingSpace activation with callbacks (bench/p2_thingspace.py)",
        [
            f"- requests sent and rows PROCESSING after {sent:.1f} s ({runs[0].dagster_run.run_id[:8]}); every row final after "
            f"**{seconds:.1f} s = {n / seconds:,.0f} devices/s**, {reconciles} reconcile runs",
            f"- simulator: {stats.get('calls', stats.get('total_calls'))} API calls, callbacks sent {stats.get('callbacks_sent')}, "
            f"applied more than once: {stats.get('applied_more_than_once')}",
        ],
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
