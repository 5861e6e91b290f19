"""Operations over every child of a submission: cancel, retry-failed, release, approve, reject.

Each reaches every child through the store's own per-bulk-change function (``store.operations``,
``store.approvals``), one child at a time, each in its own transaction, so a child follows exactly
the rules it would follow alone; a child refused is reported and the others go on. What the parent
looks like afterwards is ``store.submissions.get_submission``'s derived state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import approvals
from . import operations as ops
from .approvals import Actor
from .operations import OperationRefused
from .submissions import child_ids, get_submission

__all__ = [
    "ChildOperation",
    "SubmissionNotFound",
    "SubmissionOperation",
    "approve_submission",
    "cancel_submission",
    "reject_submission",
    "release_submission",
    "retry_failed_submission",
]


class SubmissionNotFound(LookupError):
    """No such submission in this tenant (another tenant's is "not found" too, so ids do not leak)."""


@dataclass
class ChildOperation:
    """What an operation did to one child: its result (``store.operations`` / ``store.approvals``),
    or why that child was refused (nothing to do in its state)."""

    bulk_change_id: int
    done: bool
    message: str
    result: Any = None


@dataclass
class SubmissionOperation:
    submission_id: int
    children: list[ChildOperation]
    status: str  # the parent's derived status after the operation
    counts: dict[str, int]
    outcome: str = ""  # the parent's derived outcome after the operation

    @property
    def done(self) -> int:
        return sum(1 for c in self.children if c.done)


def _each_child(
    engine: sa.Engine, tenant_id: int, submission_id: int, what: str, action: Callable[[int], Any]
) -> SubmissionOperation:
    """``action`` on every child, each in its own transaction (the store's rules per bulk change);
    a child refused (``OperationRefused``) is reported and the others go on. Every child refused:
    ``OperationRefused`` for the submission, naming each child's reason."""
    if get_submission(engine, submission_id, tenant_id) is None:
        raise SubmissionNotFound(f"no submission {submission_id} in this tenant")
    done = []
    for bc_id in child_ids(engine, submission_id):
        try:
            done.append(ChildOperation(bc_id, True, "", action(bc_id)))
        except OperationRefused as exc:
            done.append(ChildOperation(bc_id, False, str(exc)))
    if not any(c.done for c in done):
        reasons = "; ".join(c.message for c in done) or "it has no bulk changes"
        raise OperationRefused(f"nothing to {what} in submission {submission_id}: {reasons}")
    view = get_submission(engine, submission_id, tenant_id)
    assert view is not None
    return SubmissionOperation(submission_id, done, view.status, view.counts, view.outcome.value)


def cancel_submission(engine: sa.Engine, tenant_id: int, submission_id: int, *, by: str) -> SubmissionOperation:
    """``operations.cancel_bulk_change`` on every child: rows not yet sent end CANCELLED, sent rows
    finish normally (a child's run claims its rows under the same row rules)."""
    return _each_child(
        engine, tenant_id, submission_id, "cancel", lambda bc: ops.cancel_bulk_change(engine, tenant_id, bc, by=by)
    )


def retry_failed_submission(engine: sa.Engine, tenant_id: int, submission_id: int, *, by: str) -> SubmissionOperation:
    """``operations.retry_failed`` on every child that has failed rows: each such child is a new
    attempt of its own partition. The refused rows of the parent are never retried."""
    return _each_child(
        engine, tenant_id, submission_id, "retry", lambda bc: ops.retry_failed(engine, tenant_id, bc, by=by)
    )


def release_submission(engine: sa.Engine, tenant_id: int, submission_id: int, *, by: str) -> SubmissionOperation:
    """``operations.release_bulk_change`` on every held child (submitted with processChanges=false):
    the sensor starts each of them as it would a released bulk change."""
    return _each_child(
        engine, tenant_id, submission_id, "release", lambda bc: ops.release_bulk_change(engine, tenant_id, bc, by=by)
    )


def approve_submission(engine: sa.Engine, tenant_id: int, submission_id: int, *, by: Actor) -> SubmissionOperation:
    """``approvals.approve_bulk_change`` on every child awaiting approval (the policy held them
    together). The submitter approving its own is refused (``SelfApprovalRefused``) before any child."""
    return _each_child(
        engine,
        tenant_id,
        submission_id,
        "approve",
        lambda bc: approvals.approve_bulk_change(engine, tenant_id, bc, by=by),
    )


def reject_submission(
    engine: sa.Engine, tenant_id: int, submission_id: int, *, by: Actor, reason: str
) -> SubmissionOperation:
    """``approvals.reject_bulk_change`` on every child awaiting approval: nothing is sent."""
    if not reason.strip():
        raise ValueError("a rejection needs a reason")
    return _each_child(
        engine,
        tenant_id,
        submission_id,
        "reject",
        lambda bc: approvals.reject_bulk_change(engine, tenant_id, bc, by=by, reason=reason),
    )
