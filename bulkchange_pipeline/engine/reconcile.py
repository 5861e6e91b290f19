"""Settle rows that wait on an asynchronous carrier: callbacks first, then polls, then timeouts.

A reconcile pass never waits for a carrier. It applies the callbacks stored since the last pass,
asks the carrier about rows whose answer is overdue (where the carrier has a poll), and ends rows
that got no answer within the timeout as API_FAILED with a reason saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..carriers import CarrierAccount, CarrierAdapter, DeviceResult, build_adapter
from ..domain import DeviceChangeStatus
from ..domain.clock import SYSTEM_CLOCK, Clock
from ..settings import same_account
from ..store.callbacks import AUTHENTICATED_AS, StoredCallback, mark_applied, unapplied_callbacks
from ..store.device_changes import RowResult, WaitingRow, count_polls, record_results, waiting_rows
from .batch import AdapterFactory, device_change_for, result_from_carrier
from .bulk_change import BulkChangeInfo, StepSummary

__all__ = ["CHUNK", "ReconcileSummary", "reconcile", "reconcile_async"]

CHUNK = 5_000


@dataclass
class ReconcileSummary(StepSummary):
    """What one reconcile pass did: its op hands it to finalize and shows it as output metadata."""

    waiting: int = 0
    from_callbacks: int = 0
    from_polls: int = 0
    timed_out: int = 0
    still_waiting: int = 0
    callbacks_applied: int = 0
    seconds: float = 0.0
    sample_failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def carrier_calls(self) -> int:
        """What the run summary counts as this pass's carrier calls: the rows a poll settled."""
        return self.from_polls

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, for Dagster output metadata."""
        return dict(self.__dict__)


@dataclass
class _Pass:
    """One pass's outcome so far: the results to record, the rows they settle, the summary's counts."""

    info: BulkChangeInfo
    now: datetime
    summary: ReconcileSummary
    results: list[RowResult] = field(default_factory=list)
    settled: set[int] = field(default_factory=set)

    def settle(self, w: WaitingRow, answer: DeviceResult) -> None:
        self.results.append(result_from_carrier(self.info, w.row, answer, self.now))
        self.settled.add(w.row.id)

    def give_up(self, w: WaitingRow, reason: str) -> None:
        """End the row API_FAILED with ``reason`` (a timeout, or the carrier's poll limit reached)."""
        self.settle(w, DeviceResult(w.row.id, DeviceChangeStatus.API_FAILED, reason, {}, w.request_id))
        self.summary.timed_out += 1


def reconcile(
    engine: sa.Engine,
    info: BulkChangeInfo,
    account: CarrierAccount,
    *,
    poll_after: timedelta,
    timeout: timedelta,
    process_by: str,
    clock: Clock = SYSTEM_CLOCK,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileSummary:
    """Synchronous entry point (one event loop per pass)."""
    return asyncio.run(
        reconcile_async(
            engine,
            info,
            account,
            poll_after=poll_after,
            timeout=timeout,
            process_by=process_by,
            clock=clock,
            should_stop=should_stop,
            adapter_factory=adapter_factory,
        )
    )


async def reconcile_async(
    engine: sa.Engine,
    info: BulkChangeInfo,
    account: CarrierAccount,
    *,
    poll_after: timedelta,
    timeout: timedelta,
    process_by: str,
    clock: Clock = SYSTEM_CLOCK,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileSummary:
    """One pass: apply stored callbacks, poll overdue rows (``should_stop`` is asked before each
    chunk of polls: a stopped pass polls no more, its rows stay pending), end timed-out rows.
    Whether a row is overdue or timed out is judged at ``clock.now()``, read once per pass."""
    started = time.perf_counter()
    now = clock.now()
    summary = ReconcileSummary()
    waiting = waiting_rows(engine, info.id)
    summary.waiting = len(waiting)
    if not waiting:
        return summary

    work = _Pass(info, now, summary)
    adapter = adapter_factory(account)
    try:
        callbacks, fetch_now = _apply_callbacks(engine, work, adapter, waiting)
        max_polls = adapter.max_polls
        due = [
            w
            for w in waiting
            if w.row.id not in work.settled and (w.request_id in fetch_now or _sent_before(w, now - poll_after))
        ]
        await _poll(engine, work, adapter, due, max_polls, should_stop)
        _time_out(work, waiting, timeout)
    finally:
        await adapter.aclose()
    _record(engine, work, callbacks, process_by)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _sent_before(w: WaitingRow, when: datetime) -> bool:
    return bool(w.sent_at) and w.sent_at <= when


def _apply_callbacks(
    engine: sa.Engine, work: _Pass, adapter: CarrierAdapter, waiting: list[WaitingRow]
) -> tuple[list[StoredCallback], set[str]]:
    """1. Callbacks: match each outcome to its row by request id and any of the row's identifiers.

    Returns the callbacks read (to mark applied once the results are recorded) and the request ids
    whose callback said "the result is ready" (polled right away)."""
    info = work.info
    by_key: dict[tuple[str, str], WaitingRow] = {}
    by_request: dict[str, list[WaitingRow]] = defaultdict(list)
    for w in waiting:
        by_request[w.request_id].append(w)
        for ident in (w.row.iccid, w.row.imei, w.row.eid, w.row.msisdn):
            if ident:
                by_key[(w.request_id, ident)] = w
    callbacks = unapplied_callbacks(engine, info.service_provider.integration.value, list(by_request))
    fetch_now: set[str] = set()
    for cb in callbacks:
        senders = cb.payload.get(AUTHENTICATED_AS) if isinstance(cb.payload, dict) else None
        if isinstance(senders, list) and not same_account(senders, info.service_provider.credentials_name):
            continue  # sent with another account's credentials: it cannot speak for this bulk change
        for outcome in adapter.parse_callback(cb.payload):
            if outcome.status is DeviceChangeStatus.PROCESSING or not outcome.device_key:
                fetch_now.add(outcome.request_id)  # "the result is ready": fetch it below
                continue
            hit = by_key.get((outcome.request_id, outcome.device_key))
            if hit is None or hit.row.id in work.settled:
                continue  # a late duplicate, or a device this bulk change does not hold
            work.settle(
                hit, DeviceResult(hit.row.id, outcome.status, outcome.detail, outcome.new_values, outcome.request_id)
            )
            work.summary.from_callbacks += 1
    return callbacks, fetch_now


async def _poll(
    engine: sa.Engine,
    work: _Pass,
    adapter: CarrierAdapter,
    due: list[WaitingRow],
    max_polls: int | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """2. Polls: rows whose request reported ready, or whose answer is overdue. A row still pending
    after the carrier's ``max_polls`` ends API_FAILED; the others have one more poll counted."""
    info = work.info
    still_pending: list[int] = []
    for start in range(0, len(due), CHUNK):
        if should_stop is not None and should_stop():
            break
        chunk = due[start : start + CHUNK]
        answers = await adapter.poll([device_change_for(info, w.row, w.request_id) for w in chunk])
        for w, answer in zip(chunk, answers, strict=True):
            if answer is not None and answer.status != DeviceChangeStatus.PROCESSING.value:
                work.settle(w, answer)
                work.summary.from_polls += 1
            elif max_polls and w.poll_count + 1 >= max_polls:
                work.give_up(
                    w,
                    f"still pending at {info.service_provider.integration.value} after {max_polls} status polls "
                    f"(request {w.request_id}); giving up as the activation retry policy says",
                )
            else:
                still_pending.append(w.row.id)
    count_polls(engine, still_pending)


def _time_out(work: _Pass, waiting: list[WaitingRow], timeout: timedelta) -> None:
    """3. Timeouts: no answer at all within the limit."""
    carrier = work.info.service_provider.integration.value
    for w in waiting:
        if w.row.id in work.settled or not _sent_before(w, work.now - timeout):
            continue
        work.give_up(
            w,
            f"no answer from {carrier} within {int(timeout.total_seconds() // 60)} min "
            f"(request {w.request_id}): no callback arrived and a poll could not confirm the change",
        )


def _record(engine: sa.Engine, work: _Pass, callbacks: list[StoredCallback], process_by: str) -> None:
    """4. Record the settled rows, mark the callbacks read as applied, and sum the pass up."""
    info, summary = work.info, work.summary
    record_results(
        engine, tenant_id=info.tenant_id, bulk_change_id=info.id, results=work.results, process_by=process_by
    )
    mark_applied(engine, [cb.id for cb in callbacks])
    summary.callbacks_applied = len(callbacks)
    summary.still_waiting = summary.waiting - len(work.settled)
    summary.sample_failures = [
        {"device": str(r.device_change_id), "reason": r.status_details[:200]}
        for r in work.results
        if r.status is not DeviceChangeStatus.PROCESSED
    ][:5]
