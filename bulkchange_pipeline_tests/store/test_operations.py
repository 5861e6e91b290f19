"""Cancel and retry-failed on stored bulk changes (both backends), with rows put in the states a
run leaves them in by the pipeline's own repository functions (claim, record_results)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import (
    BulkChangeRequest,
    BulkChangeStatus,
    DeviceChangeStatus,
)
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import (
    get_bulk_change,
    list_waiting,
    set_bulk_status,
)
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.operations import OperationRefused, cancel_bulk_change, retry_failed
from bulkchange_pipeline.store.results_paging import BulkChangeNotFound, page_device_results
from bulkchange_pipeline.store.schema import bulk_change_log, device_change
from bulkchange_pipeline.store.seed import DemoSeed, seed_demo

S = DeviceChangeStatus


@pytest.fixture
def seed(engine: sa.Engine) -> DemoSeed:
    return seed_demo(engine, devices_per_carrier=12)


def _submit(engine: sa.Engine, seed: DemoSeed, devices: list[str], **status_extra: str) -> int:
    req = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 1,
            "devices": devices,
            "statusUpdate": {"status": "RETIRED", **status_extra},
        }
    )
    outcome = submit(engine, seed.tenant_id, req, "test")
    assert outcome.bulk_change_id is not None
    return outcome.bulk_change_id


def _rows(engine: sa.Engine, bc_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(device_change).where(device_change.c.bulk_change_id == bc_id).order_by(device_change.c.id)
        ).all()


def _logs(engine: sa.Engine, bc_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(sa.select(bulk_change_log).where(bulk_change_log.c.bulk_change_id == bc_id)).all()


def _finish(engine: sa.Engine, seed: DemoSeed, bc_id: int, outcomes: dict[int, tuple[S, str | None]]) -> None:
    """Claim rows and record results as a run would: {row id: (status, carrier request id)}."""
    claim(engine, list(outcomes))
    results = [
        RowResult(device_change_id=i, status=s, status_details=f"carrier said {s.value}", carrier_request_id=req)
        for i, (s, req) in outcomes.items()
    ]
    record_results(engine, tenant_id=seed.tenant_id, bulk_change_id=bc_id, results=results, process_by="test-run")


def test_cancel_turns_unsent_rows_cancelled_and_lets_sent_rows_finish(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = _submit(engine, seed, [*seed.sample_iccids["jasper"][:5], "8901100000000000999"])
    ids = [r.id for r in _rows(engine, bc_id)]
    claim(engine, ids[:2])  # two rows already sent: PROCESSING
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSING)

    result = cancel_bulk_change(engine, seed.tenant_id, bc_id, by="ops@example")
    assert (result.cancelled, result.still_processing) == (3, 2)
    assert result.counts == {"PROCESSING": 2, "CANCELLED": 3, "ERROR": 1}
    assert result.status == "PROCESSING"  # the sent rows are still out
    statuses = [r.status for r in _rows(engine, bc_id)]
    assert statuses == ["PROCESSING", "PROCESSING", "CANCELLED", "CANCELLED", "CANCELLED", "ERROR"]
    assert all(r.processed_at is not None for r in _rows(engine, bc_id)[2:5])
    [entry] = _logs(engine, bc_id)
    assert entry.process_by == "ops@example" and "3 device rows not yet sent are CANCELLED" in entry.description
    assert "2 rows already sent finish normally" in entry.description

    # The sent rows finish normally; cancelling again finds nothing to cancel.
    _finish(engine, seed, bc_id, {ids[0]: (S.PROCESSED, None), ids[1]: (S.API_FAILED, None)})
    with pytest.raises(OperationRefused, match="nothing to cancel"):
        cancel_bulk_change(engine, seed.tenant_id, bc_id, by="ops")
    assert [r.status for r in _rows(engine, bc_id)][:2] == ["PROCESSED", "API_FAILED"]


def test_cancel_of_an_unsent_bulk_change_cancels_it(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = _submit(engine, seed, seed.sample_iccids["jasper"][:3], effectiveDate="2999-01-01T00:00:00Z")
    assert get_bulk_change(engine, bc_id, seed.tenant_id)["status"] == "SCHEDULED"
    result = cancel_bulk_change(engine, seed.tenant_id, bc_id, by="t")
    assert result.status == "CANCELLED" and result.cancelled == 3
    bc = get_bulk_change(engine, bc_id, seed.tenant_id)
    assert bc["status"] == "CANCELLED" and bc["effective_at"] is None and bc["processed_at"] is not None
    assert bc["counts"] == {"CANCELLED": 3}


def test_retry_failed_requeues_failed_rows_as_a_new_attempt(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = _submit(engine, seed, [*seed.sample_iccids["jasper"][:4], "8901100000000000999"])
    ids = [r.id for r in _rows(engine, bc_id)]
    _finish(
        engine,
        seed,
        bc_id,
        {
            ids[0]: (S.PROCESSED, "r0"),
            ids[1]: (S.API_FAILED, "r1"),
            ids[2]: (S.ERROR, None),
            ids[3]: (S.API_FAILED, None),
        },
    )
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSED)
    assert list_waiting(engine, 0, 10) == []

    result = retry_failed(engine, seed.tenant_id, bc_id, by="ops")
    assert (result.requeued, result.attempt, result.status) == (3, 1, "NEW")
    rows = _rows(engine, bc_id)
    assert [r.status for r in rows] == ["PROCESSED", "NEW", "NEW", "NEW", "ERROR"]  # the validation refusal stays
    assert rows[1].carrier_request_id is None and rows[0].carrier_request_id == "r0"
    assert rows[1].processed_at is None and rows[1].status_details.startswith(
        "retry (attempt 1) after: carrier said API_FAILED"
    )
    assert rows[4].status_details.startswith("ICCID")
    [queued] = list_waiting(engine, 0, 10)
    assert (queued.id, queued.attempt, queued.status) == (bc_id, 1, "NEW")
    assert "3 failed device rows back to NEW (attempt 1)" in _logs(engine, bc_id)[-1].description

    # Queued (NEW) or running: refused, nothing changes.
    with pytest.raises(OperationRefused, match="queued for a run"):
        retry_failed(engine, seed.tenant_id, bc_id, by="ops")
    set_bulk_status(engine, bc_id, BulkChangeStatus.PENDING)
    with pytest.raises(OperationRefused, match="still running"):
        retry_failed(engine, seed.tenant_id, bc_id, by="ops")
    assert get_bulk_change(engine, bc_id, seed.tenant_id)["attempt"] == 1


def test_retry_refuses_validation_refusals_and_other_tenants(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = _submit(engine, seed, ["8901100000000000999", seed.other_iccids[0]])  # both refused at validation
    assert (
        get_bulk_change(engine, bc_id, seed.tenant_id)["status"] == "ERROR"
    )  # nothing was sent (issue 15 §5; was PROCESSED)
    with pytest.raises(OperationRefused, match="nothing to retry"):
        retry_failed(engine, seed.tenant_id, bc_id, by="ops")
    assert get_bulk_change(engine, bc_id, seed.tenant_id)["attempt"] == 0  # the refusal rolled back
    for action in (retry_failed, cancel_bulk_change):
        with pytest.raises(BulkChangeNotFound):
            action(engine, seed.other_tenant_id, bc_id, by="intruder")
    with pytest.raises(BulkChangeNotFound):
        page_device_results(engine, seed.other_tenant_id, bc_id)


def test_page_device_results_filters_and_pages(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = _submit(engine, seed, [*seed.sample_iccids["jasper"][:5], "8901100000000000999"])
    first = page_device_results(engine, seed.tenant_id, bc_id, page=1, page_size=4)
    second = page_device_results(engine, seed.tenant_id, bc_id, page=2, page_size=4)
    assert (first.total, len(first.items), len(second.items)) == (6, 4, 2)
    assert [r["id"] for r in first.items + second.items] == [r.id for r in _rows(engine, bc_id)]
    errors = page_device_results(engine, seed.tenant_id, bc_id, status=S.ERROR)
    assert errors.total == 1 and errors.items[0]["status"] == "ERROR"
