"""``bulkchange submission``: one submission across carriers (issue 21), seen and acted on as one.

A request file without a service provider (``bulkchange submit FILE``) is split into one bulk
change per service provider under one submission; these commands take the submission's id:

- ``show ID [--watch]``: the derived status, progress and children (each an ordinary bulk change,
  ``bulkchange status BULK_CHANGE_ID`` shows one);
- ``results ID --out FILE|- [--format csv|json|xml]``: one results file for every device;
- ``cancel``, ``retry-failed``, ``approve`` and ``reject``: the bulk change command of the same
  name on every child (``store.submissions``, the functions the API calls), reported per child.

A group rather than ``bulkchange status S12``: an id is a plain number everywhere else (``ID``
type), and a submission's commands read as they do for a bulk change with one word in front.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from typing import IO, Any

import click
import sqlalchemy as sa

from ..intake.drops.formats import format_named
from ..store.approvals import SelfApprovalRefused, cli_actor
from ..store.operations import BulkChangeNotFound, OperationRefused
from ..store.submission_ops import (
    SubmissionNotFound,
    SubmissionOperation,
    approve_submission,
    cancel_submission,
    reject_submission,
    release_submission,
    retry_failed_submission,
)
from ..store.submissions import SubmissionView, get_submission, iter_submission_results
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
from .approvals import AS_OPTION
from .render import follow_bulk_change
from .render_split import followed_view, render_operation, render_submission

__all__ = ["COMMANDS", "RESULT_FORMATS", "submission_group", "write_submission_results"]

RESULT_FORMATS = ("csv", "json", "xml")


@click.group("submission")
def submission_group() -> None:
    """A request split by service provider: one submission, one bulk change per carrier."""


def write_submission_results(out: IO[str], engine: sa.Engine, tenant_id: int, submission_id: int, fmt: str) -> int:
    """The submission's one results file in ``fmt``, written by the writer a file drop's outbox
    uses for that format (the API's download for CSV and JSON); returns the device rows written."""
    found = format_named(fmt)
    assert found is not None and found.write_submission is not None
    n = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal n
        for row in iter_submission_results(engine, submission_id, tenant_id):
            n += 1
            yield row

    for chunk in found.write_submission(submission_id, counted()):
        out.write(chunk)
    return n


def _view(engine: sa.Engine, tenant_id: int, submission_id: int) -> SubmissionView:
    view = get_submission(engine, submission_id, tenant_id)
    if view is None:
        raise UserError(f"no submission {submission_id} in this tenant")
    return view


@submission_group.command("show")
@click.argument("submission_id", type=ID)
@follow_options("Follow its progress until every child is final.")
@tenant_option
@database_option
@friendly_errors
def show_command(
    submission_id: int, follow: bool, interval: float, timeout: float | None, tenant: str, database_url: str | None
) -> None:
    """Status (derived from its children), progress and children of a submission; with --follow
    (alias --watch), follow it until it is final (exit 0), or --timeout / Ctrl-C (exit 1)."""
    out = console()
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        view = _view(engine, tenant_id, submission_id)
        followed = None
        if follow:
            latest = [view]

            def fetch() -> dict[str, Any]:
                latest[0] = _view(engine, tenant_id, submission_id)
                return followed_view(latest[0])

            followed = follow_bulk_change(
                out, fetch, followed_view(view), interval=interval, timeout=timeout, what="submission"
            )
            view = latest[0]
    render_submission(out, view)
    if followed is not None and not followed.final:
        why = "stopped following" if followed.interrupted else f"gave up after {timeout:g} s"
        raise UserError(f"submission {submission_id} is still {view.status}: {why}")


@submission_group.command("results")
@click.argument("submission_id", type=ID)
@click.option("--out", "out_path", required=True, help="Output file, or - for standard output.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(RESULT_FORMATS),
    default="csv",
    show_default=True,
    help="One file for every device of every child, and the devices not placed.",
)
@tenant_option
@database_option
@friendly_errors
def results_command(submission_id: int, out_path: str, fmt: str, tenant: str, database_url: str | None) -> None:
    """Every device of the submission in one file (streamed): each child's rows with their bulk
    change and service provider, then the devices no service provider could take."""
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        _view(engine, tenant_id, submission_id)
        if out_path == "-":
            n = write_submission_results(click.get_text_stream("stdout"), engine, tenant_id, submission_id, fmt)
        else:
            try:
                with open(out_path, "w", encoding="utf-8", newline="") as out:
                    n = write_submission_results(out, engine, tenant_id, submission_id, fmt)
            except OSError as exc:
                raise UserError(f"cannot write {out_path}: {exc.strerror}") from None
    if out_path != "-":
        click.echo(f"wrote {n} device rows to {out_path}")


def _operate(
    operation: Callable[..., SubmissionOperation], submission_id: int, tenant: str, database_url: str | None, **kw: Any
) -> SubmissionOperation:
    """One of ``store.submissions``' operations for the tenant; a refusal is one line (exit 1)."""
    with open_engine(database_url) as engine:
        try:
            return operation(engine, resolve_tenant(engine, tenant), submission_id, **kw)
        except (SubmissionNotFound, BulkChangeNotFound, OperationRefused, SelfApprovalRefused) as exc:
            raise UserError(str(exc)) from None


def _operation_command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``submission NAME SUBMISSION_ID [--tenant] [--database-url]`` with friendly errors."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        for decorator in (friendly_errors, database_option, tenant_option, click.argument("submission_id", type=ID)):
            f = decorator(f)
        return submission_group.command(name)(f)

    return decorate


@_operation_command("cancel")
def cancel_command(submission_id: int, tenant: str, database_url: str | None) -> None:
    """Cancel every child's device rows not yet sent; rows already sent finish normally."""
    op = _operate(cancel_submission, submission_id, tenant, database_url, by=f"cli:{getpass.getuser()}")
    render_operation(
        console(),
        "cancel",
        op,
        lambda r: (
            f"cancelled {r.cancelled} device rows"
            + (f"; {r.still_processing} already sent finish normally" if r.still_processing else "")
            + f"; status {r.status}"
        ),
    )


@_operation_command("retry-failed")
def retry_failed_command(submission_id: int, tenant: str, database_url: str | None) -> None:
    """Queue every child's failed device rows again, each child as a new attempt.

    Rows refused at validation, and devices no service provider could take, are not retried:
    correct them and submit again.
    """
    op = _operate(retry_failed_submission, submission_id, tenant, database_url, by=f"cli:{getpass.getuser()}")
    render_operation(
        console(), "retry-failed", op, lambda r: f"{r.requeued} failed device rows queued again as attempt {r.attempt}"
    )
    click.echo(f"the sensor starts the runs. Follow it with: bulkchange submission show {submission_id} --watch")


@_operation_command("release")
def release_command(submission_id: int, tenant: str, database_url: str | None) -> None:
    """Release every held child (submitted with processChanges=false): the sensor starts each."""
    op = _operate(release_submission, submission_id, tenant, database_url, by=f"cli:{getpass.getuser()}")
    render_operation(console(), "release", op, lambda r: f"released; it was {r.status}")
    click.echo(f"the sensor starts the runs. Follow it with: bulkchange submission show {submission_id} --watch")


@submission_group.command("approve")
@click.argument("submission_id", type=ID)
@AS_OPTION
@tenant_option
@database_option
@friendly_errors
def approve_command(submission_id: int, actor: str | None, tenant: str, database_url: str | None) -> None:
    """Approve every child awaiting approval (the policy weighed the whole submission); never your own."""
    who = cli_actor(actor or getpass.getuser())
    op = _operate(approve_submission, submission_id, tenant, database_url, by=who)
    render_operation(console(), "approve", op, lambda r: f"approved by {r.decided_by}; it is {r.status}")


@submission_group.command("reject")
@click.argument("submission_id", type=ID)
@click.option("--reason", required=True, type=TEXT, help="Why (stored with every child and shown).")
@AS_OPTION
@tenant_option
@database_option
@friendly_errors
def reject_command(submission_id: int, reason: str, actor: str | None, tenant: str, database_url: str | None) -> None:
    """Reject every child awaiting approval: their rows end CANCELLED with the reason; nothing is sent."""
    if not reason.strip():
        raise UserError("--reason must not be blank: say why it is rejected")
    who = cli_actor(actor or getpass.getuser())
    op = _operate(reject_submission, submission_id, tenant, database_url, by=who, reason=reason)
    render_operation(console(), "reject", op, lambda r: f"rejected by {r.decided_by}; it is {r.status}")


COMMANDS = [submission_group]
