"""A dropped request file without a service provider (issue 21): split by carrier into one
submission, its drop record keeping the submission, and ONE results file in the outbox for the
whole submission once every child is final, exactly once.

Real parts: Dagster (the file drop sensor and the bulk change sensor's runs through the production
local runner), the business database on both backends, the Jasper simulator over HTTP serving two
service providers of the tenant (two Jasper accounts: two children, two partitions, two runs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest, BulkChangeStatus, ChangeType
from bulkchange_pipeline.intake.drops import default_root, idempotency_key, take_inbox_files
from bulkchange_pipeline.intake.split import submit_split
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.file_drops import list_due_results, record_drop, set_drop_settings
from bulkchange_pipeline.store.schema import file_drop
from bulkchange_pipeline.store.submissions import get_submission

from ..factories import iccid, make_account, make_devices
from ..intake.xml_inputs import to_xml
from .helpers import STATUS_UPDATE, Tenant, Ticks, bulk_change_ids, results_statuses

NOT_IN_INVENTORY = iccid(999_999)


def _two_providers(engine: sa.Engine, jasper) -> tuple[Tenant, Tenant, Path]:
    """Two Jasper accounts of one tenant (same simulator), three devices each, drop settings
    naming no service provider (so a CSV without the column is split too)."""
    sim, base_url = jasper
    a = make_account(engine, base_url, account_name="Jasper A")
    b = make_account(engine, base_url, account_name="Jasper B")
    make_devices(engine, a, 3)
    make_devices(engine, b, 3, start=100)
    left, right = Tenant(a, [iccid(i) for i in range(3)]), Tenant(b, [iccid(100 + i) for i in range(3)])
    sim.seed_devices(
        {"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for i in left.iccids + right.iccids
    )
    set_drop_settings(engine, a["tenant_id"], change_type=STATUS_UPDATE)
    root = default_root(a["tenant_id"])
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return left, right, root


def _file(fmt: str, iccids: list[str]) -> bytes:
    if fmt == "csv":
        return ("iccid,targetStatus\n" + "".join(f"{i},DEACTIVATED\n" for i in iccids)).encode()
    body = {"changeType": "StatusUpdate", "devices": iccids, "statusUpdate": {"targetStatus": "DEACTIVATED"}}
    return json.dumps(body).encode() if fmt == "json" else to_xml(body).encode()


def _statuses(fmt: str, data: bytes) -> dict[str, str]:
    if fmt == "json":  # the API's submission download: {"submissionId", "items"}
        return {d["iccid"]: d["status"] for d in json.loads(data)["items"]}
    return results_statuses(fmt, data)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
def test_a_file_without_a_service_provider_is_split_and_answered_with_one_results_file(
    engine, dagster_instance, jasper, fmt
):
    sim, _ = jasper
    left, right, root = _two_providers(engine, jasper)
    devices = [left.iccids[0], right.iccids[0], left.iccids[1], right.iccids[1], NOT_IN_INVENTORY]
    (root / "inbox" / f"mixed.{fmt}").write_bytes(_file(fmt, devices))
    ticks = Ticks(dagster_instance)
    ticks.drop()
    ticks.drop()  # unchanged for a tick: taken

    with engine.connect() as conn:
        record = conn.execute(sa.select(file_drop)).one()
    assert record.bulk_change_id is None and record.submission_id is not None
    view = get_submission(engine, record.submission_id, left.ids["tenant_id"])
    assert [c.service_provider_id for c in view.children] == [
        left.ids["service_provider_id"],
        right.ids["service_provider_id"],
    ]
    assert bulk_change_ids(engine) == [c.bulk_change_id for c in view.children]
    assert [r.identifier for r in view.refused] == [NOT_IN_INVENTORY]
    assert _names(root / "inbox" / "processed") == [f"mixed.{fmt}"]

    ticks.drop()  # children not final: no results yet
    assert _names(root / "outbox") == []
    runs = ticks.process()
    assert [r.success for r in runs] == [True, True]  # one run per child
    ticks.drop()
    results = root / "outbox" / f"mixed.results.{fmt}"
    assert _names(root / "outbox") == [results.name]  # ONE file for the whole submission
    assert _statuses(fmt, results.read_bytes()) == {
        **{i: "PROCESSED" for i in devices[:4]},
        NOT_IN_INVENTORY: "ERROR",
    }
    assert all(sim.device(i)["status"] == "DEACTIVATED" for i in devices[:4])

    results.write_bytes(b"taken by the tenant")  # exactly once: later ticks write nothing more
    ticks.drop()
    assert results.read_bytes() == b"taken by the tenant" and _names(root / "outbox") == [results.name]
    with engine.connect() as conn:
        row = conn.execute(sa.select(file_drop)).one()
    assert row.results_name == results.name and row.results_written_at is not None

    (root / "inbox" / f"again.{fmt}").write_bytes(_file(fmt, devices))  # the same content again
    ticks.drop()
    ticks.drop()
    note = root / "inbox" / "processed" / f"again.{fmt}.note.txt"
    assert f"already taken as submission {record.submission_id}" in note.read_text()
    assert len(bulk_change_ids(engine)) == 2


def test_the_results_wait_for_the_last_child(engine, jasper):
    """A submission's drop is due only when no child is left to finish (checked in the store,
    without runs: each child's header is set as a run would finalise it)."""
    left, right, _ = _two_providers(engine, jasper)
    tenant = left.ids["tenant_id"]
    request_body = {"changeType": int(ChangeType.STATUS_UPDATE), "devices": [left.iccids[0], right.iccids[0]]}

    request = BulkChangeRequest.model_validate({**request_body, "statusUpdate": {"targetStatus": "DEACTIVATED"}})
    outcome = submit_split(engine, tenant, request, "test")
    assert outcome.submission_id is not None
    record = record_drop(engine, tenant, "f" * 64, "mixed.json", "json", None, submission_id=outcome.submission_id)
    assert record.taken_as == f"submission {outcome.submission_id}"
    first, second = (c.bulk_change_id for c in outcome.children)
    assert list_due_results(engine, 10) == []
    set_bulk_status(engine, first, BulkChangeStatus.PROCESSED)
    assert list_due_results(engine, 10) == []  # one child still to finish
    set_bulk_status(engine, second, BulkChangeStatus.CANCELLED)
    [due] = list_due_results(engine, 10)
    assert (due.submission_id, due.bulk_change_id, due.status) == (outcome.submission_id, None, None)


def test_a_drop_record_names_one_bulk_change_or_one_submission(engine, jasper):
    left, _, _ = _two_providers(engine, jasper)
    with pytest.raises(ValueError, match="one bulk change or one submission"):
        record_drop(engine, left.ids["tenant_id"], "e" * 64, "x.csv", "csv", None)


def test_a_crash_after_the_submission_was_stored_takes_the_file_once(engine, jasper):
    """The submission is stored under the file's key, then the tick dies before the drop record:
    the next ticks find the key, record the same submission and move the file; nothing new."""
    left, right, root = _two_providers(engine, jasper)
    data = _file("json", [left.iccids[0], right.iccids[0]])
    tenant = left.ids["tenant_id"]
    request = BulkChangeRequest.model_validate_json(data)
    key = idempotency_key(hashlib.sha256(data).hexdigest())
    first = submit_split(engine, tenant, request.model_copy(update={"idempotency_key": key}), "file-drop:x.json")
    (root / "inbox" / "x.json").write_bytes(data)
    seen = take_inbox_files(engine, {}).seen
    report = take_inbox_files(engine, seen)
    assert report.taken == 1, report.lines
    with engine.connect() as conn:
        record = conn.execute(sa.select(file_drop)).one()
    assert record.submission_id == first.submission_id and len(bulk_change_ids(engine)) == 2
    assert f"took 'x.json' as submission {first.submission_id}" in report.lines[0]
