"""Rich rendering of intake results for the CLI: validation reports, status, history, CSV export.

Kept apart from the click wiring so other front ends (the demo command) can reuse it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from ..domain import ChangeType, DeviceChangeStatus
from .validation import ValidationReport

RESULT_COLUMNS = (
    "id", "iccid", "msisdn", "imei", "eid", "status", "status_details", "attempt_count",
    "carrier_request_id", "effective_at", "processed_at", "change_request",
)
STATUS_STYLE = {
    "NEW": "cyan", "SCHEDULED": "blue", "PROCESSING": "yellow", "PROCESSED": "green",
    "API_FAILED": "red", "ERROR": "red", "CANCELLED": "dim",
}


def render_report(console: Console, report: ValidationReport, *, limit: int = 200) -> None:
    """Summary, then refused rows (all, up to ``limit``), then accepted rows (up to ``limit``)."""
    sp = report.service_provider
    console.print(
        f"[bold]{report.change_type.label}[/] ({report.change_type.value}) on [bold]{sp.name}[/] "
        f"({sp.integration.value}, id {sp.id}): {report.total} devices, "
        f"[green]{report.accepted} accepted[/]"
        + (f" ([blue]{report.scheduled} scheduled[/])" if report.scheduled else "")
        + (f", [red]{len(report.errors)} refused[/]" if report.errors else "")
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if report.errors:
        table = Table(title="Refused devices", title_justify="left")
        table.add_column("row", justify="right")
        table.add_column("device")
        table.add_column("reason", style="red", overflow="fold")
        for err in report.errors[:limit]:
            table.add_row(str(err.row), err.identifier[:40], err.reason)
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
        for i, r in accepted[:limit]:
            table.add_row(str(report.row_numbers[i]), report.identifiers[i][:40], r.status.value, _target_text(r.change_request))
        console.print(table)
        if len(accepted) > limit:
            console.print(f"... and {len(accepted) - limit} more accepted devices")


def _target_text(target: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items())


def render_status(console: Console, bc: dict[str, Any], provider_name: str | None) -> None:
    try:
        label = ChangeType(bc["change_type"]).label
    except ValueError:
        label = str(bc["change_type"])
    console.print(
        f"bulk change [bold]{bc['id']}[/]: {label} on {provider_name or bc['service_provider_id']}, "
        f"status [bold]{bc['status']}[/], {bc['total']} devices, created {bc['created_at']:%Y-%m-%d %H:%M:%S} "
        f"by {bc['created_by']}"
        + (f", effective {bc['effective_at']:%Y-%m-%d %H:%M}" if bc.get("effective_at") else "")
    )
    table = Table()
    table.add_column("status")
    table.add_column("devices", justify="right")
    for status in DeviceChangeStatus:
        n = bc["counts"].get(status.value, 0)
        if n:
            table.add_row(f"[{STATUS_STYLE[status.value]}]{status.value}[/]", str(n))
    console.print(table)


def final_count(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if DeviceChangeStatus(s).is_final)


def safe_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (text from carriers ends up here)."""
    if value is None:
        return ""
    text = json.dumps(value, default=str, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("+-").replace(".", "", 1).isdigit():
        return "'" + text
    return text


def write_results_csv(out: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    """Stream device results as CSV; returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([safe_cell(row.get(c)) for c in RESULT_COLUMNS])
        n += 1
    return n


def render_history(console: Console, device: Any, history: list[dict[str, Any]]) -> None:
    console.print(
        f"device {device.id}: ICCID {device.iccid or '-'}, IMEI {device.imei or '-'}, MSISDN {device.msisdn or '-'}, "
        f"status {device.status or '-'}"
    )
    if not history:
        console.print("no recorded changes")
        return
    table = Table()
    for col in ("changed at", "field", "before", "after", "bulk change"):
        table.add_column(col)
    for h in history:
        table.add_row(
            f"{h['changed_at']:%Y-%m-%d %H:%M:%S}", h["field"], h["old_value"] or "-", h["new_value"] or "-",
            str(h["bulk_change_id"] or "-"),
        )
    console.print(table)
