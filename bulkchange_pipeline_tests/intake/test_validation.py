"""Per-device validation against the demo seed, on SQLite and PostgreSQL (DESIGN 4, R4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import (
    BulkChangeRequest,
    ChangeType,
    DeviceChangeStatus,
    Integration,
    unsupported_reason,
)
from bulkchange_pipeline.intake.csv_file import parse_csv
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.intake.validation import RequestRejected, validate_request
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import DemoSeed, demo_iccid, demo_imei

from .conftest import table_counts


def jasper(i: int) -> str:
    return demo_iccid(1, 0, i)


def _wrong_check_digit(iccid: str) -> str:
    return iccid[:-1] + str((int(iccid[-1]) + 1) % 10)


def _request(seed: DemoSeed, integration: str, change_type: ChangeType, devices: list, **payload) -> BulkChangeRequest:
    from bulkchange_pipeline.domain import PAYLOAD_KEYS

    body = {
        "serviceProviderId": seed.service_providers[integration],
        "changeType": int(change_type),
        "devices": devices,
    }
    if payload:
        body[PAYLOAD_KEYS[change_type]] = payload
    return BulkChangeRequest.model_validate(body)


def test_dry_run_csv_reports_one_reason_per_bad_row_and_writes_nothing(engine: sa.Engine, seed: DemoSeed) -> None:
    unknown = jasper(999)
    other_tenant = seed.other_iccids[0]
    csv_text = "\n".join(
        [
            "iccid,carrierRatePlan",
            f"{jasper(1)},IOT-5GB",  # line 2: good
            f"{jasper(2)},iot-1gb",  # line 3: good (plan spelling normalised)
            f"{_wrong_check_digit(jasper(3))},IOT-5GB",  # line 4
            f"{jasper(1)},IOT-1GB",  # line 5: duplicate of line 2
            f"{unknown},IOT-5GB",  # line 6
            f"{other_tenant},IOT-5GB",  # line 7: another tenant's device
            f"{jasper(4)},NOPE",  # line 8
            '"1\'); DROP TABLE device;--",IOT-5GB',  # line 9
            f"{demo_iccid(2, 0, 0)},IOT-5GB",  # line 10: a ThingSpace device
        ]
    ).encode()
    parsed = parse_csv(
        csv_text, change_type="CarrierRatePlanChange", service_provider_id=seed.service_providers["jasper"]
    )
    before = table_counts(engine)
    outcome = submit(engine, seed.tenant_id, parsed.request, "test", dry_run=True, row_numbers=parsed.row_numbers)
    assert table_counts(engine) == before
    assert outcome.bulk_change_id is None
    report = outcome.report
    reasons = {e.row: e.reason for e in report.errors}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10]
    assert "wrong check digit (Luhn)" in reasons[4]
    assert reasons[5] == f"duplicate: ICCID {jasper(1)} is already listed in row 2"
    assert reasons[6] == f"no device with ICCID {unknown} in this tenant's inventory"
    # Another tenant's device reads exactly like an unknown one: nothing leaks.
    assert reasons[7] == f"no device with ICCID {other_tenant} in this tenant's inventory"
    assert reasons[8].startswith("unknown carrier rate plan 'NOPE'") and "IOT-5GB" in reasons[8]
    assert "digits only" in reasons[9]
    assert "belongs to service provider 'Verizon ThingSpace'" in reasons[10]
    assert report.accepted == 2 and report.total == 9
    good = [r for r in report.rows if r.status is DeviceChangeStatus.NEW]
    assert [r.change_request for r in good] == [
        {"carrier_rate_plan": "IOT-5GB", "communication_plan": "CP-IOT-DATA"},
        {"carrier_rate_plan": "IOT-1GB", "communication_plan": "CP-IOT-DATA"},
    ]
    assert all(r.device_id is not None for r in good)


def test_unsupported_change_type_refuses_every_row(engine: sa.Engine, seed: DemoSeed) -> None:
    data = f"iccid,newIccid\n{jasper(1)},{jasper(900)}\n{jasper(2)},{jasper(901)}\n".encode()
    parsed = parse_csv(data, change_type=9, service_provider_id=seed.service_providers["jasper"])
    report = validate_request(engine, seed.tenant_id, parsed.request)
    expected = unsupported_reason(ChangeType.CHANGE_ICCID_AND_IMEI, Integration.JASPER)
    assert [e.reason for e in report.errors] == [expected, expected]
    assert report.accepted == 0 and all(r.status is DeviceChangeStatus.ERROR for r in report.rows)


def test_status_update_transitions_spelling_and_schedule(engine: sa.Engine, seed: DemoSeed) -> None:
    # Beyond Jasper's 180 days: the row waits in SCHEDULED (nearer dates go to Jasper itself).
    future = (datetime.now(UTC) + timedelta(days=200)).replace(microsecond=0)
    devices = [
        {"iccid": jasper(1), "status": "deactivated"},  # ACTIVATED -> DEACTIVATED, Jasper spelling
        {"iccid": jasper(2), "status": "TEST_READY"},  # ACTIVATED -> TEST_READY is not allowed
        {
            "iccid": jasper(8),
            "status": "ACTIVATED",
            "effectiveDate": future.isoformat(),
        },  # DEACTIVATED -> ACTIVATED later
        {"iccid": jasper(3), "status": "FLYING"},
        {"imei": demo_imei(1, 0, 5), "status": "DEACTIVATED"},  # by IMEI
    ]
    report = validate_request(engine, seed.tenant_id, _request(seed, "jasper", ChangeType.STATUS_UPDATE, devices))
    rows = report.rows
    assert rows[0].status is DeviceChangeStatus.NEW and rows[0].change_request["status"] == "DEACTIVATED"
    assert rows[1].status_details.startswith("cannot change status from ACTIVATED to TEST_READY on jasper")
    assert rows[2].status is DeviceChangeStatus.SCHEDULED
    assert rows[2].effective_at == future.replace(tzinfo=None)
    assert "unknown jasper status 'FLYING'" in rows[3].status_details
    assert rows[4].status is DeviceChangeStatus.NEW and rows[4].iccid == jasper(5)
    assert report.scheduled == 1 and len(report.errors) == 2


def test_customer_assignment_adds_customer_name(engine: sa.Engine, seed: DemoSeed) -> None:
    acme = seed.customers["Acme Logistics"]
    devices = [jasper(1), {"iccid": jasper(2), "customerId": 99999}]
    report = validate_request(
        engine, seed.tenant_id, _request(seed, "jasper", ChangeType.CUSTOMER_ASSIGNMENT, devices, customerId=acme)
    )
    assert report.rows[0].change_request == {
        "customer_id": acme,
        "customer_name": "Acme Logistics",
        "rev_customer_id": "1001",
    }
    assert report.rows[1].status_details == "no customer with id 99999 in this tenant"


def test_customer_rate_plan_checks(engine: sa.Engine, seed: DemoSeed) -> None:
    plan = seed.customer_rate_plans["Sensor Lite 100MB"]
    devices = [
        jasper(1),
        {"iccid": jasper(2), "customerPoolId": 424242},
        {"iccid": jasper(3), "customerRatePlanId": 7777},
    ]
    req = _request(seed, "jasper", ChangeType.CUSTOMER_RATE_PLAN_CHANGE, devices, customerRatePlanId=plan)
    rows = validate_request(engine, seed.tenant_id, req).rows
    assert rows[0].change_request == {"customer_rate_plan_id": plan, "data_allocation_mb": 100}
    assert rows[1].status_details == "no customer rate pool with id 424242 in this tenant"
    assert rows[2].status_details == "no customer rate plan with id 7777 in this tenant"


def test_archival_refuses_recent_usage_unless_overridden(engine: sa.Engine, seed: DemoSeed) -> None:
    # Seed: device i used 2 days ago when i % 3 == 0, else 60 days ago; active Rev.io service when i % 7 == 6.
    devices = [jasper(0), jasper(1), jasper(13)]  # 13: usage 60 days ago, active Rev service (13 % 7 == 6)
    report = validate_request(engine, seed.tenant_id, _request(seed, "jasper", ChangeType.ARCHIVAL, devices))
    assert "within the last 30 days" in report.rows[0].status_details
    assert report.rows[1].status is DeviceChangeStatus.NEW
    assert "active Rev.io service" in report.rows[2].status_details
    forced = validate_request(
        engine, seed.tenant_id, _request(seed, "jasper", ChangeType.ARCHIVAL, devices, overrideUsageCheck=True)
    )
    assert forced.ok


def test_change_iccid_refuses_identifiers_in_use(engine: sa.Engine, seed: DemoSeed) -> None:
    ts = lambda i: demo_iccid(2, 0, i)  # noqa: E731 - ThingSpace devices
    devices = [
        {"iccid": ts(1), "newIccid": ts(2)},  # in use by another device
        {"iccid": ts(3), "newIccid": ts(900)},  # free
        {"iccid": ts(4), "newIccid": ts(900)},  # free, but asked twice
        {"iccid": ts(5), "newIccid": _wrong_check_digit(ts(901))},
    ]
    rows = validate_request(
        engine, seed.tenant_id, _request(seed, "thingspace", ChangeType.CHANGE_ICCID_AND_IMEI, devices)
    ).rows
    assert rows[0].status_details == f"new ICCID {ts(2)} is already used by another device in this inventory"
    assert rows[1].status is DeviceChangeStatus.NEW and rows[1].change_request == {"new_iccid": ts(900)}
    assert rows[2].status_details == f"new ICCID {ts(900)} is also requested in row 2"
    assert "wrong check digit" in rows[3].status_details


def test_service_provider_of_another_tenant_is_rejected(engine: sa.Engine, seed: DemoSeed) -> None:
    req = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.other_service_provider_id,
            "changeType": 1,
            "devices": [seed.other_iccids[0]],
            "statusUpdate": {"status": "DEACTIVATED"},
        }
    )
    with pytest.raises(RequestRejected, match="no service provider with id .* in this tenant"):
        validate_request(engine, seed.tenant_id, req)


def test_hostile_strings_are_refused_or_stored_as_data(engine: sa.Engine, seed: DemoSeed) -> None:
    sql = "Robert'); DROP TABLE device;--"
    devices = [
        {"iccid": jasper(1), "username": sql},  # legitimate text: stored as data
        {"iccid": jasper(2), "username": '=HYPERLINK("http://x")'},  # formula: refused
        {"device": "1' OR '1'='1"},
    ]
    req = _request(seed, "jasper", ChangeType.EDIT_USERNAME_COST_CENTER, devices, costCenter="CC-1")
    outcome = submit(engine, seed.tenant_id, req, "test")
    assert outcome.created
    results = list(iter_device_results(engine, seed.tenant_id, outcome.bulk_change_id))
    assert results[0]["status"] == "NEW" and results[0]["change_request"] == {"username": sql, "cost_center": "CC-1"}
    assert results[1]["status"] == "ERROR" and "formula" in results[1]["status_details"]
    assert results[2]["status"] == "ERROR" and results[2]["change_request"]["device"] == "1' OR '1'='1"
    with engine.connect() as conn:  # the device table is still there
        assert conn.execute(sa.text("SELECT count(*) FROM device")).scalar_one() > 0


def test_formula_in_payload_refuses_every_row(engine: sa.Engine, seed: DemoSeed) -> None:
    req = _request(seed, "jasper", ChangeType.EDIT_USERNAME_COST_CENTER, [jasper(1), jasper(2)], costCenter="@cmd")
    report = validate_request(engine, seed.tenant_id, req)
    assert len(report.errors) == 2 and all("formula" in e.reason for e in report.errors)


@pytest.mark.parametrize("hidden", [" =2+2", "\n=cmd", "\u00a0@SUM(1)", "  +HYPERLINK(1)", "\r\n-2+3"])
def test_formula_behind_whitespace_is_refused_as_it_would_be_stored(
    engine: sa.Engine, seed: DemoSeed, hidden: str
) -> None:
    """The models strip surrounding whitespace, so the check judges the stripped value (was: the
    leading space passed the check and ``=2+2`` reached Jasper's accountCustom1)."""
    req = _request(seed, "jasper", ChangeType.EDIT_USERNAME_COST_CENTER, [jasper(1), jasper(2)], costCenter=hidden)
    report = validate_request(engine, seed.tenant_id, req)
    assert len(report.errors) == 2 and all("formula" in e.reason for e in report.errors), [
        e.reason for e in report.errors
    ]
    assert all(r.status.value == "ERROR" for r in report.rows)  # stored as refusals, never sent


def test_text_that_only_looks_like_a_number_or_has_inner_signs_is_kept(engine: sa.Engine, seed: DemoSeed) -> None:
    req = _request(
        seed, "jasper", ChangeType.EDIT_USERNAME_COST_CENTER, [jasper(1)], costCenter=" +1 555 0100 ", username="a=b"
    )
    report = validate_request(engine, seed.tenant_id, req)
    assert report.errors == [], [e.reason for e in report.errors]


@pytest.mark.parametrize("rev_id", ["REV-1001", "0", "007", "2147483648", "12.5", "١٢", "-3"])
def test_rev_customer_id_must_be_an_int32_rev_io_accepts(engine: sa.Engine, seed: DemoSeed, rev_id: str) -> None:
    """Rev.io refuses a customer id that is not an int32; intake says so before anything is stored."""
    acme = seed.customers["Acme Logistics"]
    report = validate_request(
        engine,
        seed.tenant_id,
        _request(seed, "jasper", ChangeType.CUSTOMER_ASSIGNMENT, [jasper(1)], customerId=acme, revCustomerId=rev_id),
    )
    assert report.rows[0].status is DeviceChangeStatus.ERROR
    assert "revCustomerId must be a Rev.io customer id" in report.rows[0].status_details


@pytest.mark.parametrize("stored", ["REV-1001", "R 2", "0", "007", "2147483648", " 1001", "١٢"])
@pytest.mark.parametrize("change_type", [ChangeType.CUSTOMER_ASSIGNMENT, ChangeType.CREATE_REV_SERVICE])
def test_stored_rev_customer_id_that_is_not_int32_refuses_the_row(
    engine: sa.Engine, seed: DemoSeed, stored: str, change_type: ChangeType
) -> None:
    """The customer's stored Rev.io id (a free text column) is held to the same int32 rule as a
    revCustomerId given in the request: the row is refused at validation, never sent as text."""
    from bulkchange_pipeline.store.schema import customer

    acme = seed.customers["Acme Logistics"]
    with engine.begin() as conn:
        conn.execute(sa.update(customer).where(customer.c.id == acme).values(rev_customer_id=stored))
    integration = "jasper" if change_type is ChangeType.CUSTOMER_ASSIGNMENT else "revio"
    device = jasper(1) if integration == "jasper" else _first_device(engine, seed, "revio")
    report = validate_request(
        engine, seed.tenant_id, _request(seed, integration, change_type, [device], customerId=acme)
    )
    row = report.rows[0]
    assert row.status is DeviceChangeStatus.ERROR, row.change_request
    assert repr(stored) in row.status_details and "Acme Logistics" in row.status_details
    assert "1 to 2147483647" in row.status_details
    if change_type is ChangeType.CUSTOMER_ASSIGNMENT:  # an id given in the request is used instead
        given = _request(seed, integration, change_type, [device], customerId=acme, revCustomerId="1001")
        ok = validate_request(engine, seed.tenant_id, given).rows[0]
        assert ok.status is DeviceChangeStatus.NEW and ok.change_request["rev_customer_id"] == "1001"


def _first_device(engine: sa.Engine, seed: DemoSeed, integration: str) -> str:
    from bulkchange_pipeline.store.schema import device

    with engine.connect() as conn:
        return conn.execute(
            sa.select(device.c.iccid)
            .where(device.c.service_provider_id == seed.service_providers[integration], device.c.iccid.is_not(None))
            .order_by(device.c.id)
            .limit(1)
        ).scalar_one()
