"""Acting on a stored bulk change: ``bulkchange cancel``, ``retry-failed``, ``resume``, ``release``
and ``undo``.

The rules live in ``store.operations`` (the API calls the same functions); a refusal (unknown bulk
change, nothing to do) becomes a one-line message.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..intake.parsing import shown
from ..intake.undo import undo
from ..store.operations import (
    BulkChangeNotFound,
    OperationRefused,
    cancel_bulk_change,
    release_bulk_change,
    resume_bulk_change,
    retry_failed,
)
from ._common import ID, TEXT, UserError, database_option, friendly_errors, open_engine, resolve_tenant, tenant_option

R = TypeVar("R")


def _operate(operation: Callable[..., R], bulk_change_id: int, tenant: str, database_url: str | None) -> R:
    """Run one of ``store.operations``' functions for the tenant, as the OS user."""
    with open_engine(database_url) as engine:
        try:
            return operation(engine, resolve_tenant(engine, tenant), bulk_change_id, by=f"cli:{getpass.getuser()}")
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None


def _bulk_change_command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``name BULK_CHANGE_ID [--tenant] [--database-url]`` with friendly errors."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        for decorator in (friendly_errors, database_option, tenant_option, click.argument("bulk_change_id", type=ID)):
            f = decorator(f)
        return click.command(name)(f)

    return decorate


@_bulk_change_command("cancel")
def cancel_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Cancel the device rows not yet sent (NEW, SCHEDULED); rows already sent finish normally."""
    r = _operate(cancel_bulk_change, bulk_change_id, tenant, database_url)
    click.echo(
        f"bulk change {bulk_change_id}: cancelled {r.cancelled} device rows"
        + (f"; {r.still_processing} already sent finish normally" if r.still_processing else "")
        + f"; status {r.status}"
    )


@_bulk_change_command("retry-failed")
def retry_failed_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Put API_FAILED rows (and rows that failed while processing) back to NEW as a new run.

    Rows refused at validation are not retried: correct them and submit again.
    """
    r = _operate(retry_failed, bulk_change_id, tenant, database_url)
    click.echo(
        f"bulk change {bulk_change_id}: {r.requeued} failed device rows queued again as attempt {r.attempt}; "
        f"the sensor starts the run. Follow it with: bulkchange status {bulk_change_id} --watch"
    )


@_bulk_change_command("resume")
def resume_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Finish a bulk change a crashed or failed run left half-done (rows left NEW or PROCESSING).

    A new attempt runs once: rows left PROCESSING are checked at the carrier before being sent
    again, so nothing is applied twice. Finished rows are untouched (retry-failed is for those).
    """
    r = _operate(resume_bulk_change, bulk_change_id, tenant, database_url)
    click.echo(
        f"bulk change {bulk_change_id}: {r.unfinished} unfinished device rows queued as attempt {r.attempt}; "
        f"the sensor starts the run. Follow it with: bulkchange status {bulk_change_id} --watch"
    )


@_bulk_change_command("release")
def release_command(bulk_change_id: int, tenant: str, database_url: str | None) -> None:
    """Start a held bulk change (submitted with processChanges=false); the sensor picks it up."""
    r = _operate(release_bulk_change, bulk_change_id, tenant, database_url)
    when = "when its effective date comes" if r.status == "SCHEDULED" else "on its next tick"
    click.echo(
        f"bulk change {bulk_change_id}: released; the sensor starts it {when}. "
        f"Follow it with: bulkchange status {bulk_change_id} --watch"
    )


@click.command("undo")
@click.argument("bulk_change_id", type=ID)
@click.option("--dry-run", is_flag=True, help="Only show what would be restored and what is left out; store nothing.")
@click.option("--created-by", default=None, type=TEXT, help="Who submits the undo (default: the OS user).")
@tenant_option
@database_option
@friendly_errors
def undo_command(
    bulk_change_id: int, dry_run: bool, created_by: str | None, tenant: str, database_url: str | None
) -> None:
    """Submit a bulk change restoring the before-values of BULK_CHANGE_ID's processed rows.

    Rows it cannot restore (not processed, irreversible at the carrier, changed again since, no
    before-value recorded) are listed with their reason. It goes through validation and the
    approval policy like any submission; running it twice makes one undo.
    """
    by = created_by or f"cli:{getpass.getuser()}"
    with open_engine(database_url) as engine:
        try:
            outcome = undo(engine, resolve_tenant(engine, tenant), bulk_change_id, by, dry_run=dry_run)
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None
    # Identifiers and values come from stored rows, some as a client sent them: escaped (``shown``).
    for entry in outcome.plan.restored:
        values = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "device")
        click.echo(f"restore {shown(str(entry['device']))}: {shown(values, 500)}")
    for left in outcome.plan.left_out:
        click.echo(f"left out {shown(left.device)}: {shown(left.reason, 500)}")
    report = outcome.submitted.report if outcome.submitted else None
    for err in report.errors[:50] if report else []:
        click.echo(f"refused {shown(err.identifier)}: {shown(err.reason, 500)}")
    click.echo(shown(outcome.message, 2000))


COMMANDS = [cancel_command, retry_failed_command, resume_command, release_command, undo_command]

__all__ = ["COMMANDS", "cancel_command", "release_command", "resume_command", "retry_failed_command", "undo_command"]
