"""The ``bulkchange`` command line: init-db, seed-demo, submit, dry-run, status, results, history.

The click group stays here; command bodies are small functions, so more commands (demo, serve,
simulate, cancel) can be added next to them, reusing ``database_option``, ``tenant_option``,
``open_engine`` and ``resolve_tenant``. User errors end with a one-line message and an exit code,
never a traceback: 1 for most, 2 for a file or request that cannot be read at all.
"""

from __future__ import annotations

import functools
import getpass
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text as RichText

from ..domain import IdentifierKind, classify, normalize
from ..domain.requests import MAX_ID
from ..store import migrate
from ..store import reference as ref
from ..store.bulk_changes import IdempotencyConflict, get_bulk_change, iter_device_results
from ..store.db import database_url as default_database_url
from ..store.db import make_engine
from ..store.device_changes import device_history_for
from ..store.seed import seed_demo
from .parsing import IntakeError, IntakeLimits, plain_int, read_request_file, shown, text_reason
from .render import final_count, render_history, render_report, render_status, write_results_csv
from .submit import submit
from .validation import RequestRejected

F = TypeVar("F", bound=Callable[..., Any])
FINAL_BULK = {"PROCESSED", "CANCELLED", "ERROR"}


class UserError(click.ClickException):
    """A mistake the user can fix; printed without a traceback."""

    exit_code = 1


class InputError(UserError):
    """The file or request cannot be used at all (dry-run exit code 2)."""

    exit_code = 2


def console() -> Console:
    return Console(highlight=False)


class Text(click.ParamType):
    """Free text from the command line, refused (exit 2, one line) when it cannot be stored.

    A non-UTF-8 byte in an argument reaches Python as a lone surrogate (PEP 383), which the
    database or an answer would fail on later; NUL cannot be passed in argv but is checked too.
    The same ``text_reason`` as every other way in.
    """

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if found := _ARGV_BYTE.search(text):  # PEP 383: undecodable argv byte 0xNN arrives as U+DCNN
            self.fail(f"is not valid UTF-8 (byte 0x{ord(found.group()) - 0xDC00:02X}): pass UTF-8 text", param, ctx)
        if reason := text_reason("the value", text):
            self.fail(reason, param, ctx)
        return text


class Id(click.ParamType):
    """A database id: ASCII digits (``int()`` would also take ``1_0`` and ``٣``), 1 to 2**63-1 (past
    that SQLite raises OverflowError instead of finding nothing)."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        number = plain_int(str(value))
        if number is None or not 1 <= number <= MAX_ID:
            self.fail(f"{shown(str(value), 40)!r} is not an id (a whole number from 1 to {MAX_ID})", param, ctx)
        return number


_ARGV_BYTE = re.compile("[\udc80-\udcff]")
TEXT = Text()
ID = Id()


def database_option(f: F) -> F:
    return click.option(
        "--database-url", envvar="BULKCHANGE_DATABASE_URL", default=None,
        help="Business database URL (default: BULKCHANGE_DATABASE_URL, else a SQLite file under BULKCHANGE_HOME).",
    )(f)


def tenant_option(f: F) -> F:
    return click.option("--tenant", default="demo", show_default=True, type=TEXT, help="Tenant name.")(f)


def friendly_errors(f: F) -> F:
    """Turn expected failures into one-line messages (no tracebacks for user errors)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (IntakeError, RequestRejected) as exc:  # escaped: a reason may quote what the file holds
            raise InputError(shown(str(exc), 10_000)) from None
        except IdempotencyConflict as exc:
            raise UserError(shown(str(exc), 10_000)) from None
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.DataError) as exc:
            text = str(exc.orig or exc).lower()
            if "no such table" in text or "does not exist" in text and "relation" in text:
                raise UserError("the database is not initialised: run `bulkchange init-db` first") from None
            raise UserError(f"database error: {str(exc.orig or exc).splitlines()[0]}") from None
        except (sa.exc.ArgumentError, ValueError) as exc:
            if isinstance(exc, sa.exc.ArgumentError) or "URL" in str(exc):
                raise UserError(f"bad database URL: {exc}") from None
            raise

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_engine(url: str | None) -> Iterator[sa.Engine]:
    engine = make_engine(url or default_database_url())
    try:
        yield engine
    finally:
        engine.dispose()


def resolve_tenant(engine: sa.Engine, name: str) -> int:
    tenant_id = ref.tenant_id_by_name(engine, name)
    if tenant_id is None:
        raise UserError(f"no tenant named {name!r}; run `bulkchange seed-demo` for the demo tenant")
    return tenant_id


def resolve_service_provider(engine: sa.Engine, tenant_id: int, value: str | None) -> int | None:
    """An id, or the exact (case-insensitive) name or integration of one of the tenant's providers."""
    if value is None:
        return None
    if (number := plain_int(value)) is not None:
        return number
    sps = ref.list_service_providers(engine, tenant_id)
    matches = [sp for sp in sps if value.strip().lower() in (sp.name.lower(), sp.integration.value)]
    if len(matches) != 1:
        names = ", ".join(f"{sp.id} {sp.name!r}" for sp in sps)
        raise UserError(f"service provider {value!r} is {'ambiguous' if matches else 'unknown'}; this tenant has: {names}")
    return matches[0].id


@click.group()
@click.version_option(package_name="bulkchange_pipeline")
def main() -> None:
    """Bulk changes to cellular IoT devices across carrier APIs."""


@main.command("init-db")
@database_option
@friendly_errors
def init_db(database_url: str | None) -> None:
    """Create or upgrade the business database schema (Alembic migrations)."""
    url = database_url or default_database_url()
    migrate.upgrade(url)
    click.echo(f"database ready: {sa.engine.make_url(url).render_as_string(hide_password=True)}")


@main.command("seed-demo")
@database_option
@click.option("--devices-per-carrier", default=1000, show_default=True, type=click.IntRange(0, 2_000_000))
@click.option("--reset", is_flag=True, help="Delete the demo and other tenants first.")
@click.option("--base-url", "base_urls", multiple=True, metavar="INTEGRATION=URL", help="Override a carrier's base URL.")
@friendly_errors
def seed_demo_command(database_url: str | None, devices_per_carrier: int, reset: bool, base_urls: tuple[str, ...]) -> None:
    """Create the demo tenant (one service provider per carrier, devices, plans, customers)."""
    overrides = {}
    for item in base_urls:
        key, sep, url = item.partition("=")
        if not sep or not url:
            raise UserError(f"--base-url {item!r}: expected INTEGRATION=URL, e.g. jasper=http://127.0.0.1:8910/rws/api/v1")
        overrides[key] = url
    with open_engine(database_url) as engine:
        seed = seed_demo(engine, devices_per_carrier, overrides, reset=reset)
        sps = ref.list_service_providers(engine, seed.tenant_id)
    out = console()
    out.print("seeded the demo tenant" if seed.created else "the demo tenant exists already; nothing changed (use --reset)")
    table = Table()
    for col in ("id", "service provider", "integration", "base URL", "credentials"):
        table.add_column(col, overflow="fold")
    for sp in sps:
        table.add_row(str(sp.id), sp.name, sp.integration.value, sp.base_url, f"BULKCHANGE_CRED_{sp.credentials_name}_*")
    out.print(table)


def _request_options(f: F) -> F:
    for decorator in reversed(
        [
            click.argument("file", type=click.Path(dir_okay=False)),
            click.option("--change-type", "--csv-change-type", "change_type", type=TEXT, help="CSV: change type (number or name)."),
            click.option("--service-provider", type=TEXT, help="CSV: service provider id or name."),
            click.option("--idempotency-key", type=TEXT, help="Submitting the same key again creates nothing new."),
            click.option("--max-mb", default=50, show_default=True, type=click.IntRange(1), help="File size limit."),
            click.option("--max-rows", default=1_000_000, show_default=True, type=click.IntRange(1), help="Device row limit."),
            tenant_option,
            database_option,
        ]
    ):
        f = decorator(f)
    return f


def _load(engine: sa.Engine, tenant: str, file: str, change_type: str | None, service_provider: str | None,
          idempotency_key: str | None, max_mb: int, max_rows: int) -> tuple[int, Any]:
    tenant_id = resolve_tenant(engine, tenant)
    sp_id = resolve_service_provider(engine, tenant_id, service_provider)
    parsed = read_request_file(
        file, change_type=change_type, service_provider_id=sp_id, idempotency_key=idempotency_key,
        limits=IntakeLimits(max_bytes=max_mb * 1024 * 1024, max_rows=max_rows),
    )
    return tenant_id, parsed


@main.command("submit")
@_request_options
@click.option("--created-by", default=None, type=TEXT, help="Who submits (default: the OS user).")
@friendly_errors
def submit_command(file: str, created_by: str | None, tenant: str, database_url: str | None, **opts: Any) -> None:
    """Validate FILE (JSON or CSV) and store it as a bulk change; the pipeline picks it up."""
    with open_engine(database_url) as engine:
        tenant_id, parsed = _load(engine, tenant, file, **opts)
        outcome = submit(engine, tenant_id, parsed.request, created_by or f"cli:{getpass.getuser()}", row_errors=parsed.row_errors, row_numbers=parsed.row_numbers)
    out = console()
    if outcome.report is not None and outcome.report.errors:
        render_report(out, outcome.report, limit=50)
    out.print(outcome.message, markup=False)
    if outcome.bulk_change_id is not None:
        out.print(f"follow it with: bulkchange status {outcome.bulk_change_id} --watch")


@main.command("dry-run")
@_request_options
@click.option("--limit", default=200, show_default=True, help="Rows shown per table.")
@friendly_errors
def dry_run_command(file: str, limit: int, tenant: str, database_url: str | None, **opts: Any) -> None:
    """Validate FILE and print the per-device report; store nothing. Exit 0 all valid, 1 some refused, 2 file error."""
    with open_engine(database_url) as engine:
        tenant_id, parsed = _load(engine, tenant, file, **opts)
        outcome = submit(engine, tenant_id, parsed.request, "dry-run", dry_run=True, row_errors=parsed.row_errors, row_numbers=parsed.row_numbers)
    assert outcome.report is not None
    render_report(console(), outcome.report, limit=limit)
    click.get_current_context().exit(0 if outcome.report.ok else 1)


@main.command("status")
@click.argument("bulk_change_id", type=ID)
@click.option("--follow", "--watch", "follow", is_flag=True,
              help="Show a live progress bar (rows done / total, rate, failures) until the bulk change is final.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds between polls with --follow.")
@click.option("--timeout", default=None, type=click.FloatRange(min=0), help="Give up following after this many seconds (exit 1).")
@tenant_option
@database_option
@friendly_errors
def status_command(bulk_change_id: int, follow: bool, interval: float, timeout: float | None, tenant: str, database_url: str | None) -> None:
    """Counts of a bulk change's device rows per status; with --follow (alias --watch), follow it
    until it is PROCESSED, CANCELLED or ERROR (exit 0), or --timeout / Ctrl-C (exit 1)."""
    from .render import follow_bulk_change

    out = console()
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        bc = _get(engine, tenant_id, bulk_change_id)
        names = {sp.id: sp.name for sp in ref.list_service_providers(engine, tenant_id)}
        followed = None
        if follow:
            followed = follow_bulk_change(out, lambda: _get(engine, tenant_id, bulk_change_id), bc,
                                          interval=interval, timeout=timeout)
            bc = followed.bc
    render_status(out, bc, names.get(bc["service_provider_id"]))
    if followed is not None and not followed.final:
        why = "stopped following" if followed.interrupted else f"gave up after {timeout:g} s"
        raise UserError(f"bulk change {bulk_change_id} is still {bc['status']}: {why}")


def _get(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> dict[str, Any]:
    bc = get_bulk_change(engine, bulk_change_id, tenant_id)
    if bc is None:
        raise UserError(f"no bulk change {bulk_change_id} in this tenant")
    return bc


def _done(bc: dict[str, Any]) -> bool:
    return final_count(bc["counts"]) >= bc["total"] or bc["status"] in FINAL_BULK


def _watch(engine: sa.Engine, tenant_id: int, bc: dict[str, Any], interval: float, timeout: float | None) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console(), transient=False) as progress:
            task = progress.add_task(f"bulk change {bc['id']} {bc['status']}", total=bc["total"])
            while True:
                progress.update(task, completed=final_count(bc["counts"]), description=f"bulk change {bc['id']} {bc['status']}")
                if _done(bc) or (deadline is not None and time.monotonic() >= deadline):
                    return bc
                time.sleep(interval)
                bc = _get(engine, tenant_id, bc["id"])
    except KeyboardInterrupt:
        return bc


@main.command("results")
@click.argument("bulk_change_id", type=ID)
@click.option("--csv", "csv_path", required=True, help="Output file, or - for standard output.")
@tenant_option
@database_option
@friendly_errors
def results_command(bulk_change_id: int, csv_path: str, tenant: str, database_url: str | None) -> None:
    """Export every device row of a bulk change as CSV (streamed)."""
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        _get(engine, tenant_id, bulk_change_id)
        rows = iter_device_results(engine, tenant_id, bulk_change_id)
        if csv_path == "-":
            n = write_results_csv(click.get_text_stream("stdout"), rows)
        else:
            try:
                with open(csv_path, "w", encoding="utf-8", newline="") as out:
                    n = write_results_csv(out, rows)
            except OSError as exc:
                raise UserError(f"cannot write {csv_path}: {exc.strerror}") from None
    if csv_path != "-":
        click.echo(f"wrote {n} device rows to {csv_path}")


@main.command("history")
@click.argument("device", type=TEXT)
@tenant_option
@database_option
@friendly_errors
def history_command(device: str, tenant: str, database_url: str | None) -> None:
    """The change history of one device (ICCID, IMEI, MSISDN or EID): before -> after."""
    kind, reason = classify(device)
    if kind is None:
        raise UserError(reason or f"{device!r} is not a device identifier")
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        found = ref.find_devices(engine, tenant_id, kind, [normalize(device)]).get(normalize(device), [])
        if not found and kind is IdentifierKind.IMEI:  # a 15-digit MSISDN can pass Luhn
            found = ref.find_devices(engine, tenant_id, IdentifierKind.MSISDN, [normalize(device)]).get(normalize(device), [])
        if not found:
            raise UserError(f"no device with {kind.name} {normalize(device)} in this tenant's inventory")
        out = console()
        for d in found:
            render_history(out, d, device_history_for(engine, tenant_id, d.id))




@main.command("demo")
@click.option("--devices", default=1000, show_default=True, help="Devices in the demo StatusUpdate")
@friendly_errors
def demo(devices: int) -> None:
    """Run the main job end to end on the embedded default (SQLite, the six simulators, Dagster)."""
    from ..demo import run_demo

    run_demo(devices=devices)


@main.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@friendly_errors
def serve(database_url: str | None, host: str, port: int) -> None:
    """Serve the HTTP app: the intake API (/bulk-changes), carrier callbacks (/callbacks/...) and /docs."""
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(database_url or default_database_url()), host=host, port=port, log_level="info")


@main.group("api-key")
def api_key_group() -> None:
    """Per-tenant API keys for the intake HTTP API (stored hashed; shown once)."""


@api_key_group.command("create")
@click.option("--name", required=True, type=TEXT, help="Who or what uses the key, e.g. ops or portal.")
@tenant_option
@database_option
@friendly_errors
def api_key_create(name: str, tenant: str, database_url: str | None) -> None:
    """Create a key for the tenant and print it once: only its hash is stored."""
    from ..store.api_keys import create_api_key

    if not name.strip():
        raise UserError("--name must not be blank: say who or what uses the key")
    with open_engine(database_url) as engine:
        key = create_api_key(engine, resolve_tenant(engine, tenant), name)
    click.echo(key)
    click.echo(f"API key {name!r} for tenant {tenant!r}: store it now, it cannot be shown again. "
               "Send it as 'Authorization: Bearer <key>'.", err=True)


@api_key_group.command("list")
@tenant_option
@database_option
@friendly_errors
def api_key_list(tenant: str, database_url: str | None) -> None:
    """The tenant's keys (ids, names, dates; never the keys)."""
    from ..store.api_keys import list_api_keys

    with open_engine(database_url) as engine:
        keys = list_api_keys(engine, resolve_tenant(engine, tenant))
    table = Table()
    for col in ("id", "name", "created", "revoked"):
        table.add_column(col)
    for k in keys:
        table.add_row(str(k.id), RichText(k.name), f"{k.created_at:%Y-%m-%d %H:%M}", f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-")
    console().print(table)


@api_key_group.command("revoke")
@click.argument("key_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def api_key_revoke(key_id: int, tenant: str, database_url: str | None) -> None:
    """Revoke a key by its id (see `api-key list`); requests with it get 401 from now on."""
    from ..store.api_keys import revoke_api_key

    with open_engine(database_url) as engine:
        if not revoke_api_key(engine, resolve_tenant(engine, tenant), key_id):
            raise UserError(f"no live API key {key_id} in tenant {tenant!r}")
    click.echo(f"revoked API key {key_id}")


@main.command("cancel")
@click.argument("bulk_change_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def cancel_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Cancel the device rows not yet sent (NEW, SCHEDULED); rows already sent finish normally."""
    from ..store.operations import (
        BulkChangeNotFound,
        OperationRefused,
        cancel_bulk_change,
    )

    with open_engine(database_url) as engine:
        try:
            r = cancel_bulk_change(engine, resolve_tenant(engine, tenant), bulk_change_id, by=f"cli:{getpass.getuser()}")
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(
        f"bulk change {bulk_change_id}: cancelled {r.cancelled} device rows"
        + (f"; {r.still_processing} already sent finish normally" if r.still_processing else "")
        + f"; status {r.status}"
    )


@main.command("retry-failed")
@click.argument("bulk_change_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def retry_failed_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Put API_FAILED rows (and rows that failed while processing) back to NEW as a new run.

    Rows refused at validation are not retried: correct them and submit again.
    """
    from ..store.operations import BulkChangeNotFound, OperationRefused, retry_failed

    with open_engine(database_url) as engine:
        try:
            r = retry_failed(engine, resolve_tenant(engine, tenant), bulk_change_id, by=f"cli:{getpass.getuser()}")
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(f"bulk change {bulk_change_id}: {r.requeued} failed device rows queued again as attempt {r.attempt}; "
               f"the sensor starts the run. Follow it with: bulkchange status {bulk_change_id} --watch")


@main.command("resume")
@click.argument("bulk_change_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def resume_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Finish a bulk change a crashed or failed run left half-done (rows left NEW or PROCESSING).

    A new attempt runs once: rows left PROCESSING are checked at the carrier before being sent
    again, so nothing is applied twice. Finished rows are untouched (retry-failed is for those).
    """
    from ..store.operations import BulkChangeNotFound, OperationRefused, resume_bulk_change

    with open_engine(database_url) as engine:
        try:
            r = resume_bulk_change(engine, resolve_tenant(engine, tenant), bulk_change_id, by=f"cli:{getpass.getuser()}")
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(f"bulk change {bulk_change_id}: {r.unfinished} unfinished device rows queued as attempt {r.attempt}; "
               f"the sensor starts the run. Follow it with: bulkchange status {bulk_change_id} --watch")


# --- data lifecycle: state reconstruction and retention settings (issue 7) ----------------------


@main.command("rebuild-status")
@click.argument("bulk_change_id", type=ID, required=False)
@click.option("--all", "all_", is_flag=True, help="Every bulk change of the tenant (not archived).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@tenant_option
@database_option
@friendly_errors
def rebuild_status_command(bulk_change_id: int | None, all_: bool, dry_run: bool, tenant: str, database_url: str | None) -> None:
    """Rebuild bulk change status and counts from their device rows and logs (after a restore).

    Run it with no runs in flight: a bulk change mid-run legitimately differs from its rows.
    """
    from ..store.maintenance import plan_rebuild, rebuild_status

    if (bulk_change_id is None) == (not all_):
        raise UserError("give one BULK_CHANGE_ID or --all")
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        ids = None if all_ else [bulk_change_id]
        plan = (plan_rebuild if dry_run else rebuild_status)(engine, tenant_id=tenant_id, ids=ids)
    if bulk_change_id is not None and not plan:
        raise UserError(f"no bulk change {bulk_change_id} in this tenant (or it was archived)")
    changed = [r for r in plan if r.changed]
    table = Table()
    for col in ("bulk change", "status", "counts"):
        table.add_column(col, overflow="fold")
    for r in changed:
        status = r.status if r.old_status == r.status else f"{r.old_status} -> {r.status}"
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items()) or "no rows"
        table.add_row(str(r.bulk_change_id), status, counts if r.old_counts == r.counts else f"{counts} (was: {r.old_counts})")
    out = console()
    if changed:
        out.print(table)
    verb = "would rebuild" if dry_run else "rebuilt"
    out.print(f"examined {len(plan)} bulk changes; {verb} {len(changed)}; {len(plan) - len(changed)} already matched their rows")


@main.group("tenant")
def tenant_group() -> None:
    """Tenant settings."""


@tenant_group.command("retention")
@click.option("--archive-days", type=click.IntRange(1), default=None, help="Days after completion before a bulk change is archived.")
@click.option("--purge-days", type=click.IntRange(1), default=None, help="Days after completion before an archived bulk change is deleted.")
@tenant_option
@database_option
@friendly_errors
def tenant_retention_command(archive_days: int | None, purge_days: int | None, tenant: str, database_url: str | None) -> None:
    """Show or change how long the tenant's bulk changes stay in the database (archive) and at all (purge)."""
    from ..store.maintenance import get_retention, set_retention

    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        if archive_days is None and purge_days is None:
            r = get_retention(engine, tenant_id)
        else:
            try:
                r = set_retention(engine, tenant_id, archive_after_days=archive_days, purge_after_days=purge_days)
            except ValueError as exc:
                raise UserError(str(exc)) from None
    click.echo(f"tenant {r.name!r}: archive {r.archive_after_days} days after completion, purge {r.purge_after_days} days after completion")


@main.command("simulate")
@database_option
@click.option("--seed-from-db", is_flag=True, help="Seed the simulators with the demo tenant's devices and catalogue.")
@click.option("--free-ports", is_flag=True, help="Bind free ports instead of the seed's defaults (8910-8915).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--callback-base-url", envvar="BULKCHANGE_CALLBACK_BASE_URL", default="http://127.0.0.1:8080",
              show_default=True, help="Where `bulkchange serve` takes carrier callbacks (ThingSpace, Teal).")
@click.option("--limits", is_flag=True, help="Keep the carriers' own rate limits (default: none).")
@click.option("--print-env", is_flag=True, help="Only print the `export` lines for the default ports and exit.")
@friendly_errors
def simulate_command(database_url: str | None, seed_from_db: bool, free_ports: bool, host: str,
                     callback_base_url: str, limits: bool, print_env: bool) -> None:
    """Run all six carrier simulators in the foreground (Ctrl-C stops them), point the demo service
    providers at them and print the credentials to export (used by `make dev`)."""
    from ..simulators.park import Park, start_park
    from ..simulators.sync import sync_from_database
    from ..store.seed import PROVIDERS, demo_credentials_names, point_demo_at

    names = demo_credentials_names()
    if print_env:  # the demo accounts are fixed, so the lines are known before anything starts
        env = Park({}, {}, callback_base_url).credentials_env(names)
        click.echo("\n".join(f"export {k}={v}" for k, v in sorted(env.items())))
        return
    ports = None if free_ports else {i.value: int(spec[2].rsplit(":", 1)[1].split("/", 1)[0]) for i, spec in PROVIDERS.items()}
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
        click.echo("\n".join(f"export {k}={v}" for k, v in sorted(park.credentials_env(names).items())))
        out.print("simulators running; Ctrl-C stops them")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.print("stopping the simulators")


# --- beyond one machine: carrier pools and the local production-shaped deployment (issue 10) ---


@main.command("sync-pools")
@database_option
@click.option("--carrier-api-slots", default=8, show_default=True, type=click.IntRange(1),
              help="Slots of pool carrier_api: carrier-calling steps executing at once across all runs.")
@click.option("--no-prune", is_flag=True, help="Keep carrier-sp-* pools whose service provider is gone.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@friendly_errors
def sync_pools_command(database_url: str | None, carrier_api_slots: int, no_prune: bool, dry_run: bool) -> None:
    """Set the Dagster pools from the service provider table: carrier_api, and carrier-sp-<id> = the
    account's max_concurrency. Uses the instance in DAGSTER_HOME (PostgreSQL storage)."""
    import os

    import dagster as dg

    from ..defs.pools import PoolsUnsupported, sync_from_database

    if not os.environ.get("DAGSTER_HOME"):
        raise UserError("DAGSTER_HOME is not set: point it at the deployment's instance (e.g. source <run dir>/deployment.env)")
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
        change = f"{r.changed[key][0] if r.changed[key][0] is not None else 'unset'} -> {slots}" if key in r.changed else "-"
        table.add_row(key, str(slots), change, names.get(key, "all carrier accounts"))
    for key in r.deleted:
        table.add_row(key, "-", "deleted", "no longer a limited service provider")
    out = console()
    out.print(table)
    out.print(f"{'would change' if dry_run else 'changed'} {len(r.changed)}, deleted {len(r.deleted)}, unchanged {len(r.unchanged)}. "
              "Runs per account are limited by the run queue (tag bulkchange/carrier_account, 1 per account); "
              "carrier-sp-* pools publish each account's call limit.")


@main.group("deploy-local")
def deploy_local_group() -> None:
    """Code server, webserver, daemon and intake as separate processes on PostgreSQL (production shape)."""


def _run_dir_option(f: F) -> F:
    return click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder for config, pid files and logs (default: <BULKCHANGE_HOME>/deploy-local).")(f)


def _run_dir(value: str | None) -> Any:
    from pathlib import Path

    from ..store.db import data_dir

    return Path(value).resolve() if value else data_dir() / "deploy-local"


@deploy_local_group.command("start")
@_run_dir_option
@database_option
@click.option("--dagster-database-url", envvar="BULKCHANGE_DAGSTER_DATABASE_URL", default=None,
              help="PostgreSQL for Dagster's storage (default: the DAGSTER_PG_* variables).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--code-server-port", default=4266, show_default=True, type=int)
@click.option("--webserver-port", default=3000, show_default=True, type=int)
@click.option("--intake-port", default=8080, show_default=True, type=int)
@click.option("--carrier-api-slots", default=8, show_default=True, type=click.IntRange(1), help="See `sync-pools`.")
@click.option("--startup-timeout", default=120.0, show_default=True, type=float, help="Seconds each service may take to be ready.")
@click.option("--instance-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="dagster.yaml to use (default: deploy/dagster.postgres.yaml).")
@friendly_errors
def deploy_local_start(run_dir: str | None, database_url: str | None, dagster_database_url: str | None, host: str,
                       code_server_port: int, webserver_port: int, intake_port: int, carrier_api_slots: int,
                       startup_timeout: float, instance_config: str | None) -> None:
    """Migrate, sync pools, start the four services; returns once all are ready."""
    from pathlib import Path

    from ..deploy import DEFAULT_INSTANCE_CONFIG, DeployError, LocalDeployment, service_environment, start

    dep = LocalDeployment(_run_dir(run_dir), host, code_server_port, webserver_port, intake_port,
                          Path(instance_config).resolve() if instance_config else DEFAULT_INSTANCE_CONFIG)
    try:
        env = service_environment(dep, database_url or default_database_url(), dagster_database_url)
        services, pools = start(dep, env, carrier_api_slots=carrier_api_slots, startup_timeout=startup_timeout)
    except DeployError as exc:
        raise UserError(str(exc)) from None
    out = console()
    for s in services:
        out.print(f"{s.name:<12} pid {s.pid:<8} {s.detail}")
    out.print("pools: " + ", ".join(f"{k}={v}" for k, v in sorted(pools.items())))
    out.print(f"UI {dep.url('webserver')}  intake {dep.url('intake')}/docs  logs {dep.run_dir / 'logs'}\n"
              f"settings for dagster/bulkchange commands: source {dep.env_file}")


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
    return (f"since {time.strftime(day, time.localtime(since))}" if since else "-") + (f", restarts {restarts}" if restarts else "")


@deploy_local_group.command("restart")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@_run_dir_option
@click.option("--startup-timeout", default=120.0, show_default=True, type=float, help="Seconds each service may take to be ready.")
@click.option("--timeout", default=20.0, show_default=True, type=float,
              help="Seconds after SIGTERM before SIGKILL, for what is left of a service.")
@friendly_errors
def deploy_local_restart(services: tuple[str, ...], run_dir: str | None, startup_timeout: float, timeout: float) -> None:
    """Restart services of a running deployment (code-server, daemon, webserver, intake; none named:
    every one that is down) with the environment the others run with; returns once they are ready.
    A running service named is stopped first (with its run workers, as `stop` does)."""
    from ..deploy import DeployError, LocalDeployment, restart

    try:
        done, source = restart(LocalDeployment.load(_run_dir(run_dir)), services, startup_timeout=startup_timeout, timeout=timeout)
    except DeployError as exc:
        raise UserError(str(exc)) from None
    if not done:
        click.echo("every service is up: nothing to restart (name a service to restart it anyway)")
    for r in done:
        s = r.state
        click.echo(f"{s.name:<12} restarted, pid {s.pid:<8} {r.before}; ready: {s.detail}")
    if done:
        click.echo(f"environment: {source}")


if __name__ == "__main__":  # pragma: no cover
    main()
