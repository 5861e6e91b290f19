"""Four-eyes approval in the database: tenants' policies, approval requests, approve / reject / expire.

A bulk change the tenant's policy (``domain.approval``) says needs approval is stored with header
status AWAITING_APPROVAL and one ``bulk_change_approval`` row (``insert_pending``, in the same
transaction as the bulk change). The sensor starts runs of NEW bulk changes only, so nothing is
sent until ``approve`` moves the header to what its rows say (NEW, or SCHEDULED).

Race safety: approve, reject, expiry and cancel can arrive at the same moment. Each decision is one
conditional ``UPDATE bulk_change ... WHERE status = 'AWAITING_APPROVAL'`` that only one transaction
can win: on PostgreSQL the second waits for the first's row lock, re-reads the row and matches
nothing (READ COMMITTED re-checks the WHERE), so it is refused; a cancel locks the header first
(``operations.cancel_bulk_change``). Whoever loses is told what happened instead.

Who submitted, approved or rejected, and when, is in the approval row and in the bulk change's log
(``bulk_change_log``), which the run summary and the API status answer read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus, derive_bulk_status
from ..domain.approval import DEFAULT_EXPIRES_AFTER_HOURS, ApprovalPolicy, ApprovalState, self_approval_reason
from .bulk_changes import counts_by_status
from .db import run_transaction, utcnow
from .headers import derive_header, write_header
from .operations import BulkChangeNotFound, OperationRefused, cancel_unsent_rows, log_event
from .schema import approval_policy, bulk_change, bulk_change_approval

__all__ = [
    "AWAITING",
    "Actor",
    "DecisionResult",
    "SelfApprovalRefused",
    "approval_of",
    "approve_bulk_change",
    "cli_actor",
    "expire_overdue",
    "get_approval",
    "get_policy",
    "insert_pending",
    "reject_bulk_change",
    "set_policy",
]

AWAITING = BulkChangeStatus.AWAITING_APPROVAL.value
EXPIRY_ACTOR = "approval-expiry"


@dataclass(frozen=True)
class Actor:
    """Who acts: ``label`` is shown (created_by, logs, the approval object); ``principal`` is who it
    is for the four-eyes rule (an API key by its id, so two keys with the same name stay two
    people; the CLI by its operator name)."""

    label: str
    principal: str


def cli_actor(name: str) -> Actor:
    """The CLI's operator: ``cli:NAME`` (a leading ``cli:`` in NAME is not doubled), shown and compared."""
    name = name.strip()
    label = name if name.startswith("cli:") else f"cli:{name}"
    return Actor(label[:200], label[:200])


class SelfApprovalRefused(PermissionError):
    """The approver submitted the bulk change itself (the API answers 403)."""


@dataclass
class DecisionResult:
    bulk_change_id: int
    state: str  # ApprovalState value
    status: str  # the header after the decision
    decided_by: str
    decided_at: datetime
    counts: dict[str, int] = field(default_factory=dict)


# --- policy ---------------------------------------------------------------------------------------


def get_policy(engine: sa.Engine | sa.Connection, tenant_id: int) -> ApprovalPolicy:
    """The tenant's policy; without one, nothing needs approval."""
    query = sa.select(approval_policy).where(approval_policy.c.tenant_id == tenant_id)
    if isinstance(engine, sa.Connection):
        row = engine.execute(query).first()
    else:
        with engine.connect() as conn:
            row = conn.execute(query).first()
    if row is None:
        return ApprovalPolicy()
    return ApprovalPolicy(row.max_devices, bool(row.irreversible), row.expires_after_hours)


def set_policy(engine: sa.Engine, tenant_id: int, policy: ApprovalPolicy) -> ApprovalPolicy:
    """Store the tenant's policy (replacing the previous one)."""
    if policy.max_devices is not None and policy.max_devices < 0:
        raise ValueError("max devices is a number of devices, 0 or more")
    if not 1 <= policy.expires_after_hours <= 24 * 365:
        raise ValueError("expires after hours must be from 1 to 8760 (a year)")
    values = {
        "max_devices": policy.max_devices,
        "irreversible": policy.irreversible,
        "expires_after_hours": policy.expires_after_hours,
        "updated_at": utcnow(),
    }

    def work(conn: sa.Connection) -> None:
        done = conn.execute(
            sa.update(approval_policy).where(approval_policy.c.tenant_id == tenant_id).values(**values)
        ).rowcount
        if not done:
            conn.execute(sa.insert(approval_policy).values(tenant_id=tenant_id, **values))

    run_transaction(engine, work)
    return policy


# --- approval requests ----------------------------------------------------------------------------


def insert_pending(
    conn: sa.Connection,
    *,
    bulk_change_id: int,
    tenant_id: int,
    needed_because: str,
    submitted: Actor,
    expires_after_hours: int = DEFAULT_EXPIRES_AFTER_HOURS,
) -> None:
    """The approval request of a bulk change just stored AWAITING_APPROVAL (the caller's transaction)."""
    now = utcnow()
    expires = now + timedelta(hours=expires_after_hours)
    conn.execute(
        sa.insert(bulk_change_approval).values(
            bulk_change_id=bulk_change_id,
            tenant_id=tenant_id,
            state=ApprovalState.PENDING.value,
            needed_because=needed_because[:4000],
            submitted_by=submitted.label[:200],
            submitted_principal=submitted.principal[:200],
            requested_at=now,
            expires_at=expires,
        )
    )
    log_event(
        conn,
        tenant_id,
        bulk_change_id,
        f"Submitted by {submitted.label}; awaiting approval because {needed_because}; "
        f"expires at {expires.isoformat(timespec='seconds')}Z unless approved or rejected",
        submitted.label,
    )


def approval_of(conn: sa.Connection, bulk_change_id: int, header_status: str) -> dict[str, Any] | None:
    """The approval of a bulk change as the API and summaries show it, or None (none was needed).

    A pending request whose bulk change is no longer waiting was cancelled meanwhile: shown so."""
    row = conn.execute(
        sa.select(bulk_change_approval).where(bulk_change_approval.c.bulk_change_id == bulk_change_id)
    ).first()
    if row is None:
        return None
    state = row.state
    if state == ApprovalState.PENDING.value and header_status != AWAITING:
        state = ApprovalState.CANCELLED.value
    return {
        "state": state,
        "needed_because": row.needed_because,
        "submitted_by": row.submitted_by,
        "requested_at": row.requested_at,
        "expires_at": row.expires_at,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at,
        "reason": row.reason,
    }


def _request(conn: sa.Connection, tenant_id: int | None, bulk_change_id: int) -> sa.Row[Any]:
    query = (
        sa.select(bulk_change.c.id, bulk_change.c.tenant_id, bulk_change.c.status, bulk_change_approval)
        .select_from(
            bulk_change.outerjoin(bulk_change_approval, bulk_change_approval.c.bulk_change_id == bulk_change.c.id)
        )
        .where(bulk_change.c.id == bulk_change_id, bulk_change.c.deleted_at.is_(None))
    )
    if tenant_id is not None:
        query = query.where(bulk_change.c.tenant_id == tenant_id)
    row = conn.execute(query).first()
    if row is None:
        raise BulkChangeNotFound(f"no bulk change {bulk_change_id} in this tenant")
    return row


def _refusal(row: sa.Row[Any], status: str) -> OperationRefused:
    """Why a decision cannot be taken any more (another one won, or the bulk change never waited)."""
    if row.state is None:
        return OperationRefused(f"bulk change {row.id} is {status}: it does not need approval")
    if row.decided_by:
        return OperationRefused(
            f"bulk change {row.id} is no longer awaiting approval: {row.state} by {row.decided_by} "
            f"at {row.decided_at.isoformat(timespec='seconds')}Z (it is {status})"
        )
    return OperationRefused(f"bulk change {row.id} is no longer awaiting approval (it is {status})")


def _won(conn: sa.Connection, bulk_change_id: int, status: str) -> bool:
    """The one conditional UPDATE that decides a waiting bulk change (module docstring)."""
    return (
        conn.execute(
            sa.update(bulk_change)
            .where(bulk_change.c.id == bulk_change_id, bulk_change.c.status == AWAITING)
            .values(status=status)
        ).rowcount
        == 1
    )


def _current_status(conn: sa.Connection, bulk_change_id: int) -> str:
    return str(conn.execute(sa.select(bulk_change.c.status).where(bulk_change.c.id == bulk_change_id)).scalar_one())


def _record(conn: sa.Connection, bulk_change_id: int, state: ApprovalState, by: str, reason: str | None) -> datetime:
    now = utcnow()
    conn.execute(
        sa.update(bulk_change_approval)
        .where(bulk_change_approval.c.bulk_change_id == bulk_change_id)
        .values(state=state.value, decided_by=by[:200], decided_at=now, reason=reason)
    )
    return now


def approve_bulk_change(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: Actor) -> DecisionResult:
    """Approve a waiting bulk change: its header becomes what its rows say (NEW: the sensor starts
    it; SCHEDULED: when its date comes). Refused for the submitter itself (``SelfApprovalRefused``)
    and when it is not waiting (``OperationRefused``: decided, expired, cancelled, never needed)."""

    def work(conn: sa.Connection) -> DecisionResult:
        row = _request(conn, tenant_id, bulk_change_id)
        if row.state is not None and (why := self_approval_reason(row.submitted_principal, by.principal)):
            raise SelfApprovalRefused(f"{by.label} submitted bulk change {bulk_change_id}: {why}")
        counts = counts_by_status(conn, bulk_change_id)
        live = {k: v for k, v in counts.items() if k != DeviceChangeStatus.ERROR.value}
        status = derive_bulk_status(live)  # NEW or SCHEDULED: refused rows do not make it look started
        if row.state is None or not _won(conn, bulk_change_id, status.value):
            raise _refusal(row, _current_status(conn, bulk_change_id))
        at = _record(conn, bulk_change_id, ApprovalState.APPROVED, by.label, None)
        log_event(
            conn,
            row.tenant_id,
            bulk_change_id,
            f"Approved by {by.label} (submitted by {row.submitted_by}); bulk change is now {status.value}",
            by.label,
        )
        return DecisionResult(bulk_change_id, ApprovalState.APPROVED.value, status.value, by.label, at, counts)

    return run_transaction(engine, work)


def _end(
    conn: sa.Connection, row: sa.Row[Any], state: ApprovalState, by: str, reason: str, what: str
) -> DecisionResult:
    """Reject or expire: rows not sent (all of them) end CANCELLED with the reason; header derived."""
    bc_id = int(row.id)
    if row.state is None or not _won(conn, bc_id, BulkChangeStatus.CANCELLED.value):
        raise _refusal(row, _current_status(conn, bc_id))
    cancel_unsent_rows(conn, bc_id, f"{what}: {reason}"[:4000])
    status, counts = derive_header(conn, bc_id, async_carrier=False)  # nothing was sent: no carrier answer pending
    write_header(conn, bc_id, status, counts)
    at = _record(conn, bc_id, state, by, reason)
    log_event(conn, row.tenant_id, bc_id, f"{what} (submitted by {row.submitted_by}): {reason}", by)
    return DecisionResult(bc_id, state.value, status.value, by, at, counts)


def reject_bulk_change(
    engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: Actor, reason: str
) -> DecisionResult:
    """Reject a waiting bulk change with a reason (required): every row ends CANCELLED, the header
    CANCELLED, nothing is sent. The submitter may reject (withdraw) its own: four eyes are needed to
    act, not to refrain."""
    if not reason.strip():
        raise ValueError("a rejection needs a reason")

    def work(conn: sa.Connection) -> DecisionResult:
        row = _request(conn, tenant_id, bulk_change_id)
        return _end(conn, row, ApprovalState.REJECTED, by.label, reason, f"Rejected by {by.label}")

    return run_transaction(engine, work)


def expire_overdue(engine: sa.Engine, now: datetime, limit: int = 100) -> list[DecisionResult]:
    """End the waiting bulk changes whose approval expired before ``now`` (the sensor's tick); each
    in its own transaction, so one that was decided meanwhile is skipped, not an error."""
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(bulk_change_approval.c.bulk_change_id)
            .join(bulk_change, bulk_change.c.id == bulk_change_approval.c.bulk_change_id)
            .where(
                bulk_change_approval.c.state == ApprovalState.PENDING.value,
                bulk_change_approval.c.expires_at <= now,
                bulk_change.c.status == AWAITING,
                bulk_change.c.deleted_at.is_(None),
            )
            .order_by(bulk_change_approval.c.expires_at)
            .limit(limit)
        ).scalars()
        due = list(ids)
    ended = []
    for bc_id in due:

        def work(conn: sa.Connection, bc_id: int = bc_id) -> DecisionResult:
            row = _request(conn, None, bc_id)
            hours = round((row.expires_at - row.requested_at).total_seconds() / 3600)
            reason = f"nobody approved or rejected it within {hours} hours"
            return _end(conn, row, ApprovalState.EXPIRED, EXPIRY_ACTOR, reason, "Approval expired")

        try:
            ended.append(run_transaction(engine, work))
        except (OperationRefused, BulkChangeNotFound):
            continue  # decided or cancelled between the query and now
    return ended


def get_approval(engine: sa.Engine, bulk_change_id: int, header_status: str) -> dict[str, Any] | None:
    """``approval_of`` in a connection of its own (the API's status answer, the run summary)."""
    with engine.connect() as conn:
        return approval_of(conn, bulk_change_id, header_status)
