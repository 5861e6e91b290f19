"""Write to the tenants' outboxes: the per-device results of a drop's bulk change once it is final,
as ``<stem>.results<suffix>`` in the format the file came in, exactly once (the drop record says
when it was written); and a format's acknowledgement at intake (X12's 997), when it has one.

A drop that became a submission (no service provider: split by carrier) gets ONE results file for
the whole submission, once every child bulk change is final (``store.file_drops.list_due_results``):
every device of every child with its bulk change and service provider, then the devices no service
provider took (``store.submissions.iter_submission_results``, the API's submission download).

A file appears complete or not at all: it is written as ``<name>.part`` (a name every reader of a
drop folder ignores) and renamed. A crash between the rename and the record rewrites the same
name on the next tick, with the same content: the outbox still holds one results file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from ...store.file_drops import DueResults, drop_settings, list_due_results, mark_results_written
from ...store.submissions import get_submission, iter_submission_results
from ..results_download import result_rows
from .formats import DropFormat, format_named
from .locations import DropConfigError, DropFolders, open_folders
from .names import split_suffix

__all__ = [
    "MAX_RESULTS_PER_TICK",
    "OutboxReport",
    "results_name",
    "write_acknowledgement",
    "write_due_results",
    "write_outbox_file",
]

MAX_RESULTS_PER_TICK = 20


@dataclass
class OutboxReport:
    written: int = 0
    errors: int = 0
    lines: list[str] = field(default_factory=list)


def results_name(name: str, fmt: DropFormat) -> str:
    """``orders.csv`` -> ``orders.results.csv``; a results name is never taken back in (it is in the outbox)."""
    return f"{split_suffix(name)[0]}.results{fmt.results_suffix}"


def write_outbox_file(folders: DropFolders, name: str, chunks: Iterable[str | bytes]) -> None:
    """Write ``name`` in the outbox as ``<name>.part``, then rename it: complete or absent."""
    final = f"{folders.outbox}/{name}"
    part = f"{final}.part"
    with folders.fs.open(part, "wb") as f:
        for chunk in chunks:
            f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
    if folders.fs.exists(final):  # a crash came after the rename: same name, same content
        folders.fs.rm_file(final)
    folders.fs.mv(part, final)


def write_acknowledgement(
    folders: DropFolders, fmt: DropFormat | None, name: str, data: bytes, refusal: str | None
) -> None:
    """The format's acknowledgement of a taken (``refusal`` None) or refused file, if it has one."""
    if fmt is None or fmt.acknowledge is None:
        return
    ack = fmt.acknowledge(data, refusal)
    if ack is not None:
        write_outbox_file(folders, f"{split_suffix(name)[0]}.ack{fmt.results_suffix}", [ack])


def _results(engine: sa.Engine, due: DueResults, fmt: DropFormat) -> tuple[Iterable[str], str] | None:
    """(the chunks of the drop's results file, what it is for the log line), or None when the
    format has no writer for it."""
    if due.submission_id is not None:
        if fmt.write_submission is None:
            return None
        view = get_submission(engine, due.submission_id, due.tenant_id)
        status = view.status if view is not None else "gone"
        rows = iter_submission_results(engine, due.submission_id, due.tenant_id)
        return fmt.write_submission(due.submission_id, rows), f"submission {due.submission_id}, {status}"
    if fmt.write_results is None or due.bulk_change_id is None:
        return None
    rows = result_rows(engine, due.tenant_id, due.bulk_change_id)
    return fmt.write_results(due.bulk_change_id, rows), f"bulk change {due.bulk_change_id}, {due.status}"


def write_due_results(
    engine: sa.Engine, *, limit: int = MAX_RESULTS_PER_TICK, environ: Mapping[str, str] | None = None
) -> OutboxReport:
    """Write the results of drops whose bulk change is final, or whose submission's children all
    are (at most ``limit``)."""
    report = OutboxReport()
    opened: dict[int, DropFolders | None] = {}
    try:
        for due in list_due_results(engine, limit):
            if due.tenant_id not in opened:
                drop = drop_settings(engine, due.tenant_id)
                try:
                    opened[due.tenant_id] = open_folders(drop, environ) if drop else None
                except DropConfigError as exc:
                    opened[due.tenant_id] = None
                    report.errors += 1
                    report.lines.append(f"tenant {due.tenant_id}: outbox not usable: {exc}")
            folders = opened[due.tenant_id]
            fmt = format_named(due.format)
            found = _results(engine, due, fmt) if fmt is not None else None
            if folders is None or fmt is None or found is None:
                continue
            chunks, what = found
            name = results_name(due.name, fmt)
            try:
                write_outbox_file(folders, name, chunks)
            except OSError as exc:
                report.errors += 1
                report.lines.append(f"tenant {due.tenant_id}: results of {due.name!r} not written: {exc}")
                continue
            if mark_results_written(engine, due.id, name):
                report.written += 1
                report.lines.append(f"tenant {due.tenant_id}: wrote {name!r} ({what})")
    finally:
        for folders in opened.values():
            if folders is not None:
                folders.close()
    return report
