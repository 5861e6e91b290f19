"""Validate a bulk change request device by device, before anything is stored or sent (DESIGN 4).

Every device gets exactly one outcome: accepted (NEW, or SCHEDULED with a future effective date)
or refused (ERROR) with one reason a person can act on. Refused rows are still returned as
``NewDeviceChange`` rows so that submitting stores them as the audit trail.

Effective dates (any change type, from the payload or per device): a future date makes the row
SCHEDULED with ``effective_at``; the sensor launches the bulk change when it is due, and it can be
cancelled until then. Exception: where the carrier takes the date itself (``Capability.dates``:
Jasper's four change types up to 180 days ahead, Telegence status and rate plan line updates on a
later day than today), the row is NEW and sent at once with the date, and its ``status_details``
says "effective date passed to <carrier>: the carrier applies it on <date>". A date the carrier
cannot take (Jasper beyond 180 days, Telegence later today) is not refused: the row waits in
SCHEDULED like any other and is sent, without a date, when it is due.

Carrier rules (``domain.carrier_rules``, via ``intake.carrier_limits``): a row sent now that would
break a carrier's published provisioning rule, counting the line's history and rows waiting in
other bulk changes, is refused with the rule, its source and the count; with ``deferIfLimited`` it
waits in SCHEDULED until the first moment the rule allows.

Two ways to run the same rules (``validation_rules``): ``validate_request`` takes a whole request
in one piece and returns every row; ``validate_chunks`` takes a file's devices chunk by chunk
(a CSV of up to a million rows, ``csv_file.CsvDevices``) and yields each chunk's rows for the
writer while the report keeps only totals, the refusals and the first rows: memory stays that of
one chunk, and a thread validating a big file lets the others run between chunks.

Speed matters (100,000 devices in a few seconds): the work per chunk is two passes over the rows
with the database touched only in between, by set-based lookups (see ``store.reference``);
targets are built once per distinct set of per-device values.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain import BulkChangeRequest, ChangeType, DeviceChangeStatus, DeviceEntry, capability, unsupported_reason
from ..domain.capabilities import Capability
from ..store import reference as ref
from ..store.db import utcnow
from ..store.device_rows import NewDeviceChange
from .file_state import FileState
from .gc_pause import collect_young
from .row_outcome import (
    CARRIER_DATED_PREFIX,
    carrier_dated_detail,
    carrier_label,
    carrier_rules,
    is_carrier_dated,
    to_change,
)
from .validation_rules import (
    ARCHIVE_USAGE_DAYS,
    CHUNK_ROWS,
    KnownDevices,
    Lookups,
    Row,
    first_pass,
    payload_reason,
    second_pass,
)

SAMPLE_ROWS = 1_000  # rows a streamed report keeps for a dry run's listing (the rest are counted)


class RequestRejected(ValueError):
    """The request as a whole cannot be accepted (e.g. its service provider is not this tenant's)."""


@dataclass(frozen=True)
class RowError:
    row: int  # 1-based position of the device in the request, or its CSV line
    identifier: str
    reason: str


@dataclass
class Tally:
    """A streamed report's totals, counted chunk by chunk instead of held as rows."""

    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    scheduled: int = 0
    carrier_dated: int = 0
    # accepted change requests, one per distinct target status: all the approval policy weighs
    # (``domain.approval``: the count, the change type and a StatusUpdate's target statuses)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, rows: Sequence[NewDeviceChange]) -> None:
        for status, n in Counter(r.status for r in rows).items():  # an Enum's .value, once per status
            self.counts[status.value] = self.counts.get(status.value, 0) + n
        self.scheduled += sum(1 for r in rows if r.status is DeviceChangeStatus.SCHEDULED)
        self.carrier_dated += sum(1 for r in rows if r.status_details and is_carrier_dated(r))
        for r in rows:
            if r.status is not DeviceChangeStatus.ERROR:
                self.targets.setdefault(str(r.change_request.get("status", "")).lower(), r.change_request)
        self.total += len(rows)


@dataclass
class ValidationReport:
    """What a dry run shows and what a submit stores.

    A streamed report (``validate_chunks``, ``tally`` set) holds the refusals and the first
    ``SAMPLE_ROWS`` rows (with their identifiers and row numbers) only; its totals come from the
    tally."""

    tenant_id: int
    service_provider: ref.ServiceProviderInfo
    change_type: ChangeType
    portal_type: int
    rows: list[NewDeviceChange]
    errors: list[RowError]
    identifiers: list[str]  # as given, one per row (for reports)
    row_numbers: list[int]  # as reported, one per row
    warnings: list[str] = field(default_factory=list)
    tally: Tally | None = None

    @property
    def total(self) -> int:
        return self.tally.total if self.tally is not None else len(self.rows)

    @property
    def accepted(self) -> int:
        return self.total - len(self.errors)

    @property
    def scheduled(self) -> int:
        if self.tally is not None:
            return self.tally.scheduled
        return sum(1 for r in self.rows if r.status is DeviceChangeStatus.SCHEDULED)

    @property
    def carrier_dated(self) -> int:
        """Rows sent at once with their future effective date, which the carrier applies then."""
        if self.tally is not None:
            return self.tally.carrier_dated
        return sum(1 for r in self.rows if is_carrier_dated(r))

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        if self.tally is not None:
            return dict(self.tally.counts)
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            out[r.status.value] += 1
        return dict(out)

    def accepted_targets(self) -> list[dict[str, Any]]:
        """The accepted rows' change requests as the approval policy weighs them (a streamed
        report: one per distinct target status)."""
        if self.tally is not None:
            return list(self.tally.targets.values())
        return [r.change_request for r in self.rows if r.status is not DeviceChangeStatus.ERROR]


@dataclass
class _Header:
    """The request-level facts every chunk is validated against."""

    sp: ref.ServiceProviderInfo
    cap: Capability | None
    blanket: str | None  # a reason that refuses every row (a change the carrier cannot do)


def _header(engine: sa.Engine, tenant_id: int, request: BulkChangeRequest) -> _Header:
    sp = ref.get_service_provider(engine, tenant_id, request.service_provider_id)
    if sp is None:
        raise RequestRejected(f"no service provider with id {request.service_provider_id} in this tenant")
    if request.portal_type_id is not None and request.portal_type_id != sp.portal_type:
        raise RequestRejected(
            f"portalTypeId {request.portal_type_id} does not match service provider {sp.name!r} (portal type {sp.portal_type})"
        )
    ct = request.change_type
    cap = capability(ct, sp.integration, sp.protocol)
    blanket = unsupported_reason(ct, sp.integration, sp.protocol) if cap is None else payload_reason(request.payload)
    return _Header(sp, cap, blanket)


def _empty_report(tenant_id: int, request: BulkChangeRequest, head: _Header) -> ValidationReport:
    sp, cap = head.sp, head.cap
    report = ValidationReport(tenant_id, sp, request.change_type, sp.portal_type, [], [], [], [])
    if not sp.write_enabled and cap is not None and cap.handling.value != "db":
        report.warnings.append(f"writes are disabled for {sp.name!r}: the carrier calls of this change will be refused")
    return report


def _validate_chunk(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    head: _Header,
    entries: Sequence[DeviceEntry],
    numbers: Sequence[int],
    row_errors: Mapping[int, str],
    state: FileState,
    now: datetime,
    known: KnownDevices | None = None,
) -> tuple[list[Row], list[NewDeviceChange]]:
    """One chunk through both passes and the carrier rules; ``row_errors`` by the chunk's index."""
    ct, sp = request.change_type, head.sp
    rows = [Row(e) for e in entries]
    first_pass(rows, ct, request.payload, row_errors, head.blanket, numbers, state)
    ctx = Lookups.load(engine, tenant_id, sp, ct, rows, now, known)
    second_pass(rows, ct, sp, ctx, now, numbers, state)
    carrier_rules(rows, ct, sp, ctx, now, bool(request.defer_if_limited))
    dates = head.cap.dates if head.cap is not None else None
    carrier = carrier_label(sp.integration)
    return rows, [to_change(r, now, dates, carrier) for r in rows]


def validate_request(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    *,
    row_errors: Mapping[int, str] | None = None,
    row_numbers: Sequence[int] | None = None,
    now: datetime | None = None,
    known: KnownDevices | None = None,
) -> ValidationReport:
    """Check every device of ``request`` for ``tenant_id``; raise RequestRejected for request-level faults.

    ``row_errors`` are parse errors by 0-based device index; ``row_numbers`` are the numbers that
    reports use for the devices (CSV: file lines), default their positions 1..n. ``known``: devices
    the caller already looked up (the split's placement), not read again.
    """
    now = now or utcnow()
    head = _header(engine, tenant_id, request)
    entries = request.entries()
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(entries) + 1))
    if len(numbers) != len(entries):
        raise ValueError("row_numbers must have one number per device")
    rows, changes = _validate_chunk(
        engine, tenant_id, request, head, entries, numbers, row_errors or {}, FileState(), now, known
    )
    report = _empty_report(tenant_id, request, head)
    report.rows, report.identifiers, report.row_numbers = changes, [r.raw for r in rows], numbers
    report.errors = [RowError(numbers[i], r.raw, r.reason) for i, r in enumerate(rows) if r.reason is not None]
    return report


def validate_chunks(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    chunks: Iterable[tuple[Sequence[DeviceEntry], Sequence[int]]],
    *,
    row_errors: Mapping[int, str] | None = None,
    now: datetime | None = None,
) -> tuple[ValidationReport, Iterator[list[NewDeviceChange]]]:
    """The rules of ``validate_request`` over ``chunks`` of (devices, their row numbers), for a
    file too big to hold validated at once.

    Request-level faults raise RequestRejected at once, before any chunk is read. The returned
    iterator yields each chunk's rows in order; the report is complete once it is exhausted (its
    totals in ``report.tally``, every refusal in ``report.errors``, the first ``SAMPLE_ROWS`` rows
    in ``report.rows``). ``row_errors`` are parse errors by 0-based device index in the file.
    """
    now = now or utcnow()
    head = _header(engine, tenant_id, request)
    report = _empty_report(tenant_id, request, head)
    report.tally = Tally()
    errors = row_errors or {}

    def run() -> Iterator[list[NewDeviceChange]]:
        state, offset, keys = FileState(), 0, sorted(errors)
        for entries, numbers in chunks:
            end = offset + len(entries)
            local = {i - offset: errors[i] for i in keys[bisect_left(keys, offset) : bisect_left(keys, end)]}
            rows, changes = _validate_chunk(engine, tenant_id, request, head, entries, numbers, local, state, now)
            assert report.tally is not None
            report.tally.add(changes)
            for i, r in enumerate(rows):
                if r.reason is not None:
                    report.errors.append(RowError(numbers[i], r.raw, r.reason))
            room = SAMPLE_ROWS - len(report.rows)
            if room > 0:
                report.rows.extend(changes[:room])
                report.identifiers.extend(r.raw for r in rows[:room])
                report.row_numbers.extend(numbers[:room])
            offset = end
            yield changes
            del rows, changes, entries, numbers  # what the next chunk does not need is freed first
            collect_young()  # the chunk's cycles, if any: submit_file pauses automatic collection

    return report, run()


__all__ = [
    "ARCHIVE_USAGE_DAYS",
    "CARRIER_DATED_PREFIX",
    "CHUNK_ROWS",
    "SAMPLE_ROWS",
    "RequestRejected",
    "RowError",
    "Tally",
    "ValidationReport",
    "carrier_dated_detail",
    "carrier_label",
    "is_carrier_dated",
    "validate_chunks",
    "validate_request",
]
