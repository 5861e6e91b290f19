"""Issue 15 §5: reasons that name what a spreadsheet or a SIM reader did to an identifier, and the
header status of a bulk change that sent nothing (pure domain, no database)."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain import (
    BulkChangeStatus,
    IdentifierKind,
    bulk_status_detail,
    check_eid,
    check_iccid,
    check_imei,
    check_msisdn,
    classify,
    derive_bulk_status,
    luhn_check_digit,
    refused_detail,
)

ICCID19 = "890126088229396447" + luhn_check_digit("890126088229396447")
ICCID20 = "8901260882293964472" + luhn_check_digit("8901260882293964472")
IMEI = "490154203237518"


@pytest.mark.parametrize("value", ["8.9011E+18", "8,9011E+18", "8.9011e18", "8.90126E+19", " 8.9E+18 ", "89011E+14"])
def test_scientific_notation_says_excel_shortened_it(value):
    for reason in (check_iccid(value), classify(value)[1]):
        assert reason is not None and "looks like a number Excel shortened (scientific notation)" in reason
        assert "format the column as text" in reason and repr(value) in reason
    assert classify(value)[0] is None  # the digits are gone: no guess at what it was
    for check in (check_imei, check_msisdn, check_eid):
        assert "Excel shortened" in check("3.51E+14")


@pytest.mark.parametrize("iccid", [ICCID19, ICCID20])
def test_apostrophe_says_remove_it_and_what_to_send(iccid):
    reason = check_iccid(f"'{iccid}")
    assert (
        reason
        == f"ICCID \"'{iccid}\" must contain digits only: it starts with an apostrophe, Excel's text marker; remove it and send {iccid}"
    )
    kind, bare = classify(f"'{iccid}")
    assert kind is None and bare is not None and bare.endswith(f"remove it and send {iccid}")
    assert check_imei(f"'{IMEI}").endswith(f"remove it and send {IMEI}")
    assert check_msisdn("'+1 415 555 0100").endswith("remove it and send 14155550100")


def test_apostrophe_before_a_bad_identifier_says_both_fixes():
    bad = ICCID19[:-1] + str((int(ICCID19[-1]) + 1) % 10)
    reason = check_iccid(f"'{bad}")
    assert reason is not None and "Excel's text marker; remove it, and then: " in reason
    assert reason.endswith(f"has a wrong check digit (Luhn); expected {ICCID19[-1]} as the last digit")
    assert check_iccid("'8901").endswith("remove it, and then: ICCID '8901' must have 19 or 20 digits, has 4")


@pytest.mark.parametrize("filler", ["F", "f"])
def test_trailing_f_of_a_19_digit_iccid_says_remove_it(filler):
    value = ICCID19 + filler
    expected = (
        f"ICCID {value!r} must contain digits only: the trailing F is the filler a SIM stores after a 19-digit ICCID "
        f"(read from the SIM or printed on its pack); remove it and send {ICCID19}"
    )
    assert check_iccid(value) == expected
    assert classify(value) == (IdentifierKind.ICCID, expected)  # a bare device: recognised as the ICCID it is
    wrong = ICCID19[:-1] + str((int(ICCID19[-1]) + 1) % 10) + filler
    assert check_iccid(wrong).endswith(
        f"remove it, and then: ICCID {wrong[:19]!r} has a wrong check digit (Luhn); "
        f"expected {ICCID19[-1]} as the last digit"
    )


@pytest.mark.parametrize(
    "value", [ICCID20 + "F", ICCID19[:18] + "F", "F" + ICCID19, ICCID19 + "X", "'abc", "'", "8.9.1E+18"]
)
def test_other_non_digits_keep_the_plain_reason(value):
    reason = check_iccid(value)
    assert reason == f"ICCID {value!r} must contain digits only"


def test_valid_identifiers_are_still_valid():
    assert check_iccid(ICCID19) is None and check_iccid(ICCID20) is None and check_imei(IMEI) is None
    assert classify(ICCID19) == (IdentifierKind.ICCID, None)


# -- a bulk change whose every device was refused ------------------------------------------------


def test_every_row_refused_and_none_claimed_is_error():
    assert derive_bulk_status({"ERROR": 3}, attempted=0) is BulkChangeStatus.ERROR
    assert derive_bulk_status({"ERROR": 3}, attempted=1) is BulkChangeStatus.PROCESSED  # failed while processing
    assert derive_bulk_status({"ERROR": 3}) is BulkChangeStatus.PROCESSED  # unknown: as before
    assert derive_bulk_status({"ERROR": 3, "PROCESSED": 1}, attempted=0) is BulkChangeStatus.PROCESSED
    assert derive_bulk_status({"ERROR": 2, "CANCELLED": 1}, attempted=0) is BulkChangeStatus.PROCESSED
    assert derive_bulk_status({}, attempted=0) is BulkChangeStatus.PROCESSED


def test_the_detail_says_nothing_was_sent():
    assert refused_detail({"ERROR": 3}) == "nothing was sent: all 3 devices were refused at validation"
    assert refused_detail({"ERROR": 1}) == "nothing was sent: its one device was refused at validation"
    assert refused_detail({"ERROR": 3, "NEW": 1}) is None and refused_detail({}) is None
    assert (
        bulk_status_detail("ERROR", {"ERROR": 2, "NEW": 0})
        == "nothing was sent: all 2 devices were refused at validation"
    )
    assert bulk_status_detail("PROCESSED", {"ERROR": 2}) is None  # a header from before: the status is not contradicted
    assert bulk_status_detail("ERROR", {"NEW": 2, "ERROR": 1}) is None  # a run that could not finish
