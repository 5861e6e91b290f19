"""ChangeType numbers and parsing, and the bulk status derived from device rows (DESIGN section 4)."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain import (
    FINAL_DEVICE_STATUSES,
    BulkChangeStatus,
    ChangeType,
    DeviceChangeStatus,
    Integration,
    derive_bulk_status,
)

# DESIGN section 4: the replaced system's numbers and names.
DESIGN_CHANGE_TYPES = {
    1: "StatusUpdate",
    2: "ActivateNewService",
    3: "Archival",
    4: "CustomerRatePlanChange",
    5: "CustomerAssignment",
    7: "CarrierRatePlanChange",
    8: "CreateRevService",
    9: "ChangeICCIDAndIMEI",
    10: "EditUsernameCostCenter",
}


def test_change_type_numbers_and_labels_match_design():
    assert {int(ct): ct.label for ct in ChangeType} == DESIGN_CHANGE_TYPES


@pytest.mark.parametrize("number,label", sorted(DESIGN_CHANGE_TYPES.items()))
def test_parse_int_numeric_string_and_label(number, label):
    ct = ChangeType(number)
    assert ChangeType.parse(number) is ct
    assert ChangeType.parse(str(number)) is ct
    assert ChangeType.parse(f" {number} ") is ct
    assert ChangeType.parse(label) is ct
    assert ChangeType.parse(label.upper()) is ct
    assert ChangeType.parse(ct.name.lower()) is ct  # e.g. customer_rate_plan_change
    assert ChangeType.parse(ct) is ct


@pytest.mark.parametrize("value", [6, 11, "6", "11", 0, -1, "-4", "StatusUpdated", "", None, "4.0"])
def test_parse_rejects_others_listing_valid_values(value):
    with pytest.raises(ValueError) as exc:
        ChangeType.parse(value)
    message = str(exc.value)
    assert repr(value) in message
    for number, label in DESIGN_CHANGE_TYPES.items():
        assert f"{number} {label}" in message
    assert "6 " not in message.split("valid change types are:")[1]


@pytest.mark.parametrize("value", [4.5, True])
def test_parse_rejects_non_integral_numbers(value):
    # DESIGN: "Any other number is rejected with a clear error"; 4.5 is not a change type, and a
    # JSON `true` is not a number the replaced system sent.
    with pytest.raises(ValueError):
        ChangeType.parse(value)


def test_integration_parse_jasper_family_and_unknown():
    for name in ("jasper", "ATT_POD19", "rogers", " t_mobile_jasper "):
        assert Integration.parse(name) is Integration.JASPER
    assert Integration.parse("ThingSpace") is Integration.THINGSPACE
    with pytest.raises(ValueError, match="valid: jasper, thingspace, telegence, teal, pond, revio"):
        Integration.parse("sprint")


def test_final_statuses():
    assert {
        DeviceChangeStatus.PROCESSED,
        DeviceChangeStatus.API_FAILED,
        DeviceChangeStatus.ERROR,
        DeviceChangeStatus.CANCELLED,
    } == FINAL_DEVICE_STATUSES
    assert not DeviceChangeStatus.PROCESSING.is_final
    assert not DeviceChangeStatus.SCHEDULED.is_final
    assert not DeviceChangeStatus.NEW.is_final


# -- derive_bulk_status ---------------------------------------------------------------------------


@pytest.mark.parametrize("async_", [False, True])
def test_all_processed(async_):
    assert derive_bulk_status({"PROCESSED": 5}, has_pending_async=async_) is BulkChangeStatus.PROCESSED


@pytest.mark.parametrize(
    "counts",
    [
        {"PROCESSED": 3, "API_FAILED": 2},
        {"API_FAILED": 4},
        {"PROCESSED": 1, "API_FAILED": 1, "ERROR": 1, "CANCELLED": 1},
        {"ERROR": 2},
    ],
)
def test_final_mixes_are_processed(counts):
    # PROCESSED for the header means every row is final; the counts carry the failures.
    assert derive_bulk_status(counts) is BulkChangeStatus.PROCESSED


def test_new_only():
    assert derive_bulk_status({"NEW": 10}) is BulkChangeStatus.NEW
    assert derive_bulk_status({"NEW": 10}, has_pending_async=True) is BulkChangeStatus.NEW


def test_new_with_some_finished_is_processing():
    assert derive_bulk_status({"NEW": 3, "PROCESSED": 2}) is BulkChangeStatus.PROCESSING
    assert derive_bulk_status({"NEW": 3, "ERROR": 2}) is BulkChangeStatus.PROCESSING
    assert derive_bulk_status({"NEW": 3, "PROCESSING": 2}, has_pending_async=True) is BulkChangeStatus.PROCESSING


def test_processing_only_sync_vs_async():
    assert derive_bulk_status({"PROCESSING": 4}) is BulkChangeStatus.PROCESSING
    assert derive_bulk_status({"PROCESSING": 4}, has_pending_async=True) is BulkChangeStatus.PENDING
    assert derive_bulk_status({"PROCESSING": 4, "PROCESSED": 6}, has_pending_async=True) is BulkChangeStatus.PENDING


def test_scheduled_only_and_scheduled_with_finished():
    assert derive_bulk_status({"SCHEDULED": 7}) is BulkChangeStatus.SCHEDULED
    assert derive_bulk_status({"SCHEDULED": 7, "PROCESSED": 3}) is BulkChangeStatus.SCHEDULED


def test_all_cancelled():
    assert derive_bulk_status({"CANCELLED": 3}) is BulkChangeStatus.CANCELLED
    # zero counts for other statuses do not change that
    assert derive_bulk_status({"CANCELLED": 3, "PROCESSED": 0, "NEW": 0}) is BulkChangeStatus.CANCELLED
    # but one processed row means it was not all cancelled
    assert derive_bulk_status({"CANCELLED": 3, "PROCESSED": 1}) is BulkChangeStatus.PROCESSED


def test_empty():
    assert derive_bulk_status({}) is BulkChangeStatus.PROCESSED
    assert derive_bulk_status({"NEW": 0}) is BulkChangeStatus.PROCESSED


def test_unknown_status_in_counts_is_an_error():
    with pytest.raises(ValueError):
        derive_bulk_status({"DONE": 1})
