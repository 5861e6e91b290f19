"""Running things locally: ``bulkchange serve`` (the HTTP app), ``simulate`` (the six carrier
simulators, for ``make dev``) and ``demo`` (the main job end to end)."""

from __future__ import annotations

import time

import click

from .. import settings
from ..store import reference as ref
from ._common import console, database_option, friendly_errors, open_engine

LOCAL_CALLBACK_BASE_URL = "http://127.0.0.1:8080"  # where `bulkchange serve` listens by default


@click.command("demo")
@click.option("--devices", default=1000, show_default=True, help="Devices in the demo StatusUpdate")
@friendly_errors
def demo(devices: int) -> None:
    """Run the main job end to end on the embedded default (SQLite, the six simulators, Dagster)."""
    from ..demo import run_demo

    run_demo(devices=devices)


@click.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@friendly_errors
def serve(database_url: str | None, host: str, port: int) -> None:
    """Serve the HTTP app: the intake API (/bulk-changes), carrier callbacks (/callbacks/...) and /docs."""
    import uvicorn

    from ..intake.app import create_app

    uvicorn.run(create_app(database_url or settings.database_url()), host=host, port=port, log_level="info")


@click.command("simulate")
@database_option
@click.option("--seed-from-db", is_flag=True, help="Seed the simulators with the demo tenant's devices and catalogue.")
@click.option("--free-ports", is_flag=True, help="Bind free ports instead of the seed's defaults (8910-8915).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--callback-base-url",
    default=None,
    help="Where `bulkchange serve` takes carrier callbacks (ThingSpace, Teal) "
    f"[default: BULKCHANGE_CALLBACK_BASE_URL, else {LOCAL_CALLBACK_BASE_URL}].",
)
@click.option("--limits", is_flag=True, help="Keep the carriers' own rate limits (default: none).")
@click.option("--print-env", is_flag=True, help="Only print the `export` lines for the default ports and exit.")
@friendly_errors
def simulate_command(
    database_url: str | None,
    seed_from_db: bool,
    free_ports: bool,
    host: str,
    callback_base_url: str | None,
    limits: bool,
    print_env: bool,
) -> None:
    """Run all six carrier simulators in the foreground (Ctrl-C stops them), point the demo service
    providers at them and print the credentials to export (used by `make dev`)."""
    from ..simulators.park import Park, start_park
    from ..simulators.sync import sync_from_database
    from ..store.seed import PROVIDERS, demo_credentials_names, point_demo_at

    callback_base_url = callback_base_url or settings.current().callback_base_url or LOCAL_CALLBACK_BASE_URL
    names = demo_credentials_names()
    if print_env:  # the demo accounts are fixed, so the lines are known before anything starts
        env = Park({}, {}, callback_base_url).credentials_env(names, settings.credential_env_key)
        click.echo("\n".join(f"export {k}={v}" for k, v in sorted(env.items())))
        return
    ports = (
        None
        if free_ports
        else {i.value: int(spec[2].rsplit(":", 1)[1].split("/", 1)[0]) for i, spec in PROVIDERS.items()}
    )
    with start_park(callback_base_url, host=host, ports=ports, limits=limits) as park:
        out = console()
        with open_engine(database_url) as engine:
            tenant_id = ref.tenant_id_by_name(engine, "demo")
            if tenant_id is None:
                out.print("no demo tenant in this database (run `bulkchange seed-demo`); simulators start empty")
            else:
                point_demo_at(engine, park.base_urls, unlimited=not limits)
                if seed_from_db:
                    counts = sync_from_database(engine, park, tenant_id)
                    out.print("seeded from the database: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        for name, url in park.base_urls.items():
            out.print(f"{name:<11} {url}")
        click.echo(
            "\n".join(
                f"export {k}={v}" for k, v in sorted(park.credentials_env(names, settings.credential_env_key).items())
            )
        )
        out.print("simulators running; Ctrl-C stops them")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.print("stopping the simulators")


COMMANDS = [demo, serve, simulate_command]

__all__ = ["COMMANDS", "demo", "serve", "simulate_command"]
