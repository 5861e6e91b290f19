"""Bulk change requests in the seed's JSON shape, and per-device targets (build_target)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bulkchange_pipeline.domain import (
    PAYLOAD_KEYS,
    BulkChangeRequest,
    ChangeType,
    DeviceEntry,
    build_target,
    canonical_key,
    luhn_check_digit,
)

CT = ChangeType

# seed/data-flow.md "Request Structure", verbatim.
SEED_REQUEST = """
{
    "serviceProviderId": 123,
    "changeType": 4,
    "processChanges": true,
    "devices": ["ICCID1", "ICCID2", "IMEI1"],
    "customerRatePlanUpdate": {
        "customerRatePlanId": 456,
        "customerDataAllocationMB": 1024,
        "customerPoolId": 789,
        "effectiveDate": "2024-01-01T00:00:00Z"
    }
}
"""

GOOD_ICCID = "8901260882293964472" + luhn_check_digit("8901260882293964472")
GOOD_IMEI = "490154203237518"


def _bad_check_digit(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


def test_seed_request_parses():
    req = BulkChangeRequest.model_validate(json.loads(SEED_REQUEST))
    assert req.service_provider_id == 123
    assert req.change_type is CT.CUSTOMER_RATE_PLAN_CHANGE
    assert req.process_changes is True
    assert [e.identifier for e in req.entries()] == ["ICCID1", "ICCID2", "IMEI1"]
    assert req.payload == {
        "customerRatePlanId": 456,
        "customerDataAllocationMB": 1024,
        "customerPoolId": 789,
        "effectiveDate": "2024-01-01T00:00:00Z",
    }


def test_seed_request_builds_canonical_target():
    req = BulkChangeRequest.model_validate(json.loads(SEED_REQUEST))
    target, error = build_target(req.change_type, req.payload)
    assert error is None
    assert target == {
        "customer_rate_plan_id": 456,
        "data_allocation_mb": 1024,
        "customer_rate_pool_id": 789,
        "effective_date": "2024-01-01T00:00:00Z",
    }


def test_stored_json_round_trips():
    req = BulkChangeRequest.model_validate(json.loads(SEED_REQUEST))
    stored = req.to_json()
    assert stored["changeType"] == 4 and stored["serviceProviderId"] == 123
    assert "customerRatePlanUpdate" in stored and "statusUpdate" not in stored
    assert BulkChangeRequest.model_validate(stored) == req


@pytest.mark.parametrize("change_type", [4, "4", "CustomerRatePlanChange"])
def test_change_type_accepts_number_string_or_label(change_type):
    body = json.loads(SEED_REQUEST) | {"changeType": change_type}
    assert BulkChangeRequest.model_validate(body).change_type is CT.CUSTOMER_RATE_PLAN_CHANGE


@pytest.mark.parametrize("change_type", [6, 11])
def test_unknown_change_type_refused_with_valid_values(change_type):
    body = json.loads(SEED_REQUEST) | {"changeType": change_type}
    with pytest.raises(ValidationError) as exc:
        BulkChangeRequest.model_validate(body)
    text = str(exc.value)
    assert f"unknown change type {change_type}" in text
    assert "4 CustomerRatePlanChange" in text and "10 EditUsernameCostCenter" in text


def test_payload_of_another_change_type_refused():
    body = json.loads(SEED_REQUEST)
    body["statusUpdate"] = body.pop("customerRatePlanUpdate")
    with pytest.raises(ValidationError) as exc:
        BulkChangeRequest.model_validate(body)
    text = str(exc.value)
    assert "statusUpdate does not belong to changeType 4 (CustomerRatePlanChange); send customerRatePlanUpdate" in text


def test_extra_payload_alongside_the_right_one_refused():
    body = json.loads(SEED_REQUEST) | {"archival": {"overrideUsageCheck": True}}
    with pytest.raises(ValidationError, match="archival does not belong to changeType 4"):
        BulkChangeRequest.model_validate(body)


def test_unknown_top_level_field_refused():
    body = json.loads(SEED_REQUEST) | {"customerRatePlanUpdates": {}}
    with pytest.raises(ValidationError) as exc:
        BulkChangeRequest.model_validate(body)
    errors = exc.value.errors()
    assert [e["loc"] for e in errors] == [("customerRatePlanUpdates",)]
    assert errors[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("missing", ["changeType", "devices"])
def test_required_top_level_fields(missing):
    body = json.loads(SEED_REQUEST)
    del body[missing]
    with pytest.raises(ValidationError) as exc:
        BulkChangeRequest.model_validate(body)
    assert missing in str(exc.value)


def test_service_provider_may_be_left_out():
    """Issue 21: without serviceProviderId the devices are split by their service provider."""
    body = json.loads(SEED_REQUEST)
    del body["serviceProviderId"]
    assert BulkChangeRequest.model_validate(body).service_provider_id is None


def test_empty_device_list_refused():
    body = json.loads(SEED_REQUEST) | {"devices": []}
    with pytest.raises(ValidationError, match="devices"):
        BulkChangeRequest.model_validate(body)


def test_payload_keys_cover_every_change_type():
    assert set(PAYLOAD_KEYS) == set(ChangeType)
    assert len(set(PAYLOAD_KEYS.values())) == len(PAYLOAD_KEYS)
    for ct, key in PAYLOAD_KEYS.items():
        req = BulkChangeRequest.model_validate(
            {"serviceProviderId": 1, "changeType": int(ct), "devices": ["x"], key: {"a": 1}}
        )
        assert req.payload == {"a": 1}


# -- build_target per change type -----------------------------------------------------------------

VALID = [
    (CT.STATUS_UPDATE, {"targetStatus": "DEACTIVATED"}, {"status": "DEACTIVATED"}),
    (CT.STATUS_UPDATE, {"newStatus": " ACTIVATED ", "reasonCode": "R1"}, {"status": "ACTIVATED", "reason_code": "R1"}),
    (
        CT.ACTIVATE_NEW_SERVICE,
        {"ratePlan": "IOT-1GB", "serviceZipCode": "94105"},
        {"carrier_rate_plan": "IOT-1GB", "service_zip_code": "94105"},
    ),
    (CT.ARCHIVAL, {}, {"override_usage_check": False}),
    (CT.ARCHIVAL, {"overrideUsageCheck": True}, {"override_usage_check": True}),
    (CT.CUSTOMER_RATE_PLAN_CHANGE, {"customerPoolId": "789"}, {"customer_rate_pool_id": 789}),
    (CT.CUSTOMER_ASSIGNMENT, {"customerId": 5, "revCustomerId": "9"}, {"customer_id": 5, "rev_customer_id": "9"}),
    (
        CT.CARRIER_RATE_PLAN_CHANGE,
        {"carrierRatePlan": "IOT-5GB", "commPlan": "CP-Plus"},
        {"carrier_rate_plan": "IOT-5GB", "communication_plan": "CP-Plus"},
    ),
    (CT.CREATE_REV_SERVICE, {"customerId": 3, "productIds": [1, 2]}, {"customer_id": 3, "product_ids": [1, 2]}),
    (CT.CHANGE_ICCID_AND_IMEI, {"newIccid": GOOD_ICCID}, {"new_iccid": GOOD_ICCID}),
    (CT.CHANGE_ICCID_AND_IMEI, {"newImei": GOOD_IMEI}, {"new_imei": GOOD_IMEI}),
    (
        CT.EDIT_USERNAME_COST_CENTER,
        {"username": "truck-17", "costCenter": "CC-42"},
        {"username": "truck-17", "cost_center": "CC-42"},
    ),
    (CT.EDIT_USERNAME_COST_CENTER, {"cost_center": "CC-1"}, {"cost_center": "CC-1"}),
]


@pytest.mark.parametrize("ct,values,expected", VALID, ids=[f"{v[0].label}-{i}" for i, v in enumerate(VALID)])
def test_build_target_valid(ct, values, expected):
    target, error = build_target(ct, values)
    assert error is None
    assert target == expected


INVALID = [
    (CT.STATUS_UPDATE, {}, ["status", "Field required"]),
    (CT.STATUS_UPDATE, {"targetStatus": ""}, ["status"]),  # blank CSV cell = not given
    (CT.ACTIVATE_NEW_SERVICE, {}, ["carrier_rate_plan", "Field required"]),
    (CT.ACTIVATE_NEW_SERVICE, {"ratePlan": "P", "serviceZipCode": "9410"}, ["service_zip_code"]),
    (CT.CUSTOMER_RATE_PLAN_CHANGE, {"customerDataAllocationMB": 10}, ["give customerRatePlanId or customerPoolId"]),
    (CT.CUSTOMER_RATE_PLAN_CHANGE, {"customerRatePlanId": "abc"}, ["customer_rate_plan_id", "integer"]),
    (CT.CUSTOMER_RATE_PLAN_CHANGE, {"customerRatePlanId": 1, "customerDataAllocationMB": -1}, ["data_allocation_mb"]),
    (CT.CUSTOMER_ASSIGNMENT, {}, ["customer_id", "Field required"]),
    (CT.CUSTOMER_ASSIGNMENT, {"customerId": 5, "revCustomerId": "R-9"}, ["revCustomerId must be a Rev.io customer id"]),
    (CT.CARRIER_RATE_PLAN_CHANGE, {"communicationPlan": "CP"}, ["carrier_rate_plan", "Field required"]),
    (CT.CREATE_REV_SERVICE, {"productIds": [1]}, ["customer_id"]),
    (CT.CHANGE_ICCID_AND_IMEI, {}, ["give newIccid or newImei"]),
    (
        CT.CHANGE_ICCID_AND_IMEI,
        {"newIccid": _bad_check_digit(GOOD_ICCID)},
        ["wrong check digit (Luhn)", f"expected {GOOD_ICCID[-1]} as the last digit"],
    ),
    (
        CT.CHANGE_ICCID_AND_IMEI,
        {"newIccid": GOOD_ICCID, "newImei": _bad_check_digit(GOOD_IMEI)},
        ["IMEI", "expected 8 as the last digit"],
    ),
    (CT.CHANGE_ICCID_AND_IMEI, {"newImei": "12345"}, ["15 digits"]),
    (CT.EDIT_USERNAME_COST_CENTER, {}, ["give username or costCenter"]),
    (CT.EDIT_USERNAME_COST_CENTER, {"username": "x" * 129}, ["username"]),
    (CT.STATUS_UPDATE, {"targetStatus": "A", "customerId": 4}, ["customer_id: is not a field of this change type"]),
    (CT.ARCHIVAL, {"effectiveDate": "not a date"}, ["effective_date"]),
]


@pytest.mark.parametrize("ct,values,fragments", INVALID, ids=[f"{v[0].label}-{i}" for i, v in enumerate(INVALID)])
def test_build_target_invalid(ct, values, fragments):
    target, error = build_target(ct, values)
    assert target is None
    assert error
    for fragment in fragments:
        assert fragment in error


def test_effective_date_without_zone_is_utc():
    target, error = build_target(CT.STATUS_UPDATE, {"status": "ACTIVATED", "effectiveDate": "2030-05-01T08:30:00"})
    assert error is None
    assert target["effective_date"] == "2030-05-01T08:30:00Z"
    target, _ = build_target(CT.STATUS_UPDATE, {"status": "ACTIVATED", "effectiveDate": "2030-05-01T10:30:00+02:00"})
    assert target["effective_date"] == "2030-05-01T10:30:00+02:00"


def test_canonical_key():
    assert canonical_key(" customerPoolId ") == "customer_rate_pool_id"
    assert canonical_key("customerRatePoolId") == "customer_rate_pool_id"
    assert canonical_key("customer_rate_pool_id") == "customer_rate_pool_id"


# -- per-device overrides -------------------------------------------------------------------------


def test_device_objects_override_request_values():
    body = json.loads(SEED_REQUEST)
    body["devices"] = [
        "ICCID1",
        {"iccid": "ICCID2", "customerRatePlanId": 999},
        {"imei": "IMEI1", "customerDataAllocationMB": 2048, "customer_rate_pool_id": 790},
    ]
    req = BulkChangeRequest.model_validate(body)
    entries = req.entries()
    assert [e.identifier for e in entries] == ["ICCID1", "ICCID2", "IMEI1"]
    assert [e.values for e in entries] == [
        {},
        {"customerRatePlanId": 999},
        {"customerDataAllocationMB": 2048, "customer_rate_pool_id": 790},
    ]
    targets = [build_target(req.change_type, {**req.payload, **e.values}) for e in entries]
    assert [err for _, err in targets] == [None, None, None]
    base = {
        "customer_rate_plan_id": 456,
        "data_allocation_mb": 1024,
        "customer_rate_pool_id": 789,
        "effective_date": "2024-01-01T00:00:00Z",
    }
    assert targets[0][0] == base
    assert targets[1][0] == base | {"customer_rate_plan_id": 999}
    # a canonical-name override wins over the request's wire-name value for the same field
    assert targets[2][0] == base | {"data_allocation_mb": 2048, "customer_rate_pool_id": 790}


def test_one_bad_device_override_does_not_spoil_the_others():
    body = {
        "serviceProviderId": 1,
        "changeType": "ChangeICCIDAndIMEI",
        "devices": [
            {"iccid": GOOD_ICCID, "newImei": GOOD_IMEI},
            {"iccid": GOOD_ICCID, "newImei": _bad_check_digit(GOOD_IMEI)},
        ],
        "iccidImeiChange": {},
    }
    req = BulkChangeRequest.model_validate(body)
    results = [build_target(req.change_type, {**req.payload, **e.values}) for e in req.entries()]
    assert results[0] == ({"new_imei": GOOD_IMEI}, None)
    assert results[1][0] is None and "expected 8 as the last digit" in results[1][1]


def test_device_entry_identifier_precedence():
    assert DeviceEntry(iccid="A", device="B", imei="C").identifier == "A"
    assert DeviceEntry(device="B", imei="C").identifier == "B"
    assert DeviceEntry(msisdn="4155550100").identifier == "4155550100"
    assert DeviceEntry().identifier == ""
