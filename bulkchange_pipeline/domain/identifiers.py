"""Device identifier checks: ICCID, IMEI, EID, MSISDN.

Each check returns None when the value is valid, else a reason a person can act on, so that
validation can collect one reason per bad row instead of stopping at the first exception.

What spreadsheets and SIM readers do to identifiers gets a reason that names the fix
(``spreadsheet_reason``, ``F_PADDED``), on every way in (CSV cells, JSON bodies, bare devices,
newIccid), since every way in goes through these checks:

- ``8.9011E+18``: a number Excel shortened to scientific notation. Refused: the digits after the
  first few are gone, so nothing can restore them; format the column as text and paste again.
- ``'8901...``: a leading apostrophe, Excel's text marker. Refused, with the identifier to send.
- ``8901...F``: 19 digits and an F, the filler a SIM stores after a 19-digit ICCID (EF_ICCID; some
  SIM packs print it). Refused, with the identifier to send.

The last two could be normalised without doubt, but they are refused on purpose: a stored device
row keeps the device's own identifiers, not what was sent, so a silent rewrite would leave no
record; a refusal that names the exact value to send is one find-and-replace, and a dry run lists
every such row at once. (Separators people paste, blanks, dashes and a leading +, are removed by
``normalize`` as before: they are formatting, not part of any identifier.)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable


class IdentifierKind(str, enum.Enum):
    ICCID = "iccid"
    IMEI = "imei"
    EID = "eid"
    MSISDN = "msisdn"


_DIGIT = bytes.maketrans(b"0123456789", bytes(range(10)))  # an ASCII digit's byte -> its value
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))  # doubled, less 9 over 9


def luhn_valid(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others.

    ASCII digits (every caller's case) are summed as bytes translated by a table, in C: a fraction
    of the time of the loop below, which for a million ICCIDs was seconds."""
    if digits.isascii() and digits.isdigit():
        raw = digits.encode("ascii")
        return (sum(raw[-1::-2].translate(_DIGIT)) + sum(raw[-2::-2].translate(_DOUBLED))) % 10 == 0
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


Check = Callable[[str], "str | None"]  # an identifier check: None when valid, else the reason
_SCIENTIFIC = re.compile(r"\d+(?:[.,]\d*)?[eE]\+?\d+")
F_PADDED = re.compile(r"\d{19}[fF]")  # a 19-digit ICCID with the SIM's F filler (EF_ICCID)


def spreadsheet_reason(label: str, value: str, check: Check) -> str | None:
    """A reason naming what a spreadsheet did to ``value`` (an identifier ``check`` refused), or None.

    ``check`` judges what is left once the apostrophe is gone, so the reason gives the value to
    send, or what else is wrong with it."""
    v = value.strip()
    if _SCIENTIFIC.fullmatch(v):
        return (
            f"{label} {value!r} looks like a number Excel shortened (scientific notation): its last digits are lost; "
            f"format the column as text and paste the full {label}s again"
        )
    rest = v[1:].strip()
    if v[:1] == "'" and normalize(rest).isdigit() and normalize(rest).isascii():
        then = check(rest)
        return f"{label} {value!r} must contain digits only: it starts with an apostrophe, Excel's text marker; " + (
            f"remove it and send {normalize(rest)}" if then is None else f"remove it, and then: {then}"
        )
    return None


def _f_padded_reason(label: str, value: str) -> str | None:
    v = normalize(value)
    if not F_PADDED.fullmatch(v):
        return None
    then = check_iccid(v[:19])
    return (
        f"{label} {value!r} must contain digits only: the trailing F is the filler a SIM stores after a 19-digit "
        "ICCID (read from the SIM or printed on its pack); "
        + (f"remove it and send {v[:19]}" if then is None else f"remove it, and then: {then}")
    )


def check_iccid(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii():
        return (
            spreadsheet_reason("ICCID", value, check_iccid)
            or _f_padded_reason("ICCID", value)
            or f"ICCID {value!r} must contain digits only"
        )
    if not 19 <= len(v) <= 20:
        return f"ICCID {value!r} must have 19 or 20 digits, has {len(v)}"
    if not luhn_valid(v):
        return f"ICCID {value!r} has a wrong check digit (Luhn); expected {luhn_check_digit(v[:-1])} as the last digit"
    return None


def check_imei(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii():
        return spreadsheet_reason("IMEI", value, check_imei) or f"IMEI {value!r} must contain digits only"
    if len(v) != 15:
        return f"IMEI {value!r} must have 15 digits, has {len(v)}"
    if not luhn_valid(v):
        return f"IMEI {value!r} has a wrong check digit (Luhn); expected {luhn_check_digit(v[:-1])} as the last digit"
    return None


def check_eid(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii() or len(v) != 32:
        return spreadsheet_reason("EID", value, check_eid) or f"EID {value!r} must have exactly 32 digits"
    return None


def check_msisdn(value: str) -> str | None:
    v = normalize(value)
    if not v.isdigit() or not v.isascii() or not 10 <= len(v) <= 15:
        return spreadsheet_reason("MSISDN", value, check_msisdn) or f"MSISDN {value!r} must have 10 to 15 digits"
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
        if F_PADDED.fullmatch(v):
            return IdentifierKind.ICCID, _f_padded_reason("ICCID", value)
        return None, spreadsheet_reason(
            "device identifier", value, _classify_reason
        ) or f"device identifier {value!r} must contain digits only"
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
        f"device identifier {value!r} has {n} digits: expected an ICCID (19-20), IMEI (15), EID (32) or MSISDN (10-15)"
    )


def _classify_reason(value: str) -> str | None:
    return classify(value)[1]


INT32_MAX = 2_147_483_647


def rev_io_id(value: object) -> int:
    """A Rev.io id (customer, service, product) as the int32 Rev.io takes (developers.rev.io: ids
    are int32): an int, or text of ASCII digits in canonical form ("2001"). Anything else ("R-9",
    " 1", "007", "0", "١٢", 2147483648, 1.0, True) raises ValueError naming the rule, so intake
    refuses it and the client never sends it as text. One rule for intake, the stored customer
    column and the Rev.io client."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and str(int(value)) == value:
        number = int(value)
    else:
        number = 0
    if not 1 <= number <= INT32_MAX:
        raise ValueError(f"{value!r} is not a Rev.io id: a whole number from 1 to {INT32_MAX}")
    return number
