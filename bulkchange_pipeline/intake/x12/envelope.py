"""Envelope checks: control numbers and counts of ISA/IEA, GS/GE and ST/SE.

Each problem becomes an ``X12Issue`` at the level the standard acknowledges it on, with the code
the acknowledgement carries (docs/x12-guide.md lists them):

- interchange (ISA/IEA): a TA1 segment in the 997's interchange, TA105 code (``001`` control numbers
  differ, ``021`` IEA01 group count wrong, ``023`` IEA missing, ``024`` content outside a group);
- group (GS/GE): AK9, AK905 code (``3`` GE missing, ``4`` control numbers differ, ``5`` GE01 count wrong);
- transaction (ST/SE): AK5, AK502 code (``2`` SE missing, ``3`` control numbers differ, ``4`` SE01
  count wrong, ``23`` ST02 repeated in the group);
- segment: AK3 (segment id, position in the transaction set counting ST as 1, AK304 code) and, for
  an element, AK4 (element position, AK403 code, a copy of the bad value).

Issues are data, not exceptions: a file with a wrong count is still answered, with a 997 that
names the segment, so the partner can fix and resend it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .tokens import Group, Interchange, Segment, Transaction

Level = Literal["interchange", "group", "transaction", "segment"]
# Segments outside an envelope each named in an issue; the rest are counted in one more. They all
# reject the interchange (one TA1), so naming thousands would only slow the answer down.
MAX_STRAY = 10
# Unrecognized segment ids named per transaction set (AK3); one is enough to reject it (AK5 R).
MAX_BAD_IDS = 10


@dataclass(frozen=True)
class X12Issue:
    """One thing wrong with a received interchange, placed where the 997 reports it."""

    level: Level
    code: str  # TA105 (interchange), AK905 (group), AK502 (transaction) or AK304 (segment)
    message: str  # names the segment and element, for the rejection reason people read
    group_control: str | None = None  # GS06 of the group it belongs to
    transaction_control: str | None = None  # ST02 of the transaction set it belongs to
    segment_id: str | None = None
    segment_position: int | None = None  # in the transaction set, ST = 1 (AK302)
    element_position: int | None = None  # AK401
    element_code: str | None = None  # AK403
    bad_value: str | None = None  # AK404

    @property
    def rejects_interchange(self) -> bool:
        return self.level == "interchange"


def _count(value: str) -> int | None:
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def check_envelope(interchange: Interchange) -> list[X12Issue]:
    """Every envelope problem of ``interchange``, in file order; empty when the envelope is sound."""
    issues: list[X12Issue] = []
    isa13, trailer = interchange.control, interchange.trailer

    def at_interchange(code: str, message: str) -> None:
        issues.append(X12Issue("interchange", code, message))

    if interchange.too_large:  # nothing else was read: one issue, not one per segment
        return [X12Issue("interchange", "024", interchange.too_large)]

    if not (isa13.isascii() and isa13.isdigit()):
        at_interchange("018", f"ISA13 {isa13!r} is not a 9-digit interchange control number")
    if trailer is None:
        at_interchange("023", "the IEA segment (interchange trailer) is missing: the file ends too early")
    else:
        if trailer.get(2) != isa13:
            at_interchange("001", f"IEA02 {trailer.get(2)!r} does not match ISA13 {isa13!r}")
        if _count(trailer.get(1)) != len(interchange.groups):
            at_interchange(
                "021", f"IEA01 says {trailer.get(1)!r} functional groups; the interchange has {len(interchange.groups)}"
            )
    for seg in interchange.stray[:MAX_STRAY]:
        where = (
            "after the IEA segment" if trailer is not None and seg.index > trailer.index else "outside any GS/GE group"
        )
        at_interchange("024", f"segment {seg.id[:10]!r} (segment {seg.index + 1} of the file) is {where}")
    if len(interchange.stray) > MAX_STRAY:
        at_interchange("024", f"and {len(interchange.stray) - MAX_STRAY:,} more segments outside any GS/GE group")
    if not interchange.groups and not interchange.ta1:
        at_interchange("024", "the interchange holds no functional group (GS ... GE)")
    repeated = _repeated_gs06(interchange)
    if repeated:
        at_interchange(
            "024",
            f"GS06 {repeated!r} numbers more than one functional group; each group needs its own control number",
        )
    for group in interchange.groups:
        issues.extend(_check_group(group))
    bad_ids = {seg.index for seg in interchange.bad_ids}
    for group in interchange.groups:
        for tx in group.transactions:
            found = 0
            for pos, seg in enumerate(tx.segments, start=1):
                if seg.index in bad_ids and found < MAX_BAD_IDS:
                    found += 1
                    issues.append(
                        segment_issue(group, tx, seg, pos, "1", f"{seg.id[:10]!r} is not a segment id (unrecognized)")
                    )
    return issues


def _repeated_gs06(interchange: Interchange) -> str | None:
    """The first GS06 used by two groups: the 997 answers groups by GS06, so it must be unique."""
    seen: set[str] = set()
    for group in interchange.groups:
        if group.control in seen:
            return group.control
        seen.add(group.control)
    return None


def _check_group(group: Group) -> list[X12Issue]:
    issues: list[X12Issue] = []
    gs06 = group.control

    def at_group(code: str, message: str) -> None:
        issues.append(X12Issue("group", code, message, group_control=gs06))

    if not (gs06.isascii() and gs06.isdigit() and len(gs06) <= 9):
        at_group("6", f"GS06 {gs06!r} is not a group control number (1 to 9 digits)")
    if not group.version.strip():
        at_group("2", "GS08 (version / release / industry identifier code) is missing; it is mandatory")
    if group.trailer is None:
        at_group("3", f"the GE segment (trailer of group GS06 {gs06!r}) is missing")
    else:
        if group.trailer.get(2) != gs06:
            at_group("4", f"GE02 {group.trailer.get(2)!r} does not match GS06 {gs06!r}")
        if _count(group.trailer.get(1)) != len(group.transactions):
            at_group(
                "5",
                f"GE01 says {group.trailer.get(1)!r} transaction sets; group GS06 {gs06!r} has {len(group.transactions)}",
            )
    for seg in group.stray[:MAX_STRAY]:
        issues.append(
            X12Issue(
                "interchange",
                "024",
                f"segment {seg.id[:10]!r} (segment {seg.index + 1} of the file) is outside any ST/SE",
            )
        )
    if len(group.stray) > MAX_STRAY:
        more = len(group.stray) - MAX_STRAY
        issues.append(X12Issue("interchange", "024", f"and {more:,} more segments outside any ST/SE"))
    seen: set[str] = set()
    for tx in group.transactions:
        issues.extend(_check_transaction(group, tx, tx.control in seen))
        seen.add(tx.control)
    return issues


def _check_transaction(group: Group, tx: Transaction, repeated: bool) -> list[X12Issue]:
    issues: list[X12Issue] = []

    def at_tx(code: str, message: str) -> None:
        issues.append(X12Issue("transaction", code, message, group.control, tx.control))

    st02 = tx.control
    if not (4 <= len(st02) <= 9 and st02.isascii() and st02.isalnum()):
        at_tx("7", f"ST02 {st02!r} is not a transaction set control number (4 to 9 characters)")
    if repeated:
        at_tx("23", f"ST02 {st02!r} appears twice in group GS06 {group.control!r}")
    if not tx.code:
        at_tx("6", "ST01 (transaction set identifier) is missing")
    if tx.trailer is None:
        at_tx("2", f"the SE segment (trailer of transaction set ST02 {st02!r}) is missing")
        return issues
    if tx.trailer.get(2) != st02:
        at_tx("3", f"SE02 {tx.trailer.get(2)!r} does not match ST02 {st02!r}")
    if _count(tx.trailer.get(1)) != len(tx.segments):
        at_tx(
            "4",
            f"SE01 says {tx.trailer.get(1)!r} segments; transaction set ST02 {st02!r} has {len(tx.segments)} (ST to SE)",
        )
    return issues


def segment_issue(
    group: Group,
    tx: Transaction,
    seg: Segment,
    position: int,
    code: str,
    message: str,
    *,
    element: int | None = None,
    element_code: str | None = None,
    bad_value: str | None = None,
    seg_id: str | None = None,
) -> X12Issue:
    """An AK3 (and, with ``element``, AK4) issue for ``seg`` at ``position`` in its transaction set
    (``seg_id`` names a missing segment instead)."""
    name = seg_id or seg.id[:3]
    where = f"{name}{element:02d}" if element is not None else name
    return X12Issue(
        "segment",
        code,
        f"{where} (segment {position} of transaction set ST02 {tx.control!r}): {message}",
        group_control=group.control,
        transaction_control=tx.control,
        segment_id=name,
        segment_position=position,
        element_position=element,
        element_code=element_code,
        bad_value=bad_value,
    )


__all__ = ["X12Issue", "check_envelope", "segment_issue"]
