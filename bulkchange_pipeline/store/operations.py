"""Operator actions on a stored bulk change: cancel, retry failed rows, resume, release.

Shared by the HTTP API, the console and the CLI, so all follow one rule set (reading results is
``store.results_paging``; settling after a run that did not finish is ``store.run_settle``). Every function is scoped by
tenant: another tenant's bulk change is "not found", never "forbidden", so ids do not leak.
Each action is one transaction with set-based UPDATEs (never one round trip per device), and
leaves a bulk_change_log row saying who did what to how many rows.

Retry rule (``retry_failed``): a row is retried when it failed *after* it was accepted:
- API_FAILED: the carrier refused it, or the transport retries ran out;
- ERROR with a device and ``attempt_count > 0``: an internal error while it was being processed.
Validation refusals are ERROR rows that were never claimed by a run (``attempt_count = 0``; some
have no device at all): sending them again would fail the same way, so they are never retried;
fix the input and submit again. An unsupported change type is refused before the claim too, so
it is not retried either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus, refused_detail
from .bulk_changes import attempted_if_only_errors, counts_by_status
from .db import run_transaction, utcnow
from .device_changes import count_unfinished
from .headers import derive_header, is_async, write_header
from .results_paging import MAX_PAGE_SIZE, BulkChangeNotFound, bulk_change_exists, last_updated, page_device_results
from .schema import bulk_change, bulk_change_log, device_change, service_provider

__all__ = [
    "log_event",
    "CANCELLABLE",
    "RUNNING",
    "BulkChangeNotFound",
    "CancelResult",
    "OperationRefused",
    "ReleaseResult",
    "ResumeResult",
    "RetryResult",
    "cancel_bulk_change",
    "cancel_unsent_rows",
    "read_header",
    "release_bulk_change",
    "requeue_failed_rows",
    "resume_bulk_change",
    "retry_failed",
    "retryable_condition",
    # Read through ``results_paging``; named here too for ``intake.api`` and ``engine.notify``,
    # which read them as ``operations.*`` (neither is this split's to edit).
    "MAX_PAGE_SIZE",
    "bulk_change_exists",
    "last_updated",
    "page_device_results",
]

S = DeviceChangeStatus
CANCELLABLE = (S.NEW.value, S.SCHEDULED.value)
RUNNING = (BulkChangeStatus.PROCESSING.value, BulkChangeStatus.PENDING.value)


class OperationRefused(ValueError):
    """The action cannot be done in the bulk change's current state; the message says why and what to do."""


@dataclass
class CancelResult:
    bulk_change_id: int
    cancelled: int  # rows NEW/SCHEDULED -> CANCELLED
    still_processing: int  # rows already sent: they finish normally
    status: str  # the header status after the cancel
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class RetryResult:
    bulk_change_id: int
    requeued: int  # rows put back to NEW
    attempt: int  # the bulk change's new attempt number (part of the run key)
    status: str
    counts: dict[str, int] = field(default_factory=dict)


def retryable_condition() -> sa.ColumnElement[bool]:
    """The retry rule (module docstring) as SQL."""
    return sa.or_(
        device_change.c.status == S.API_FAILED.value,
        sa.and_(
            device_change.c.status == S.ERROR.value,
            device_change.c.device_id.is_not(None),
            device_change.c.attempt_count > 0,
        ),
    )


def requeue_failed_rows(conn: sa.Connection, bulk_change_id: int, label: str) -> int:
    """Put the retryable failed rows (``retryable_condition``) back to NEW; returns how many.

    Shared by the API/CLI retry (which also queues a new attempt) and the launchpad's
    ``retry_failed_only`` run (which processes them in the run it is part of).
    """
    return conn.execute(
        sa.update(device_change)
        .where(device_change.c.bulk_change_id == bulk_change_id, retryable_condition())
        .values(
            status=S.NEW.value,
            status_details=sa.literal(f"{label} after: ") + sa.func.coalesce(device_change.c.status_details, ""),
            carrier_request_id=None,
            poll_count=0,
            processed_at=None,
            updated_at=utcnow(),
        )
    ).rowcount


def read_header(
    conn: sa.Connection, tenant_id: int | None, bulk_change_id: int, *, lock: bool = False
) -> sa.Row[*tuple[Any, ...]]:
    """The header an action works on (locked on PostgreSQL when asked); ``tenant_id`` None: the
    pipeline's own call (``run_settle``). Raises BulkChangeNotFound for a missing or archived one."""
    query = (
        sa.select(
            bulk_change.c.id,
            bulk_change.c.tenant_id,
            bulk_change.c.status,
            bulk_change.c.attempt,
            bulk_change.c.change_type,
            service_provider.c.integration,
        )
        .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
        .where(bulk_change.c.id == bulk_change_id, bulk_change.c.deleted_at.is_(None))
    )
    if tenant_id is not None:
        query = query.where(bulk_change.c.tenant_id == tenant_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=bulk_change)
    row = conn.execute(query).first()
    if row is None:
        raise BulkChangeNotFound(f"no bulk change {bulk_change_id} in this tenant")
    return row


def log_event(
    conn: sa.Connection, tenant_id: int, bulk_change_id: int, description: str, by: str, *, has_errors: bool = False
) -> None:
    """One line in the bulk change's log, in the caller's transaction: who did what to it (cancel,
    retry, release, approve, reject...). The one way operations and approvals write that log."""
    conn.execute(
        sa.insert(bulk_change_log).values(
            tenant_id=tenant_id,
            bulk_change_id=bulk_change_id,
            description=description[:4000],
            process_by=by[:200],
            has_errors=has_errors,
            created_at=utcnow(),
        )
    )


def cancel_unsent_rows(conn: sa.Connection, bulk_change_id: int, reason: str) -> int:
    """Rows not yet sent (NEW, SCHEDULED) -> CANCELLED with ``reason``; returns how many.

    A run claims rows in small chunks just before sending them (``engine.batch``), so this reaches
    every row of a running bulk change that is not in the chunk being sent right now, and the
    claim, which only takes NEW/SCHEDULED/PROCESSING rows, never sends a cancelled one."""
    now = utcnow()
    return conn.execute(
        sa.update(device_change)
        .where(device_change.c.bulk_change_id == bulk_change_id, device_change.c.status.in_(CANCELLABLE))
        .values(status=S.CANCELLED.value, status_details=reason[:4000], processed_at=now, updated_at=now)
    ).rowcount


def _nothing_sent(conn: sa.Connection, bulk_change_id: int, counts: dict[str, int]) -> str | None:
    """ "nothing was sent: all N devices were refused at validation" when that is so (every row
    ERROR, none ever claimed by a run), for refusals of actions that have nothing to act on."""
    return refused_detail(counts) if attempted_if_only_errors(conn, bulk_change_id, counts) == 0 else None


def _refuse_awaiting_approval(status: str, bulk_change_id: int) -> None:
    """Resume and retry queue a run: never for a bulk change that waits for its approval."""
    if status == BulkChangeStatus.AWAITING_APPROVAL.value:
        raise OperationRefused(
            f"bulk change {bulk_change_id} is AWAITING_APPROVAL: nothing runs until someone other than its "
            f"submitter approves it (`bulkchange approve {bulk_change_id}` or POST /bulk-changes/{bulk_change_id}/approve)"
        )


def _resubmit_hint(bulk_change_id: int) -> str:
    return (
        f"the reasons are on its device rows (`bulkchange results {bulk_change_id} --csv -`, or GET "
        f"/bulk-changes/{bulk_change_id}/devices?status=ERROR): correct the devices and submit them as a new bulk change"
    )


def cancel_bulk_change(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: str = "unknown") -> CancelResult:
    """Cancel every row not yet sent (NEW, SCHEDULED) in one UPDATE; sent rows finish normally.

    A running batch claims its rows a small chunk at a time, right before sending them, and sends
    only the rows its claim changed: so a cancel reaches a running bulk change within one chunk
    (a few seconds of carrier calls), and a cancelled row is never sent. The header is re-derived
    from the rows; when every row that passed validation ended CANCELLED, the bulk change is
    CANCELLED (refused rows do not make it look processed).
    """

    def work(conn: sa.Connection) -> CancelResult:
        head = read_header(conn, tenant_id, bulk_change_id, lock=True)
        cancelled = cancel_unsent_rows(conn, bulk_change_id, f"cancelled by {by[:150]}")
        if not cancelled:
            counts = counts_by_status(conn, bulk_change_id)
            if detail := _nothing_sent(conn, bulk_change_id, counts):
                raise OperationRefused(f"nothing to cancel: bulk change {bulk_change_id} is {head.status}, {detail}")
            raise OperationRefused(
                f"nothing to cancel: bulk change {bulk_change_id} is {head.status} and none of its "
                f"{sum(counts.values())} device rows is waiting to be sent ({_describe(counts)})"
            )
        status, counts = derive_header(conn, bulk_change_id, async_carrier=is_async(head.change_type, head.integration))
        write_header(conn, bulk_change_id, status, counts)
        processing = counts.get(S.PROCESSING.value, 0)
        log_event(
            conn,
            tenant_id,
            bulk_change_id,
            f"Cancelled by {by}: {cancelled} device rows not yet sent are CANCELLED"
            + (f"; {processing} rows already sent finish normally" if processing else "")
            + f"; bulk change is now {status.value}",
            by,
        )
        return CancelResult(bulk_change_id, cancelled, processing, status.value, counts)

    return run_transaction(engine, work)


@dataclass
class ResumeResult:
    bulk_change_id: int
    unfinished: int  # rows the new attempt will finish
    attempt: int
    status: str
    counts: dict[str, int] = field(default_factory=dict)


def resume_bulk_change(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: str = "unknown") -> ResumeResult:
    """Finish a bulk change a crashed or failed run left half-done: a new attempt of the same
    partition (header NEW, ``attempt + 1``), which the sensor starts once (run key carries the
    attempt). Its run processes the rows left NEW, checks at the carrier each row left PROCESSING
    before sending it again, and finalizes; finished rows are not touched (``retry-failed`` is for
    those). Refused when no row is unfinished, or when the bulk change is already queued (NEW).
    Safe beside a run that is still alive: the run queue runs one run per carrier account at a
    time, and the newer run finds only what the older left."""

    def work(conn: sa.Connection) -> ResumeResult:
        head = read_header(conn, tenant_id, bulk_change_id, lock=True)
        _refuse_awaiting_approval(head.status, bulk_change_id)
        unfinished = count_unfinished(conn, bulk_change_id)
        counts = counts_by_status(conn, bulk_change_id)
        if not unfinished and (detail := _nothing_sent(conn, bulk_change_id, counts)):
            raise OperationRefused(
                f"nothing to resume: bulk change {bulk_change_id} is {head.status}, {detail}; {_resubmit_hint(bulk_change_id)}"
            )
        if not unfinished:
            raise OperationRefused(
                f"nothing to resume: every device row of bulk change {bulk_change_id} is settled or waiting on the carrier "
                f"({_describe(counts)}); use retry-failed for failed rows"
            )
        if head.status == BulkChangeStatus.NEW.value:
            raise OperationRefused(
                f"bulk change {bulk_change_id} is NEW: already queued for a run (attempt {head.attempt})"
            )
        attempt = head.attempt + 1
        _queue_attempt(conn, bulk_change_id, attempt, counts)
        log_event(
            conn,
            tenant_id,
            bulk_change_id,
            f"Resume requested by {by}: {unfinished} unfinished device rows (attempt {attempt})",
            by,
        )
        return ResumeResult(bulk_change_id, unfinished, attempt, BulkChangeStatus.NEW.value, counts)

    return run_transaction(engine, work)


@dataclass
class ReleaseResult:
    bulk_change_id: int
    status: str  # NEW (the sensor starts it) or SCHEDULED (it starts when its date comes)
    counts: dict[str, int] = field(default_factory=dict)


def release_bulk_change(
    engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: str = "unknown", processing: bool = False
) -> ReleaseResult:
    """Let a held bulk change (submitted with ``processChanges=false``: stored and validated, not
    started) run: the sensor requests its run on its next tick, or when its effective date comes
    if it is SCHEDULED. Refused when it is not held, or no longer NEW/SCHEDULED (cancelled)."""

    def work(conn: sa.Connection) -> ReleaseResult:
        head = read_header(conn, tenant_id, bulk_change_id, lock=True)
        held = conn.execute(
            sa.select(bulk_change.c.process_changes).where(bulk_change.c.id == bulk_change_id)
        ).scalar_one()
        if held:
            raise OperationRefused(f"bulk change {bulk_change_id} is not held: it runs as submitted ({head.status})")
        if head.status not in (BulkChangeStatus.NEW.value, BulkChangeStatus.SCHEDULED.value):
            raise OperationRefused(
                f"bulk change {bulk_change_id} is {head.status}: only a NEW or SCHEDULED held bulk change can be released"
            )
        # ``processing``: a run releases what it is about to process; the header turns PROCESSING in
        # the same transaction, so the sensor never sees it NEW and released and starts a second run.
        values: dict[str, Any] = {"process_changes": True}
        if processing:
            values["status"] = BulkChangeStatus.PROCESSING.value
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bulk_change_id).values(**values))
        log_event(conn, tenant_id, bulk_change_id, f"Released by {by}: the sensor starts it", by)
        return ReleaseResult(bulk_change_id, head.status, counts_by_status(conn, bulk_change_id))

    return run_transaction(engine, work)


def retry_failed(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: str = "unknown") -> RetryResult:
    """Put retryable failed rows back to NEW as a new attempt of the bulk change.

    The header goes to NEW with ``attempt + 1``; the sensor (``list_waiting``) then requests a
    run of the same partition with a run key carrying the attempt, so it runs exactly once. The
    carrier request id of each row is cleared (it belonged to the failed attempt). Refused while
    the bulk change is queued or running, since a run would race with the reset.
    """

    def work(conn: sa.Connection) -> RetryResult:
        head = read_header(conn, tenant_id, bulk_change_id, lock=True)
        _refuse_awaiting_approval(head.status, bulk_change_id)
        if head.status in RUNNING or head.status == BulkChangeStatus.NEW.value:
            what = "queued for a run" if head.status == BulkChangeStatus.NEW.value else "still running"
            raise OperationRefused(
                f"bulk change {bulk_change_id} is {head.status} ({what}); retry its failed rows once it has finished"
            )
        attempt = head.attempt + 1
        requeued = requeue_failed_rows(conn, bulk_change_id, f"retry (attempt {attempt})")
        if not requeued:
            counts = counts_by_status(conn, bulk_change_id)
            if detail := _nothing_sent(conn, bulk_change_id, counts):
                raise OperationRefused(
                    f"nothing to retry: bulk change {bulk_change_id} is {head.status}, {detail} (a refusal fails the same "
                    f"way every time); {_resubmit_hint(bulk_change_id)}"
                )
            raise OperationRefused(
                f"nothing to retry in bulk change {bulk_change_id} ({_describe(counts)}): only API_FAILED rows and rows that "
                "failed while processing are retried; rows refused at validation need corrected input and a new submission"
            )
        counts = counts_by_status(conn, bulk_change_id)
        _queue_attempt(conn, bulk_change_id, attempt, counts)
        log_event(
            conn,
            tenant_id,
            bulk_change_id,
            f"Retry requested by {by}: {requeued} failed device rows back to NEW (attempt {attempt})",
            by,
        )
        return RetryResult(bulk_change_id, requeued, attempt, BulkChangeStatus.NEW.value, counts)

    return run_transaction(engine, work)


def _queue_attempt(conn: sa.Connection, bulk_change_id: int, attempt: int, counts: dict[str, int]) -> None:
    """Header NEW as attempt ``attempt``: the sensor requests one run for it (run key ``bc-<id>-a<attempt>``)."""
    conn.execute(
        sa.update(bulk_change)
        .where(bulk_change.c.id == bulk_change_id)
        .values(status=BulkChangeStatus.NEW.value, attempt=attempt, counts=counts, processed_at=None, effective_at=None)
    )


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no device rows"
