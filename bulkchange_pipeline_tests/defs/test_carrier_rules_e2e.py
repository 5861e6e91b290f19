"""Carrier rules end to end (issue 21): a Verizon ThingSpace line with 5 provisioning actions today
is refused a 6th at validation, with the rule, its source and the count, and nothing is sent; with
``deferIfLimited`` the row waits in SCHEDULED until the next UTC midnight, the sensor starts nothing
before then, and launches it when due. Rows waiting in other bulk changes count too.

Real parts: the ThingSpace simulator over HTTP with callbacks to the real callback endpoint, real
Dagster, both database backends. The 5 actions of the day are real ones, sent through the pipeline.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from bulkchange_pipeline.domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType
from bulkchange_pipeline.domain.carrier_rules import THINGSPACE_RULES_URL, next_day
from bulkchange_pipeline.intake.submit import SubmitOutcome, submit
from bulkchange_pipeline.intake.xml_request import xml_request_body
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import bulk_change, device, device_change

from . import test_pipeline_async as _async
from .harness import evaluate_sensor, sensor_then_runs
from .test_pipeline_async import _defs, _settle, _ts_seed

# The ThingSpace simulator with callbacks to the real callback endpoint, as the async tests use it.
callback_app, thingspace = _async.callback_app, _async.thingspace

CT = ChangeType
RULE = "Verizon allows 5 provisioning actions per line per day"


def _submit(engine, ids, iccid: str, status: str, **header) -> SubmitOutcome:
    body = {
        "serviceProviderId": ids["service_provider_id"],
        "changeType": int(CT.STATUS_UPDATE),
        "devices": [iccid],
        PAYLOAD_KEYS[CT.STATUS_UPDATE]: {"status": status},
        **header,
    }
    return submit(engine, ids["tenant_id"], BulkChangeRequest.model_validate(body), "test")


def _row(engine, bc_id: int) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(device_change).where(device_change.c.bulk_change_id == bc_id)).one()._mapping
        )


def _make_due(engine, bc_id: int) -> None:
    """The next day has come for this bulk change: its stored times move back to one second ago."""
    with engine.begin() as conn:
        due = conn.execute(sa.select(bulk_change.c.effective_at).where(bulk_change.c.id == bc_id)).scalar_one()
        back = due - utcnow() + timedelta(seconds=1)
        for table, key in ((device_change, device_change.c.bulk_change_id), (bulk_change, bulk_change.c.id)):
            for row in conn.execute(sa.select(table.c.id, table.c.effective_at).where(key == bc_id)).all():
                conn.execute(sa.update(table).where(table.c.id == row.id).values(effective_at=row.effective_at - back))


def test_sixth_provisioning_action_of_a_day_is_refused_or_deferred(engine, dagster_instance, thingspace) -> None:
    sim, base_url = thingspace
    ids, devices = _ts_seed(engine, sim, base_url, 2)
    line = devices[0]["iccid"]
    defs = _defs()

    # Five real provisioning actions today: suspend, restore, suspend, restore, suspend.
    for status in ("suspend", "active", "suspend", "active", "suspend"):
        out = _submit(engine, ids, line, status)
        assert out.created and not out.report.errors, out.report.errors
        sensor_then_runs(dagster_instance, defs)
        _settle(dagster_instance, defs, sim)
        assert count_rows_by_status(engine, out.bulk_change_id) == {"PROCESSED": 1}
    assert sim.applied_counts[line] == 5

    # The 6th is refused at validation: an ERROR row with the rule, its source and the count.
    refused = _submit(engine, ids, line, "active")
    assert [e.reason for e in refused.report.errors] == [refused.report.rows[0].status_details]
    reason = refused.report.errors[0].reason
    assert reason.startswith(f"5 provisioning actions today; {RULE} (source: ")
    assert THINGSPACE_RULES_URL in reason
    assert count_rows_by_status(engine, refused.bulk_change_id) == {"ERROR": 1}

    # With deferIfLimited it waits in SCHEDULED until the next UTC midnight; nothing starts now.
    deferred = _submit(engine, ids, line, "active", deferIfLimited=True)
    assert deferred.created and not deferred.report.errors
    row = _row(engine, deferred.bulk_change_id)
    assert (row["status"], row["effective_at"]) == ("SCHEDULED", next_day(utcnow()))
    assert RULE in row["status_details"]
    head = get_bulk_change(engine, deferred.bulk_change_id)
    assert (head["status"], head["effective_at"]) == ("SCHEDULED", next_day(utcnow()))
    assert not evaluate_sensor(dagster_instance, defs).run_requests
    sensor_then_runs(dagster_instance, defs)
    assert sim.applied_counts[line] == 5  # nothing was sent
    with engine.connect() as conn:
        assert conn.execute(sa.select(device.c.status).where(device.c.iccid == line)).scalar_one() == "suspend"

    # Its day comes: the sensor launches it and the carrier applies it.
    _make_due(engine, deferred.bulk_change_id)
    _, runs = sensor_then_runs(dagster_instance, defs)
    assert runs and all(r.success for r in runs)
    _settle(dagster_instance, defs, sim)
    assert count_rows_by_status(engine, deferred.bulk_change_id) == {"PROCESSED": 1}
    assert sim.applied_counts[line] == 6
    assert sim.device(line)["state"] == "active"


def test_rows_waiting_in_other_bulk_changes_count(engine, dagster_instance, thingspace) -> None:
    sim, base_url = thingspace
    ids, devices = _ts_seed(engine, sim, base_url, 2)
    line, other = devices[1]["iccid"], devices[0]["iccid"]
    for _ in range(5):  # held (processChanges=false): waiting, not sent
        out = _submit(engine, ids, line, "suspend", processChanges=False)
        assert out.created and not out.report.errors, out.report.errors
    refused = _submit(engine, ids, line, "suspend")
    assert refused.report.errors[0].reason.startswith(f"5 provisioning actions today; {RULE}")
    assert not _submit(engine, ids, other, "suspend").report.errors  # another line: its own count
    # The same request as XML with <deferIfLimited>: the row waits for the next UTC midnight.
    xml = (
        '<bulkChangeRequest xmlns="urn:bulkchange:request:1">'
        f"<serviceProviderId>{ids['service_provider_id']}</serviceProviderId><changeType>1</changeType>"
        f"<deferIfLimited>true</deferIfLimited><devices><device>{line}</device></devices>"
        "<statusUpdate><targetStatus>suspend</targetStatus></statusUpdate></bulkChangeRequest>"
    ).encode()
    request = BulkChangeRequest.model_validate(xml_request_body(xml))
    deferred = submit(engine, ids["tenant_id"], request, "test")
    assert not deferred.report.errors
    row = _row(engine, deferred.bulk_change_id)
    assert (row["status"], row["effective_at"]) == ("SCHEDULED", next_day(utcnow()))
    sensor_then_runs(dagster_instance, _defs())
    assert sim.applied_counts[line] == 0
