"""The matrix's SOAP column (Jasper over Control Center's SOAP Terminal service): the cells of the
REST Jasper column, with effective dates taken as whole days; and intake validation reading the
column of the service provider's protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bulkchange_pipeline.domain import (
    MATRIX,
    SOAP_MATRIX,
    BulkChangeRequest,
    CarrierProtocol,
    ChangeType,
    DeviceChangeStatus,
    Handling,
    Integration,
    capability,
    unsupported_reason,
)
from bulkchange_pipeline.intake.validation import validate_request

from ..factories import make_account, make_devices

J, REST, SOAP = Integration.JASPER, CarrierProtocol.REST, CarrierProtocol.SOAP


def test_the_soap_column_has_every_cell_of_the_rest_jasper_column_and_nothing_else() -> None:
    rest = {ct for ct in ChangeType if capability(ct, J, REST) is not None}
    soap = {ct for ct in ChangeType if capability(ct, J, SOAP) is not None}
    assert (
        soap
        == rest
        == {
            ChangeType.STATUS_UPDATE,
            ChangeType.ARCHIVAL,
            ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
            ChangeType.CUSTOMER_ASSIGNMENT,
            ChangeType.CARRIER_RATE_PLAN_CHANGE,
            ChangeType.EDIT_USERNAME_COST_CENTER,
        }
    )
    for ct in soap:
        assert capability(ct, J, SOAP).handling is capability(ct, J, REST).handling  # type: ignore[union-attr]
    # Only the Jasper family has a SOAP column; every other integration has none.
    assert {i for cells in SOAP_MATRIX.values() for i in cells} == {J}
    assert all(capability(ct, i, SOAP) is None for ct in ChangeType for i in Integration if i is not J)
    assert capability(ChangeType.STATUS_UPDATE, J) is MATRIX[ChangeType.STATUS_UPDATE][J]  # REST by default


def test_soap_dates_are_whole_days_rest_dates_are_instants() -> None:
    now = datetime(2030, 1, 10, 8, 0)
    later_today, tomorrow, far = now + timedelta(hours=5), now + timedelta(days=1), now + timedelta(days=181)
    soap = capability(ChangeType.STATUS_UPDATE, J, SOAP).dates  # type: ignore[union-attr]
    rest = capability(ChangeType.STATUS_UPDATE, J, REST).dates  # type: ignore[union-attr]
    assert soap is not None and rest is not None
    assert (soap.takes(later_today, now), soap.takes(tomorrow, now), soap.takes(far, now)) == (False, True, False)
    assert (rest.takes(later_today, now), rest.takes(tomorrow, now)) == (True, True)
    assert soap.applies_on(tomorrow) == "2030-01-11"


def test_unsupported_reason_names_the_protocol() -> None:
    ct = ChangeType.CHANGE_ICCID_AND_IMEI
    assert unsupported_reason(ct, J) == (
        f"{ct.label} is not supported for jasper devices (supported for: thingspace, telegence)"
    )
    assert unsupported_reason(ct, J, SOAP) == (
        f"{ct.label} is not supported for jasper devices over SOAP (supported over SOAP for: no carrier)"
    )


def test_validation_reads_the_column_of_the_providers_protocol(engine: sa.Engine) -> None:
    """A time later today: a REST Jasper provider hands it to the carrier; a SOAP one keeps the row
    SCHEDULED (EditTerminal takes a day), and both hand over a later day."""
    now = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
    rest = make_account(engine, "http://127.0.0.1:9/rws/api/v1", name="J_REST")
    soap = make_account(engine, "http://127.0.0.1:9", name="J_SOAP", protocol="soap")
    outcome: dict[str, list[tuple[DeviceChangeStatus, bool]]] = {}
    for label, ids in (("rest", rest), ("soap", soap)):
        devices = make_devices(engine, ids, 2)
        request = BulkChangeRequest.model_validate(
            {
                "serviceProviderId": ids["service_provider_id"],
                "changeType": int(ChangeType.STATUS_UPDATE),
                "devices": [
                    {"iccid": devices[0]["iccid"], "effectiveDate": (now + timedelta(hours=5)).isoformat()},
                    {"iccid": devices[1]["iccid"], "effectiveDate": (now + timedelta(days=2)).isoformat()},
                ],
                "statusUpdate": {"targetStatus": "DEACTIVATED"},
            }
        )
        report = validate_request(engine, ids["tenant_id"], request, now=now)
        assert report.errors == []
        outcome[label] = [(r.status, bool(r.status_details)) for r in report.rows]
    assert outcome["rest"] == [(DeviceChangeStatus.NEW, True), (DeviceChangeStatus.NEW, True)]  # carrier-dated
    assert outcome["soap"] == [(DeviceChangeStatus.SCHEDULED, False), (DeviceChangeStatus.NEW, True)]
    assert capability(ChangeType.ARCHIVAL, J, SOAP).handling is Handling.DB  # type: ignore[union-attr]
