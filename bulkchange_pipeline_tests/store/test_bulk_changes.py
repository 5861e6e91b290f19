"""Bulk change repository functions through the intake path: create, list, get, iterate results."""

from __future__ import annotations

import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import (
    count_rows_by_status,
    get_bulk_change,
    list_due_scheduled,
    list_waiting,
)
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import seed_demo


def _status_request(sp_id: int, devices: list, **extra) -> BulkChangeRequest:
    return BulkChangeRequest.model_validate(
        {
            "serviceProviderId": sp_id,
            "changeType": 1,
            "devices": devices,
            "statusUpdate": {"status": "DEACTIVATED", **extra},
        }
    )


def test_create_list_get_and_iterate(engine: sa.Engine) -> None:
    seed = seed_demo(engine, devices_per_carrier=12)
    jasper = seed.service_providers["jasper"]
    iccids = seed.sample_iccids["jasper"][:8]  # indexes 0-7: ACTIVATED
    first = submit(engine, seed.tenant_id, _status_request(jasper, [*iccids, "8901100000000000999"]), "t")
    later = submit(
        engine, seed.tenant_id, _status_request(jasper, iccids[:2], effectiveDate="2999-01-01T00:00:00Z"), "t"
    )
    other = submit(
        engine, seed.other_tenant_id, _status_request(seed.other_service_provider_id, seed.other_iccids[:1]), "t"
    )

    queued = list_waiting(engine, 0, 10)
    assert [q.id for q in queued] == [first.bulk_change_id, other.bulk_change_id]
    assert list_waiting(engine, first.bulk_change_id, 10)[0].id == other.bulk_change_id
    assert list_due_scheduled(engine, utcnow(), 10) == []

    bc = get_bulk_change(engine, first.bulk_change_id, seed.tenant_id)
    assert bc["status"] == "NEW" and bc["counts"] == {"NEW": 8, "ERROR": 1} and bc["total"] == 9
    assert bc["created_by"] == "t" and bc["service_provider_id"] == jasper
    assert get_bulk_change(engine, first.bulk_change_id, seed.other_tenant_id) is None  # no cross-tenant reads
    sched = get_bulk_change(engine, later.bulk_change_id, seed.tenant_id)
    assert sched["status"] == "SCHEDULED" and sched["effective_at"].year == 2999
    assert count_rows_by_status(engine, later.bulk_change_id) == {"SCHEDULED": 2}

    rows = list(iter_device_results(engine, seed.tenant_id, first.bulk_change_id, page=2))
    assert [r["iccid"] for r in rows[:8]] == iccids
    assert rows[-1]["status"] == "ERROR" and rows[-1]["status_details"].startswith("ICCID")
    assert all(r["change_request"] == {"status": "DEACTIVATED"} for r in rows[:8])
    assert list(iter_device_results(engine, seed.other_tenant_id, first.bulk_change_id)) == []
