"""A small strict X12 tokenizer: bytes in, an ``Interchange`` of segments out.

Why our own: no maintained PyPI library parses *and* writes generic (non-HIPAA) X12 such as 856,
997 and 824 (docs/x12-guide.md, "Library evaluation"). Reading X12 syntax is small; what matters is
being strict about the parts that decide how the rest is read:

- The separators come from the ISA segment and are never assumed: the element separator is the
  character after ``ISA`` (position 4), the repetition separator is ISA11 (version 00402 and later;
  before that ISA11 is the standards identifier ``U``), the component separator is ISA16, and the
  segment terminator is the character right after ISA16. The ISA has fixed-width elements, so it
  is exactly 106 characters; anything else means the separators cannot be trusted, and nothing is
  read.
- Line breaks after a segment terminator (``~\\r\\n``, common in files people open in an editor) are
  not data and are dropped, unless the line break *is* the terminator.

Everything that goes wrong raises ``X12Error`` (an ``IntakeError``) with a message that says what
to fix, never another exception: the file-drop sensor turns it into a rejected file with a reason.
Envelope mistakes after a readable ISA (control numbers, counts, missing trailers) are not errors
here but issues that ``envelope.check_envelope`` reports, so that a 997 can name them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..parsing import IntakeError, IntakeLimits, check_size, decode_utf8, shown

ISA_LENGTH = 106
# Widths of ISA01..ISA16: the ISA is fixed width, which is what lets a reader find the separators.
ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{1,2}")
ENVELOPE_IDS = frozenset({"ISA", "IEA", "GS", "GE", "ST", "SE"})
# Bounds on one interchange. A 132 KB file can hold 3,000 groups and 5 MB of bare terminators five
# million empty segments; answering each one makes the 997 (and the time to build it) explode. An
# interchange beyond these is refused as a whole with one issue, before any acknowledgement body is
# built. 200,000 segments hold an 856 of about 40,000 devices; a partner with more sends several files.
MAX_SEGMENTS = 200_000
MAX_GROUPS = 100
MAX_TRANSACTIONS = 1_000


class X12Error(IntakeError):
    """The file cannot be read as X12 at all (no usable ISA, not text, too large); the message says why.

    The one error type this package raises for bad input: an ``IntakeError``, so every way in that
    handles intake errors handles it too."""


@dataclass(frozen=True)
class Separators:
    """The delimiters of one interchange, as its ISA declares them."""

    element: str
    component: str
    segment: str
    repetition: str | None = None  # ISA11 from version 00402 on; None before (ISA11 is then "U")

    def all(self) -> str:
        return self.element + self.component + self.segment + (self.repetition or "")


@dataclass(frozen=True)
class Segment:
    """One segment: its id, its elements (``elements[0]`` is X01) and its 0-based index in the file."""

    id: str
    elements: tuple[str, ...]
    index: int

    def get(self, position: int) -> str:
        """Element ``position`` (1-based, as X12 numbers them: ``BSN02`` is ``get(2)``); '' when absent."""
        return self.elements[position - 1] if 0 < position <= len(self.elements) else ""


@dataclass
class Transaction:
    """ST ... SE. ``segments`` runs from ST to the last segment before the next envelope segment,
    including SE when present (``trailer``)."""

    header: Segment
    segments: list[Segment] = field(default_factory=list)
    trailer: Segment | None = None

    @property
    def code(self) -> str:
        return self.header.get(1)

    @property
    def control(self) -> str:
        return self.header.get(2)

    def body(self) -> list[Segment]:
        """The segments between ST and SE."""
        return [s for s in self.segments if s is not self.header and s is not self.trailer]


@dataclass
class Group:
    """GS ... GE."""

    header: Segment
    transactions: list[Transaction] = field(default_factory=list)
    trailer: Segment | None = None
    stray: list[Segment] = field(default_factory=list)  # segments between GS/SE and ST or GE

    @property
    def functional_id(self) -> str:
        return self.header.get(1)

    @property
    def control(self) -> str:
        return self.header.get(6)

    @property
    def version(self) -> str:
        return self.header.get(8)


@dataclass
class Interchange:
    """ISA ... IEA, as read: nothing here has been checked but the ISA itself (``check_envelope``)."""

    isa: Segment
    separators: Separators
    groups: list[Group] = field(default_factory=list)
    trailer: Segment | None = None
    stray: list[Segment] = field(default_factory=list)  # segments outside any group, or after IEA
    bad_ids: list[Segment] = field(default_factory=list)  # segments whose id is not an X12 segment id
    ta1: list[Segment] = field(default_factory=list)  # interchange acknowledgements, between ISA and the first GS
    # Why the interchange is refused unread (more segments, groups or transaction sets than we take):
    # then ``groups`` and ``stray`` are left empty and the 997 carries only a TA1 rejection.
    too_large: str | None = None

    @property
    def control(self) -> str:
        """ISA13, the interchange control number."""
        return self.isa.get(13)

    @property
    def sender(self) -> str:
        """ISA05:ISA06, the sender's qualifier and id (blanks the fixed width adds removed)."""
        return f"{self.isa.get(5).strip()}:{self.isa.get(6).strip()}"

    @property
    def receiver(self) -> str:
        return f"{self.isa.get(7).strip()}:{self.isa.get(8).strip()}"

    @property
    def version(self) -> str:
        """ISA12, e.g. ``00401`` or ``00501``."""
        return self.isa.get(12)

    @property
    def duplicate_key(self) -> tuple[str, str]:
        """(sender, ISA13): a partner numbers its interchanges, so the same pair again is a resend
        that must be acknowledged but not processed twice (the caller stores the keys it has seen)."""
        return (self.sender, self.control)


def read_separators(text: str) -> Separators:
    """The separators the ISA at the start of ``text`` declares; ``X12Error`` when it cannot be trusted."""
    if not text.startswith("ISA"):
        raise X12Error(f"an X12 file starts with an ISA segment; this one starts with {shown(text[:3], 10)!r}")
    if len(text) < ISA_LENGTH:
        raise X12Error(
            f"the ISA segment is cut short: it is {ISA_LENGTH} characters, the file has {len(text)}; send the whole file"
        )
    element = text[3]
    at = 3
    for number, width in enumerate(ISA_WIDTHS, start=1):
        if text[at] != element:
            raise X12Error(
                f"the ISA segment is not {ISA_LENGTH} characters of fixed-width elements: ISA{number:02d} should "
                f"start at position {at + 2} after the element separator {shown(element, 5)!r}, found {shown(text[at], 5)!r}"
            )
        at += 1 + width
    component, segment = text[104], text[105]
    repetition = text[82] if text[84:89] >= "00402" and text[82] != "U" else None
    seps = [element, component, segment] + ([repetition] if repetition else [])
    for sep in seps:
        if sep.isalnum() or sep == " ":
            raise X12Error(
                f"the ISA declares {shown(sep, 5)!r} as a separator; letters, digits and blanks cannot separate data"
            )
    if len(set(seps)) != len(seps):
        raise X12Error("the ISA declares the same character for two different separators; each must be distinct")
    return Separators(element=element, component=component, segment=segment, repetition=repetition)


def isa_elements(text: str) -> tuple[str, ...]:
    """ISA01..ISA16 cut at their fixed positions (``read_separators`` has checked them)."""
    values, at = [], 4
    for width in ISA_WIDTHS:
        values.append(text[at : at + width])
        at += width + 1
    return tuple(values)


def tokenize(text: str, separators: Separators, first_index: int = 0, *, limit: int | None = None) -> list[Segment]:
    """Split ``text`` into segments by the given separators (indexes counted from ``first_index``).

    With ``limit``, at most ``limit + 1`` segments are made (the last holds the rest of the text
    unsplit): enough for the caller to see that there are too many, without building millions."""
    line_breaks = "\r\n".replace(separators.segment, "")
    pieces = text.split(separators.segment, -1 if limit is None else limit)
    if pieces and not pieces[-1].strip(line_breaks + " \t"):
        pieces.pop()  # what follows the last terminator is at most a line break
    segments: list[Segment] = []
    for index, piece in enumerate(pieces):
        raw = piece.lstrip(line_breaks)
        parts = raw.split(separators.element)
        segments.append(Segment(id=parts[0], elements=tuple(parts[1:]), index=first_index + index))
    return segments


def parse_interchange(data: bytes | str, *, limits: IntakeLimits = IntakeLimits()) -> Interchange:
    """Read one interchange (ISA ... IEA) into its groups and transactions.

    Raises ``X12Error`` only when nothing can be read (not UTF-8, too large, no trustworthy ISA).
    Everything else (a missing trailer, a segment outside an envelope, a bad segment id) is kept
    in the returned structure for ``check_envelope`` to report segment by segment."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        check_size(len(raw), limits)
        text = decode_utf8(raw, hint="send the X12 file as ASCII or UTF-8")
    except X12Error:
        raise
    except IntakeError as exc:
        raise X12Error(str(exc)) from None
    if not text.strip():
        raise X12Error("the file is empty")
    separators = read_separators(text)
    # The ISA is cut by position, not by its terminator: its fixed-width values may hold any character.
    interchange = Interchange(isa=Segment("ISA", isa_elements(text), 0), separators=separators)
    # Counting terminators first is cheap and spares building a flood's segments at all (the
    # limit on ``tokenize`` covers the one segment a file may hold after its last terminator).
    terminators = text.count(separators.segment, ISA_LENGTH)
    segments = (
        tokenize(text[ISA_LENGTH:], separators, first_index=1, limit=MAX_SEGMENTS)
        if terminators <= MAX_SEGMENTS
        else []
    )
    if terminators > MAX_SEGMENTS or len(segments) > MAX_SEGMENTS:
        return _refused(
            interchange, f"the interchange holds more than {MAX_SEGMENTS:,} segments; send it in several files"
        )
    groups = sum(1 for seg in segments if seg.id == "GS")
    if groups > MAX_GROUPS:
        return _refused(
            interchange, f"the interchange holds {groups:,} functional groups (GS); we take at most {MAX_GROUPS}"
        )
    transactions = sum(1 for seg in segments if seg.id == "ST")
    if transactions > MAX_TRANSACTIONS:
        return _refused(
            interchange,
            f"the interchange holds {transactions:,} transaction sets (ST); we take at most {MAX_TRANSACTIONS:,}",
        )
    _nest(interchange, segments)
    return interchange


def _refused(interchange: Interchange, reason: str) -> Interchange:
    interchange.too_large = reason
    return interchange


def _nest(interchange: Interchange, segments: list[Segment]) -> None:
    """Sort ``segments`` (after the ISA) into the interchange's groups and transaction sets."""
    group: Group | None = None
    transaction: Transaction | None = None
    for seg in segments:
        if not SEGMENT_ID.fullmatch(seg.id):
            interchange.bad_ids.append(seg)
        if interchange.trailer is not None:
            interchange.stray.append(seg)
        elif seg.id == "IEA":
            interchange.trailer, group, transaction = seg, None, None
        elif seg.id == "TA1" and group is None and not interchange.groups:
            interchange.ta1.append(seg)
        elif seg.id == "GS":
            group, transaction = Group(header=seg), None
            interchange.groups.append(group)
        elif group is None:
            interchange.stray.append(seg)
        elif seg.id == "GE":
            group.trailer, group, transaction = seg, None, None
        elif seg.id == "ST":
            transaction = Transaction(header=seg, segments=[seg])
            group.transactions.append(transaction)
        elif transaction is None:
            group.stray.append(seg)
        else:
            transaction.segments.append(seg)
            if seg.id == "SE":
                transaction.trailer, transaction = seg, None


__all__ = [
    "ENVELOPE_IDS",
    "ISA_LENGTH",
    "MAX_GROUPS",
    "MAX_SEGMENTS",
    "MAX_TRANSACTIONS",
    "Group",
    "Interchange",
    "Segment",
    "Separators",
    "Transaction",
    "X12Error",
    "parse_interchange",
    "read_separators",
    "tokenize",
]
