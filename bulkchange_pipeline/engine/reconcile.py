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

from ..carriers import CarrierAccount, DeviceResult, build_adapter
from ..domain import DeviceChangeStatus
from ..store.callbacks import AUTHENTICATED_AS, mark_applied, unapplied_callbacks
from ..store.db import utcnow
from ..store.device_changes import RowResult, WorkRow, count_polls, record_results
from ..store.schema import DEVICE_CHANGE_FIELDS, device, device_change
from .accounts import sent_by
from .batch import AdapterFactory, _from_carrier, device_change_for
from .bulk_change import BulkChangeInfo

CHUNK = 5_000


@dataclass
class ReconcileSummary:
    waiting: int = 0
    from_callbacks: int = 0
    from_polls: int = 0
    timed_out: int = 0
    still_waiting: int = 0
    callbacks_applied: int = 0
    seconds: float = 0.0
    sample_failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Waiting:
    row: WorkRow
    request_id: str
    sent_at: datetime
    poll_count: int = 0


def _waiting_rows(engine: sa.Engine, bulk_change_id: int) -> list[_Waiting]:
    cols = [device.c[name].label(f"cur_{name}") for name in DEVICE_CHANGE_FIELDS]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(device_change, *cols)
            .select_from(device_change.outerjoin(device, device.c.id == device_change.c.device_id))
            .where(
                device_change.c.bulk_change_id == bulk_change_id,
                device_change.c.status == DeviceChangeStatus.PROCESSING.value,
                device_change.c.carrier_request_id.is_not(None),
            )
            .order_by(device_change.c.id)
        ).all()
    out = []
    for r in rows:
        m = r._mapping
        work = WorkRow(
            id=m["id"], device_id=m["device_id"], status=m["status"], iccid=m["iccid"], msisdn=m["msisdn"],
            imei=m["imei"], eid=m["eid"], change_request=m["change_request"] or {}, attempt_count=m["attempt_count"],
            current={name: m[f"cur_{name}"] for name in DEVICE_CHANGE_FIELDS},
        )
        out.append(_Waiting(work, m["carrier_request_id"], m["updated_at"], m["poll_count"]))
    return out


def reconcile(
    engine: sa.Engine,
    info: BulkChangeInfo,
    account: CarrierAccount,
    *,
    poll_after: timedelta,
    timeout: timedelta,
    process_by: str,
    now: datetime | None = None,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileSummary:
    return asyncio.run(
        reconcile_async(engine, info, account, poll_after=poll_after, timeout=timeout, process_by=process_by, now=now,
                        should_stop=should_stop,
                        adapter_factory=adapter_factory)
    )


async def reconcile_async(
    engine: sa.Engine,
    info: BulkChangeInfo,
    account: CarrierAccount,
    *,
    poll_after: timedelta,
    timeout: timedelta,
    process_by: str,
    now: datetime | None = None,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileSummary:
    """One pass: apply stored callbacks, poll overdue rows (``should_stop`` is asked before each
    chunk of polls: a stopped pass polls no more, its rows stay pending), end timed-out rows."""
    started = time.perf_counter()
    now = now or utcnow()
    summary = ReconcileSummary()
    waiting = _waiting_rows(engine, info.id)
    summary.waiting = len(waiting)
    if not waiting:
        return summary

    adapter = adapter_factory(account)
    results: list[RowResult] = []
    settled: set[int] = set()
    try:
        # 1. Callbacks: match each outcome to its row by request id and any of the row's identifiers.
        by_key: dict[tuple[str, str], _Waiting] = {}
        by_request: dict[str, list[_Waiting]] = defaultdict(list)
        for w in waiting:
            by_request[w.request_id].append(w)
            for ident in (w.row.iccid, w.row.imei, w.row.eid, w.row.msisdn):
                if ident:
                    by_key[(w.request_id, ident)] = w
        callbacks = unapplied_callbacks(engine, info.service_provider.integration.value, list(by_request))
        fetch_now: set[str] = set()
        for cb in callbacks:
            senders = cb.payload.get(AUTHENTICATED_AS) if isinstance(cb.payload, dict) else None
            if isinstance(senders, list) and not sent_by(senders, info.service_provider.credentials_name):
                continue  # sent with another account's credentials: it cannot speak for this bulk change
            for outcome in adapter.parse_callback(cb.payload):
                if outcome.status == DeviceChangeStatus.PROCESSING.value or not outcome.device_key:
                    fetch_now.add(outcome.request_id)  # "the result is ready": fetch it below
                    continue
                w = by_key.get((outcome.request_id, outcome.device_key))
                if w is None or w.row.id in settled:
                    continue  # a late duplicate, or a device this bulk change does not hold
                answer = DeviceResult(w.row.id, outcome.status, outcome.detail, outcome.new_values, outcome.request_id)
                results.append(_from_carrier(info, w.row, answer, now))
                settled.add(w.row.id)
                summary.from_callbacks += 1

        # 2. Polls: rows whose request reported ready, or whose answer is overdue.
        to_poll = [
            w for w in waiting
            if w.row.id not in settled and (w.request_id in fetch_now or (w.sent_at and w.sent_at <= now - poll_after))
        ]
        max_polls = getattr(adapter, "max_polls", None)
        still_pending: list[int] = []
        for start in range(0, len(to_poll), CHUNK):
            if should_stop is not None and should_stop():
                break
            chunk = to_poll[start : start + CHUNK]
            answers = await adapter.poll([device_change_for(info, w.row, w.request_id) for w in chunk])
            for w, answer in zip(chunk, answers):
                if answer is not None and answer.status != DeviceChangeStatus.PROCESSING.value:
                    results.append(_from_carrier(info, w.row, answer, now))
                    settled.add(w.row.id)
                    summary.from_polls += 1
                elif max_polls and w.poll_count + 1 >= max_polls:
                    reason = (
                        f"still pending at {info.service_provider.integration.value} after {max_polls} status polls "
                        f"(request {w.request_id}); giving up as the activation retry policy says"
                    )
                    answer = DeviceResult(w.row.id, DeviceChangeStatus.API_FAILED.value, reason, {}, w.request_id)
                    results.append(_from_carrier(info, w.row, answer, now))
                    settled.add(w.row.id)
                    summary.timed_out += 1
                else:
                    still_pending.append(w.row.id)
        count_polls(engine, still_pending)

        # 3. Timeouts: no answer at all within the limit.
        for w in waiting:
            if w.row.id in settled or not w.sent_at or w.sent_at > now - timeout:
                continue
            reason = (
                f"no answer from {info.service_provider.integration.value} within {int(timeout.total_seconds() // 60)} min "
                f"(request {w.request_id}): no callback arrived and a poll could not confirm the change"
            )
            answer = DeviceResult(w.row.id, DeviceChangeStatus.API_FAILED.value, reason, {}, w.request_id)
            results.append(_from_carrier(info, w.row, answer, now))
            settled.add(w.row.id)
            summary.timed_out += 1
    finally:
        await adapter.aclose()

    record_results(engine, tenant_id=info.tenant_id, bulk_change_id=info.id, results=results, process_by=process_by)
    mark_applied(engine, [cb.id for cb in callbacks])
    summary.callbacks_applied = len(callbacks)
    summary.still_waiting = summary.waiting - len(settled)
    summary.sample_failures = [
        {"device": str(r.device_change_id), "reason": r.status_details[:200]}
        for r in results if r.status is not DeviceChangeStatus.PROCESSED
    ][:5]
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
