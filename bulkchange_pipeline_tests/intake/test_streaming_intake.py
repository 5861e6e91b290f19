"""A big CSV file goes through intake chunk by chunk (issue 22, R4): memory stays that of a chunk,
the rows are written in one transaction (a failure stores nothing), the rules that span the file
(duplicates, idempotency) see all of it, and the HTTP app keeps answering while it validates one;
one big upload more than ``BULKCHANGE_MAX_CONCURRENT_UPLOADS`` is answered 429 with Retry-After.

The memory and latency tests use small files cut into many small chunks (``SMALL_CHUNK``), so they
take seconds, not minutes: memory is judged by its growth per row between two file sizes, latency
by the probes answered while the chunks are validated. Each was seen to fail against a broken
variant: the file materialised as one list (about 1,900 bytes a row against under 400), and the
upload validated on the event loop (no probe answered in 1.5 s of validation)."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import DeviceChangeStatus, luhn_check_digit
from bulkchange_pipeline.intake import submit as submit_module
from bulkchange_pipeline.intake.app import RETRY_AFTER_SECONDS, create_app
from bulkchange_pipeline.intake.csv_file import CsvDevices, parse_csv
from bulkchange_pipeline.intake.parsing import IntakeLimits
from bulkchange_pipeline.intake.submit import request_fingerprint, submit
from bulkchange_pipeline.intake.validation import CHUNK_ROWS, validate_request
from bulkchange_pipeline.settings import MAX_CONCURRENT_UPLOADS_ENV
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.store import bulk_changes as store  # create_bulk_change's write_rows, patched
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.idempotency import IdempotencyConflict
from bulkchange_pipeline.store.schema import bulk_change, device, device_change
from bulkchange_pipeline.store.seed import DemoSeed

BIG = 2 * CHUNK_ROWS + 5_000  # three chunks, the last one short
SMALL_CHUNK = 500  # rows per chunk in the memory and latency tests: many chunks from a small file
HEALTHZ_ROWS = 12_000  # about a second of validation in SMALL_CHUNK chunks
MAX_BYTES_PER_ROW = 400  # held across the chunks; a DeviceEntry or NewDeviceChange per row is over 1,000


def _iccid(n: int) -> str:
    body = f"8901770{n:012d}"
    return body + luhn_check_digit(body)


def _add_devices(engine: sa.Engine, seed: DemoSeed, n: int) -> list[str]:
    """``n`` ACTIVATED Jasper devices of the seed's tenant, in one executemany."""
    sp = seed.service_providers["jasper"]
    iccids = [_iccid(i) for i in range(n)]
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(device),
            [
                {
                    "tenant_id": seed.tenant_id,
                    "service_provider_id": sp,
                    "iccid": i,
                    "status": "ACTIVATED",
                    "updated_at": now,
                }
                for i in iccids
            ],
        )
    return iccids


def _csv(iccids: list[str], status: str = "DEACTIVATED") -> bytes:
    return ("iccid,targetStatus\n" + "".join(f"{i},{status}\n" for i in iccids)).encode()


def test_a_file_is_validated_chunk_by_chunk_with_duplicates_seen_across_chunks(engine, seed):
    """Same report as validating the whole request at once: a device listed again three chunks
    later is refused with the line of its first listing; the CSV's line numbers are kept."""
    iccids = _add_devices(engine, seed, BIG - 1)
    iccids.append(iccids[4])  # the last row repeats the fifth (file line 6)
    parsed = parse_csv(_csv(iccids), change_type=1, service_provider_id=seed.service_providers["jasper"])
    assert isinstance(parsed.request.devices, CsvDevices) and len(parsed.request.devices) == BIG

    outcome = submit(engine, seed.tenant_id, parsed.request, "t", dry_run=True, row_numbers=parsed.row_numbers)
    whole = validate_request(
        engine, seed.tenant_id, parsed.request.model_copy(update={"devices": list(parsed.request.devices)})
    )
    report = outcome.report
    assert report is not None and report.tally is not None  # streamed
    assert report.total == whole.total == BIG and report.counts() == whole.counts() == {"NEW": BIG - 1, "ERROR": 1}
    assert [(e.row, e.reason) for e in report.errors] == [
        (BIG + 1, f"duplicate: ICCID {iccids[4]} is already listed in row 6")
    ]
    assert outcome.message == f"dry run: nothing stored: {BIG - 1} of {BIG} devices accepted, 1 refused"


def test_a_big_file_is_stored_with_every_row_and_the_same_fingerprint(engine, seed):
    iccids = _add_devices(engine, seed, BIG)
    data = _csv(iccids)
    sp = seed.service_providers["jasper"]
    parsed = parse_csv(data, change_type=1, service_provider_id=sp, idempotency_key="big-1")
    outcome = submit(engine, seed.tenant_id, parsed.request, "t")
    assert outcome.created and outcome.status == "NEW" and outcome.counts == {"NEW": BIG}
    with engine.connect() as conn:
        stored = conn.execute(sa.select(bulk_change).where(bulk_change.c.id == outcome.bulk_change_id)).one()
        lines = conn.execute(
            sa.select(device_change.c.iccid, device_change.c.change_request, device_change.c.status)
            .where(device_change.c.bulk_change_id == outcome.bulk_change_id)
            .order_by(device_change.c.id)
        ).all()
    assert [r.iccid for r in lines] == iccids  # in file order, each once
    assert lines[0].change_request == {"status": "DEACTIVATED"} and lines[-1].status == "NEW"
    assert stored.request_fingerprint == request_fingerprint(  # hashed chunk by chunk = hashed whole
        parsed.request.model_copy(update={"devices": list(parsed.request.devices)})
    )
    assert stored.request["deviceCount"] == BIG and stored.counts == {"NEW": BIG}

    again = submit(
        engine,
        seed.tenant_id,
        parse_csv(data, change_type=1, service_provider_id=sp, idempotency_key="big-1").request,
        "t",
    )
    assert (again.created, again.bulk_change_id) == (False, outcome.bulk_change_id)
    other = parse_csv(_csv(iccids[:-1]), change_type=1, service_provider_id=sp, idempotency_key="big-1")
    with pytest.raises(IdempotencyConflict):
        submit(engine, seed.tenant_id, other.request, "t")


def test_a_failure_in_the_middle_of_the_write_stores_nothing(engine, seed, monkeypatch):
    iccids = _add_devices(engine, seed, BIG)
    parsed = parse_csv(_csv(iccids), change_type=1, service_provider_id=seed.service_providers["jasper"])
    real, calls = store.write_rows, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_rows", failing)
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="disk full"):
        submit(engine, seed.tenant_id, parsed.request, "t")
    assert gc.isenabled()  # the collector paused for the chunks (intake.gc_pause) is back
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(device_change)).scalar_one() == 0


def _traced_peak(engine: sa.Engine, seed: DemoSeed, iccids: list[str]) -> int:
    """Peak traced bytes while a CSV of ``iccids`` is parsed, validated and stored (its bytes exist
    before tracing starts, as a file read or an upload's would)."""
    data = _csv(iccids)
    tracemalloc.start()
    try:
        parsed = parse_csv(
            data,
            change_type=1,
            service_provider_id=seed.service_providers["jasper"],
            limits=IntakeLimits(max_rows=len(iccids)),
        )
        outcome = submit(engine, seed.tenant_id, parsed.request, "t")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.counts == {"NEW": len(iccids)}
    return peak


def test_memory_grows_with_the_file_by_a_few_bytes_per_row_not_a_row_object(engine, seed, monkeypatch):
    """Streamed, a file costs its chunk plus a few compact bytes per row across the file (line
    numbers, duplicate-check keys); a file materialised as ``DeviceEntry`` or ``NewDeviceChange``
    objects grows by more than a kilobyte per row. Two sizes with the same small chunk: the
    difference of their peaks is the per-row cost, whatever the chunk's own working set."""
    monkeypatch.setattr(submit_module, "CHUNK_ROWS", SMALL_CHUNK)
    small, big = 2_000, 8_000
    iccids = _add_devices(engine, seed, small + big)
    small_peak = _traced_peak(engine, seed, iccids[:small])
    big_peak = _traced_peak(engine, seed, iccids[small:])
    per_row = (big_peak - small_peak) / (big - small)
    assert per_row < MAX_BYTES_PER_ROW, f"{per_row:.0f} B/row (peaks {small_peak:,} and {big_peak:,} B)"


def test_the_approval_policy_weighs_the_whole_file(engine, seed):
    """The approval policy counts every accepted row of a streamed file (not one chunk)."""
    from bulkchange_pipeline.domain.approval import ApprovalPolicy
    from bulkchange_pipeline.store.approvals import set_policy

    iccids = _add_devices(engine, seed, BIG)
    set_policy(engine, seed.tenant_id, ApprovalPolicy(max_devices=BIG - 1))
    parsed = parse_csv(_csv(iccids), change_type=1, service_provider_id=seed.service_providers["jasper"])
    outcome = submit(engine, seed.tenant_id, parsed.request, "t")
    assert outcome.status == "AWAITING_APPROVAL", outcome.message
    assert submit_module.count_rows_by_status(engine, outcome.bulk_change_id) == {"NEW": BIG}


# --- the HTTP app while it validates a big file --------------------------------------------------


@pytest.fixture
def served(db_url, engine, seed, monkeypatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setenv(MAX_CONCURRENT_UPLOADS_ENV, "1")
    handle = run_app_in_thread(create_app(db_url))
    try:
        yield handle.root_url, create_api_key(engine, seed.tenant_id, "ops")
    finally:
        handle.stop()


def test_healthz_is_answered_while_an_upload_is_validated(served, engine, seed, monkeypatch):
    """The upload is validated off the event loop: ``/healthz`` probes sent while its chunks are
    being validated are answered then, promptly (a loop blocked by validation would answer none of
    them until it ended). Small chunks give a small file many chunks; the window is from the first
    chunk's start to the last one's end, as the validation itself records it."""
    from bulkchange_pipeline.intake import validation as validation_module

    monkeypatch.setattr(submit_module, "CHUNK_ROWS", SMALL_CHUNK)
    spans: list[tuple[float, float]] = []
    real = validation_module._validate_chunk

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spans.append((started, time.perf_counter()))

    monkeypatch.setattr(validation_module, "_validate_chunk", timed)
    url, key = served
    rows = HEALTHZ_ROWS
    iccids = _add_devices(engine, seed, rows)
    probes: list[tuple[float, float]] = []  # (sent, answered)
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set():
                sent = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                probes.append((sent, time.perf_counter()))
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        answer = httpx.post(
            f"{url}/bulk-changes/csv",
            headers={"X-API-Key": key},
            data={"changeType": "1", "serviceProviderId": str(seed.service_providers["jasper"])},
            files={"file": ("big.csv", _csv(iccids), "text/csv")},
            timeout=120,
        )
    finally:
        done.set()
        poller.join()
    assert answer.status_code == 201, answer.text[:500]
    assert answer.json()["counts"] == {"NEW": rows}
    assert len(spans) == rows // SMALL_CHUNK
    start, end = spans[0][0], spans[-1][1]
    inside = [(s, a) for s, a in probes if s >= start and a <= end]
    overlapping = sorted(a - s for s, a in probes if s < end and a > start)
    assert len(inside) >= 5, f"{len(inside)} probes answered during {end - start:.2f} s of validation"
    p95 = overlapping[int(len(overlapping) * 0.95)]
    assert p95 < 0.25, f"p95 {p95 * 1000:.0f} ms, worst {overlapping[-5:]}"  # the loaded CI machine's margin


def test_one_big_upload_more_than_the_setting_is_answered_429_with_retry_after(served, seed):
    url, key = served
    body_started = threading.Event()
    release = threading.Event()
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\nContent-Type: text/csv\r\n\r\n'
    rest = b"iccid\n" + b"1\n" * 600_000 + b"\r\n--b--\r\n"
    size = len(head) + len(rest)

    def slow_body() -> Iterator[bytes]:  # a valid form whose file arrives only when released
        yield head
        body_started.set()
        release.wait(30)
        yield rest

    first: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: first.append(
            httpx.post(
                f"{url}/bulk-changes/csv",
                headers={
                    "X-API-Key": key,
                    "Content-Type": "multipart/form-data; boundary=b",
                    "Content-Length": str(size),
                },
                content=slow_body(),
                timeout=60,
            )
        )
    )
    sender.start()
    try:
        assert body_started.wait(10)
        time.sleep(0.2)
        second = httpx.post(
            f"{url}/bulk-changes/csv",
            headers={"X-API-Key": key},
            files={"file": ("big.csv", b"iccid\n" + b"1\n" * 600_000, "text/csv")},
            timeout=30,
        )
        small = httpx.get(f"{url}/healthz", timeout=5)
    finally:
        release.set()
        sender.join()
    assert second.status_code == 429 and second.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert second.headers["content-type"] == "application/problem+json"
    assert "1 big upload(s) are being validated" in second.json()["detail"]
    assert small.status_code == 200
    assert first[0].status_code == 422, first[0].text  # the held upload itself went on (a file of bad rows)
    third = httpx.post(
        f"{url}/bulk-changes/csv",
        headers={"X-API-Key": key},
        files={"file": ("big.csv", b"iccid\n" + b"1\n" * 600_000, "text/csv")},
        timeout=30,
    )
    assert third.status_code != 429  # the slot is free again


def test_the_streamed_report_keeps_refusals_and_the_first_rows_only(engine, seed):
    from bulkchange_pipeline.intake.validation import SAMPLE_ROWS

    iccids = _add_devices(engine, seed, BIG)
    iccids[BIG - 3] = "8901770000000000017"  # a bad check digit in the last chunk
    parsed = parse_csv(_csv(iccids), change_type=1, service_provider_id=seed.service_providers["jasper"])
    outcome = submit(engine, seed.tenant_id, parsed.request, "t", dry_run=True)
    report = outcome.report
    assert report is not None
    assert len(report.rows) == len(report.identifiers) == len(report.row_numbers) == SAMPLE_ROWS
    assert report.row_numbers[:2] == [2, 3] and report.rows[0].status is DeviceChangeStatus.NEW
    assert [e.row for e in report.errors] == [BIG - 3 + 2] and report.accepted == BIG - 1


def test_a_device_listed_again_by_another_identifier_names_its_first_row(engine, seed):
    """No table by device id is kept across chunks: the second listing, by MSISDN after ICCID or
    the other way round, is found through the first one's identifier."""
    from bulkchange_pipeline.domain import BulkChangeRequest

    with engine.connect() as conn:
        one, two = conn.execute(
            sa.select(device.c.iccid, device.c.msisdn)
            .where(device.c.service_provider_id == seed.service_providers["jasper"], device.c.msisdn.is_not(None))
            .order_by(device.c.id)
            .limit(2)
        ).all()
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 1,
            "statusUpdate": {"targetStatus": "DEACTIVATED"},
            "devices": [{"iccid": one.iccid}, {"msisdn": one.msisdn}, {"msisdn": two.msisdn}, {"iccid": two.iccid}],
        }
    )
    report = validate_request(engine, seed.tenant_id, request)
    assert [(e.row, e.reason) for e in report.errors] == [
        (2, "duplicate: this device is already listed in row 1"),
        (4, "duplicate: this device is already listed in row 3"),
    ]
