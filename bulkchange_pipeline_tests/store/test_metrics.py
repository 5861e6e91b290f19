"""Daily metrics on a fixed data set, against numbers computed by hand (both backends), through the
plain function and through the ``bulk_change_metrics`` asset's metadata."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import build_definitions
from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus
from bulkchange_pipeline.store.metrics import compute_daily_metrics, metric_values
from bulkchange_pipeline.store.schema import bulk_change, bulk_change_log, device_change, service_provider

from ..factories import make_account, make_bulk_change, make_devices

S = DeviceChangeStatus
DAY = date(2026, 3, 10)
D0 = datetime(2026, 3, 10)
NOW = datetime(2026, 3, 11, 2, 0)


def _rows(engine: sa.Engine, bc_id: int) -> list[int]:
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == bc_id)
                .order_by(device_change.c.id)
            )
            .scalars()
            .all()
        )


def _set_rows(engine: sa.Engine, bc_id: int, header: dict, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(**header))
        for dc_id, values in zip(_rows(engine, bc_id), rows):
            conn.execute(sa.update(device_change).where(device_change.c.id == dc_id).values(**values))


def _log(
    conn: sa.Connection,
    tenant_id: int,
    bc_id: int,
    status: str | None,
    has_errors: bool,
    request: bool = True,
    at: datetime = D0 + timedelta(hours=1),
    ms: float | None = None,
) -> None:
    conn.execute(
        sa.insert(bulk_change_log).values(
            tenant_id=tenant_id,
            bulk_change_id=bc_id,
            description="call",
            process_by="test",
            created_at=at,
            request_text="PUT /x" if request else None,
            response_status=status,
            has_errors=has_errors,
            response_ms=ms,
        )
    )


@pytest.fixture
def fixed_day(engine: sa.Engine) -> None:
    """The data set the expectations below are computed from by hand."""
    att = make_account(engine, "http://127.0.0.1:9/a")  # carrier att_pod19
    vz = make_account(engine, "http://127.0.0.1:9/v", integration="thingspace", name="VZ")
    with engine.begin() as conn:
        conn.execute(
            sa.update(service_provider)
            .where(service_provider.c.id == vz["service_provider_id"])
            .values(carrier="verizon")
        )
    att_dev, vz_dev = make_devices(engine, att, 12), make_devices(engine, vz, 8)

    # A: StatusUpdate on att_pod19, submitted at D0. Timed rows: 10, 20, 30, 40 s (the 40 s one API_FAILED);
    # one validation ERROR (finished, not timed), one CANCELLED (ignored), one finished the next day (ignored).
    a = make_bulk_change(engine, att, att_dev[:7], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    _set_rows(
        engine,
        a,
        {"status": "PROCESSED", "created_at": D0},
        [
            {"status": "PROCESSED", "processed_at": D0 + timedelta(seconds=10)},
            {"status": "PROCESSED", "processed_at": D0 + timedelta(seconds=20)},
            {"status": "PROCESSED", "processed_at": D0 + timedelta(seconds=30)},
            {"status": "API_FAILED", "processed_at": D0 + timedelta(seconds=40)},
            {"status": "ERROR", "processed_at": D0},
            {"status": "CANCELLED", "processed_at": D0 + timedelta(seconds=5)},
            {"status": "PROCESSED", "processed_at": D0 + timedelta(days=1, seconds=1)},
        ],
    )
    # B: CarrierRatePlanChange on verizon submitted the evening before: one row done at 01:00 (7200 s),
    # one scheduled for 06:00 and done at 06:01:40 (100 s: timed from its effective date).
    b = make_bulk_change(engine, vz, vz_dev[:2], ChangeType.CARRIER_RATE_PLAN_CHANGE, {"carrier_rate_plan": "P2"})
    _set_rows(
        engine,
        b,
        {"status": "PROCESSED", "created_at": D0 - timedelta(hours=1)},
        [
            {"status": "PROCESSED", "processed_at": D0 + timedelta(hours=1)},
            {
                "status": "PROCESSED",
                "processed_at": D0 + timedelta(hours=6, seconds=100),
                "effective_at": D0 + timedelta(hours=6),
            },
        ],
    )
    # Queue: C waits for a run; E has 3 rows in PROCESSING; F is scheduled for next week; G is due.
    make_bulk_change(engine, att, att_dev[7:9], ChangeType.STATUS_UPDATE, {"status": "ACTIVATED"})
    e = make_bulk_change(engine, vz, vz_dev[2:5], ChangeType.STATUS_UPDATE, {"status": "ACTIVATED"})
    _set_rows(engine, e, {"status": "PENDING"}, [{"status": "PROCESSING", "carrier_request_id": "r"}] * 3)
    make_bulk_change(
        engine,
        att,
        att_dev[9:10],
        ChangeType.STATUS_UPDATE,
        {"status": "ACTIVATED"},
        effective_at=NOW + timedelta(days=7),
    )
    make_bulk_change(
        engine,
        vz,
        vz_dev[5:6],
        ChangeType.STATUS_UPDATE,
        {"status": "ACTIVATED"},
        effective_at=NOW - timedelta(hours=1),
    )
    with engine.begin() as conn:
        # Carrier exchanges of A that day: 2 ok, a 404, a 503, a timeout; a DB-only log row is no exchange;
        # one exchange the day before does not count. B: one 200 with an error in its body.
        # Response times: A 100, 200, 300, 400 ms and the timeout at 1000 ms; B 50 ms.
        for (status, err), ms in zip(
            (("200", False), ("200", False), ("404", True), ("503", True), (None, True)), (100, 200, 300, 400, 1000)
        ):
            _log(conn, att["tenant_id"], a, status, err, ms=ms)
        _log(conn, att["tenant_id"], a, None, False, request=False)
        _log(conn, att["tenant_id"], a, "500", True, at=D0 - timedelta(seconds=1), ms=9999)
        _log(conn, vz["tenant_id"], b, "200", True, ms=50)


EXPECTED = {
    "queue/bulk_changes_waiting": 2,  # C (NEW) and G (SCHEDULED, due)
    "queue/bulk_changes_scheduled": 1,
    "queue/rows_processing": 3,
    "rows_finished": 7,  # A: 4 timed + 1 ERROR; B: 2
    "carrier_calls": 6,
    "processing_seconds_p50/StatusUpdate/att_pod19": 25.0,  # [10, 20, 30, 40]: (20 + 30) / 2
    "processing_seconds_p95/StatusUpdate/att_pod19": 38.5,  # rank 0.95 * 3 = 2.85: 30 + 0.85 * 10
    "rows_timed/StatusUpdate/att_pod19": 4,
    "processing_seconds_p50/CarrierRatePlanChange/verizon": 3650.0,  # [100, 7200]: midpoint
    "processing_seconds_p95/CarrierRatePlanChange/verizon": 6845.0,  # 100 + 0.95 * 7100
    "rows_timed/CarrierRatePlanChange/verizon": 2,
    "error_rate/att_pod19/api_failed": 0.2,  # 1 of 5 finished
    "error_rate/att_pod19/error": 0.2,
    "error_rate/verizon/api_failed": 0.0,
    "error_rate/verizon/error": 0.0,
    "call_error_rate/att_pod19/http_4xx": 0.2,  # 1 of 5 exchanges
    "call_error_rate/att_pod19/http_5xx": 0.2,
    "call_error_rate/att_pod19/http_other": 0.0,
    "call_error_rate/att_pod19/no_response": 0.2,
    "call_error_rate/verizon/http_4xx": 0.0,
    "call_error_rate/verizon/http_5xx": 0.0,
    "call_error_rate/verizon/http_other": 1.0,
    "call_error_rate/verizon/no_response": 0.0,
    "api_response_ms_p50/att_pod19": 300.0,  # [100, 200, 300, 400, 1000]
    "api_response_ms_p95/att_pod19": 880.0,  # rank 0.95 * 4 = 3.8: 400 + 0.8 * 600
    "api_response_ms_p50/verizon": 50.0,
    "api_response_ms_p95/verizon": 50.0,
}


def test_daily_metrics_match_hand_computation(engine, fixed_day) -> None:
    values = metric_values(compute_daily_metrics(engine, DAY, NOW))
    assert values == pytest.approx(EXPECTED)
    assert set(values) == set(EXPECTED)


def test_an_empty_day_has_only_queue_numbers(engine, fixed_day) -> None:
    values = metric_values(compute_daily_metrics(engine, DAY - timedelta(days=30), NOW))
    assert values == {
        "queue/bulk_changes_waiting": 2,
        "queue/bulk_changes_scheduled": 1,
        "queue/rows_processing": 3,
        "rows_finished": 0,
        "carrier_calls": 0,
    }


def test_metrics_asset_publishes_the_numbers(engine, dagster_instance, fixed_day) -> None:
    result = (
        build_definitions()
        .resolve_job_def("retention_job")
        .execute_in_process(
            instance=dagster_instance,
            partition_key=DAY.isoformat(),
            asset_selection=[dg.AssetKey("bulk_change_metrics")],
            run_config={"ops": {"bulk_change_metrics": {"config": {"now": NOW.isoformat()}}}},
        )
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("bulk_change_metrics")
    numbers = {k: v.value for k, v in mat.metadata.items() if k != "summary"}
    assert numbers == pytest.approx(EXPECTED)
    assert isinstance(mat.metadata["processing_seconds_p95/StatusUpdate/att_pod19"], dg.FloatMetadataValue)
    assert isinstance(mat.metadata["queue/rows_processing"], dg.IntMetadataValue)
    summary = mat.metadata["summary"].value
    assert "| StatusUpdate | att_pod19 | 4 | 25.0 | 38.5 |" in summary
    assert "| att_pod19 | 5 | 20.0% | 20.0% | 5 | 3 |" in summary
