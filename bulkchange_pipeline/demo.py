"""``bulkchange demo``: the main job end to end on the embedded default, no server needed.

It migrates the SQLite business database under ``BULKCHANGE_HOME``, starts the whole simulator
park (all six carriers) on free loopback ports and the callback app, seeds the demo tenant, points
its service providers at the park and syncs the simulators from the database (so carrier and
database agree), then submits through intake validation the seed's example request
(changeType 4), a 1,000-device Jasper StatusUpdate, a 100-device ThingSpace StatusUpdate (the
asynchronous path: callbacks, then a reconcile run) and a 20-device StatusUpdate on the same Jasper
account reached over SOAP (the simulator's Terminal service: a second service provider naming the
same credentials entry, with the SOAP password and license key as its extras). The real ``bulk_change_sensor``,
``process_bulk_change_job``, ``async_results_sensor`` and ``reconcile_async_job`` process them on a
persistent Dagster instance (``DAGSTER_HOME``), so ``make dev`` shows the runs after.

It also shows issue 20's B2B exchange: a webhook receiver verifying each completion notification
(``demo_notify``: ``notification_sensor`` -> ``deliver_notifications_job``) and an X12 856 dropped
into the tenant's local inbox (``demo_drop``: ``file_drop_sensor`` takes it, writes the 997 at
once and the 824 once its bulk change has finished).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from . import settings
from .defs import build_definitions
from .defs.local_runner import ASYNC_SENSOR_NAME, QUIET, tick_and_run
from .demo_drop import DemoDrop
from .demo_notify import deliver, demo_webhook
from .domain import BulkChangeRequest, BulkChangeStatus
from .intake.app import create_app
from .intake.submit import submit
from .simulators.jasper_soap import DEFAULT_LICENSE_KEYS, DEFAULT_SOAP_ACCOUNTS
from .simulators.park import JASPER_USER, Park, start_park
from .simulators.server import run_app_in_thread
from .simulators.sync import sync_from_database
from .store import migrate
from .store.bulk_changes import get_bulk_change
from .store.db import make_engine, utcnow
from .store.reference import live_devices
from .store.seed import DemoSeed, demo_credentials_names, point_demo_at, seed_demo
from .store.seed_soap import seed_demo_soap

THINGSPACE_DEVICES = 100
SOAP_DEVICES = 20


def soap_credentials_env(credentials_name: str) -> dict[str, str]:
    """The extras a credentials entry needs for the park's Jasper account over SOAP: the simulator's
    SOAP password for its demo user and a license key (its REST API key stays the entry's SECRET)."""
    key = settings.credential_env_key(credentials_name)
    return {f"{key}_SOAP_PASSWORD": DEFAULT_SOAP_ACCOUNTS[JASPER_USER], f"{key}_LICENSE_KEY": DEFAULT_LICENSE_KEYS[0]}


@dataclass
class DemoResult:
    bulk_change_ids: list[int]
    seconds: float


def _devices(engine: sa.Engine, seed: DemoSeed, integration: str) -> list[dict[str, Any]]:
    return live_devices(engine, seed.tenant_id, seed.service_providers[integration])


def _flip(devices: list[dict[str, Any]], a: str, b: str, limit: int) -> tuple[list[str], str]:
    """ICCIDs of up to ``limit`` devices in the more common of two statuses, and the other status,
    so each demo run flips devices back and forth instead of running out of them."""
    in_a = [d["iccid"] for d in devices if d["status"] == a]
    in_b = [d["iccid"] for d in devices if d["status"] == b]
    return (in_a[:limit], b) if len(in_a) >= len(in_b) else (in_b[:limit], a)


def _requests(engine: sa.Engine, seed: DemoSeed, devices: int, soap_sp: int) -> list[tuple[str, BulkChangeRequest]]:
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    example = BulkChangeRequest.model_validate(
        {**seed.example_customer_rate_plan_request(), "idempotencyKey": f"demo-example-{stamp}"}
    )
    jasper, jasper_target = _flip(_devices(engine, seed, "jasper"), "ACTIVATED", "DEACTIVATED", devices)
    ts, ts_target = _flip(_devices(engine, seed, "thingspace"), "active", "suspend", THINGSPACE_DEVICES)
    soap, soap_target = _flip(live_devices(engine, seed.tenant_id, soap_sp), "ACTIVATED", "DEACTIVATED", SOAP_DEVICES)
    out = [("example changeType 4", example)]
    for label, sp, iccids, target in (
        ("Jasper", seed.service_providers["jasper"], jasper, jasper_target),
        ("ThingSpace", seed.service_providers["thingspace"], ts, ts_target),
        ("Jasper (SOAP)", soap_sp, soap, soap_target),
    ):
        out.append(
            (
                f"{len(iccids)}-device {label} StatusUpdate -> {target}",
                BulkChangeRequest.model_validate(
                    {
                        "serviceProviderId": sp,
                        "changeType": 1,
                        "idempotencyKey": f"demo-{sp}-{stamp}",
                        "devices": iccids,
                        "statusUpdate": {"targetStatus": target},
                    }
                ),
            )
        )
    return out


def _process(
    console: Console, park: Park, ids: list[int], engine: sa.Engine, instance: dg.DagsterInstance, defs: dg.Definitions
) -> None:
    """Sensor ticks and runs until every bulk change is final (async ones after their callbacks)."""
    for sensor in (None, ASYNC_SENSOR_NAME, ASYNC_SENSOR_NAME, ASYNC_SENSOR_NAME):
        if sensor and all(get_bulk_change(engine, i)["status"] in BulkChangeStatus.final_values() for i in ids):
            break
        if sensor:
            park.wait_idle(30)
            time.sleep(0.2)  # the last callbacks reach the app
        while True:
            result, runs = tick_and_run(instance, defs, run_config=QUIET, **({"sensor_name": sensor} if sensor else {}))
            for run in runs:
                console.print(
                    f"    {run.dagster_run.job_name} run {run.run_id[:8]} for bulk change "
                    f"{run.dagster_run.tags.get('dagster/partition')}: {'success' if run.success else 'FAILED'}"
                )
            if not result.run_requests or sensor:
                break


def run_demo(devices: int = 1000, console: Console | None = None) -> DemoResult:
    console = console or Console()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # Dagster's own, not actionable here
    dagster_home = settings.current().dagster_home or settings.data_dir() / "dagster"
    os.environ[settings.DAGSTER_HOME_ENV] = str(dagster_home)  # Dagster's own DagsterInstance.get() reads it
    dagster_home.mkdir(parents=True, exist_ok=True)
    url = settings.database_url()
    console.print(f"[bold]1/5[/] business database: {make_engine(url).url.render_as_string(hide_password=True)}")
    migrate.upgrade(url)
    engine = make_engine(url)

    with start_park() as park, run_app_in_thread(create_app(url)) as callbacks:
        console.print(
            f"[bold]2/5[/] simulators: {', '.join(f'{k} {v}' for k, v in park.base_urls.items())}; "
            f"callbacks at {callbacks.root_url}"
        )
        # Half again as many devices as the StatusUpdate needs, so each demo run finds enough
        # devices to flip (ACTIVATED -> DEACTIVATED, then back on the next run).
        seed = seed_demo(engine, devices_per_carrier=max(1000, devices + devices // 2))
        # A re-run gets new ports. Real carriers throttle (Jasper: ~5 calls/s, one at a time, the
        # seed's setting); the local simulators do not, so the demo lifts the accounts' limits to
        # show the pipeline's own speed.
        point_demo_at(engine, park.base_urls, unlimited=True)
        # The Jasper simulator also serves Control Center's SOAP Terminal service (host root).
        soap_sp = seed_demo_soap(engine, park.handles["jasper"].root_url, SOAP_DEVICES * 2, unlimited=True)
        counts = sync_from_database(engine, park, seed.tenant_id)
        # The in-process Dagster runs read these through bulkchange_pipeline.settings.
        os.environ.update(park.credentials_env(demo_credentials_names(), settings.credential_env_key))
        os.environ.update(soap_credentials_env(demo_credentials_names()["jasper"]))
        os.environ[settings.CALLBACK_BASE_URL_ENV] = callbacks.root_url
        console.print(
            f"[bold]3/5[/] demo tenant seeded; simulators synced: {', '.join(f'{k} {v}' for k, v in counts.items())}"
        )

        # A verifying webhook receiver subscribed for the tenant, and an 856 in its file drop inbox.
        with demo_webhook(engine, seed.tenant_id) as hook, dg.DagsterInstance.get() as instance:
            defs = build_definitions()
            ids = []
            for label, request in _requests(engine, seed, devices, soap_sp):
                outcome = submit(engine, seed.tenant_id, request, created_by="demo")
                ids.append(outcome.bulk_change_id)
                console.print(f"[bold]4/5[/] submitted {label}: {outcome.message.splitlines()[0]}")
            drop = DemoDrop.start(engine, seed, instance, defs)
            ids += drop.bulk_change_ids
            console.print(
                f"[bold]4/5[/] file_drop_sensor took X12 856 {drop.name}: bulk change(s) {drop.bulk_change_ids}"
            )

            console.print(
                "[bold]5/5[/] bulk_change_sensor -> process_bulk_change_job, then async_results_sensor -> "
                "reconcile_async_job, then notification_sensor -> deliver_notifications_job (Dagster, in this process)..."
            )
            park.simulators["jasper"].reset_counters()
            started = time.perf_counter()
            _process(console, park, ids, engine, instance, defs)
            seconds = time.perf_counter() - started
            deliver(instance, defs)
            drop_lines = drop.finish()
        stats = park.simulators["jasper"].stats()

    table = Table(title=f"Bulk changes after {seconds:.1f} s")
    for col in ("bulk change", "type", "status", "device rows by status"):
        table.add_column(col)
    for bc_id in ids:
        bc = get_bulk_change(engine, bc_id)
        table.add_row(
            str(bc_id),
            str(bc["change_type"]),
            bc["status"],
            ", ".join(f"{k}: {v}" for k, v in sorted(bc["counts"].items())),
        )
    console.print(table)
    soap_calls = stats.get("soap_calls", {})
    console.print(
        f"Jasper simulator: {stats['total_calls']} calls ({sum(soap_calls.values())} of them SOAP: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(soap_calls.items())) or 'none'}), "
        f"{stats['applied_devices']} devices changed, {stats['applied_more_than_once']} changed twice."
    )
    for line in [*hook.lines(), *drop_lines]:
        console.print(line)
    console.print(
        "Open the UI: [bold]make dev[/], then http://127.0.0.1:3000 (job process_bulk_change_job, "
        "one partition per bulk change). Per-device results: [bold]bulkchange results ID --csv -[/]"
    )
    return DemoResult(ids, seconds)


__all__ = ["SOAP_DEVICES", "DemoResult", "run_demo", "soap_credentials_env"]
