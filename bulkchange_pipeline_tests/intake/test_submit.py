"""Submission: the seed's example request, idempotency keys, refused rows kept as the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.request_file import read_request_file
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import DemoSeed

from .conftest import table_counts

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_file_matches_the_seed(seed: DemoSeed) -> None:
    """examples/customer_rate_plan_change.json holds ids valid for a fresh demo seed."""
    assert (
        json.loads((EXAMPLES / "customer_rate_plan_change.json").read_text())
        == seed.example_customer_rate_plan_request()
    )


def test_example_request_creates_one_bulk_change_with_a_row_per_device(engine: sa.Engine, seed: DemoSeed) -> None:
    parsed = read_request_file(EXAMPLES / "customer_rate_plan_change.json", idempotency_key="crp-1")
    outcome = submit(engine, seed.tenant_id, parsed.request, "test")
    assert outcome.created and outcome.status == "NEW"
    assert outcome.message == f"created bulk change {outcome.bulk_change_id} (NEW): 4 of 4 devices accepted"
    bc = get_bulk_change(engine, outcome.bulk_change_id, seed.tenant_id)
    assert bc["change_type"] == 4 and bc["total"] == 4 and bc["counts"] == {"NEW": 4}
    assert bc["request"]["deviceCount"] == 4 and bc["request"]["customerRatePlanUpdate"]["customerRatePlanId"] == 2
    rows = list(iter_device_results(engine, seed.tenant_id, outcome.bulk_change_id))
    assert [r["iccid"] for r in rows] == seed.sample_iccids["jasper"][:4]  # the IMEI resolved to the 4th device
    assert rows[0]["change_request"] == {
        "customer_rate_plan_id": 2,
        "customer_rate_pool_id": 1,
        "data_allocation_mb": 5120,
        "effective_date": "2024-01-01T00:00:00Z",
    }

    before = table_counts(engine)
    again = submit(engine, seed.tenant_id, parsed.request, "test")
    assert not again.created and again.bulk_change_id == outcome.bulk_change_id
    assert again.message == f"already submitted as bulk change {outcome.bulk_change_id}; nothing new created"
    assert table_counts(engine) == before


def test_same_key_in_another_tenant_is_independent(engine: sa.Engine, seed: DemoSeed) -> None:
    body = {"changeType": 1, "devices": [], "statusUpdate": {"status": "DEACTIVATED"}, "idempotencyKey": "k"}
    demo = BulkChangeRequest.model_validate(
        {**body, "serviceProviderId": seed.service_providers["jasper"], "devices": seed.sample_iccids["jasper"][:1]}
    )
    other = BulkChangeRequest.model_validate(
        {**body, "serviceProviderId": seed.other_service_provider_id, "devices": seed.other_iccids[:1]}
    )
    a = submit(engine, seed.tenant_id, demo, "test")
    b = submit(engine, seed.other_tenant_id, other, "test")
    assert a.created and b.created and a.bulk_change_id != b.bulk_change_id


def test_all_refused_request_is_stored_as_audit_trail(engine: sa.Engine, seed: DemoSeed) -> None:
    req = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 9,
            "devices": seed.sample_iccids["jasper"][:2],
            "iccidImeiChange": {"newImei": "351000000000005"},
        }
    )
    outcome = submit(engine, seed.tenant_id, req, "test")
    # Issue 15 §5: every device refused means nothing was sent; ERROR says so (it was PROCESSED).
    assert outcome.created and outcome.status == "ERROR" and outcome.counts == {"ERROR": 2}
    assert (
        "0 of 2 devices accepted, 2 refused; nothing was sent: all 2 devices were refused at validation"
        in outcome.message
    )
