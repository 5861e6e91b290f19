"""Beyond one process: ``bulkchange sync-pools`` (Dagster pools from the service provider table) and
``deploy-local start|stop|status|restart`` (the production shape on one machine, issue 10). The
work is in ``bulkchange_pipeline.deploy`` and ``defs.pools``; these commands print it."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from .. import settings
from ._common import F, UserError, console, database_option, friendly_errors, open_engine


@click.command("sync-pools")
@database_option
@click.option(
    "--carrier-api-slots",
    default=None,
    type=click.IntRange(1),
    help="Slots of pool carrier_api: carrier-calling runs in progress at once across all accounts "
    "[default: one per service provider, at least 8].",
)
@click.option("--no-prune", is_flag=True, help="Keep carrier-sp-* pools whose service provider is gone.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@friendly_errors
def sync_pools_command(database_url: str | None, carrier_api_slots: int | None, no_prune: bool, dry_run: bool) -> None:
    """Set the Dagster pools from the service provider table: carrier_api, and carrier-sp-<id> = the
    account's max_concurrency. Uses the instance in DAGSTER_HOME (PostgreSQL storage)."""
    import dagster as dg

    from ..defs.pools import PoolsUnsupported, sync_from_database

    if settings.current().dagster_home is None:
        raise UserError(
            "DAGSTER_HOME is not set: point it at the deployment's instance (e.g. source <run dir>/deployment.env)"
        )
    with dg.DagsterInstance.get() as instance, open_engine(database_url) as engine:
        try:
            r = sync_from_database(instance, engine, carrier_api_slots, prune=not no_prune, dry_run=dry_run)
        except PoolsUnsupported as exc:
            raise UserError(str(exc)) from None
    names = {f"carrier-sp-{a.service_provider_id}": f"{a.name} (tenant {a.tenant_id})" for a in r.accounts}
    table = Table()
    for col in ("pool", "slots", "change", "service provider"):
        table.add_column(col, overflow="fold")
    for key, slots in sorted(r.desired.items()):
        change = (
            f"{r.changed[key][0] if r.changed[key][0] is not None else 'unset'} -> {slots}" if key in r.changed else "-"
        )
        table.add_row(key, str(slots), change, names.get(key, "all carrier accounts"))
    for key in r.deleted:
        table.add_row(key, "-", "deleted", "no longer a limited service provider")
    out = console()
    out.print(table)
    out.print(
        f"{'would change' if dry_run else 'changed'} {len(r.changed)}, deleted {len(r.deleted)}, unchanged {len(r.unchanged)}. "
        "Runs per account are limited by the run queue (tag bulkchange/carrier_account, 1 per account); "
        "carrier-sp-* pools publish each account's call limit."
    )


@click.group("deploy-local")
def deploy_local_group() -> None:
    """Code server, webserver, daemon and intake as separate processes on PostgreSQL (production shape)."""


def _run_dir_option(f: F) -> F:
    return click.option(
        "--run-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Folder for config, pid files and logs (default: <BULKCHANGE_HOME>/deploy-local).",
    )(f)


def _run_dir(value: str | None) -> Path:
    return Path(value).resolve() if value else settings.data_dir() / "deploy-local"


@deploy_local_group.command("start")
@_run_dir_option
@database_option
@click.option(
    "--dagster-database-url",
    default=None,
    help="PostgreSQL for Dagster's storage (default: BULKCHANGE_DAGSTER_DATABASE_URL, else the DAGSTER_PG_* variables).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--code-server-port", default=4266, show_default=True, type=int)
@click.option("--webserver-port", default=3000, show_default=True, type=int)
@click.option("--intake-port", default=8080, show_default=True, type=int)
@click.option("--carrier-api-slots", default=None, type=click.IntRange(1), help="See `sync-pools`.")
@click.option(
    "--startup-timeout", default=120.0, show_default=True, type=float, help="Seconds each service may take to be ready."
)
@click.option(
    "--instance-config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="dagster.yaml to use (default: deploy/dagster.postgres.yaml).",
)
@friendly_errors
def deploy_local_start(
    run_dir: str | None,
    database_url: str | None,
    dagster_database_url: str | None,
    host: str,
    code_server_port: int,
    webserver_port: int,
    intake_port: int,
    carrier_api_slots: int | None,
    startup_timeout: float,
    instance_config: str | None,
) -> None:
    """Migrate, sync pools, start the four services; returns once all are ready."""
    from ..deploy import DEFAULT_INSTANCE_CONFIG, DeployError, LocalDeployment, service_environment, start

    dep = LocalDeployment(
        _run_dir(run_dir),
        host,
        code_server_port,
        webserver_port,
        intake_port,
        Path(instance_config).resolve() if instance_config else DEFAULT_INSTANCE_CONFIG,
    )
    configured = settings.current().dagster_database_url
    dagster_url = dagster_database_url or (configured.get_secret_value() if configured else None)
    try:
        env = service_environment(dep, database_url or settings.database_url(), dagster_url)
        services, pools = start(dep, env, carrier_api_slots=carrier_api_slots, startup_timeout=startup_timeout)
    except DeployError as exc:
        raise UserError(str(exc)) from None
    out = console()
    for s in services:
        out.print(f"{s.name:<12} pid {s.pid:<8} {s.detail}")
    out.print("pools: " + ", ".join(f"{k}={v}" for k, v in sorted(pools.items())))
    out.print(
        f"UI {dep.url('webserver')}  intake {dep.url('intake')}/docs  logs {dep.run_dir / 'logs'}\n"
        f"settings for dagster/bulkchange commands: source {dep.env_file}"
    )


@deploy_local_group.command("stop")
@_run_dir_option
@click.option("--timeout", default=20.0, show_default=True, type=float, help="Seconds after SIGTERM before SIGKILL.")
@friendly_errors
def deploy_local_stop(run_dir: str | None, timeout: float) -> None:
    """Stop the services (intake, webserver, daemon, then the code server and its run workers)."""
    from ..deploy import DeployError, LocalDeployment, stop

    try:
        results = stop(LocalDeployment.load(_run_dir(run_dir)), timeout)
    except DeployError as exc:
        raise UserError(str(exc)) from None
    for name, outcome in results.items():
        click.echo(f"{name:<12} {outcome}")


@deploy_local_group.command("status")
@_run_dir_option
@friendly_errors
def deploy_local_status(run_dir: str | None) -> None:
    """Which services are up and ready; exit 1 unless all are."""
    from ..deploy import DeployError, LocalDeployment, status

    try:
        states = status(LocalDeployment.load(_run_dir(run_dir)))
    except DeployError as exc:
        raise UserError(str(exc)) from None
    for s in states:
        state = "ready" if s.ready else "up, not ready" if s.running else "down"
        click.echo(f"{s.name:<12} {state:<14} pid {s.pid or '-':<8} {_since(s.since, s.restarts):<30} {s.detail}")
    click.get_current_context().exit(0 if all(s.ready for s in states) else 1)


def _since(since: float | None, restarts: int) -> str:
    day = "%H:%M:%S" if since and time.time() - since < 20 * 3600 else "%Y-%m-%d %H:%M:%S"
    return (f"since {time.strftime(day, time.localtime(since))}" if since else "-") + (
        f", restarts {restarts}" if restarts else ""
    )


@deploy_local_group.command("restart")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@_run_dir_option
@click.option(
    "--startup-timeout", default=120.0, show_default=True, type=float, help="Seconds each service may take to be ready."
)
@click.option(
    "--timeout",
    default=20.0,
    show_default=True,
    type=float,
    help="Seconds after SIGTERM before SIGKILL, for what is left of a service.",
)
@friendly_errors
def deploy_local_restart(
    services: tuple[str, ...], run_dir: str | None, startup_timeout: float, timeout: float
) -> None:
    """Restart services of a running deployment (code-server, daemon, webserver, intake; none named:
    every one that is down) with the environment the others run with; returns once they are ready.
    A running service named is stopped first (with its run workers, as `stop` does)."""
    from ..deploy import DeployError, LocalDeployment, restart

    try:
        done, source = restart(
            LocalDeployment.load(_run_dir(run_dir)), services, startup_timeout=startup_timeout, timeout=timeout
        )
    except DeployError as exc:
        raise UserError(str(exc)) from None
    if not done:
        click.echo("every service is up: nothing to restart (name a service to restart it anyway)")
    for r in done:
        s = r.state
        click.echo(f"{s.name:<12} restarted, pid {s.pid:<8} {r.before}; ready: {s.detail}")
    if done:
        click.echo(f"environment: {source}")


COMMANDS = [sync_pools_command, deploy_local_group]

__all__ = ["COMMANDS", "deploy_local_group", "sync_pools_command"]
