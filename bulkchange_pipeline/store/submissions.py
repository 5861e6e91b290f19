"""Submissions: one request split across service providers, stored and read as one (issue 21).

A request without a service provider (``intake.split``) becomes a ``submission`` row, one child
bulk change per service provider (``bulk_change.submission_id``) and the devices it could not place
(``submission_refused``), all in ONE transaction: a failure stores nothing. Each child is an
ordinary bulk change (its own partition, run, approval, cancel); the parent only groups them.

The parent's status is derived whenever it is read, never stored (``submission_status``), so it
cannot drift from its children. The idempotency key lives on the parent: a key is one submission
or one bulk change per tenant, never both (``key_holder``), the other kind is an
``IdempotencyConflict``. Cancel, retry-failed, approve and reject reach every child through the
store's own per-bulk-change functions (``store.operations``, ``store.approvals``), one child at a
time, each in its own transaction, and report per child.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus, classify, derive_bulk_status
from . import approvals
from . import operations as ops
from .approvals import Actor
from .bulk_changes import IdempotencyConflict, NewBulkChange, insert_bulk_change, iter_device_results
from .db import run_transaction, utcnow
from .headers import status_from_counts
from .operations import OperationRefused
from .schema import bulk_change, device_change, service_provider, submission, submission_refused

__all__ = [
    "ChildOperation",
    "ChildView",
    "NewSubmission",
    "RefusedRow",
    "StoredSubmission",
    "SubmissionNotFound",
    "SubmissionOperation",
    "SubmissionView",
    "approve_submission",
    "cancel_submission",
    "child_ids",
    "create_submission",
    "find_submission_by_key",
    "get_submission",
    "iter_submission_results",
    "key_holder",
    "reject_submission",
    "retry_failed_submission",
    "submission_status",
]

ERROR = DeviceChangeStatus.ERROR.value


@dataclass(frozen=True)
class RefusedRow:
    """A device the split could not place, with its row number in the request and the reason."""

    row: int
    identifier: str
    reason: str


@dataclass
class NewSubmission:
    tenant_id: int
    change_type: int
    request: dict[str, Any]  # the header as stored (``intake.submit.stored_request``), no devices
    created_by: str
    children: Sequence[NewBulkChange]  # their ``submission_id`` is set when the parent is inserted
    refused: Sequence[RefusedRow] = ()
    idempotency_key: str | None = None
    request_fingerprint: str | None = None


@dataclass
class StoredSubmission:
    submission_id: int
    created: bool  # False: the idempotency key was seen before; nothing new was written
    bulk_change_ids: list[int] = field(default_factory=list)


@dataclass
class ChildView:
    bulk_change_id: int
    service_provider_id: int
    service_provider_name: str
    integration: str
    status: str
    counts: dict[str, int]


@dataclass
class SubmissionView:
    id: int
    status: str
    counts: dict[str, int]  # the children's device rows by status plus the refused rows as ERROR
    children: list[ChildView]
    refused: list[RefusedRow]
    created_by: str
    created_at: datetime
    change_type: int
    idempotency_key: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def key_holder(conn: sa.Connection, tenant_id: int, key: str) -> tuple[str, int] | None:
    """Who holds this tenant's idempotency ``key``: ("submission", id), ("bulk_change", id) or None."""
    sid = conn.execute(
        sa.select(submission.c.id).where(submission.c.tenant_id == tenant_id, submission.c.idempotency_key == key)
    ).scalar()
    if sid is not None:
        return "submission", int(sid)
    bc_id = conn.execute(
        sa.select(bulk_change.c.id).where(bulk_change.c.tenant_id == tenant_id, bulk_change.c.idempotency_key == key)
    ).scalar()
    return ("bulk_change", int(bc_id)) if bc_id is not None else None


def find_submission_by_key(
    engine: sa.Engine | sa.Connection, tenant_id: int, key: str, fingerprint: str | None
) -> int | None:
    """This tenant's submission stored with ``key`` for the same request, or None when the key is
    unused. ``IdempotencyConflict`` when a submission holds it for another request (fingerprint),
    or when a bulk change holds it."""

    def look(conn: sa.Connection) -> int | None:
        holder = key_holder(conn, tenant_id, key)
        if holder is None:
            return None
        kind, held_by = holder
        if kind == "bulk_change":
            raise IdempotencyConflict(key, held_by)
        stored = conn.execute(sa.select(submission.c.request_fingerprint).where(submission.c.id == held_by)).scalar()
        if fingerprint and stored and stored != fingerprint:
            raise IdempotencyConflict(key, None, submission_id=held_by)
        return held_by

    if isinstance(engine, sa.Connection):
        return look(engine)
    with engine.connect() as conn:
        return look(conn)


def create_submission(engine: sa.Engine, new: NewSubmission) -> StoredSubmission:
    """Store the parent, every child with its device rows, and the refused rows in ONE transaction.

    The same key and request again returns the stored submission and writes nothing; a concurrent
    duplicate loses on the unique constraint and is answered the same way; a key held by a bulk
    change, or by a submission of another request, raises ``IdempotencyConflict``.
    """
    key = (new.idempotency_key or "").strip() or None
    if key and (existing := find_submission_by_key(engine, new.tenant_id, key, new.request_fingerprint)):
        return StoredSubmission(existing, False, child_ids(engine, existing))
    now = utcnow()

    def work(conn: sa.Connection) -> StoredSubmission:
        if key and (holder := key_holder(conn, new.tenant_id, key)) and holder[0] == "bulk_change":
            raise IdempotencyConflict(key, holder[1])
        sid = int(
            conn.execute(
                sa.insert(submission)
                .values(
                    tenant_id=new.tenant_id,
                    change_type=int(new.change_type),
                    request=new.request,
                    created_by=new.created_by[:200],
                    created_at=now,
                    idempotency_key=key,
                    request_fingerprint=new.request_fingerprint if key else None,
                )
                .returning(submission.c.id)
            ).scalar_one()
        )
        if new.refused:
            conn.execute(
                sa.insert(submission_refused),
                [
                    {"submission_id": sid, "row_number": r.row, "identifier": r.identifier[:200], "reason": r.reason}
                    for r in new.refused
                ],
            )
        ids = []
        for child in new.children:
            child.submission_id = sid
            child.idempotency_key = None  # the parent holds the key
            ids.append(insert_bulk_change(conn, child, now))
        return StoredSubmission(sid, True, ids)

    try:
        return run_transaction(engine, work)
    except sa.exc.IntegrityError:
        if key and (existing := find_submission_by_key(engine, new.tenant_id, key, new.request_fingerprint)):
            return StoredSubmission(existing, False, child_ids(engine, existing))
        raise


def child_ids(engine: sa.Engine | sa.Connection, submission_id: int) -> list[int]:
    """The submission's live child bulk changes, in id order (the request's order of providers)."""
    query = (
        sa.select(bulk_change.c.id)
        .where(bulk_change.c.submission_id == submission_id, bulk_change.c.deleted_at.is_(None))
        .order_by(bulk_change.c.id)
    )
    if isinstance(engine, sa.Connection):
        return list(engine.execute(query).scalars())
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def submission_status(children: Sequence[ChildView], refused: int, attempted: int) -> tuple[str, dict[str, int]]:
    """The parent's status and counts, derived from its children (never stored).

    AWAITING_APPROVAL while any child awaits; CANCELLED when every child is; otherwise the status
    the summed rows say, the refused devices counted as ERROR. Before any row was claimed by a run
    (``attempted`` 0) the refusals are left out, as a fresh bulk change's are (``initial_status``):
    NEW children with refusals are NEW, not PROCESSING; every device refused is ERROR.
    """
    counts: dict[str, int] = {}
    for child in children:
        for status, n in child.counts.items():
            counts[status] = counts.get(status, 0) + n
    if refused:
        counts[ERROR] = counts.get(ERROR, 0) + refused
    statuses = {c.status for c in children}
    if BulkChangeStatus.AWAITING_APPROVAL.value in statuses:
        return BulkChangeStatus.AWAITING_APPROVAL.value, counts
    if statuses == {BulkChangeStatus.CANCELLED.value}:
        return BulkChangeStatus.CANCELLED.value, counts
    pending = BulkChangeStatus.PENDING.value in statuses
    if attempted == 0:
        live = {k: v for k, v in counts.items() if k != ERROR and v}
        if live:
            return status_from_counts(live, async_carrier=pending, attempted=None).value, counts
        return derive_bulk_status(counts, attempted=0).value, counts
    return status_from_counts(counts, async_carrier=pending, attempted=attempted).value, counts


def get_submission(engine: sa.Engine, submission_id: int, tenant_id: int) -> SubmissionView | None:
    """The submission with its children, refused rows and derived status, or None (also another tenant's)."""
    with engine.connect() as conn:
        head = conn.execute(
            sa.select(submission).where(submission.c.id == submission_id, submission.c.tenant_id == tenant_id)
        ).first()
        if head is None:
            return None
        kids = conn.execute(
            sa.select(
                bulk_change.c.id,
                bulk_change.c.service_provider_id,
                bulk_change.c.status,
                service_provider.c.name,
                service_provider.c.integration,
            )
            .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
            .where(bulk_change.c.submission_id == submission_id, bulk_change.c.deleted_at.is_(None))
            .order_by(bulk_change.c.id)
        ).all()
        ids = [k.id for k in kids]
        per_child: dict[int, dict[str, int]] = {i: {} for i in ids}
        attempted = 0
        if ids:
            for bc_id, status, n in conn.execute(
                sa.select(device_change.c.bulk_change_id, device_change.c.status, sa.func.count())
                .where(device_change.c.bulk_change_id.in_(ids))
                .group_by(device_change.c.bulk_change_id, device_change.c.status)
            ):
                per_child[bc_id][status] = n
            attempted = conn.execute(
                sa.select(sa.func.count())
                .select_from(device_change)
                .where(device_change.c.bulk_change_id.in_(ids), device_change.c.attempt_count > 0)
            ).scalar_one()
        refused = [
            RefusedRow(r.row_number, r.identifier, r.reason)
            for r in conn.execute(
                sa.select(submission_refused)
                .where(submission_refused.c.submission_id == submission_id)
                .order_by(submission_refused.c.row_number)
            )
        ]
    children = [
        ChildView(k.id, k.service_provider_id, k.name, str(k.integration), k.status, per_child[k.id]) for k in kids
    ]
    status, counts = submission_status(children, len(refused), attempted)
    return SubmissionView(
        id=head.id,
        status=status,
        counts=counts,
        children=children,
        refused=refused,
        created_by=head.created_by,
        created_at=head.created_at,
        change_type=head.change_type,
        idempotency_key=head.idempotency_key,
    )


def iter_submission_results(engine: sa.Engine, submission_id: int, tenant_id: int) -> Iterator[dict[str, Any]]:
    """One row per device of every child (``iter_device_results``' shape plus ``bulkChangeId`` and
    ``serviceProvider``), child by child, then the refused rows (ERROR, no bulk change): one results
    file for the whole submission. Nothing for an unknown or another tenant's submission."""
    view = get_submission(engine, submission_id, tenant_id)
    if view is None:
        return
    for child in view.children:
        for row in iter_device_results(engine, tenant_id, child.bulk_change_id):
            yield {**row, "bulkChangeId": child.bulk_change_id, "serviceProvider": child.service_provider_name}
    for r in view.refused:
        kind, _ = classify(r.identifier)
        ids: dict[str, str | None] = {"iccid": None, "msisdn": None, "imei": None, "eid": None}
        if kind is not None and kind.value in ids and len(r.identifier) <= 40:
            ids[kind.value] = r.identifier
        yield {
            "id": None,
            "device_id": None,
            **ids,
            "status": ERROR,
            "status_details": r.reason,
            "attempt_count": 0,
            "carrier_request_id": None,
            "change_request": {"device": r.identifier, "row": r.row},
            "effective_at": None,
            "processed_at": None,
            "bulkChangeId": None,
            "serviceProvider": None,
        }


# --- operations over every child ------------------------------------------------------------------


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
    return SubmissionOperation(submission_id, done, view.status, view.counts)


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
