"""Submissions: one request split across service providers, stored and read as one (issue 21).

A request without a service provider (``intake.split``) becomes a ``submission`` row, one child
bulk change per service provider (``bulk_change.submission_id``) and the devices it could not place
(``submission_refused``), all in ONE transaction: a failure stores nothing. Each child is an
ordinary bulk change (its own partition, run, approval, cancel); the parent only groups them.

The parent's status and outcome are derived whenever they are read, never stored
(``submission_state``: the one answer to "is this submission final, and how did it end" that the
API, the CLI's watch, the console and the drop outbox all use), so they cannot drift from the
children. The idempotency key lives on the parent and is claimed in ``store.idempotency``'s table
in the same transaction: a key is one submission or one bulk change per tenant, never both.
Operations over every child (cancel, retry-failed, release, approve, reject) are in
``store.submission_ops``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import FINAL_DEVICE_STATUSES, BulkChangeStatus, DeviceChangeStatus, Outcome, classify, outcome_of
from .bulk_changes import NewBulkChange, insert_bulk_change
from .db import run_transaction, utcnow
from .device_rows import iter_device_results
from .headers import status_from_counts
from .idempotency import claim_key, holder_for
from .schema import bulk_change, device_change, service_provider, submission, submission_refused

__all__ = [
    "HELD_STATUSES",
    "ChildView",
    "NewSubmission",
    "RefusedRow",
    "StoredSubmission",
    "SubmissionState",
    "SubmissionView",
    "child_ids",
    "create_submission",
    "find_submission_by_key",
    "get_submission",
    "iter_submission_results",
    "submission_state",
]

ERROR = DeviceChangeStatus.ERROR.value
FINAL = BulkChangeStatus.final_values()
FINAL_ROWS = frozenset(s.value for s in FINAL_DEVICE_STATUSES)
HELD_STATUSES = (BulkChangeStatus.NEW.value, BulkChangeStatus.SCHEDULED.value)
UNFINISHED_ROWS = (DeviceChangeStatus.NEW.value, DeviceChangeStatus.PROCESSING.value)


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
    held: bool = False  # submitted with processChanges=false and not released yet (NEW or SCHEDULED)

    @property
    def unfinished(self) -> bool:
        """Its run stopped (header ERROR) with rows left to send: ``resume`` finishes them."""
        return self.status == ERROR and any(self.counts.get(s, 0) for s in UNFINISHED_ROWS)


@dataclass(frozen=True)
class SubmissionState:
    """The parent's derived status, operator outcome and summed counts. ``final`` exactly when
    every child's header is final (PROCESSED, ERROR or CANCELLED), as for a single bulk change."""

    status: str
    outcome: Outcome
    counts: dict[str, int]  # the children's device rows by status plus the refused rows as ERROR

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Rows that reached a final status (progress: ``done`` of ``total``)."""
        return sum(n for s, n in self.counts.items() if s in FINAL_ROWS)


@dataclass
class SubmissionView:
    id: int
    state: SubmissionState
    children: list[ChildView]
    refused: list[RefusedRow]
    created_by: str
    created_at: datetime
    change_type: int
    idempotency_key: str | None = None

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def outcome(self) -> Outcome:
        return self.state.outcome

    @property
    def counts(self) -> dict[str, int]:
        return self.state.counts

    @property
    def total(self) -> int:
        return self.state.total

    @property
    def done(self) -> int:
        return self.state.done

    @property
    def final(self) -> bool:
        return self.state.final


def find_submission_by_key(
    engine: sa.Engine | sa.Connection, tenant_id: int, key: str, fingerprint: str | None
) -> int | None:
    """This tenant's submission stored with ``key`` for the same request, or None when the key is
    unused. ``IdempotencyConflict`` when a submission holds it for another request (fingerprint),
    or when a bulk change holds it (``store.idempotency``)."""
    return holder_for(engine, tenant_id, key, fingerprint, "submission")


def create_submission(engine: sa.Engine, new: NewSubmission) -> StoredSubmission:
    """Store the parent, every child with its device rows, and the refused rows in ONE transaction.

    The key is claimed (``store.idempotency.claim_key``) right after the parent row, in the same
    transaction, so a concurrent bulk change or submission with the key cannot also commit. The
    loser (or a repeat) with the same request gets the stored submission (``created`` False);
    with another request, or against a bulk change, ``IdempotencyConflict`` naming the holder.
    """
    key = (new.idempotency_key or "").strip() or None
    now = utcnow()

    def work(conn: sa.Connection) -> StoredSubmission:
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
        if key:
            claim_key(conn, new.tenant_id, key, submission_id=sid)
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


def submission_state(children: Sequence[ChildView], refused: int, attempted: int) -> SubmissionState:
    """The parent's status, outcome and counts, derived from its children (never stored): the ONE
    answer to "is this submission final and how did it end" (API, CLI watch, console, drop outbox).

    - any child AWAITING_APPROVAL: AWAITING_APPROVAL (the policy holds the whole submission);
    - a child still open (header not final): the summed rows' status of the children not cancelled,
      never a final one while a child is open; outcome ``held`` when every open child is held
      (processChanges=false, not released), else what the status says (in progress, scheduled,
      waiting on the carrier);
    - every child final: ERROR / ``unfinished`` when a child's run stopped with rows left (resume
      it); CANCELLED when every child with devices to send was cancelled; otherwise the summed
      rows' status with the refused devices as ERROR (ERROR when nothing was ever sent).

    Before any row was claimed (``attempted`` 0) the refusals are left out of an open submission's
    status, as a fresh bulk change's are (``initial_status``): NEW children with refusals are NEW.
    """
    counts = _summed(children)
    if refused:
        counts[ERROR] = counts.get(ERROR, 0) + refused
    if any(c.status == BulkChangeStatus.AWAITING_APPROVAL.value for c in children):
        return SubmissionState(BulkChangeStatus.AWAITING_APPROVAL.value, Outcome.AWAITING_APPROVAL, counts)
    open_ = [c for c in children if c.status not in FINAL]
    if open_:
        if all(c.held for c in open_):
            status = _derived(_summed(open_), open_, 0)
            return SubmissionState(status, Outcome.HELD, counts)
        live = _summed(c for c in children if c.status != BulkChangeStatus.CANCELLED.value)
        if refused and attempted:
            live[ERROR] = live.get(ERROR, 0) + refused
        status = _derived(live, open_, attempted)
        if status in FINAL:  # a child's header has not caught up with its rows yet: not final before it
            status = BulkChangeStatus.PROCESSING.value
        return SubmissionState(status, outcome_of(status, counts), counts)
    if any(c.unfinished for c in children):
        return SubmissionState(ERROR, Outcome.UNFINISHED, counts)
    sent = [c for c in children if not _nothing_to_send(c)]
    if sent and all(c.status == BulkChangeStatus.CANCELLED.value for c in sent):
        return SubmissionState(BulkChangeStatus.CANCELLED.value, Outcome.CANCELLED, counts)
    live = _summed(c for c in children if c.status != BulkChangeStatus.CANCELLED.value)
    if refused:
        live[ERROR] = live.get(ERROR, 0) + refused
    status = status_from_counts(live, async_carrier=False, attempted=attempted).value
    if status not in FINAL:  # every header final: so is the parent
        status = BulkChangeStatus.PROCESSED.value
    return SubmissionState(status, outcome_of(status, counts), counts)


def _summed(children: Iterable[ChildView]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in children:
        for status, n in child.counts.items():
            counts[status] = counts.get(status, 0) + n
    return counts


def _nothing_to_send(child: ChildView) -> bool:
    """Every device of the child was refused at validation (e.g. a change type its carrier cannot do)."""
    return child.status == ERROR and set(k for k, v in child.counts.items() if v) <= {ERROR}


def _derived(counts: dict[str, int], open_: Sequence[ChildView], attempted: int) -> str:
    pending = any(c.status == BulkChangeStatus.PENDING.value for c in open_)
    if attempted == 0:
        live = {k: v for k, v in counts.items() if k != ERROR and v}
        if live:
            return status_from_counts(live, async_carrier=pending, attempted=None).value
    return status_from_counts(counts, async_carrier=pending, attempted=attempted).value


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
                bulk_change.c.process_changes,
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
        ChildView(
            k.id,
            k.service_provider_id,
            k.name,
            str(k.integration),
            k.status,
            per_child[k.id],
            held=not k.process_changes and k.status in HELD_STATUSES,
        )
        for k in kids
    ]
    return SubmissionView(
        id=head.id,
        state=submission_state(children, len(refused), attempted),
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
