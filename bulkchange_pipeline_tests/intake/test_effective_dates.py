"""Effective dates at validation: which rows wait in SCHEDULED and which are handed to the carrier.

Rule (``intake.validation`` docstring, ``domain.capabilities.CarrierDates``): a future effective
date makes a row SCHEDULED, launched by the sensor when due; where the carrier takes the date
itself (Jasper's four change types up to 180 days ahead, Telegence status and rate plan line
updates on a later day) the row is NEW, sent at once with the date, and says so in its details.
Runs on SQLite and PostgreSQL (the ``seed`` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from rich.console import Console

from bulkchange_pipeline.cli.render import render_report
from bulkchange_pipeline.domain import (
    MATRIX,
    PAYLOAD_KEYS,
    BulkChangeRequest,
    ChangeType,
    DeviceChangeStatus,
    Integration,
)
from bulkchange_pipeline.domain.capabilities import CarrierDates
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.intake.validation import validate_request
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import DemoSeed

CT = ChangeType
S = DeviceChangeStatus


def _request(seed: DemoSeed, integration: str, ct: ChangeType, devices: list, **payload) -> BulkChangeRequest:
    body = {"serviceProviderId": seed.service_providers[integration], "changeType": int(ct), "devices": devices}
    if payload:
        body[PAYLOAD_KEYS[ct]] = payload
    return BulkChangeRequest.model_validate(body)


def _at(days: float = 0, **kw) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days, **kw)).replace(microsecond=0)


def test_only_carriers_that_take_dates_are_marked_in_the_matrix() -> None:
    dated = {(ct, i) for ct, cells in MATRIX.items() for i, cap in cells.items() if cap.dates is not None}
    assert dated == {
        (CT.STATUS_UPDATE, Integration.JASPER),
        (CT.CARRIER_RATE_PLAN_CHANGE, Integration.JASPER),
        (CT.CUSTOMER_ASSIGNMENT, Integration.JASPER),
        (CT.EDIT_USERNAME_COST_CENTER, Integration.JASPER),
        (CT.STATUS_UPDATE, Integration.TELEGENCE),
        (CT.CARRIER_RATE_PLAN_CHANGE, Integration.TELEGENCE),
    }
    jasper = MATRIX[CT.STATUS_UPDATE][Integration.JASPER].dates
    now = datetime(2030, 1, 1, 12, 0)
    assert jasper.takes(now + timedelta(days=180), now) and not jasper.takes(now + timedelta(days=180, seconds=1), now)
    assert not jasper.takes(now, now) and not jasper.takes(now - timedelta(hours=1), now)
    telegence = CarrierDates(whole_days=True)
    assert not telegence.takes(datetime(2030, 1, 1, 23, 0), now)  # later today: Telegence would apply it now
    assert (
        telegence.takes(datetime(2030, 1, 2, 0, 0), now)
        and telegence.applies_on(datetime(2030, 1, 2, 9, 30)) == "2030-01-02"
    )
    assert telegence.takes(now + timedelta(days=3000), now)  # no documented limit


@pytest.mark.parametrize(
    "ct,values",
    [
        (CT.STATUS_UPDATE, {"status": "DEACTIVATED"}),
        (CT.CARRIER_RATE_PLAN_CHANGE, {"carrierRatePlan": "IOT-5GB"}),
        (CT.CUSTOMER_ASSIGNMENT, None),  # the seed's customer, filled in below
        (CT.EDIT_USERNAME_COST_CENTER, {"username": "truck-17"}),
    ],
)
def test_jasper_takes_dates_up_to_180_days_and_later_ones_wait_here(
    engine: sa.Engine, seed: DemoSeed, ct, values
) -> None:
    values = values or {"customerId": seed.customers["Acme Logistics"]}
    soon, edge, far = _at(10), _at(179, hours=23), _at(200)
    iccids = seed.sample_iccids["jasper"]  # indexes 0-7 are ACTIVATED
    devices = [
        {"iccid": iccids[0], "effectiveDate": soon.isoformat()},
        {"iccid": iccids[1], "effectiveDate": edge.isoformat()},
        {"iccid": iccids[2], "effectiveDate": far.isoformat()},
        {"iccid": iccids[3]},
        {"iccid": iccids[4], "effectiveDate": _at(-1).isoformat()},  # in the past: now
    ]
    report = validate_request(engine, seed.tenant_id, _request(seed, "jasper", ct, devices, **values))
    assert report.ok, report.errors
    rows = report.rows
    assert [r.status for r in rows] == [S.NEW, S.NEW, S.SCHEDULED, S.NEW, S.NEW]
    assert (
        rows[0].status_details
        == f"effective date passed to Jasper: the carrier applies it on {soon:%Y-%m-%d %H:%M:%S} UTC"
    )
    assert rows[1].status_details.startswith("effective date passed to Jasper")
    assert rows[0].effective_at is None and rows[1].effective_at is None  # not ours to wait for
    assert rows[0].change_request["effective_date"].startswith(f"{soon:%Y-%m-%dT%H:%M:%S}")  # the client sends it
    assert rows[2].effective_at == far.replace(tzinfo=None) and rows[2].status_details is None
    assert rows[3].status_details is None and rows[4].status_details is None
    assert report.scheduled == 1 and report.carrier_dated == 2


def test_telegence_line_updates_take_a_later_day_and_everything_else_waits(engine: sa.Engine, seed: DemoSeed) -> None:
    iccids = seed.sample_iccids["telegence"]  # 0-7 are A (active)
    later = _at(3)
    now = datetime.now(UTC).replace(hour=0, minute=5, second=0, microsecond=0, tzinfo=None)
    tonight = now.replace(hour=23, minute=0).isoformat() + "Z"
    for ct, values in (
        (CT.STATUS_UPDATE, {"status": "S"}),
        (CT.CARRIER_RATE_PLAN_CHANGE, {"carrierRatePlan": "IOTSOC5GB"}),
    ):
        devices = [
            {"iccid": iccids[0], "effectiveDate": later.isoformat()},
            {"iccid": iccids[1], "effectiveDate": tonight},
        ]
        report = validate_request(engine, seed.tenant_id, _request(seed, "telegence", ct, devices, **values), now=now)
        assert report.ok, report.errors
        first, second = report.rows
        assert first.status is S.NEW and first.effective_at is None
        assert first.status_details == f"effective date passed to Telegence: the carrier applies it on {later:%Y-%m-%d}"
        # Later today: Telegence takes whole days and would apply it at once, so it waits here.
        assert second.status is S.SCHEDULED and second.effective_at == now.replace(hour=23, minute=0)

    # Cells whose carrier takes no date keep waiting in SCHEDULED: Telegence username edits,
    # database-only changes, asynchronous carriers.
    for integration, ct, values in (
        ("telegence", CT.EDIT_USERNAME_COST_CENTER, {"username": "truck-17"}),
        ("jasper", CT.CUSTOMER_RATE_PLAN_CHANGE, {"customerRatePlanId": seed.customer_rate_plans["Fleet Plus 5GB"]}),
        ("jasper", CT.ARCHIVAL, {"overrideUsageCheck": True}),
        ("thingspace", CT.STATUS_UPDATE, {"status": "suspend"}),
    ):
        devices = [seed.sample_iccids[integration][0]]
        report = validate_request(
            engine, seed.tenant_id, _request(seed, integration, ct, devices, effectiveDate=later.isoformat(), **values)
        )
        assert report.ok, (ct, report.errors)
        assert [(r.status, r.effective_at, r.status_details) for r in report.rows] == [
            (S.SCHEDULED, later.replace(tzinfo=None), None)
        ], ct


def test_submit_stores_the_carrier_date_in_the_row_and_the_report_says_so(engine: sa.Engine, seed: DemoSeed) -> None:
    soon, far = _at(30), _at(365)
    iccids = seed.sample_iccids["jasper"]
    request = _request(
        seed,
        "jasper",
        CT.STATUS_UPDATE,
        [iccids[0], iccids[1], {"iccid": iccids[2], "effectiveDate": far.isoformat()}],
        status="DEACTIVATED",
        effectiveDate=soon.isoformat(),
    )
    dry = submit(engine, seed.tenant_id, request, "t", dry_run=True)
    out = Console(record=True, width=250)
    render_report(out, dry.report)
    text = out.export_text()
    assert "3 accepted (1 scheduled) (2 dated by the carrier)" in text
    assert f"effective date passed to Jasper: the carrier applies it on {soon:%Y-%m-%d %H:%M:%S} UTC" in text
    assert f"waits until {far:%Y-%m-%d %H:%M:%S} UTC" in text

    outcome = submit(engine, seed.tenant_id, request, "t")
    bc = get_bulk_change(engine, outcome.bulk_change_id, seed.tenant_id)
    # NEW rows present: the sensor starts it now; the far row keeps the header's next due time.
    assert bc["status"] == "NEW" and bc["counts"] == {"NEW": 2, "SCHEDULED": 1}
    assert bc["effective_at"] == far.replace(tzinfo=None)
    rows = list(iter_device_results(engine, seed.tenant_id, outcome.bulk_change_id))
    assert [(r["status"], r["status_details"], r["effective_at"]) for r in rows] == [
        ("NEW", f"effective date passed to Jasper: the carrier applies it on {soon:%Y-%m-%d %H:%M:%S} UTC", None),
        ("NEW", f"effective date passed to Jasper: the carrier applies it on {soon:%Y-%m-%d %H:%M:%S} UTC", None),
        ("SCHEDULED", None, far.replace(tzinfo=None)),
    ]
