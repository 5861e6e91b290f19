"""``bulkchange demo``: the main job end to end on the embedded default, no server needed.

It migrates the SQLite business database under ``BULKCHANGE_HOME``, starts the Jasper simulator
on a free loopback port, seeds the demo tenant (and the simulator with the same devices), submits
the seed's example request (changeType 4) and a 1,000-device Jasper StatusUpdate through intake
validation, then lets the real ``bulk_change_sensor`` and ``process_bulk_change_job`` process
them on a persistent Dagster instance (``DAGSTER_HOME``), so ``make dev`` shows the runs after.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from .defs import build_definitions
from .defs.local_runner import QUIET, tick_and_run
from .domain import BulkChangeRequest
from .intake.submit import submit
from .simulators.jasper import JasperSimulator
from .store import migrate
from .store.bulk_changes import get_bulk_change
from .store.db import data_dir, database_url, make_engine, utcnow
from .store.schema import device, service_provider
from .store.seed import seed_demo

DEMO_USER, DEMO_KEY = "demo", "demo-api-key"  # the simulator's demo account; not a real secret


@dataclass
class DemoResult:
    bulk_change_ids: list[int]
    seconds: float


def _jasper_devices(engine: sa.Engine, sp_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device.c.iccid, device.c.status, device.c.carrier_rate_plan, device.c.communication_plan)
            .where(device.c.service_provider_id == sp_id, device.c.archived_at.is_(None))
            .order_by(device.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


def run_demo(devices: int = 1000, console: Console | None = None) -> DemoResult:
    console = console or Console()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # Dagster's own, not actionable here
    os.environ.setdefault("DAGSTER_HOME", str(data_dir() / "dagster"))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    os.environ.setdefault("BULKCHANGE_CRED_DEMO_JASPER_USERNAME", DEMO_USER)
    os.environ.setdefault("BULKCHANGE_CRED_DEMO_JASPER_SECRET", DEMO_KEY)
    url = database_url()
    console.print(f"[bold]1/5[/] business database: {make_engine(url).url.render_as_string(hide_password=True)}")
    migrate.upgrade(url)
    engine = make_engine(url)

    sim = JasperSimulator({os.environ["BULKCHANGE_CRED_DEMO_JASPER_USERNAME"]: os.environ["BULKCHANGE_CRED_DEMO_JASPER_SECRET"]},
                          rate_per_second=0, max_concurrency=8)
    with sim.run_in_thread() as handle:
        console.print(f"[bold]2/5[/] Jasper simulator at {handle.base_url}")
        # Half again as many devices as the StatusUpdate needs, so each demo run finds enough
        # devices to flip (ACTIVATED -> DEACTIVATED, then back on the next run).
        seed = seed_demo(engine, devices_per_carrier=max(1000, devices + devices // 2), base_urls={"jasper": handle.base_url})
        sp_id = seed.service_providers["jasper"]
        # Point the demo account at this simulator (a re-run gets a new port). A real Jasper account
        # allows ~5 calls/s and one call at a time (the seed's setting); the local simulator has no
        # limit, so the demo lifts the account's limits to show the pipeline's own speed.
        with engine.begin() as conn:
            conn.execute(
                sa.update(service_provider)
                .where(service_provider.c.id == sp_id)
                .values(base_url=handle.base_url, rate_per_second=0, max_concurrency=8)
            )
        jasper_devices = _jasper_devices(engine, sp_id)
        sim.seed_devices(
            {"iccid": d["iccid"], "status": d["status"], "ratePlan": d["carrier_rate_plan"], "communicationPlan": d["communication_plan"]}
            for d in jasper_devices
        )
        console.print(f"[bold]3/5[/] demo tenant seeded: {len(jasper_devices)} Jasper devices (and the other carriers')")

        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        example = BulkChangeRequest.model_validate({**seed.example_customer_rate_plan_request(), "idempotencyKey": f"demo-example-{stamp}"})
        activated = [d for d in jasper_devices if d["status"] == "ACTIVATED"]
        deactivated = [d for d in jasper_devices if d["status"] == "DEACTIVATED"]
        source, target = (activated, "DEACTIVATED") if len(activated) >= len(deactivated) else (deactivated, "ACTIVATED")
        status_update = BulkChangeRequest.model_validate(
            {
                "serviceProviderId": sp_id,
                "changeType": 1,
                "idempotencyKey": f"demo-status-{stamp}",
                "devices": [d["iccid"] for d in source[:devices]],
                "statusUpdate": {"targetStatus": target},
            }
        )
        ids = []
        count = len(status_update.devices)
        for label, request in (("example changeType 4", example), (f"{count}-device StatusUpdate -> {target}", status_update)):
            outcome = submit(engine, seed.tenant_id, request, created_by="demo")
            ids.append(outcome.bulk_change_id)
            console.print(f"[bold]4/5[/] submitted {label}: {outcome.message.splitlines()[0]}")

        console.print("[bold]5/5[/] bulk_change_sensor -> process_bulk_change_job (Dagster, in this process)...")
        started = time.perf_counter()
        defs = build_definitions()
        with dg.DagsterInstance.get() as instance:
            while True:
                result, runs = tick_and_run(instance, defs, run_config=QUIET)
                for run in runs:
                    console.print(f"    run {run.run_id[:8]} for bulk change {run.dagster_run.tags.get('dagster/partition')}: "
                                  f"{'success' if run.success else 'FAILED'}")
                if not result.run_requests:
                    break
        seconds = time.perf_counter() - started

    table = Table(title=f"Bulk changes after {seconds:.1f} s")
    for col in ("bulk change", "type", "status", "device rows by status"):
        table.add_column(col)
    for bc_id in ids:
        bc = get_bulk_change(engine, bc_id)
        table.add_row(str(bc_id), str(bc["change_type"]), bc["status"], ", ".join(f"{k}: {v}" for k, v in sorted(bc["counts"].items())))
    console.print(table)
    stats = sim.stats()
    console.print(f"Simulator: {stats['total_calls']} calls, {stats['applied_devices']} devices changed, "
                  f"{stats['applied_more_than_once']} changed twice.")
    console.print("Open the UI: [bold]make dev[/], then http://127.0.0.1:3000 (job process_bulk_change_job, "
                  "one partition per bulk change). Per-device results: [bold]bulkchange results ID --csv -[/]")
    return DemoResult(ids, seconds)
