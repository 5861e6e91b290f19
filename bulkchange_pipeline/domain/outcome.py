"""What a bulk change looks like to an operator at a glance: one ``Outcome`` per bulk change.

The header status alone hides what operators ask first: PROCESSED is "every row final", with or
without failed devices; NEW may be queued or held. ``outcome_of`` combines the status, the row
counts and the held flag into the states the Dagster UI shows per partition (``defs/outcome.py``)
and the API and console can show too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .enums import BulkChangeStatus, DeviceChangeStatus

__all__ = ["FAILED_ROW_STATUSES", "Outcome", "failed_rows", "outcome_of"]

FAILED_ROW_STATUSES = frozenset({DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value})


class Outcome(str, enum.Enum):
    """A bulk change's state as operators name it."""

    DONE = "done"  # every row final, none failed
    DONE_WITH_FAILURES = "done_with_failures"  # every row final, some failed (or nothing could be sent)
    WAITING_ON_CARRIER = "waiting_on_carrier"  # only asynchronous answers outstanding
    SCHEDULED = "scheduled"  # rows wait for their effective date
    HELD = "held"  # submitted with processChanges=false: waits for an operator to release it
    AWAITING_APPROVAL = "awaiting_approval"  # the approval policy holds it for a second person (approve/reject)
    CANCELLED = "cancelled"
    IN_PROGRESS = "in_progress"  # queued or a run is at work
    UNFINISHED = "unfinished"  # a run stopped with rows left: resume finishes them

    @property
    def finished(self) -> bool:
        """Every row reached its end as submitted (the ``settled`` check passes)."""
        return self in (Outcome.DONE, Outcome.DONE_WITH_FAILURES)


def failed_rows(counts: Mapping[str, int]) -> int:
    return sum(n for status, n in counts.items() if status in FAILED_ROW_STATUSES)


def outcome_of(status: str, counts: Mapping[str, int], *, held: bool = False) -> Outcome:
    """The operator's state of a bulk change from its header status, row counts and held flag."""
    s = BulkChangeStatus(status)
    if s is BulkChangeStatus.AWAITING_APPROVAL:
        return Outcome.AWAITING_APPROVAL
    if held and s in (BulkChangeStatus.NEW, BulkChangeStatus.SCHEDULED):
        return Outcome.HELD
    if s is BulkChangeStatus.CANCELLED:
        return Outcome.CANCELLED
    if s is BulkChangeStatus.SCHEDULED:
        return Outcome.SCHEDULED
    if s is BulkChangeStatus.PENDING:
        return Outcome.WAITING_ON_CARRIER
    if s is BulkChangeStatus.PROCESSED:
        return Outcome.DONE_WITH_FAILURES if failed_rows(counts) else Outcome.DONE
    if s is BulkChangeStatus.ERROR:
        unfinished = counts.get(DeviceChangeStatus.NEW.value, 0) + counts.get(DeviceChangeStatus.PROCESSING.value, 0)
        return Outcome.UNFINISHED if unfinished else Outcome.DONE_WITH_FAILURES
    return Outcome.IN_PROGRESS
