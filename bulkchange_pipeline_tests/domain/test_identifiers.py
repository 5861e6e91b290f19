"""Identifier checks (DESIGN section 4): ICCID 19-20 digits + Luhn, IMEI 15 + Luhn, EID 32, MSISDN 10-15."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain import (
    IdentifierKind,
    check_eid,
    check_iccid,
    check_imei,
    check_msisdn,
    classify,
    luhn_check_digit,
    luhn_valid,
    normalize,
)

VALID_IMEI = "490154203237518"  # the textbook IMEI example
# ICCIDs built from real-looking issuer prefixes; check digits computed independently below.
ICCID_19_BODY = "898600810221090131"  # 18 digits + check digit -> 19
ICCID_20_BODY = "8901260882293964472"  # 19 digits + check digit -> 20


def _luhn_reference(payload: str) -> str:
    """An independent Luhn implementation (double every second digit from the right of the
    full number), so the production helper is not checked against itself."""
    digits = [int(c) for c in payload + "0"]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def _one_off(value: str) -> str:
    """The same number with its last (check) digit bumped by one."""
    return value[:-1] + str((int(value[-1]) + 1) % 10)


@pytest.mark.parametrize(
    "payload,expected",
    [("49015420323751", "8"), ("7992739871", "3"), ("35145120840121", "6"), ("0", "0"), ("", "0")],
)
def test_luhn_check_digit_known_values(payload, expected):
    assert luhn_check_digit(payload) == expected
    assert luhn_valid(payload + expected)


@pytest.mark.parametrize("payload", [ICCID_19_BODY, ICCID_20_BODY, "35209900176148", "8944500102198304826"])
def test_luhn_check_digit_matches_independent_implementation(payload):
    assert luhn_check_digit(payload) == _luhn_reference(payload)


def test_luhn_every_other_check_digit_is_invalid():
    for wrong in "0123456789":
        if wrong != "8":
            assert not luhn_valid("49015420323751" + wrong)


def test_valid_imei_passes():
    assert check_imei(VALID_IMEI) is None
    # separators people paste are accepted
    assert check_imei("49-015420-323751-8") is None
    assert check_imei(" 490154 203237518 ") is None


def test_imei_one_digit_off_names_expected_digit():
    bad = _one_off(VALID_IMEI)  # ...519
    reason = check_imei(bad)
    assert reason is not None
    assert "Luhn" in reason and bad in reason
    assert "expected 8 as the last digit" in reason


def test_imei_swapped_middle_digit_fails():
    # change a digit in the body (not the check digit): still detected, same expected digit logic
    bad = VALID_IMEI[:5] + str((int(VALID_IMEI[5]) + 1) % 10) + VALID_IMEI[6:]
    reason = check_imei(bad)
    assert reason is not None
    assert f"expected {luhn_check_digit(bad[:-1])} as the last digit" in reason


@pytest.mark.parametrize("value,n", [("49015420323751", 14), ("4901542032375180", 16), ("1", 1)])
def test_imei_wrong_length(value, n):
    reason = check_imei(value)
    assert reason is not None and "15 digits" in reason and f"has {n}" in reason


@pytest.mark.parametrize("value", ["49015420323751A", "", "   ", "４９０１５４２０３２３７５１８"])
def test_imei_non_digits_refused(value):
    reason = check_imei(value)
    assert reason is not None and "digits only" in reason


@pytest.mark.parametrize("body", [ICCID_19_BODY, ICCID_20_BODY])
def test_valid_iccids_pass(body):
    value = body + _luhn_reference(body)
    assert len(value) in (19, 20)
    assert check_iccid(value) is None


@pytest.mark.parametrize("body", [ICCID_19_BODY, ICCID_20_BODY])
def test_iccid_one_digit_off_names_expected_digit(body):
    good = body + _luhn_reference(body)
    bad = _one_off(good)
    reason = check_iccid(bad)
    assert reason is not None
    assert f"expected {good[-1]} as the last digit" in reason
    assert "Luhn" in reason


@pytest.mark.parametrize("length", [18, 21, 10])
def test_iccid_wrong_length(length):
    body = ("8901260882293964472" * 2)[: length - 1]
    value = body + luhn_check_digit(body)  # Luhn-valid, so only the length is wrong
    reason = check_iccid(value)
    assert reason is not None
    assert "19 or 20 digits" in reason and f"has {length}" in reason


def test_iccid_letters_refused():
    reason = check_iccid("8901260882293964472F")
    assert reason is not None and "digits only" in reason


def test_eid_and_msisdn():
    assert check_eid("8" * 32) is None
    assert check_eid("8" * 31) is not None
    assert check_eid("8" * 33) is not None
    assert check_eid("8" * 31 + "X") is not None
    assert check_msisdn("+1 415-555-0100") is None  # 11 digits after normalising
    assert check_msisdn("4155550100") is None  # 10
    assert check_msisdn("123456789012345") is None  # 15
    assert "10 to 15 digits" in (check_msisdn("415555010") or "")  # 9
    assert check_msisdn("1234567890123456") is not None  # 16
    assert check_msisdn("415555010a") is not None


def test_normalize():
    assert normalize(" +1 415-555 0100 ") == "14155550100"
    assert normalize("8901-2608-8229") == "890126088229"


def test_classify_each_kind():
    iccid = ICCID_20_BODY + _luhn_reference(ICCID_20_BODY)
    assert classify(iccid) == (IdentifierKind.ICCID, None)
    iccid19 = ICCID_19_BODY + _luhn_reference(ICCID_19_BODY)
    assert classify(iccid19) == (IdentifierKind.ICCID, None)
    assert classify(VALID_IMEI) == (IdentifierKind.IMEI, None)
    assert classify("8" * 32) == (IdentifierKind.EID, None)
    assert classify("+1 415 555 0100") == (IdentifierKind.MSISDN, None)
    # 15 digits that fail Luhn are not an IMEI: an MSISDN
    assert classify(_one_off(VALID_IMEI)) == (IdentifierKind.MSISDN, None)


def test_classify_bad_iccid_keeps_kind_and_gives_reason():
    iccid = ICCID_20_BODY + _luhn_reference(ICCID_20_BODY)
    kind, reason = classify(_one_off(iccid))
    assert kind is IdentifierKind.ICCID
    assert reason is not None and f"expected {iccid[-1]} as the last digit" in reason


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ICCID1", "digits only"),
        ("123456789", "has 9 digits"),
        ("1" * 16, "has 16 digits"),
        ("1" * 21, "has 21 digits"),
        ("1" * 31, "has 31 digits"),
    ],
)
def test_classify_refusals(value, fragment):
    kind, reason = classify(value)
    assert kind is None
    assert reason is not None and fragment in reason
