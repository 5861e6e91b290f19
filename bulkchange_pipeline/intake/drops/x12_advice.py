"""The later steps of a taken 856 and its 824, run by each file drop tick after the results pass.

An 856 makes one bulk change per configured change, in order (e.g. assign the customer, then
activate). Each tick looks at every interchange whose 824 is not written yet: when its last bulk
change is final, the next request is submitted with the devices every change so far processed (a
device whose customer assignment failed is not activated); when there is none left, the 824 with
every device's result goes to the outbox as ``<stem>.824-<their ISA13>.x12``, exactly once (the
record says when; a crash between the write and the record rewrites the same name).

A later request that ``submit`` refuses as a whole ends the interchange: its devices are reported
refused in the 824 with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...domain import BulkChangeStatus
from ...store.bulk_changes import get_bulk_change
from ...store.file_drops import drop_settings
from ...store.idempotency import IdempotencyConflict
from ...store.x12_interchanges import (
    InterchangeRecord,
    add_bulk_change,
    list_open_interchanges,
    mark_advice_written,
)
from ..parsing import IntakeError
from ..results_download import result_rows
from ..validation import RequestRejected
from ..x12 import advice_824, parse_interchange
from .locations import DropConfigError, DropFolders, open_folders
from .names import split_suffix
from .outbox import OutboxReport, write_outbox_file
from .x12_files import ControlCounter, refused_rows, submit_step

__all__ = ["MAX_INTERCHANGES_PER_TICK", "advance_interchanges", "advice_name"]

MAX_INTERCHANGES_PER_TICK = 20  # submissions and 824s per tick
MAX_OPEN_LISTED = 1_000  # open interchanges looked at per tick (most wait for their bulk change)
PROCESSED = "PROCESSED"


def advice_name(record: InterchangeRecord) -> str:
    return f"{split_suffix(record.name)[0]}.824-{record.control}.x12"


def _final(engine: sa.Engine, record: InterchangeRecord) -> bool:
    header = get_bulk_change(engine, record.bulk_change_ids[-1], record.tenant_id)
    return header is None or str(header["status"]) in BulkChangeStatus.final_values()  # None: deleted


def _rows(engine: sa.Engine, record: InterchangeRecord) -> list[dict[str, Any]]:
    return [row for bc_id in record.bulk_change_ids for row in result_rows(engine, record.tenant_id, bc_id)]


def _next_request(engine: sa.Engine, record: InterchangeRecord) -> dict[str, Any] | None:
    """The next step's request with the devices the last step processed; None when no step or no
    device is left."""
    step = len(record.bulk_change_ids)
    if step >= len(record.requests):
        return None
    done = {
        str(v)
        for row in result_rows(engine, record.tenant_id, record.bulk_change_ids[-1])
        if row.get("status") == PROCESSED
        for v in (row.get("iccid"), row.get("imei"))
        if v
    }
    request = dict(record.requests[step])
    request["devices"] = [d for d in request["devices"] if any(str(v) in done for v in d.values())]
    return request if request["devices"] else None


def _advance(engine: sa.Engine, record: InterchangeRecord, report: OutboxReport) -> list[dict[str, Any]] | None:
    """Submit the next step (None: wait for it), or the extra rows the 824 needs (a refused step)."""
    request = _next_request(engine, record)
    if request is None:
        return []
    try:
        outcome = submit_step(engine, record.tenant_id, request, record.name)
    except (IntakeError, RequestRejected, IdempotencyConflict) as exc:
        interchange = parse_interchange(record.content)
        return refused_rows(interchange, request["devices"], str(exc), record.serial_qualifiers)
    assert outcome.bulk_change_id is not None
    if add_bulk_change(engine, record, outcome.bulk_change_id):
        report.lines.append(
            f"tenant {record.tenant_id}: interchange {record.control} from {record.sender}: bulk change "
            f"{outcome.bulk_change_id} (change {len(record.bulk_change_ids) + 1} of {len(record.requests)})"
        )
    return None


def advance_interchanges(
    engine: sa.Engine, *, limit: int = MAX_INTERCHANGES_PER_TICK, environ: Mapping[str, str] | None = None
) -> OutboxReport:
    """Submit the next change of each interchange whose last one finished; write due 824s (at
    most ``limit`` of both together)."""
    report = OutboxReport()
    opened: dict[int, DropFolders | None] = {}
    budget = limit
    try:
        for record in list_open_interchanges(engine, MAX_OPEN_LISTED):
            if budget <= 0:
                break
            if not _final(engine, record):
                continue
            budget -= 1
            extra = _advance(engine, record, report)
            if extra is None:
                continue
            if record.tenant_id not in opened:
                drop = drop_settings(engine, record.tenant_id)
                try:
                    opened[record.tenant_id] = open_folders(drop, environ) if drop else None
                except DropConfigError as exc:
                    opened[record.tenant_id] = None
                    report.errors += 1
                    report.lines.append(f"tenant {record.tenant_id}: outbox not usable: {exc}")
            folders = opened[record.tenant_id]
            if folders is None:
                continue
            name = advice_name(record)
            counter = ControlCounter(engine, record.tenant_id)
            advice = advice_824(
                parse_interchange(record.content),
                _rows(engine, record) + extra,
                counter,
                serial_qualifiers=record.serial_qualifiers,
            )
            try:
                write_outbox_file(folders, name, [advice])
            except OSError as exc:
                report.errors += 1
                report.lines.append(f"tenant {record.tenant_id}: 824 {name!r} not written: {exc}")
                continue
            if mark_advice_written(engine, record.id, name):
                report.written += 1
                report.lines.append(f"tenant {record.tenant_id}: wrote {name!r} (824, our control {counter.last})")
    finally:
        for folders in opened.values():
            if folders is not None:
                folders.close()
    return report
