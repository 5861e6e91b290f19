"""Writing X12: segments, and the envelope of an interchange we send back to a partner.

We answer in the partner's own separators and version (the ones its ISA declared): whatever it
sent, it can read. Sender and receiver are the received ones swapped. Values that come from
outside (a copy of bad data, a reason text) can hold a separator, which X12 cannot escape: it is
replaced by a blank, as are control characters, so no value can end or split a segment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .tokens import Interchange, Separators

ControlNumbers = Callable[[], int]  # the tenant's counter: a new number each call, 1..999999999
MAX_CONTROL = 999_999_999


def clean(value: str, separators: Separators, limit: int = 60) -> str:
    """``value`` made safe for one element: separators and non-printable characters blanked, cut to ``limit``."""
    banned = separators.all()
    text = "".join(" " if ch in banned or not ch.isprintable() else ch for ch in value)
    return " ".join(text.split())[:limit].strip()


def fixed(value: str, separators: Separators, width: int) -> str:
    """An ISA value: cleaned, and padded or cut to the element's fixed width."""
    banned = separators.all()
    text = "".join(" " if ch in banned or not ch.isprintable() else ch for ch in value)
    return text.ljust(width)[:width]


def segment(separators: Separators, seg_id: str, *elements: str) -> str:
    """One segment with its terminator; trailing empty elements are left out, as X12 requires."""
    values = list(elements)
    while values and values[-1] == "":
        values.pop()
    return separators.element.join([seg_id, *values]) + separators.segment


def next_control(counter: ControlNumbers) -> int:
    """A control number from the tenant's counter, checked: ISA13 holds 9 digits."""
    number = counter()
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_CONTROL:
        raise ValueError(f"a control number counter returned {number!r}; it must give integers 1 to {MAX_CONTROL}")
    return number


def group_version(received: Interchange) -> str:
    """GS08 for our reply: the partner's first group's version, else the one its ISA12 implies."""
    for group in received.groups:
        if group.version.strip():
            return group.version.strip()[:12]
    return {"00501": "005010"}.get(received.version, "004010")


def envelope(
    received: Interchange,
    functional_id: str,
    transactions: list[list[str]],
    control: int,
    now: datetime | None = None,
    pre_group: list[str] | None = None,
) -> str:
    """A whole interchange answering ``received``: ISA, ``pre_group`` (e.g. TA1), one GS holding
    ``transactions`` (each a list of body segments, without ST/SE), GE, IEA.

    ``transactions`` are numbered ST02 0001, 0002 ...; ISA13 and GS06 are ``control``, which the
    tenant's counter made unique, so one number per interchange we send is enough."""
    seps = received.separators
    isa = received.isa
    when = (now or datetime.now(UTC)).astimezone(UTC)
    isa11 = seps.repetition or "U"
    version = received.version if received.version.isascii() and received.version.isdigit() else "00401"
    fields = [
        "00",
        " " * 10,
        "00",
        " " * 10,
        fixed(isa.get(7), seps, 2),
        fixed(isa.get(8), seps, 15),
        fixed(isa.get(5), seps, 2),
        fixed(isa.get(6), seps, 15),
        when.strftime("%y%m%d"),
        when.strftime("%H%M"),
        isa11,
        version,
        f"{control:09d}",
        "0",
        isa.get(15) if isa.get(15) in ("P", "T") else "P",
        seps.component,
    ]
    out = [seps.element.join(["ISA", *fields]) + seps.segment]
    out.extend(pre_group or [])
    if transactions:
        first = received.groups[0].header if received.groups else None
        gs_from = first.get(3) if first else isa.get(8).strip()
        gs_to = first.get(2) if first else isa.get(6).strip()
        out.append(
            segment(
                seps,
                "GS",
                functional_id,
                clean(gs_from, seps, 15),
                clean(gs_to, seps, 15),
                when.strftime("%Y%m%d"),
                when.strftime("%H%M"),
                str(control),
                "X",
                clean(group_version(received), seps, 12) or "004010",
            )
        )
        for number, body in enumerate(transactions, start=1):
            st02 = f"{number:04d}"
            code = {"FA": "997", "AG": "824"}[functional_id]
            out.append(segment(seps, "ST", code, st02))
            out.extend(body)
            out.append(segment(seps, "SE", str(len(body) + 2), st02))
        out.append(segment(seps, "GE", str(len(transactions)), str(control)))
    out.append(segment(seps, "IEA", "1" if transactions else "0", f"{control:09d}"))
    return "".join(out)


__all__ = ["MAX_CONTROL", "ControlNumbers", "clean", "envelope", "fixed", "group_version", "next_control", "segment"]
