"""Turn an uploaded request into a BulkChangeRequest, or a clear file-level error: the checks every
way in shares (text, sizes, values no column can hold) and the JSON request. CSV files are
``csv_file``, files on disk ``request_file``.

File-level problems (not UTF-8, a NUL character, no identifier column, unknown columns, empty, too
large, invalid or too deeply nested JSON, a value no column can hold) raise ``IntakeError``: nothing
in the file can be trusted, so nothing is validated.
Row-level problems (a ragged CSV row) are returned in ``ParsedFile.row_errors`` so that the other
rows still go through validation and the bad one becomes an ERROR row with its reason (DESIGN R4).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..domain import BulkChangeRequest, ChangeType
from ..domain.requests import MAX_ID

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d .]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but tab, line feed and carriage return; DEL; C1 controls. ESC starts terminal escape
# sequences, U+001C-U+001F are whitespace to str.strip but not to the models' strip.
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_KEY_CONTROL = re.compile("[\x01-\x1f\x7f-\x9f]")
MAX_DEPTH = 50  # no request nests more than a few levels; deeper is an attack, refused before validation
DATE_KEYS = ("effectiveDate", "effective_date")
DATE_YEARS = (1900, 9000)


class IntakeError(ValueError):
    """The file as a whole cannot be read; the message says what to fix."""


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 1_000_000


@dataclass
class ParsedFile:
    request: BulkChangeRequest
    kind: str  # "json", "xml" or "csv"
    row_errors: dict[int, str] = field(default_factory=dict)  # 0-based device index -> reason
    # Number to report per device: CSV file lines (= spreadsheet rows), else None (positions 1..n).
    row_numbers: Sequence[int] | None = None


def formula_reason(name: str, value: Any) -> str | None:
    """A reason when a text value would run as a spreadsheet formula (CSV/formula injection).

    The value is judged as it will be stored: the request models strip surrounding whitespace
    (``str.strip``, which includes NBSP and line breaks), so ``" =2+2"`` or ``"\n=cmd"`` is checked as
    ``"=2+2"``. A leading tab or carriage return is refused as it stands (a spreadsheet reads it
    as a cell break or formula lead-in)."""
    if not isinstance(value, str):
        return None
    kept = value.strip()
    lead = value[:1] if value[:1] in ("\t", "\r") else kept[:1]
    if lead in FORMULA_PREFIXES and not _PLAIN_NUMBER.fullmatch(kept):
        return (
            f"{name} value {value[:40]!r} starts with {lead!r}: values that a spreadsheet would run "
            "as a formula are refused"
        )
    return None


def text_reason(name: str, value: str, *, key: bool = False) -> str | None:
    """A reason when ``value`` is text that cannot be stored and answered as it was sent, else None.

    - NUL: PostgreSQL text cannot hold it.
    - A lone UTF-16 surrogate (U+D800-U+DFFF): JSON's ``"\\ud800"`` escape or a non-UTF-8 byte in a
      command-line argument decodes to one; it is valid in a Python str but cannot be encoded as
      UTF-8, so it would be stored and then fail every answer that shows it.

    - Control characters other than tab and line breaks (ESC, U+001C-U+001F, DEL, C1): no device
      value, identifier or key holds one; ESC would run as a terminal escape wherever the value is
      printed, and U+001C-U+001F are whitespace to ``str.strip`` (CSV cells) but not to the
      models' strip (JSON), so the same value would be stored two ways.

    The one text check: ``check_values`` applies it to every key and value of a request (JSON and
    CSV alike), the CLI to its free-text options, the callback routes to what they read. Keys
    (field names) may not hold tabs or line breaks either.
    """
    if "\x00" in value:
        return f"{name} contains a NUL character; remove it"
    if found := (_KEY_CONTROL if key else _CONTROL).search(value):
        return f"{name} contains the control character U+{ord(found.group()):04X} (at position {found.start() + 1}); remove it"
    if found := _SURROGATE.search(value):
        at = found.start()
        return (
            f"{name} contains a lone UTF-16 surrogate (U+{ord(value[at]):04X} at position {at + 1}), which is not a "
            "character: send the text as valid UTF-8"
        )
    return None


def plain_text(text: str) -> bool:
    """True when no part of ``text`` can fail ``text_reason`` (no NUL, control character or lone
    surrogate): one scan at C speed lets a big file's values skip the check one by one."""
    return "\x00" not in text and _CONTROL.search(text) is None and _SURROGATE.search(text) is None


def shown(text: str, limit: int = 80) -> str:
    """``text`` as it may appear in a one-line message: at most ``limit`` characters, and anything
    not printable (line breaks, controls, surrogates) escaped, so a key or value sent by a client
    can neither break the line nor run as a terminal escape."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def plain_int(text: str) -> int | None:
    """The integer that ``text`` spells in ASCII digits (surrounding whitespace allowed), else None.

    ``str.isdigit`` is true for ``"²"`` and ``"١"``, which ``int()`` then refuses or reads as 1: an
    id typed in a form field or on the command line is ASCII digits or it is not an id.
    """
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


CSV_UTF8_HINT = "save the file as UTF-8 (in Excel: 'CSV UTF-8')"


def decode_utf8(data: bytes, hint: str = CSV_UTF8_HINT) -> str:
    """Decode, dropping a BOM; a non-UTF-8 byte is reported with its offset and line, and ``hint``
    (what to do about it, for the kind of file)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IntakeError(
            f"the file is not UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} (line {line}) "
            f"is not valid UTF-8; {hint}"
        ) from None


def check_size(size: int, limits: IntakeLimits) -> None:
    """Refuse a file (or body) over ``limits.max_bytes`` before anything reads it."""
    if size > limits.max_bytes:
        raise IntakeError(
            f"the file is {size / 1_048_576:.1f} MB; the limit is {limits.max_bytes / 1_048_576:.0f} MB: split it"
        )


def load_json(text: str) -> Any:
    """``json.loads`` whose every failure is an ``IntakeError`` about "the file" (the API says "the body").

    A key repeated in one object is refused (``_unique_keys``). Besides syntax errors, ``json.loads`` raises ``RecursionError`` for arrays or objects nested
    deeper than Python's recursion limit and a plain ``ValueError`` for an integer literal longer
    than Python's 4300-digit conversion limit: both are hostile input, not bugs, so both are
    one-line errors like a syntax error instead of a traceback (CLI) or a 500 (API).
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except IntakeError:
        raise
    except json.JSONDecodeError as exc:
        raise IntakeError(f"the file is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise IntakeError("the file's JSON is nested too deeply: a request nests a few levels at most") from None
    except ValueError:  # JSONDecodeError is a ValueError too, caught above
        raise IntakeError("the file holds a number of more than 4300 digits, too large for any id or value") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key repeats is refused: ``json.loads`` would keep the last value silently
    (``{"serviceProviderId": 1, "serviceProviderId": 2}``), so what is stored would not be what the
    sender may have meant."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise IntakeError(f"the key {shown(dup, 40)!r} appears twice in one JSON object; send it once")
    return obj


def parse_json(data: bytes | str, *, limits: IntakeLimits = IntakeLimits()) -> ParsedFile:
    """A request in the seed's JSON shape (data-flow.md), devices as identifiers or objects."""
    raw = data if isinstance(data, bytes) else data.encode()
    check_size(len(raw), limits)
    text = decode_utf8(raw)
    if not text.strip():
        raise IntakeError("the file is empty")
    return ParsedFile(request_from_dict(load_json(text), limits=limits), "json")


def request_from_dict(body: Any, *, limits: IntakeLimits = IntakeLimits()) -> BulkChangeRequest:
    """Validate a decoded JSON body; pydantic's errors become one readable message.

    ``check_values`` runs first, on the body as sent, so that its messages name the wire keys and
    no deeply nested structure reaches pydantic.
    """
    if not isinstance(body, dict):
        raise IntakeError("the request must be a JSON object with serviceProviderId, changeType and devices")
    devices = body.get("devices")
    if isinstance(devices, list) and len(devices) > limits.max_rows:
        raise IntakeError(f"the request has {len(devices):,} devices; the limit is {limits.max_rows:,}: split it")
    check_values(body)
    try:
        return BulkChangeRequest.model_validate(body)
    except ValidationError as exc:
        raise IntakeError("invalid request: " + explain_validation(exc)) from None


def check_values(node: Any, key: str = "", depth: int = 0) -> None:
    """Refuse values no column can hold, so that the request fails here, with a message, and not
    later in the database with a traceback (CLI) or a 500 (API): integers beyond 64 bits (SQLite
    raises OverflowError), NaN and infinities (JSON columns cannot hold them), text ``text_reason``
    refuses (NUL, lone surrogates), effective dates at
    the very ends of the calendar (they cannot be converted to UTC) and nesting deeper than any
    request needs. The one check for every way in: JSON files, JSON bodies and CSV files alike.
    ``key`` is the nearest enclosing key, named in the message.
    """
    if depth > MAX_DEPTH:
        raise IntakeError("the JSON is nested too deeply")
    if key and (reason := text_reason("a key", key, key=True)):
        raise IntakeError(reason)
    key = shown(key)
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, int) and abs(node) > MAX_ID:
        raise IntakeError(f"{key or 'a value'}: the number {str(node)[:30]} is too large for any id or value")
    if isinstance(node, float) and not math.isfinite(node):
        raise IntakeError(f"{key or 'a value'}: {node} is not a number any field can hold")
    if isinstance(node, str):
        if reason := text_reason(key or "a value", node):
            raise IntakeError(reason)
        if key in DATE_KEYS:
            try:
                when = datetime.fromisoformat(node.strip())
            except ValueError:
                return  # validation reports it per device
            if not DATE_YEARS[0] <= when.year <= DATE_YEARS[1]:
                raise IntakeError(f"{key} {node[:40]!r} is outside the years {DATE_YEARS[0]}-{DATE_YEARS[1]}")
        return
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, item in items:
        check_values(item, k if isinstance(k, str) else key, depth + 1)


def explain_validation(exc: ValidationError, limit: int = 10) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = shown(".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("str", "DeviceEntry"))))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a field of a bulk change request"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def change_type_option(change_type: ChangeType | int | str | None) -> ChangeType | None:
    """The change type given as an option (CLI, form field), if any; unknown is a file-level error."""
    try:
        return ChangeType.parse(change_type) if change_type not in (None, "") else None
    except ValueError as exc:
        raise IntakeError(str(exc)) from None


__all__ = [
    "DATE_KEYS",
    "FORMULA_PREFIXES",
    "MAX_DEPTH",
    "IntakeError",
    "IntakeLimits",
    "ParsedFile",
    "change_type_option",
    "check_size",
    "check_values",
    "decode_utf8",
    "explain_validation",
    "formula_reason",
    "load_json",
    "parse_json",
    "plain_int",
    "request_from_dict",
    "shown",
    "text_reason",
]
