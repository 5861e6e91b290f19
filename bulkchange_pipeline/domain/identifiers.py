"""Device identifier checks: ICCID, IMEI, EID, MSISDN.

Each check returns None when the value is valid, else a reason a person can act on, so that
validation can collect one reason per bad row instead of stopping at the first exception.
"""

from __future__ import annotations

import enum


class IdentifierKind(str, enum.Enum):
    ICCID = "iccid"
    IMEI = "imei"
    EID = "eid"
    MSISDN = "msisdn"


def luhn_valid(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` pass the Luhn check (used by seed data and tests)."""
    for d in "0123456789":
        if luhn_valid(payload + d):
            return d
    raise AssertionError("unreachable")  # pragma: no cover


def normalize(value: str) -> str:
    """Strip surrounding blanks and the separators people paste (spaces, dashes, a leading +)."""
    v = value.strip().replace(" ", "").replace("-", "")
    return v[1:] if v.startswith("+") else v


def check_iccid(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii():
        return f"ICCID {value!r} must contain digits only"
    if not 19 <= len(v) <= 20:
        return f"ICCID {value!r} must have 19 or 20 digits, has {len(v)}"
    if not luhn_valid(v):
        return f"ICCID {value!r} has a wrong check digit (Luhn); expected {luhn_check_digit(v[:-1])} as the last digit"
    return None


def check_imei(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii():
        return f"IMEI {value!r} must contain digits only"
    if len(v) != 15:
        return f"IMEI {value!r} must have 15 digits, has {len(v)}"
    if not luhn_valid(v):
        return f"IMEI {value!r} has a wrong check digit (Luhn); expected {luhn_check_digit(v[:-1])} as the last digit"
    return None


def check_eid(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii() or len(v) != 32:
        return f"EID {value!r} must have exactly 32 digits"
    return None


def check_msisdn(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii() or not 10 <= len(v) <= 15:
        return f"MSISDN {value!r} must have 10 to 15 digits"
    return None


CHECKS = {
    IdentifierKind.ICCID: check_iccid,
    IdentifierKind.IMEI: check_imei,
    IdentifierKind.EID: check_eid,
    IdentifierKind.MSISDN: check_msisdn,
}


def classify(value: str) -> tuple[IdentifierKind | None, str | None]:
    """Guess which identifier a bare value is (the seed's ``devices`` list mixes them).

    19-20 digits: ICCID; 32: EID; 15 digits passing Luhn: IMEI; other 10-15 digits: MSISDN.
    Returns (kind, None) or (best guess or None, reason it is invalid).
    """
    v = normalize(value)
    if not v:
        return None, "empty device identifier"
    if not v.isdigit() or not v.isascii():
        return None, f"device identifier {value!r} must contain digits only"
    n = len(v)
    if n in (19, 20):
        return IdentifierKind.ICCID, check_iccid(v)
    if n == 32:
        return IdentifierKind.EID, None
    if n == 15 and luhn_valid(v):
        return IdentifierKind.IMEI, None
    if 10 <= n <= 15:
        return IdentifierKind.MSISDN, None
    return None, (
        f"device identifier {value!r} has {n} digits: expected an ICCID (19-20), IMEI (15), "
        "EID (32) or MSISDN (10-15)"
    )
