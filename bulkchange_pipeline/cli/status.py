"""Reading what happened: ``bulkchange status`` (with ``--follow``), ``results`` (CSV export) and
``history`` (one device's changes, before -> after)."""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape

from ..domain import IdentifierKind, classify, normalize
from ..intake.results_csv import write_results_csv
from ..store import reference as ref
from ..store.approvals import get_approval
from ..store.bulk_changes import get_bulk_change
from ..store.device_changes import device_history_for
from ..store.device_rows import iter_device_results
from ._common import (
    ID,
    TEXT,
    UserError,
    console,
    database_option,
    follow_options,
    friendly_errors,
    open_engine,
    resolve_tenant,
    tenant_option,
)
from .render import follow_bulk_change, render_history, render_status


def _get(engine: sa.Engine, tenant_id: int, bulk_change_id: int) -> dict[str, Any]:
    bc = get_bulk_change(engine, bulk_change_id, tenant_id)
    if bc is None:
        raise UserError(f"no bulk change {bulk_change_id} in this tenant")
    return bc


def _at(t: Any) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t else "?"


def _print_approval(out: Console, a: dict[str, Any]) -> None:
    """The approval as the API's status shows it (``store.approvals.approval_of``): an operator
    deciding from the terminal sees why it waits and who decided, not only AWAITING_APPROVAL."""
    out.print(f"approval [bold]{a['state']}[/]: needed because {escape(str(a['needed_because']))}")
    out.print(f"  submitted by {escape(str(a['submitted_by']))} at {_at(a['requested_at'])}")
    if a["state"] == "pending":
        out.print(f"  expires at {_at(a['expires_at'])} unless approved or rejected")
    if a["decided_by"]:
        out.print(f"  {a['state']} by {escape(str(a['decided_by']))} at {_at(a['decided_at'])}")
    if a["reason"]:
        out.print(f"  reason: {escape(str(a['reason']))}", markup=True, highlight=False)


@click.command("status")
@click.argument("bulk_change_id", type=ID)
@follow_options("Show a live progress bar (rows done / total, rate, failures) until the bulk change is final.")
@tenant_option
@database_option
@friendly_errors
def status_command(
    bulk_change_id: int, follow: bool, interval: float, timeout: float | None, tenant: str, database_url: str | None
) -> None:
    """Counts of a bulk change's device rows per status; with --follow (alias --watch), follow it
    until it is PROCESSED, CANCELLED or ERROR (exit 0), or --timeout / Ctrl-C (exit 1)."""
    out = console()
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        bc = _get(engine, tenant_id, bulk_change_id)
        names = {sp.id: sp.name for sp in ref.list_service_providers(engine, tenant_id)}
        followed = None
        if follow:
            followed = follow_bulk_change(
                out, lambda: _get(engine, tenant_id, bulk_change_id), bc, interval=interval, timeout=timeout
            )
            bc = followed.bc
        approval = get_approval(engine, bulk_change_id, bc["status"])
    render_status(out, bc, names.get(bc["service_provider_id"]))
    if approval is not None:
        _print_approval(out, approval)
    if followed is not None and followed.held:
        raise UserError(
            f"bulk change {bulk_change_id} is held (processChanges=false): nothing moves until "
            f"`bulkchange release {bulk_change_id}`"
        )
    if followed is not None and not followed.final:
        why = "stopped following" if followed.interrupted else f"gave up after {timeout:g} s"
        raise UserError(f"bulk change {bulk_change_id} is still {bc['status']}: {why}")


@click.command("results")
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


@click.command("history")
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
            found = ref.find_devices(engine, tenant_id, IdentifierKind.MSISDN, [normalize(device)]).get(
                normalize(device), []
            )
        if not found:
            raise UserError(f"no device with {kind.name} {normalize(device)} in this tenant's inventory")
        out = console()
        for d in found:
            render_history(out, d, device_history_for(engine, tenant_id, d.id))


COMMANDS = [status_command, results_command, history_command]

__all__ = ["COMMANDS", "history_command", "results_command", "status_command"]
