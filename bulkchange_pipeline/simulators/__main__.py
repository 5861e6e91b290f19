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
        click.option(
            "--error-rate", type=float, default=0.0, show_default=True, help="share of calls answered 5xx (not applied)"
        ),
        click.option(
            "--timeout-rate",
            type=float,
            default=0.0,
            show_default=True,
            help="share of calls applied but answered after --timeout-hold",
        ),
        click.option("--timeout-hold", type=float, default=30.0, show_default=True),
        click.option(
            "--malformed-rate",
            type=float,
            default=0.0,
            show_default=True,
            help="share of calls applied but answered with a truncated body",
        ),
        click.option(
            "--burst-rate",
            type=float,
            default=0.0,
            show_default=True,
            help="share of calls that start a burst of over-limit answers",
        ),
        click.option("--burst-length", type=int, default=5, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _faults(kw: dict[str, Any]) -> FaultConfig:
    return FaultConfig(
        latency_ms=kw["latency_ms"],
        latency_jitter_ms=kw["latency_jitter_ms"],
        error_rate=kw["error_rate"],
        timeout_rate=kw["timeout_rate"],
        timeout_hold_seconds=kw["timeout_hold"],
        malformed_rate=kw["malformed_rate"],
        burst_rate=kw["burst_rate"],
        burst_length=kw["burst_length"],
        seed=kw["seed"],
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8910, show_default=True)
@click.option("--rate", type=float, default=5.0, show_default=True, help="calls per second per account (0 = unlimited)")
@click.option(
    "--concurrency", type=int, default=1, show_default=True, help="concurrent calls per account (0 = unlimited)"
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="USER:APIKEY",
    help="an API account (repeatable); default demo:demo-api-key",
)
@click.option("--devices", type=int, default=0, show_default=True, help="seed this many generated ACTIVATED devices")
@click.option(
    "--devices-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of DeviceDetails objects to seed",
)
@_fault_options
def jasper(
    host: str,
    port: int,
    rate: float,
    concurrency: int,
    accounts: tuple[str, ...],
    devices: int,
    devices_file: Path | None,
    **fault_kw: object,
) -> None:
    """Jasper / Control Center simulator at http://HOST:PORT/rws/api/v1."""
    from .jasper import API_PREFIX, JasperSimulator

    parsed = {}
    for item in accounts:
        user, sep, key = item.partition(":")
        if not sep or not user or not key:
            raise click.BadParameter(f"expected USER:APIKEY, got {item!r}", param_hint="--account")
        parsed[user] = key
    sim = JasperSimulator(parsed or None, rate_per_second=rate, max_concurrency=concurrency, faults=_faults(fault_kw))
    if devices:
        sim.seed_devices({"iccid": i} for i in make_iccids(devices))
    if devices_file:
        sim.seed_devices(json.loads(devices_file.read_text()))
    click.echo(
        f"Jasper simulator: http://{host}:{port}{API_PREFIX} "
        f"(accounts: {', '.join(sorted(sim.accounts))}; {len(sim.devices)} devices; "
        f"admin at /_sim/stats, /_sim/config, /_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8913, show_default=True)
@click.option(
    "--calls-per-minute",
    type=float,
    default=1000,
    show_default=True,
    help="calls per minute per account (0 = unlimited)",
)
@click.option(
    "--account",
    "teal_accounts",
    multiple=True,
    metavar="APIKEY:APISECRET",
    help="an API account (repeatable); default demo-key:demo-secret",
)
@click.option(
    "--devices", "teal_devices", type=int, default=0, show_default=True, help="seed this many generated online eSIMs"
)
@click.option(
    "--operation-delay",
    type=float,
    default=2.0,
    show_default=True,
    help="seconds before an operation completes and its callback is sent",
)
@_fault_options
def teal(
    host: str,
    port: int,
    calls_per_minute: float,
    teal_accounts: tuple[str, ...],
    teal_devices: int,
    operation_delay: float,
    **fault_kw: object,
) -> None:
    """Teal eSIM simulator at http://HOST:PORT/api/v1."""
    from .teal import TealSimulator
    from .teal_rules import make_eids

    parsed = {}
    for item in teal_accounts:
        key, sep, secret = item.partition(":")
        if not sep or not key or not secret:
            raise click.BadParameter(f"expected APIKEY:APISECRET, got {item!r}", param_hint="--account")
        parsed[key] = secret
    sim = TealSimulator(
        parsed or None,
        calls_per_minute=calls_per_minute,
        faults=_faults(fault_kw),
        operation_delay_seconds=operation_delay,
    )
    if teal_devices:
        sim.seed_devices({"eid": e} for e in make_eids(teal_devices))
    click.echo(
        f"Teal simulator: http://{host}:{port}/api/v1 ({len(sim.esims)} eSIMs; "
        "admin at /_sim/stats, /_sim/config, /_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8911, show_default=True)
@click.option(
    "--client",
    "ts_clients",
    multiple=True,
    metavar="CLIENT_ID:CLIENT_SECRET",
    help="an OAuth app (repeatable); default demo-client:demo-client-secret",
)
@click.option(
    "--user",
    "ts_users",
    multiple=True,
    metavar="USER:PASSWORD:ACCOUNT_NAME",
    help="a UWS user and its billing account (repeatable); default demo-uws:demo-uws-password:0000123456-00001",
)
@click.option(
    "--devices", "ts_devices", type=int, default=0, show_default=True, help="seed this many generated active devices"
)
@click.option("--token-ttl", type=float, default=3600.0, show_default=True)
@click.option("--session-idle", type=float, default=1200.0, show_default=True)
@click.option("--activate-per-minute", type=float, default=100.0, show_default=True)
@click.option(
    "--activation-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="time a device spends in 'pending activation'",
)
@click.option("--callback-delay", type=float, default=0.0, show_default=True)
@click.option("--duplicate-rate", type=float, default=0.0, show_default=True)
@click.option("--drop-rate", type=float, default=0.0, show_default=True)
@click.option("--shuffle-callbacks", is_flag=True, default=False)
@_fault_options
def thingspace(
    host: str,
    port: int,
    ts_clients: tuple[str, ...],
    ts_users: tuple[str, ...],
    ts_devices: int,
    token_ttl: float,
    session_idle: float,
    activate_per_minute: float,
    activation_seconds: float,
    callback_delay: float,
    duplicate_rate: float,
    drop_rate: float,
    shuffle_callbacks: bool,
    **fault_kw: object,
) -> None:
    """Verizon ThingSpace simulator at http://HOST:PORT (/api/ts/v1, /api/m2m/v1)."""
    from .thingspace import ThingSpaceSimulator
    from .thingspace_rules import make_devices

    clients, users = {}, {}
    for item in ts_clients:
        cid, sep, secret = item.partition(":")
        if not sep or not cid or not secret:
            raise click.BadParameter(f"expected CLIENT_ID:CLIENT_SECRET, got {item!r}", param_hint="--client")
        clients[cid] = secret
    for item in ts_users:
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise click.BadParameter(f"expected USER:PASSWORD:ACCOUNT_NAME, got {item!r}", param_hint="--user")
        users[parts[0]] = (parts[1], parts[2])
    sim = ThingSpaceSimulator(
        clients or None,
        users or None,
        token_ttl_seconds=token_ttl,
        session_idle_seconds=session_idle,
        activate_per_minute=activate_per_minute,
        faults=_faults(fault_kw),
    )
    sim.configure(
        activation_seconds=activation_seconds,
        callback_delay_seconds=callback_delay,
        duplicate_rate=duplicate_rate,
        drop_rate=drop_rate,
        shuffle_callbacks=shuffle_callbacks,
    )
    if ts_devices:
        sim.seed_devices(make_devices(ts_devices))
    click.echo(
        f"ThingSpace simulator: http://{host}:{port} (clients: {', '.join(sorted(sim.clients))}; "
        f"users: {', '.join(sorted(sim.users))}; {len(sim.devices)} devices; "
        f"admin at /_sim/stats, /_sim/config, /_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8912, show_default=True)
@click.option(
    "--app",
    "tg_apps",
    multiple=True,
    metavar="APP_ID:APP_SECRET",
    help="an app account (repeatable); default demo-app:demo-app-secret",
)
@click.option(
    "--lines", "tg_lines", type=int, default=0, show_default=True, help="seed this many generated active lines"
)
@click.option(
    "--activation-polls",
    type=int,
    default=2,
    show_default=True,
    help="status polls an activation stays pending before it completes",
)
@click.option(
    "--rate", "tg_rate", type=float, default=0.0, show_default=True, help="calls per second per app (0 = unlimited)"
)
@click.option(
    "--concurrency",
    "tg_concurrency",
    type=int,
    default=0,
    show_default=True,
    help="concurrent calls per app (0 = unlimited)",
)
@_fault_options
def telegence(
    host: str,
    port: int,
    tg_apps: tuple[str, ...],
    tg_lines: int,
    activation_polls: int,
    tg_rate: float,
    tg_concurrency: int,
    **fault_kw: object,
) -> None:
    """AT&T Telegence simulator at http://HOST:PORT/sp/mobility/..."""
    from .telegence import TelegenceSimulator
    from .telegence_rules import make_subscriber_numbers

    parsed = {}
    for item in tg_apps:
        app_id, sep, secret = item.partition(":")
        if not sep or not app_id or not secret:
            raise click.BadParameter(f"expected APP_ID:APP_SECRET, got {item!r}", param_hint="--app")
        parsed[app_id] = secret
    sim = TelegenceSimulator(
        parsed or None,
        rate_per_second=tg_rate,
        max_concurrency=tg_concurrency,
        faults=_faults(fault_kw),
        activation_polls=activation_polls,
    )
    if tg_lines:
        numbers = make_subscriber_numbers(tg_lines)
        sim.seed_devices(
            {"subscriberNumber": n, "sim": i}
            for n, i in zip(numbers, make_iccids(tg_lines, prefix="89011704"), strict=True)
        )
    click.echo(
        f"Telegence simulator: http://{host}:{port}/sp/mobility (apps: "
        f"{', '.join(sorted(sim.accounts))}; {len(sim.lines)} lines; "
        "admin at /_sim/stats, /_sim/config, /_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8914, show_default=True)
@click.option(
    "--rate",
    "pond_rate",
    type=float,
    default=5.0,
    show_default=True,
    help="calls per second per account (0 = unlimited) [provisional]",
)
@click.option(
    "--concurrency",
    "pond_concurrency",
    type=int,
    default=2,
    show_default=True,
    help="concurrent calls per account (0 = unlimited) [provisional]",
)
@click.option(
    "--account",
    "pond_accounts",
    multiple=True,
    metavar="USER:SECRET:DISTRIBUTOR_ID",
    help="an API account (repeatable); default demo:demo-secret:1001",
)
@click.option(
    "--devices",
    "pond_devices",
    type=int,
    default=0,
    show_default=True,
    help="seed this many generated SIMs (one ACTIVE package of type 2001)",
)
@_fault_options
def pond(
    host: str,
    port: int,
    pond_rate: float,
    pond_concurrency: int,
    pond_accounts: tuple[str, ...],
    pond_devices: int,
    **fault_kw: object,
) -> None:
    """Pond IoT simulator (provisional wire format) at http://HOST:PORT/api/{distributorId}."""
    from .pond import API_PREFIX as POND_PREFIX
    from .pond import PondSimulator

    parsed = {}
    for item in pond_accounts:
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise click.BadParameter(f"expected USER:SECRET:DISTRIBUTOR_ID, got {item!r}", param_hint="--account")
        parsed[parts[0]] = (parts[1], parts[2])
    sim = PondSimulator(
        parsed or None, rate_per_second=pond_rate, max_concurrency=pond_concurrency, faults=_faults(fault_kw)
    )
    if pond_devices:
        sim.seed_devices({"iccid": i} for i in make_iccids(pond_devices, prefix="89440001"))
    click.echo(
        f"Pond simulator (provisional): http://{host}:{port}{POND_PREFIX}/{{distributorId}} "
        f"(distributors: {', '.join(sorted(d for _, d in sim.accounts.values()))}; "
        f"{len(sim.devices)} devices; admin at /_sim/stats, /_sim/config, /_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8915, show_default=True)
@click.option(
    "--calls-per-minute",
    "rev_cpm",
    type=float,
    default=500,
    show_default=True,
    help="calls per minute per subscription (0 = unlimited)",
)
@click.option(
    "--daily-quota",
    "rev_quota",
    type=int,
    default=150_000,
    show_default=True,
    help="calls per day per subscription (0 = unlimited)",
)
@click.option(
    "--retry-after",
    "rev_retry_after",
    type=float,
    default=None,
    help="fixed N in 'Try again in N seconds' (default: rest of the limit window)",
)
@click.option(
    "--precise-waits",
    "rev_precise",
    is_flag=True,
    default=False,
    help="state waits in hundredths of a second instead of whole seconds",
)
@click.option(
    "--account",
    "rev_accounts",
    multiple=True,
    metavar="USER@CLIENT:PASSWORD",
    help="an API user (repeatable); default demo@DEMO:demo-password",
)
@click.option(
    "--subscription-key",
    "rev_keys",
    multiple=True,
    help="a valid Ocp-Apim-Subscription-Key (repeatable); default demo-subscription-key",
)
@click.option(
    "--customer",
    "rev_customers",
    multiple=True,
    type=click.IntRange(1, 2_147_483_647),
    help="seed a Rev customer with this int32 id (repeatable)",
)
@_fault_options
def revio(
    host: str,
    port: int,
    rev_cpm: float,
    rev_quota: int,
    rev_retry_after: float | None,
    rev_precise: bool,
    rev_accounts: tuple[str, ...],
    rev_keys: tuple[str, ...],
    rev_customers: tuple[int, ...],
    **fault_kw: object,
) -> None:
    """Rev.io billing simulator at http://HOST:PORT/v1."""
    from .revio import RevioSimulator

    parsed = {}
    for item in rev_accounts:
        user, sep, password = item.rpartition(":")
        if not sep or "@" not in user or not password:
            raise click.BadParameter(f"expected USER@CLIENT:PASSWORD, got {item!r}", param_hint="--account")
        parsed[user] = password
    sim = RevioSimulator(
        parsed or None,
        rev_keys or None,
        calls_per_minute=rev_cpm,
        daily_quota=rev_quota,
        retry_after_seconds=rev_retry_after,
        whole_second_waits=not rev_precise,
        faults=_faults(fault_kw),
    )
    # int32 ids only (IntRange above): the API's creates take no other, so no text id is seeded.
    sim.seed_devices({"type": "customer", "customer_id": c} for c in rev_customers)
    click.echo(
        f"Rev.io simulator: http://{host}:{port}/v1 (users: {', '.join(sorted(sim.accounts))}; "
        f"{len(sim.book.customers)} customers; admin at /_sim/stats, /_sim/config, "
        "/_sim/devices)"
    )
    uvicorn.Server(uvicorn_config(sim.app, host, port)).run()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
