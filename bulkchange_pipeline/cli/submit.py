"""``bulkchange submit`` and ``bulkchange dry-run``: a JSON, XML or CSV request file through intake
validation, stored (submit) or only reported (dry-run). Both read the file the same way (``_submit_file``).

A file without a service provider (no ``serviceProviderId`` in it, no ``--service-provider``) is
split by the devices' service providers into one submission (``intake.split``): both commands
print the split (``render_split``), one bulk change per service provider and the devices none took;
``bulkchange submission`` follows it."""

from __future__ import annotations

import getpass
from typing import Any

import click

from ..intake.parsing import IntakeLimits
from ..intake.request_file import read_request_file
from ..intake.submit import SubmitOutcome, submit
from ._common import (
    TEXT,
    F,
    console,
    database_option,
    friendly_errors,
    open_engine,
    resolve_service_provider,
    resolve_tenant,
    tenant_option,
)
from .render import render_report
from .render_split import render_split


def _request_options(f: F) -> F:
    for decorator in reversed(
        [
            click.argument("file", type=click.Path(dir_okay=False)),
            click.option(
                "--change-type",
                "--csv-change-type",
                "change_type",
                type=TEXT,
                help="CSV: change type (number or name).",
            ),
            click.option(
                "--service-provider",
                type=TEXT,
                help="CSV: service provider id or name. Omitted (and not in the file): split by each device's provider.",
            ),
            click.option("--idempotency-key", type=TEXT, help="Submitting the same key again creates nothing new."),
            click.option("--max-mb", default=50, show_default=True, type=click.IntRange(1), help="File size limit."),
            click.option(
                "--max-rows", default=1_000_000, show_default=True, type=click.IntRange(1), help="Device row limit."
            ),
            tenant_option,
            database_option,
        ]
    ):
        f = decorator(f)
    return f


def _submit_file(
    database_url: str | None,
    tenant: str,
    file: str,
    created_by: str,
    *,
    dry_run: bool,
    change_type: str | None,
    service_provider: str | None,
    idempotency_key: str | None,
    max_mb: int,
    max_rows: int,
) -> SubmitOutcome:
    """FILE read for the tenant (options as the command line gave them) and handed to intake's
    ``submit``: stored, or with ``dry_run`` only validated."""
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        sp_id = resolve_service_provider(engine, tenant_id, service_provider)
        parsed = read_request_file(
            file,
            change_type=change_type,
            service_provider_id=sp_id,
            idempotency_key=idempotency_key,
            limits=IntakeLimits(max_bytes=max_mb * 1024 * 1024, max_rows=max_rows),
        )
        return submit(
            engine,
            tenant_id,
            parsed.request,
            created_by,
            dry_run=dry_run,
            row_errors=parsed.row_errors,
            row_numbers=parsed.row_numbers,
        )


@click.command("submit")
@_request_options
@click.option("--created-by", default=None, type=TEXT, help="Who submits (default: the OS user).")
@friendly_errors
def submit_command(file: str, created_by: str | None, tenant: str, database_url: str | None, **opts: Any) -> None:
    """Validate FILE (JSON, XML or CSV) and store it as a bulk change; the pipeline picks it up.

    Without a service provider (none in the file, no --service-provider) the devices are split by
    their service provider into one submission of one bulk change per carrier."""
    by = created_by or f"cli:{getpass.getuser()}"
    outcome = _submit_file(database_url, tenant, file, by, dry_run=False, **opts)
    out = console()
    if outcome.split:
        render_split(out, outcome, limit=50)
        out.print(outcome.message, markup=False)
        if outcome.submission_id is not None:
            out.print(f"follow it with: bulkchange submission show {outcome.submission_id} --watch")
        return
    if outcome.report is not None and outcome.report.errors:
        render_report(out, outcome.report, limit=50)
    out.print(outcome.message, markup=False)
    if outcome.bulk_change_id is not None:
        out.print(f"follow it with: bulkchange status {outcome.bulk_change_id} --watch")


@click.command("dry-run")
@_request_options
@click.option("--limit", default=200, show_default=True, help="Rows shown per table.")
@friendly_errors
def dry_run_command(file: str, limit: int, tenant: str, database_url: str | None, **opts: Any) -> None:
    """Validate FILE (JSON, XML or CSV) and print the per-device report; store nothing. Exit 0 all valid, 1 some refused, 2 file error.

    Without a service provider: the split it would make, one report per service provider."""
    outcome = _submit_file(database_url, tenant, file, "dry-run", dry_run=True, **opts)
    if outcome.split:  # without a service provider: the split, each child's report
        render_split(console(), outcome, limit=limit)
        console().print(outcome.message, markup=False)
        refused = len(outcome.refused) + sum(c.refused for c in outcome.children)
        click.get_current_context().exit(0 if refused == 0 else 1)
    assert outcome.report is not None
    render_report(console(), outcome.report, limit=limit)
    click.get_current_context().exit(0 if outcome.report.ok else 1)


COMMANDS = [submit_command, dry_run_command]

__all__ = ["COMMANDS", "dry_run_command", "submit_command"]
