"""Process one batch of device rows end to end: claim -> carrier call -> results -> logs.

The order is what makes re-runs safe: rows are claimed (NEW -> PROCESSING) and committed before
any carrier call, so a crash leaves them PROCESSING; the next attempt asks the carrier for the
device's current state before re-sending such a row, and a change the carrier already holds is
recorded as PROCESSED without a second call. A change is never applied twice.

A batch is claimed, sent and recorded in small chunks (``claim_chunk_size``: about two seconds of
the account's rate), not whole: a cancel reaches every row outside the chunk in flight, a
Terminate (``should_stop``) lets the chunk in flight finish and be recorded and starts no other,
and a crash leaves at most two chunks PROCESSING for the next attempt to check at the carrier.

Two, because a chunk's results are written (in a worker thread) while the next chunk is at the
carrier: claim k+1, then write k while sending k+1. The carrier's calls in flight never wait for
our database; each chunk is still claimed before it is sent and written after its answers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..carriers import (
    CarrierAccount,
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    LogEntry,
    WritesDisabledError,
    build_adapter,
    updates_billing,
)
from ..domain import DeviceChangeStatus, Handling
from ..store.db import utcnow
from ..store.device_changes import (
    IdRange,
    LogRow,
    RowResult,
    WorkRow,
    claim,
    known_device_values,
    load_batch,
    record_results,
)
from .accounts import with_billing_account
from .bulk_change import BulkChangeInfo, StepSummary
from .device_values import device_values

__all__ = [
    "CHUNK_SECONDS",
    "UNBOUNDED_IN_FLIGHT",
    "AdapterFactory",
    "BatchSummary",
    "StopCheck",
    "claim_chunk_size",
    "device_change_for",
    "process_batch",
    "process_batch_async",
    "result_from_carrier",
]

AdapterFactory = Callable[[CarrierAccount], CarrierAdapter]
StopCheck = Callable[[], bool]

CHUNK_SECONDS = 2.0  # a chunk is about this long at the account's rate: how soon a stop takes effect
UNBOUNDED_IN_FLIGHT = 64  # what the clients run at once for an account with max_concurrency 0 (no limit)


def claim_chunk_size(info: BulkChangeInfo, account: CarrierAccount, rows: int) -> int:
    """Rows claimed and sent together. An asynchronous carrier takes a whole batch in one request
    (splitting it would multiply requests); a carrier called once per device gets chunks of about
    ``CHUNK_SECONDS`` of its rate, and never fewer than four rounds of its concurrency (so the
    chunk boundary costs little throughput)."""
    if info.handling is Handling.CARRIER_ASYNC:
        return max(rows, 1)
    in_flight = account.max_concurrency if account.max_concurrency > 0 else UNBOUNDED_IN_FLIGHT
    return max(4 * in_flight, math.ceil(account.rate_per_second * CHUNK_SECONDS), 1)


@dataclass
class BatchSummary(StepSummary):
    """What one batch did: ``apply_batch`` hands it to finalize and shows it as output metadata."""

    first_id: int
    last_id: int
    rows: int = 0
    processed: int = 0
    api_failed: int = 0
    processing: int = 0
    recovered: int = 0  # rows a crashed attempt had applied, confirmed at the carrier, not re-sent
    carrier_calls: int = 0
    chunks: int = 0  # claim -> send -> record rounds
    stopped: bool = False  # should_stop said stop: rows after the last chunk sent were left unclaimed
    seconds: float = 0.0
    sample_failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, for Dagster output metadata."""
        return dict(self.__dict__)


def process_batch(
    engine: sa.Engine,
    info: BulkChangeInfo,
    rng: IdRange,
    account: CarrierAccount | None,
    *,
    process_by: str,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: StopCheck | None = None,
    on_record: Callable[[BatchSummary], None] | None = None,
) -> BatchSummary:
    """Synchronous entry point (one event loop per batch)."""
    return asyncio.run(
        process_batch_async(
            engine,
            info,
            rng,
            account,
            process_by=process_by,
            adapter_factory=adapter_factory,
            should_stop=should_stop,
            on_record=on_record,
        )
    )


async def process_batch_async(
    engine: sa.Engine,
    info: BulkChangeInfo,
    rng: IdRange,
    account: CarrierAccount | None,
    *,
    process_by: str,
    adapter_factory: AdapterFactory = build_adapter,
    should_stop: StopCheck | None = None,
    on_record: Callable[[BatchSummary], None] | None = None,
) -> BatchSummary:
    """Claim, send and record the batch's actionable rows chunk by chunk; ``should_stop`` is asked
    before each chunk (a stopped batch leaves its unsent rows unclaimed, for the caller to cancel).

    Each chunk's rows are committed as soon as its answers are in (a chunk is about
    ``CHUNK_SECONDS`` of the account's rate), so progress moves within a batch; ``on_record`` is
    told the running counts after each commit (the Dagster step logs them)."""
    started = time.perf_counter()
    summary = BatchSummary(rng.first_id, rng.last_id)
    stop = should_stop or (lambda: False)
    rows = load_batch(engine, info.id, rng)
    summary.rows = len(rows)
    if not rows:
        return summary
    if stop():
        summary.stopped = True
        return summary

    def record(results: list[RowResult]) -> None:
        record_results(engine, tenant_id=info.tenant_id, bulk_change_id=info.id, results=results, process_by=process_by)
        _count(summary, results)
        if on_record is not None:
            on_record(summary)

    if info.handling is None:
        record(
            [
                _fail(
                    r,
                    DeviceChangeStatus.ERROR,
                    f"{info.change_type.label} is not supported for {info.service_provider.integration.value}",
                )
                for r in rows
            ]
        )
    elif info.handling is Handling.DB:
        claimed = claim(engine, [r.id for r in rows])
        now = utcnow()
        record([_db_result(info, r, now) for r in rows if r.id in claimed])
    else:
        await _carrier_results(engine, info, rows, account, adapter_factory, summary, stop, record)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _count(summary: BatchSummary, results: list[RowResult]) -> None:
    summary.chunks += 1
    for r in results:
        if r.status is DeviceChangeStatus.PROCESSED:
            summary.processed += 1
        elif r.status is DeviceChangeStatus.PROCESSING:
            summary.processing += 1
        else:
            summary.api_failed += 1
            if len(summary.sample_failures) < 5:
                summary.sample_failures.append({"device": str(r.device_change_id), "reason": r.status_details[:200]})


def device_change_for(info: BulkChangeInfo, row: WorkRow, carrier_request_id: str | None = None) -> DeviceChange:
    """The carrier-neutral view of a row. The device's status as our database knows it rides along
    as ``target["current_status"]``, so a carrier that needs it to pick the call (ThingSpace:
    activate or restore) does not have to look every device up first; likewise its active Rev.io
    service flag, for a change that must also update billing."""
    return DeviceChange(
        device_change_id=row.id,
        device_id=row.device_id,
        change_type=info.change_type,
        iccid=row.iccid,
        imei=row.imei,
        msisdn=row.msisdn,
        eid=row.eid,
        target={**row.change_request, "current_status": row.current.get("status")},
        carrier_request_id=carrier_request_id,
        has_active_rev_service=bool(row.current.get("has_active_rev_service")),
    )


def _db_result(info: BulkChangeInfo, row: WorkRow, now: datetime) -> RowResult:
    values = device_values(info.change_type, row.change_request, now)
    return RowResult(
        device_change_id=row.id,
        status=DeviceChangeStatus.PROCESSED,
        status_details=f"{info.change_type.label} applied in the database",
        device_id=row.device_id,
        new_values=values,
        old_values={k: row.current.get(k) for k in values},
        logs=[LogRow(description=f"{info.change_type.label}: database updated ({', '.join(sorted(values))})")],
    )


def _fail(row: WorkRow, status: DeviceChangeStatus, reason: str) -> RowResult:
    return RowResult(
        device_change_id=row.id,
        status=status,
        status_details=reason,
        device_id=row.device_id,
        logs=[LogRow(description=reason, has_errors=True)],
    )


async def _carrier_results(
    engine: sa.Engine,
    info: BulkChangeInfo,
    rows: list[WorkRow],
    account: CarrierAccount | None,
    adapter_factory: AdapterFactory,
    summary: BatchSummary,
    stop: StopCheck,
    record: Callable[[list[RowResult]], None],
) -> None:
    if account is None:
        raise ValueError(
            f"bulk change {info.id} needs a carrier account for service provider {info.service_provider.id}"
        )
    if updates_billing(account.integration, info.change_type) and any(
        r.current.get("has_active_rev_service") for r in rows
    ):
        # The change must reach the lines' Rev.io services too: the adapter gets the tenant's
        # Rev.io account (looked up only when a row has such a service).
        account = with_billing_account(engine, info.tenant_id, account)
    by_id = {r.id: r for r in rows}
    adapter = adapter_factory(account)
    try:
        # Rows an earlier attempt left PROCESSING may already be applied: ask before re-sending.
        leftover = [r for r in rows if r.status == DeviceChangeStatus.PROCESSING.value]
        to_send = [r for r in rows if r.status != DeviceChangeStatus.PROCESSING.value]
        if leftover:
            checks = await adapter.already_applied([device_change_for(info, r) for r in leftover])
            summary.carrier_calls += len(leftover)
            now = utcnow()
            confirmed = []
            for row, found in zip(leftover, checks, strict=True):
                if found is None:
                    to_send.append(row)
                else:
                    summary.recovered += 1
                    confirmed.append(result_from_carrier(info, row, found, now))
            if confirmed:
                record(confirmed)
        to_send.sort(key=lambda r: r.id)
        size = claim_chunk_size(info, account, len(to_send))
        chunks = (to_send[start : start + size] for start in range(0, len(to_send), size))
        registered = False
        recording: asyncio.Future[None] | None = None  # the chunk before, being written meanwhile
        try:
            chunk = _claim_next(engine, chunks, stop, summary)
            while chunk:
                if not registered and account.callback_base_url and account.write_enabled:
                    await adapter.register_callback()  # idempotent: (re)register where this account's callbacks go
                    registered = True
                results = await _send(info, adapter, chunk, by_id, summary)
                if recording is not None:
                    await recording
                    recording = None
                # The next chunk is claimed before this one is written (one writer at a time, which
                # SQLite needs) and sent while it is: the carrier never waits for our database.
                chunk = _claim_next(engine, chunks, stop, summary)
                recording = asyncio.ensure_future(asyncio.to_thread(record, results))
        finally:
            if recording is not None:
                await recording
    finally:
        await adapter.aclose()


def _claim_next(
    engine: sa.Engine, chunks: Iterator[list[WorkRow]], stop: StopCheck, summary: BatchSummary
) -> list[WorkRow]:
    """Claim the next chunk that still has rows to send (a row cancelled meanwhile is not claimed,
    so not sent); empty when none is left or ``stop`` says stop (the unsent rows stay unclaimed)."""
    for rows in chunks:
        if stop():
            summary.stopped = True
            return []
        claimed = claim(engine, [r.id for r in rows])
        chunk = [r for r in rows if r.id in claimed]
        if chunk:
            return chunk
    return []


async def _send(
    info: BulkChangeInfo,
    adapter: CarrierAdapter,
    chunk: list[WorkRow],
    by_id: dict[int, WorkRow],
    summary: BatchSummary,
) -> list[RowResult]:
    """One claimed chunk to the carrier; its rows' results (writes disabled: every row API_FAILED)."""
    try:
        answers = await adapter.apply([device_change_for(info, r) for r in chunk])
        summary.carrier_calls += len(chunk)
    except WritesDisabledError as exc:
        reason = f"Writes disabled for service provider {info.service_provider.name}: {exc}"
        failed = DeviceChangeStatus.API_FAILED
        answers = [DeviceResult(r.id, failed, reason, {}, log=[LogEntry(reason, "", "", None, True)]) for r in chunk]
    now = utcnow()
    return [result_from_carrier(info, by_id[a.device_change_id], a, now) for a in answers]


def result_from_carrier(info: BulkChangeInfo, row: WorkRow, answer: DeviceResult, now: datetime) -> RowResult:
    """The row update a carrier's answer makes (shared with reconcile, which settles rows the same way)."""
    status = DeviceChangeStatus(answer.status)
    new_values: dict[str, Any] = {}
    if status is DeviceChangeStatus.PROCESSED:
        # Our database gets the change's own columns plus whatever the carrier reports it holds.
        # Only columns our device table has: a carrier may report more (e.g. the customer's name).
        reported = known_device_values(answer.new_values or {})
        new_values = {**device_values(info.change_type, row.change_request, now), **reported}
    return RowResult(
        device_change_id=row.id,
        status=status,
        status_details=answer.detail,
        device_id=row.device_id,
        carrier_request_id=answer.carrier_request_id,
        new_values=new_values,
        old_values={k: row.current.get(k) for k in new_values},
        logs=[
            LogRow(
                description=e.description,
                request_text=e.request_text,
                response_text=e.response_text,
                response_status=None if e.response_status is None else str(e.response_status),
                has_errors=e.has_errors,
                response_ms=e.response_ms,
                attempt=e.attempt,
                sent_at=e.sent_at,
            )
            for e in answer.log
        ]
        or [LogRow(description=answer.detail, has_errors=status is not DeviceChangeStatus.PROCESSED)],
    )
