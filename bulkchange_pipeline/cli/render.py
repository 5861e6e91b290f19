"""Rich rendering for the command line: validation reports, status, ``status --follow``, history.

Kept apart from the click wiring so every command (and the demo) renders a result the same way.
The CSV export is ``intake.results_csv`` (the API serves the same file).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..domain import BulkChangeStatus, DeviceChangeStatus, Outcome, bulk_status_detail, change_type_name, outcome_of
from ..intake.parsing import shown
from ..intake.validation import ValidationReport, is_carrier_dated

STATUS_STYLE = {
    DeviceChangeStatus.NEW: "cyan",
    DeviceChangeStatus.SCHEDULED: "blue",
    DeviceChangeStatus.PROCESSING: "yellow",
    DeviceChangeStatus.PROCESSED: "green",
    DeviceChangeStatus.API_FAILED: "red",
    DeviceChangeStatus.ERROR: "red",
    DeviceChangeStatus.CANCELLED: "dim",
}


def render_report(console: Console, report: ValidationReport, *, limit: int = 200) -> None:
    """Summary, then refused rows (all, up to ``limit``), then accepted rows (up to ``limit``)."""
    sp = report.service_provider
    console.print(
        f"[bold]{report.change_type.label}[/] ({report.change_type.value}) on [bold]{sp.name}[/] "
        f"({sp.integration.value}, id {sp.id}): {report.total} devices, "
        f"[green]{report.accepted} accepted[/]"
        + (f" ([blue]{report.scheduled} scheduled[/])" if report.scheduled else "")
        + (f" ([blue]{report.carrier_dated} dated by the carrier[/])" if report.carrier_dated else "")
        + (f", [red]{len(report.errors)} refused[/]" if report.errors else "")
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if report.errors:
        table = Table(title="Refused devices", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("device")
        table.add_column("reason", style="red", overflow="fold")
        for err in report.errors[:limit]:
            table.add_row(str(err.row), Text(shown(err.identifier, 40)), Text(shown(err.reason, 2000)))
        console.print(table)
        if len(report.errors) > limit:
            console.print(f"... and {len(report.errors) - limit} more refused devices")
    accepted = [(i, r) for i, r in enumerate(report.rows) if r.status is not DeviceChangeStatus.ERROR]
    if accepted:
        table = Table(title="Accepted devices", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("device")
        table.add_column("status")
        table.add_column("target", overflow="fold")
        listed = accepted[:limit]
        notes = any(r.status_details or r.effective_at for _, r in listed)
        if notes:
            table.add_column("when", overflow="fold")
        for i, r in listed:
            cells = [
                str(report.row_numbers[i]),
                Text(shown(report.identifiers[i], 40)),
                r.status.value,
                Text(shown(_target_text(r.change_request), 2000)),
            ]
            if notes:
                cells.append(Text(_when_text(r)))
            table.add_row(*cells)
        console.print(table)
        if len(accepted) > limit:
            console.print(f"... and {len(accepted) - limit} more accepted devices")


def _target_text(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items())


def _when_text(row: Any) -> str:
    """When an accepted row takes effect: waiting here until a date, or dated by the carrier."""
    if row.status is DeviceChangeStatus.SCHEDULED and row.effective_at:
        return f"waits until {row.effective_at:%Y-%m-%d %H:%M:%S} UTC, then sent"
    if is_carrier_dated(row):
        return row.status_details
    return "sent now"


def render_status(console: Console, bc: dict[str, Any], provider_name: str | None) -> None:
    label = change_type_name(bc["change_type"])
    console.print(
        f"bulk change [bold]{bc['id']}[/]: {label} on {escape(str(provider_name or bc['service_provider_id']))}, "
        f"status [bold]{bc['status']}[/], {bc['total']} devices, created {bc['created_at']:%Y-%m-%d %H:%M:%S} "
        f"by {escape(bc['created_by'])}"
        + (f", effective {bc['effective_at']:%Y-%m-%d %H:%M}" if bc.get("effective_at") else "")
    )
    if bc.get("submission_id"):  # one child of a request split by carrier
        sid = bc["submission_id"]
        console.print(f"one of the bulk changes of submission {sid}: `bulkchange submission show {sid}`")
    outcome = outcome_of(bc["status"], bc["counts"], held=not bc.get("process_changes", True))
    console.print(f"outcome [bold]{outcome.value}[/]")
    if outcome is Outcome.HELD:
        console.print(f"held (processChanges=false): nothing is sent until `bulkchange release {bc['id']}`")
    if detail := bulk_status_detail(bc["status"], bc["counts"]):
        console.print(
            f"[red]{detail}[/]: correct them (`bulkchange results {bc['id']} --csv -` has each reason) and submit again"
        )
    table = Table()
    table.add_column("status")
    table.add_column("devices", justify="right")
    for status in DeviceChangeStatus:
        n = bc["counts"].get(status.value, 0)
        if n:
            table.add_row(f"[{STATUS_STYLE[status]}]{status.value}[/]", str(n))
    console.print(table)


def final_count(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if DeviceChangeStatus(s).is_final)


# --- status --follow ------------------------------------------------------------------------------

FAILED_STATUSES = (DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value)
# Every row final but the header not yet (the run's finalize step is still to come): stop anyway
# after this long, so a header that is never finalised cannot hold the follower forever.
SETTLE_SECONDS = 5.0


def failure_count(counts: dict[str, int]) -> int:
    return sum(counts.get(s, 0) for s in FAILED_STATUSES)


@dataclass
class FollowResult:
    bc: dict[str, Any]  # the last bulk change read
    final: bool  # False: timed out or interrupted
    interrupted: bool = False
    held: bool = False  # held (processChanges=false): nothing moves until it is released


def follow_bulk_change(
    console: Console,
    fetch: Callable[[], dict[str, Any]],
    bc: dict[str, Any],
    *,
    interval: float = 1.0,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "bulk change",
) -> FollowResult:
    """Poll ``fetch`` (the bulk change with live counts) every ``interval`` s until it is final.

    ``what`` names it in the progress line: a submission (``bulkchange submission show --watch``)
    is followed the same way, as a dict of the same keys with its summed counts and derived status.

    Final: the header is PROCESSED, CANCELLED or ERROR (or every row has been final for
    ``SETTLE_SECONDS``). Shows a live progress bar on a terminal (rows done / total, rate since
    following began, failures, elapsed); elsewhere (a pipe, a log) prints one line per change.
    Ctrl-C stops following and returns what was last read.
    """
    start = clock()
    deadline = None if timeout is None else start + timeout
    done0 = final_count(bc["counts"])
    settled_at: float | None = None

    def fields(bc: dict[str, Any]) -> dict[str, Any]:
        done = final_count(bc["counts"])
        elapsed = clock() - start
        rate = (done - done0) / elapsed if elapsed > 0 else 0.0
        failed = failure_count(bc["counts"])
        return {
            "description": f"{what} {bc['id']} {bc['status']}",
            "done": done,
            "total": bc["total"],
            "rate": f"{rate:.1f} rows/s",
            "failures": f"[red]{failed} failed[/]" if failed else "0 failed",
            "failed": failed,
        }

    def is_final(bc: dict[str, Any]) -> bool:
        nonlocal settled_at
        if bc["status"] in BulkChangeStatus.final_values():
            return True
        if final_count(bc["counts"]) >= bc["total"]:
            settled_at = clock() if settled_at is None else settled_at
            return clock() - settled_at >= SETTLE_SECONDS
        settled_at = None
        return False

    live = console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[failures]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not live,
    )
    last_line = None
    try:
        with progress:
            f = fields(bc)
            task = progress.add_task(
                f["description"], total=f["total"], completed=f["done"], rate=f["rate"], failures=f["failures"]
            )
            while True:
                f = fields(bc)
                progress.update(
                    task,
                    description=f["description"],
                    total=f["total"],
                    completed=f["done"],
                    rate=f["rate"],
                    failures=f["failures"],
                )
                if not live:
                    line = f"{f['description']}: {f['done']}/{f['total']} rows done, {f['failed']} failed"
                    if line != last_line:
                        console.print(f"{line}, {f['rate']}", markup=False, soft_wrap=True)
                        last_line = line
                if is_final(bc):
                    return FollowResult(bc, True)
                if not bc.get("process_changes", True) and bc["status"] in ("NEW", "SCHEDULED"):
                    return FollowResult(bc, False, held=True)
                if deadline is not None and clock() >= deadline:
                    return FollowResult(bc, False)
                sleep(interval if deadline is None else max(0.0, min(interval, deadline - clock())))
                bc = fetch()
    except KeyboardInterrupt:
        return FollowResult(bc, False, interrupted=True)


def render_history(console: Console, device: Any, history: list[dict[str, Any]]) -> None:
    console.print(
        f"device {device.id}: ICCID {device.iccid or '-'}, IMEI {device.imei or '-'}, MSISDN {device.msisdn or '-'}, "
        f"status {device.status or '-'}",
        markup=False,
    )
    if not history:
        console.print("no recorded changes")
        return
    table = Table()
    for col in ("changed at", "field", "before", "after", "bulk change"):
        table.add_column(col)
    for h in history:
        table.add_row(
            f"{h['changed_at']:%Y-%m-%d %H:%M:%S}",
            Text(h["field"]),
            Text(h["old_value"] or "-"),
            Text(h["new_value"] or "-"),
            str(h["bulk_change_id"] or "-"),
        )
    console.print(table)


__all__ = [
    "SETTLE_SECONDS",
    "FollowResult",
    "failure_count",
    "final_count",
    "follow_bulk_change",
    "render_history",
    "render_report",
    "render_status",
]
