"""Settling a bulk change after its run ended without finishing (failed, or stopped by Terminate):
the pipeline's own bookkeeping, not an operator's action, so apart from ``store.operations``
whose primitives (the locked header, the log line, cancelling unsent rows) it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..domain import BulkChangeStatus
from .db import run_transaction
from .device_changes import count_unfinished
from .headers import derive_header, is_async, write_header
from .operations import cancel_unsent_rows, log_event, read_header

__all__ = ["SettleResult", "settle_after_run"]


@dataclass
class SettleResult:
    bulk_change_id: int
    status: str  # the header after settling
    unfinished: int  # rows no run has finished (NEW, left PROCESSING unsent/unconfirmed, SCHEDULED and due)
    cancelled: int  # rows cancelled because the run was stopped
    changed: bool  # False: the header was left alone (a newer attempt owns it)


def settle_after_run(
    engine: sa.Engine, bulk_change_id: int, *, attempt: int | None, note: str, by: str, stop: bool = False
) -> SettleResult:
    """After a run ended without finishing (failed, or stopped by Terminate): make the header say
    what the rows say, and log why.

    - ``stop``: the run was terminated, which means cancel: rows not yet sent end CANCELLED.
    - Rows no run finished (``count_unfinished``) make the header ERROR, with a log line naming
      ``resume``; otherwise the header is derived from the rows like any finalize (a PROCESSED or
      PENDING bulk change stays so: a failure after the work was done does not hide it).
    - ``attempt``: the attempt the ended run belonged to; when ``resume``/``retry-failed`` has
      started a newer attempt meanwhile, that attempt owns the header and only the log is written.
    One transaction, the header row locked (PostgreSQL), so it never interleaves with a resume.
    """

    def work(conn: sa.Connection) -> SettleResult:
        head = read_header(conn, None, bulk_change_id, lock=True)
        if attempt is not None and head.attempt != attempt:
            log_event(
                conn,
                head.tenant_id,
                bulk_change_id,
                f"{note}; attempt {head.attempt} has started since, header left to it",
                by,
            )
            return SettleResult(bulk_change_id, head.status, 0, 0, False)
        cancelled = cancel_unsent_rows(conn, bulk_change_id, f"cancelled: {note}"[:4000]) if stop else 0
        unfinished = count_unfinished(conn, bulk_change_id)
        status, counts = derive_header(conn, bulk_change_id, async_carrier=is_async(head.change_type, head.integration))
        if unfinished:
            status = BulkChangeStatus.ERROR
        write_header(conn, bulk_change_id, status, counts)
        tail = (
            f"{unfinished} device rows unfinished: `bulkchange resume {bulk_change_id}` (or POST /bulk-changes/{bulk_change_id}/resume) finishes them"
            if unfinished
            else f"every device row is settled; bulk change is {status.value}"
        )
        log_event(
            conn,
            head.tenant_id,
            bulk_change_id,
            f"{note}" + (f"; {cancelled} device rows not yet sent are CANCELLED" if cancelled else "") + f"; {tail}",
            by,
            has_errors=bool(unfinished),
        )
        return SettleResult(bulk_change_id, status.value, unfinished, cancelled, True)

    return run_transaction(engine, work)
