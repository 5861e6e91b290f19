"""The change-type x carrier matrix and the per-carrier status transitions (DESIGN section 4)."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain import (
    MATRIX,
    TRANSITIONS,
    ChangeType,
    Handling,
    Integration,
    canonical_status,
    capability,
    transition_error,
    unsupported_reason,
)

CT, I = ChangeType, Integration
CARRIERS = (I.JASPER, I.THINGSPACE, I.TELEGENCE, I.TEAL, I.POND, I.REVIO)

# DESIGN section 4, transcribed cell by cell (columns in CARRIERS order):
#   "-"  not supported; "DB" our database only; "async" the carrier answers later; "C" carrier call.
DESIGN_TABLE: dict[ChangeType, tuple[str, ...]] = {
    #                                 Jasper  ThingSpace Telegence Teal     Pond   Rev.io
    CT.STATUS_UPDATE: ("C", "async", "C", "async", "C", "-"),
    CT.ACTIVATE_NEW_SERVICE: ("-", "-", "async", "-", "-", "-"),
    CT.ARCHIVAL: ("DB", "DB", "DB", "DB", "DB", "-"),
    CT.CUSTOMER_RATE_PLAN_CHANGE: ("DB", "DB", "DB", "DB", "DB", "-"),
    CT.CUSTOMER_ASSIGNMENT: ("C", "DB", "DB", "DB", "DB", "C"),
    CT.CARRIER_RATE_PLAN_CHANGE: ("C", "async", "C", "async", "C", "-"),
    CT.CREATE_REV_SERVICE: ("-", "-", "-", "-", "-", "C"),
    CT.CHANGE_ICCID_AND_IMEI: ("-", "async", "C", "-", "-", "-"),
    CT.EDIT_USERNAME_COST_CENTER: ("C", "DB", "C", "DB", "DB", "-"),
}
HANDLING = {"C": Handling.CARRIER, "async": Handling.CARRIER_ASYNC, "DB": Handling.DB}

CELLS = [(ct, carrier, DESIGN_TABLE[ct][j]) for ct in DESIGN_TABLE for j, carrier in enumerate(CARRIERS)]


def test_table_covers_every_change_type_and_carrier():
    assert set(DESIGN_TABLE) == set(ChangeType)
    assert set(CARRIERS) == set(Integration)
    assert set(MATRIX) == set(ChangeType)
    assert len(CELLS) == 54


@pytest.mark.parametrize("ct,carrier,cell", CELLS, ids=[f"{ct.label}-{c.value}" for ct, c, _ in CELLS])
def test_capability_cell_matches_design(ct, carrier, cell):
    cap = capability(ct, carrier)
    if cell == "-":
        assert cap is None, f"DESIGN marks {ct.label} x {carrier.value} '-', but MATRIX has {cap}"
        reason = unsupported_reason(ct, carrier)
        assert ct.label in reason and carrier.value in reason
    else:
        assert cap is not None, f"DESIGN supports {ct.label} x {carrier.value} ({cell})"
        assert cap.handling is HANDLING[cell]
        assert cap.how


def test_unsupported_reason_lists_carriers_that_can():
    reason = unsupported_reason(CT.ACTIVATE_NEW_SERVICE, I.JASPER)
    assert reason == "ActivateNewService is not supported for jasper devices (supported for: telegence)"
    reason = unsupported_reason(CT.CHANGE_ICCID_AND_IMEI, I.REVIO)
    assert "supported for: thingspace, telegence" in reason


# -- transitions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "integration,status",
    [(i, s) for i, table in TRANSITIONS.items() for s in table],
)
def test_same_status_is_always_allowed(integration, status):
    # a re-run over devices an earlier run already changed must not fail (even terminal ones)
    assert transition_error(integration, status, status) is None


def test_current_none_allows_any_known_status():
    assert transition_error(I.JASPER, None, "RETIRED") is None


def test_purged_to_activated_refused_as_terminal():
    reason = transition_error(I.JASPER, "PURGED", "ACTIVATED")
    assert reason is not None
    assert "PURGED" in reason and "ACTIVATED" in reason and "jasper" in reason
    assert "allowed from PURGED: none (terminal status)" in reason


def test_refusal_lists_allowed_targets_sorted():
    reason = transition_error(I.JASPER, "ACTIVATED", "INVENTORY")
    assert reason == (
        "cannot change status from ACTIVATED to INVENTORY on jasper; allowed from ACTIVATED: DEACTIVATED, RETIRED"
    )
    reason = transition_error(I.JASPER, "RETIRED", "activated")
    assert reason is not None and "allowed from RETIRED: PURGED" in reason


def test_target_case_is_normalised():
    assert transition_error(I.JASPER, "ACTIVATED", "deactivated") is None
    assert canonical_status(I.JASPER, " deactivated ") == "DEACTIVATED"
    assert transition_error(I.TELEGENCE, "A", "s") is None


def test_thingspace_spelling_normalised():
    # ThingSpace spells states in lowercase with spaces; people type ACTIVE, Pending_Activation...
    assert canonical_status(I.THINGSPACE, "ACTIVE") == "active"
    assert canonical_status(I.THINGSPACE, "Pending_Activation") == "pending activation"
    assert canonical_status(I.THINGSPACE, "PENDING ACTIVATION") == "pending activation"
    assert transition_error(I.THINGSPACE, "active", "SUSPEND") is None
    assert transition_error(I.THINGSPACE, "pending activation", "Active") is None
    assert transition_error(I.THINGSPACE, "active", "ACTIVE") is None  # same status after normalising
    reason = transition_error(I.THINGSPACE, "pre-active", "SUSPEND")
    assert reason == "cannot change status from pre-active to suspend on thingspace; allowed from pre-active: active"


def test_unknown_target_lists_valid_statuses():
    reason = transition_error(I.POND, "ACTIVATED", "SUSPENDED")
    assert reason == "unknown pond status 'SUSPENDED'; valid: ACTIVATED, DEACTIVATED"


def test_unknown_current_status_is_refused():
    reason = transition_error(I.TEAL, "deleted", "online")
    assert reason is not None and "'deleted'" in reason and "does not know" in reason


def test_carrier_without_statuses():
    assert transition_error(I.REVIO, None, "ACTIVE") == "revio has no device statuses"


def test_every_transition_target_is_a_known_status():
    for integration, table in TRANSITIONS.items():
        for current, targets in table.items():
            assert targets <= set(table), (integration, current, targets - set(table))
            assert current not in targets  # same-status handled separately, not listed
