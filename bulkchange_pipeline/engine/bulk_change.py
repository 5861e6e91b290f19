"""Loading a bulk change for processing, sizing its batches, and finalizing it.

Plain functions on the store: the Dagster ops in ``defs/`` are thin wrappers around them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from ..domain import BulkChangeStatus, ChangeType, DeviceChangeStatus, Handling, capability
from ..store.approvals import get_approval
from ..store.bulk_changes import count_rows_by_status, queued_bulk_change, set_bulk_status
from ..store.device_changes import ACTIONABLE, IdRange, plan_id_ranges
from ..store.device_rows import first_failures
from ..store.headers import finalize_header
from ..store.operations import BulkChangeNotFound  # the store's "not found": callers catch one class
from ..store.reference import ServiceProviderInfo, get_service_provider

__all__ = [
    "MAX_BATCHES_PER_RUN",
    "BulkChangeInfo",
    "FinalizeResult",
    "StepSummary",
    "batch_size_for",
    "finalize",
    "load_bulk_change",
    "mark_processing",
    "plan_batches",
    "summary_markdown",
]

# Steps per run grow with batches, not devices (DESIGN P4: <= 64 steps for 100,000 devices):
# a run has load, check, plan, finalize plus at most this many apply_batch steps.
MAX_BATCHES_PER_RUN = 48


@dataclass(frozen=True)
class BulkChangeInfo:
    """What every step of a run needs to know about its bulk change (small, picklable)."""

    id: int
    tenant_id: int
    change_type: ChangeType
    status: str
    service_provider: ServiceProviderInfo
    handling: Handling | None  # None: the carrier cannot do this change type
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def actionable_rows(self) -> int:
        """Rows a run may still have to act on (NEW, SCHEDULED, PROCESSING), by the counts read at load."""
        return sum(self.counts.get(s.value, 0) for s in ACTIONABLE)


@runtime_checkable  # Dagster checks an op's input against its annotation with isinstance
class StepSummary(Protocol):
    """What finalize reads of each step a run ran (a batch, a reconcile pass); each step's summary
    class names this as its base and has both (as a field or a property)."""

    @property
    def carrier_calls(self) -> int: ...

    @property
    def seconds(self) -> float: ...


def load_bulk_change(engine: sa.Engine, bulk_change_id: int) -> BulkChangeInfo:
    """The live bulk change with its service provider, the carrier's handling of its change type and its row counts."""
    row = queued_bulk_change(engine, bulk_change_id)
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_change_id} does not exist (or was archived)")
    sp = get_service_provider(engine, row.tenant_id, row.service_provider_id)
    if sp is None:  # pragma: no cover - a foreign key guarantees it
        raise BulkChangeNotFound(f"bulk change {bulk_change_id}: its service provider is gone")
    change_type = ChangeType(row.change_type)
    cap = capability(change_type, sp.integration, sp.protocol)
    return BulkChangeInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        change_type=change_type,
        status=row.status,
        service_provider=sp,
        handling=cap.handling if cap else None,
        counts=count_rows_by_status(engine, bulk_change_id),
    )


def batch_size_for(configured: int, actionable_rows: int, max_batches: int = MAX_BATCHES_PER_RUN) -> int:
    """The carrier-sized batch, grown when needed so a run never exceeds ``max_batches`` batches."""
    if actionable_rows <= 0:
        return max(configured, 1)
    return max(configured, 1, math.ceil(actionable_rows / max_batches))


def plan_batches(engine: sa.Engine, info: BulkChangeInfo, batch_size: int | None = None) -> list[IdRange]:
    """Id ranges of the rows this run should process (NEW, left PROCESSING, or SCHEDULED and due)."""
    configured = batch_size or info.service_provider.batch_size
    return plan_id_ranges(engine, info.id, batch_size_for(configured, info.actionable_rows))


def mark_processing(engine: sa.Engine, info: BulkChangeInfo) -> None:
    """The header says a run is at work (until finalize derives it from the rows)."""
    set_bulk_status(engine, info.id, BulkChangeStatus.PROCESSING)


@dataclass
class FinalizeResult:
    status: BulkChangeStatus
    counts: dict[str, int]
    summary_markdown: str


def finalize(engine: sa.Engine, info: BulkChangeInfo, steps: Sequence[StepSummary]) -> FinalizeResult:
    """Derive the header status from the device rows and store it with the counts (``store.headers``,
    the rule cancel, settle and rebuild-status use too).

    Rows still waiting on an asynchronous carrier leave the bulk change PENDING; SCHEDULED rows not
    yet due leave it SCHEDULED with the next effective date, so the sensor picks it up then; every
    row ERROR and none ever claimed (nothing was sent) leaves it ERROR.
    """
    status, counts = finalize_header(engine, info.id, async_carrier=info.handling is Handling.CARRIER_ASYNC)
    approval = get_approval(engine, info.id, status.value)
    markdown = summary_markdown(info, status, counts, steps, first_failures(engine, info.id), approval)
    return FinalizeResult(status, counts, markdown)


def summary_markdown(
    info: BulkChangeInfo,
    status: BulkChangeStatus,
    counts: dict[str, int],
    steps: Sequence[StepSummary],
    failures: Sequence[dict[str, str]] = (),
    approval: dict[str, Any] | None = None,
) -> str:
    """The run's summary people read in the Dagster UI: who submitted and approved it (when it
    needed approval), counts per status, the run's steps, the first failures."""
    total = sum(counts.values())
    lines = [
        f"### Bulk change {info.id}: {info.change_type.label} on {info.service_provider.name}",
        "",
        f"**Status:** {status.value} ({total} devices)",
        "",
        *_approval_lines(approval),
        "| device status | rows |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in sorted(counts.items())],
        "",
        f"Batches this run: {len(steps)}; carrier calls: {sum(s.carrier_calls for s in steps)}; "
        f"seconds in batches: {sum(s.seconds for s in steps):.1f}",
    ]
    failed = sum(n for s, n in counts.items() if s in _FAILED)
    if failures:
        lines += [
            "",
            f"First failures ({len(failures)} of {failed}):",
            "",
            "| device | status | reason |",
            "|---|---|---|",
            *[f"| `{f['device']}` | {f['status']} | {f['reason'].replace('|', '/')} |" for f in failures],
        ]
    if failed > len(failures):
        lines += [
            "",
            f"{failed - len(failures)} more failed devices are not shown. All of them, with each reason: "
            f"`bulkchange results {info.id} --csv -` or `GET /bulk-changes/{info.id}/devices?status=API_FAILED` "
            f"(and `?status=ERROR`).",
        ]
    return "\n".join(lines)


def _approval_lines(approval: dict[str, Any] | None) -> list[str]:
    """Four-eyes approval in the summary: who submitted, who decided, when (``store.approvals``)."""
    if approval is None:
        return []

    def at(when: Any) -> str:
        return f"{when.isoformat(timespec='seconds')}Z" if when is not None else "-"

    lines = [f"**Approval:** {approval['state']} ({approval['needed_because']})", ""]
    lines.append(f"- submitted by {approval['submitted_by']} at {at(approval['requested_at'])}")
    if approval["decided_by"]:
        lines.append(f"- {approval['state']} by {approval['decided_by']} at {at(approval['decided_at'])}")
    if approval["reason"]:
        lines.append(f"- reason: {approval['reason']}")
    return [*lines, ""]


_FAILED = frozenset({DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value})
