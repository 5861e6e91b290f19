"""Command line: `python -m bulkchange_pipeline.simulators <carrier> [options]`.

One click subcommand per carrier, so later simulators (thingspace, teal, ...) are added as new
subcommands next to `jasper` without changing how anyone starts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import uvicorn

from .faults import FaultConfig
from .jasper_rules import make_iccids
from .server import uvicorn_config


@click.group()
def cli() -> None:
    """Start a carrier simulator on a loopback port."""


F = TypeVar("F", bound=Callable[..., Any])


def _fault_options(func: F) -> F:
    """The fault-injection options every simulator subcommand shares."""
    options = [
        click.option("--latency-ms", type=float, default=0.0, show_default=True),
        click.option("--latency-jitter-ms", type=float, default=0.0, show_default=True),
        click.option("--error-rate", type=float, default=0.0, show_default=True,
                     help="share of calls answered 5xx (not applied)"),
        click.option("--timeout-rate", type=float, default=0.0, show_default=True,
                     help="share of calls applied but answered after --timeout-hold"),
        click.option("--timeout-hold", type=float, default=30.0, show_default=True),
        click.option("--malformed-rate", type=float, default=0.0, show_default=True,
                     help="share of calls applied but answered with a truncated body"),
        click.option("--burst-rate", type=float, default=0.0, show_default=True,
                     help="share of calls that start a burst of over-limit answers"),
        click.option("--burst-length", type=int, default=5, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _faults(kw: dict[str, Any]) -> FaultConfig:
    return FaultConfig(
        latency_ms=kw["latency_ms"], latency_jitter_ms=kw["latency_jitter_ms"],
        error_rate=kw["error_rate"], timeout_rate=kw["timeout_rate"],
        timeout_hold_seconds=kw["timeout_hold"], malformed_rate=kw["malformed_rate"],
        burst_rate=kw["burst_rate"], burst_length=kw["burst_length"], seed=kw["seed"],
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8910, show_default=True)
@click.option("--rate", type=float, default=5.0, show_default=True,
              help="calls per second per account (0 = unlimited)")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="concurrent calls per account (0 = unlimited)")
@click.option("--account", "accounts", multiple=True, metavar="USER:APIKEY",
              help="an API account (repeatable); default demo:demo-api-key")
@click.option("--devices", type=int, default=0, show_default=True,
              help="seed this many generated ACTIVATED devices")
@click.option("--devices-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON list of DeviceDetails objects to seed")
@_fault_options
def jasper(host: str, port: int, rate: float, concurrency: int, accounts: tuple[str, ...],
           devices: int, devices_file: Path | None, **fault_kw: object) -> None:
    """Jasper / Control Center simulator at http://HOST:PORT/rws/api/v1."""
    from .jasper import API_PREFIX, JasperSimulator

    parsed = {}
    for item in accounts:
        user, sep, key = item.partition(":")
        if not sep or not user or not key:
            raise click.BadParameter(f"expected USER:APIKEY, got {item!r}", param_hint="--account")
        parsed[user] = key
    sim = JasperSimulator(parsed or None, rate_per_second=rate, max_concurrency=concurrency,
                          faults=_faults(fault_kw))
    if devices:
        sim.seed_devices({"iccid": i} for i in make_iccids(devices))
    if devices_file:
        sim.seed_devices(json.loads(devices_file.read_text()))
    click.echo(f"Jasper simulator: http://{host}:{port}{API_PREFIX} "
               f"(accounts: {', '.join(sorted(sim.accounts))}; {len(sim.devices)} devices; "
               f"admin at /_sim/stats, /_sim/config, /_sim/devices)")
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
