"""Rich rendering of a request split by service provider (issue 21): what ``submit`` / ``dry-run``
made of a file without a service provider, and what ``bulkchange submission show`` reads back.

One table of children (one bulk change per service provider) and one of the devices no service
provider could take, in both places, so the split an operator sees before storing it (dry run) is
the one they follow afterwards. Everything shown that a file or a carrier wrote is escaped
(``shown`` in ``Text``): identifiers and reasons can hold markup and control characters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..domain import DeviceChangeStatus, change_type_name
from ..intake.parsing import shown
from ..intake.submit import SubmitOutcome
from ..store.submission_ops import SubmissionOperation
from ..store.submissions import SubmissionView
from .render import STATUS_STYLE, render_report

__all__ = ["followed_view", "render_operation", "render_split", "render_submission"]


def _counts_text(counts: dict[str, int]) -> Text:
    """``PROCESSED 3, API_FAILED 1`` in the statuses' colours, in their lifecycle order."""
    text = Text()
    for status in DeviceChangeStatus:
        if n := counts.get(status.value, 0):
            if text:
                text.append(", ")
            text.append(f"{status.value} {n}", style=STATUS_STYLE[status])
    return text or Text("-")


def _refused_table(console: Console, refused: Sequence[Any], limit: int) -> None:
    """The devices no service provider could take (``RowError`` or ``RefusedRow``: row, identifier, reason)."""
    if not refused:
        return
    table = Table(title="Not placed with any service provider", title_justify="left")
    table.add_column("row", justify="right")
    table.add_column("device")
    table.add_column("reason", style="red", overflow="fold")
    for r in refused[:limit]:
        table.add_row(str(r.row), Text(shown(r.identifier, 40)), Text(shown(r.reason, 2000)))
    console.print(table)
    if len(refused) > limit:
        console.print(f"... and {len(refused) - limit} more devices not placed")


def render_split(console: Console, outcome: SubmitOutcome, *, limit: int = 200, reports: bool = True) -> None:
    """The split: one line per child (service provider, its bulk change or "dry run", status,
    accepted / refused), then the devices not placed; with ``reports`` each child's validation
    report (its refused and accepted devices, as ``dry-run`` shows an ordinary request)."""
    children = outcome.children
    placed = sum(c.accepted + c.refused for c in children)
    console.print(
        f"split by service provider: [bold]{len(children)}[/] bulk change{'s' if len(children) != 1 else ''} "
        f"for {placed} devices"
        + (f", [red]{len(outcome.refused)} not placed[/]" if outcome.refused else "")
        + (f" (submission [bold]{outcome.submission_id}[/])" if outcome.submission_id is not None else "")
    )
    if children:
        table = Table(title="Children (one bulk change per service provider)", title_justify="left")
        for col in ("service provider", "integration", "bulk change", "status", "accepted", "refused"):
            table.add_column(col, justify="right" if col in ("bulk change", "accepted", "refused") else "left")
        for c in children:
            table.add_row(
                Text(shown(f"{c.service_provider_name} (id {c.service_provider_id})", 80)),
                Text(shown(c.integration, 40)),
                str(c.bulk_change_id) if c.bulk_change_id is not None else "dry run",
                c.status or "-",
                str(c.accepted),
                Text(str(c.refused), style="red" if c.refused else ""),
            )
        console.print(table)
    _refused_table(console, outcome.refused, limit)
    if reports:
        for c in children:
            if c.report is not None and (outcome.submission_id is None or c.report.errors):
                render_report(console, c.report, limit=limit)


def render_submission(console: Console, view: SubmissionView, *, limit: int = 50) -> None:
    """``bulkchange submission show``: the parent's derived status and progress, its children with
    their bulk change ids (each followed further with ``bulkchange status``), the devices not placed."""
    label = change_type_name(view.change_type)
    console.print(
        f"submission [bold]{view.id}[/]: {label} across {len(view.children)} service provider"
        f"{'s' if len(view.children) != 1 else ''}, status [bold]{view.status}[/], {view.total} devices, "
        f"created {view.created_at:%Y-%m-%d %H:%M:%S} UTC by ",
        Text(shown(view.created_by, 200)),
        sep="",
    )
    console.print(f"progress: {view.done} of {view.total} device rows final; outcome {view.outcome.value}")
    hint = {
        "unfinished": "a child's run stopped with rows left: bulkchange resume BULK_CHANGE_ID (the child in ERROR)",
        "held": f"held (processChanges=false): bulkchange submission release {view.id}",
    }.get(view.outcome.value)
    if hint:
        console.print(hint)
    console.print(Text("devices: ").append_text(_counts_text(view.counts)))
    if view.children:
        table = Table(title="Children", title_justify="left")
        for col in ("bulk change", "service provider", "integration", "status", "devices", "by status"):
            table.add_column(col, justify="right" if col in ("bulk change", "devices") else "left")
        for c in view.children:
            table.add_row(
                str(c.bulk_change_id),
                Text(shown(f"{c.service_provider_name} (id {c.service_provider_id})", 80)),
                Text(shown(c.integration, 40)),
                c.status,
                str(sum(c.counts.values())),
                _counts_text(c.counts),
            )
        console.print(table)
    _refused_table(console, view.refused, limit)
    console.print(
        f"one results file: bulkchange submission results {view.id} --out FILE; "
        f"a child's rows: bulkchange status BULK_CHANGE_ID"
    )


def render_operation(console: Console, what: str, op: SubmissionOperation, describe: Callable[[Any], str]) -> None:
    """What cancel / retry-failed / approve / reject did to each child: ``describe(result)`` for a
    child it reached, the refusal for one it could not (nothing to do in its state)."""
    console.print(
        f"submission {op.submission_id}: {what} reached {op.done} of {len(op.children)} bulk changes; "
        f"status [bold]{op.status}[/]"
    )
    for c in op.children:
        text = describe(c.result) if c.done else f"not changed: {c.message}"
        console.print(Text(f"  bulk change {c.bulk_change_id}: ").append(shown(text, 1000)))


def followed_view(view: SubmissionView) -> dict[str, Any]:
    """The submission in the shape ``render.follow_bulk_change`` follows (id, status, counts, total)."""
    return {"id": view.id, "status": view.status, "counts": view.counts, "total": view.total}
