"""Turn an uploaded file (JSON or CSV) into a BulkChangeRequest, or a clear file-level error.

File-level problems (not UTF-8, a NUL character, no identifier column, unknown columns, empty, too
large, invalid or too deeply nested JSON, a value no column can hold) raise ``IntakeError``: nothing
in the file can be trusted, so nothing is validated.
Row-level problems (a ragged CSV row) are returned in ``ParsedFile.row_errors`` so that the other
rows still go through validation and the bad one becomes an ERROR row with its reason (DESIGN R4).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..domain import BulkChangeRequest, ChangeType, DeviceEntry, canonical_key
from ..domain.requests import FIELD_ALIASES, MAX_ID, MAX_IDEMPOTENCY_KEY, TARGET_MODELS

ID_COLUMNS = ("iccid", "imei", "msisdn", "eid", "device")
HEADER_COLUMNS = {"changeType": "change_type", "serviceProviderId": "service_provider_id", "idempotencyKey": "idempotency_key"}
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
    kind: str  # "json" or "csv"
    row_errors: dict[int, str] = field(default_factory=dict)  # 0-based device index -> reason
    # Number to report per device: CSV file lines (= spreadsheet rows), else None (positions 1..n).
    row_numbers: list[int] | None = None


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


def decode_utf8(data: bytes) -> str:
    """Decode, dropping a BOM; a non-UTF-8 byte is reported with its offset and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IntakeError(
            f"the file is not UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} (line {line}) "
            "is not valid UTF-8; save the file as UTF-8 (in Excel: 'CSV UTF-8')"
        ) from None


def _check_size(size: int, limits: IntakeLimits) -> None:
    if size > limits.max_bytes:
        raise IntakeError(f"the file is {size / 1_048_576:.1f} MB; the limit is {limits.max_bytes / 1_048_576:.0f} MB: split it")


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
    _check_size(len(raw), limits)
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


def _field_names(change_type: ChangeType | None) -> set[str]:
    models = [TARGET_MODELS[change_type]] if change_type else list(TARGET_MODELS.values())
    return {name for model in models for name in model.model_fields}


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _column_key(name: str, known: set[str]) -> str | None:
    """The canonical key of a CSV header cell, or None when it names nothing we know."""
    stripped = name.strip()
    if stripped.lower() in ID_COLUMNS:
        return stripped.lower()
    for header, key in HEADER_COLUMNS.items():
        if stripped.lower() in (header.lower(), key):
            return header
    candidates = [canonical_key(stripped), _camel_to_snake(stripped), stripped.lower()]
    aliases = {k.lower(): v for k, v in FIELD_ALIASES.items()}
    candidates.append(aliases.get(stripped.lower(), ""))
    for c in candidates:
        if c in known:
            return c
    return None


def parse_csv(
    data: bytes,
    *,
    change_type: ChangeType | int | str | None = None,
    service_provider_id: int | None = None,
    idempotency_key: str | None = None,
    limits: IntakeLimits = IntakeLimits(),
    process_changes: bool = True,
) -> ParsedFile:
    """One row per device: an identifier column plus per-row values (wire or snake_case names).

    The change type and service provider come from the arguments or from ``changeType`` /
    ``serviceProviderId`` columns, which must then hold the same value on every row.
    """
    _check_size(len(data), limits)
    text = decode_utf8(data)
    if not text.strip():
        raise IntakeError("the file is empty")
    _refuse_nul(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):
            header = next(reader)
    except StopIteration:
        raise IntakeError("the file is empty") from None
    except csv.Error as exc:
        raise IntakeError(f"CSV error on line {reader.line_num}: {exc}") from None

    try:
        option_change_type = ChangeType.parse(change_type) if change_type not in (None, "") else None
    except ValueError as exc:
        raise IntakeError(str(exc)) from None
    fixed = {
        "changeType": option_change_type,
        "serviceProviderId": service_provider_id,
        "idempotencyKey": idempotency_key,
    }
    known_all = _field_names(None)
    keys: list[str] = []
    unknown: list[str] = []
    for cell in header:
        key = _column_key(cell, known_all)
        if key is None:
            unknown.append(cell.strip() or "(blank)")
        keys.append(key or "")
    separators = {";": "a spreadsheet set to a language with decimal commas saves ';' as its CSV separator: save the file with "
                  "',' as the field delimiter, or replace the semicolons with commas",
                  "\t": "save it as CSV (comma delimited), not as tab-delimited text"}
    for sep, fix in separators.items():  # one unknown column "iccid;status": the file is not comma-separated
        if unknown and any(_column_key(part, known_all) for cell in header if sep in cell for part in cell.split(sep)):
            name = "semicolon" if sep == ";" else "tab"
            raise IntakeError(f"the file looks {name}-separated (header {', '.join(header)[:80]!r}): separate the columns "
                              f"with commas; {fix}")
    if unknown:
        raise IntakeError(
            f"unknown column(s): {', '.join(repr(u) for u in unknown)}; an identifier column is one of "
            f"{', '.join(ID_COLUMNS)}, value columns are fields such as targetStatus, carrierRatePlan, "
            "customerRatePlanId, effectiveDate"
        )
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise IntakeError(f"column(s) given twice: {', '.join(dupes)}")
    if not any(k in ID_COLUMNS for k in keys):
        raise IntakeError(f"no identifier column: the header must name one of {', '.join(ID_COLUMNS)} (found: {', '.join(header)})")

    entries: list[DeviceEntry] = []
    lines: list[int] = []
    row_errors: dict[int, str] = {}
    header_values: dict[str, set[str]] = {h: set() for h in HEADER_COLUMNS}
    width = len(keys)
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(entries) >= limits.max_rows:
                raise IntakeError(f"the file has more than {limits.max_rows:,} device rows; the limit is {limits.max_rows:,}: split it")
            if len(cells) != width:
                row_errors[len(entries)] = (
                    f"line {reader.line_num} has {len(cells)} cells, the header has {width}; check for an unquoted comma"
                )
            record: dict[str, Any] = {}
            for key, value in zip(keys, cells):
                value = value.strip()
                if key in HEADER_COLUMNS:
                    if value:
                        header_values[key].add(value)
                elif value:
                    record[key] = value
            entries.append(DeviceEntry.model_validate(record))
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise IntakeError(f"CSV error on line {reader.line_num}: {exc}") from None
    if not entries:
        raise IntakeError("the file has a header but no device rows")

    resolved = _resolve_header_values(fixed, header_values)
    ct = resolved["changeType"]
    if ct is None:
        raise IntakeError("no change type: pass --change-type (e.g. StatusUpdate or 1) or add a changeType column")
    if resolved["serviceProviderId"] is None:
        raise IntakeError("no service provider: pass --service-provider or add a serviceProviderId column")
    foreign = sorted({k for k in keys if k and k not in ID_COLUMNS and k not in HEADER_COLUMNS} - _field_names(ct))
    if foreign:
        raise IntakeError(
            f"column(s) {', '.join(foreign)} are not fields of {ct.label}; its fields are: {', '.join(sorted(_field_names(ct)))}"
        )
    try:
        request = BulkChangeRequest(
            serviceProviderId=resolved["serviceProviderId"],
            changeType=ct,
            idempotencyKey=resolved["idempotencyKey"],
            processChanges=process_changes,
            devices=entries,
        )
    except ValidationError as exc:
        raise IntakeError("invalid request: " + explain_validation(exc)) from None
    check_values(request.to_json())  # the request as it will be stored: options, header columns and cells
    return ParsedFile(request, "csv", row_errors, lines)


def _refuse_nul(text: str) -> None:
    """A NUL character anywhere refuses the whole file, with its line, like a byte that is not UTF-8.

    No text CSV holds one: a NUL means a UTF-16 file (whose ASCII text is valid UTF-8 with a NUL
    after every character) or a binary file (an .xlsx) saved as .csv, so no row of it can be
    trusted. A ragged row, by contrast, leaves the other rows readable, so it is refused per row.
    """
    at = text.find("\x00")
    if at >= 0:
        line = text.count("\n", 0, at) + 1
        raise IntakeError(
            f"the file contains a NUL character (line {line}), so it is not a text CSV (a UTF-16 or .xlsx file?): "
            "save it as 'CSV UTF-8'"
        )


def _resolve_header_values(fixed: dict[str, Any], found: dict[str, set[str]]) -> dict[str, Any]:
    out = dict(fixed)
    for name, values in found.items():
        if len(values) > 1:
            shown_values = ", ".join(shown(v, 40) for v in sorted(values)[:10])
            raise IntakeError(f"column {name} must hold the same value on every row; found {shown_values}")
        if not values:
            continue
        value = next(iter(values))
        try:
            if name == "serviceProviderId":  # ASCII digits (not "²"); the model bounds it to 64 bits
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"{shown(value, 40)!r} is not a service provider id")
                parsed = int(value)
            else:
                parsed = ChangeType.parse(value) if name == "changeType" else value
        except ValueError as exc:
            raise IntakeError(f"column {name}: {shown(str(exc), 300)}") from None
        if out[name] not in (None, parsed):
            raise IntakeError(f"column {name} says {shown(value, 40)} but the command line says {out[name]}")
        out[name] = parsed
    return out


def read_request_file(
    path: str | Path,
    *,
    change_type: ChangeType | int | str | None = None,
    service_provider_id: int | None = None,
    idempotency_key: str | None = None,
    limits: IntakeLimits = IntakeLimits(),
) -> ParsedFile:
    """Read a JSON or CSV request file (by extension, else by its first character).

    Options given for a JSON file override its fields (the idempotency key, typically).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise IntakeError(f"cannot read {p}: {exc.strerror}") from None
    _check_size(size, limits)
    try:  # read under the cap: a pipe or device (/dev/zero) says size 0 and never ends
        with p.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise IntakeError(f"cannot read {p}: {exc.strerror}") from None
    _check_size(len(data), limits)
    is_json = p.suffix.lower() == ".json" or (p.suffix.lower() != ".csv" and data.lstrip()[:1] in (b"{", b"["))
    if not is_json:
        return parse_csv(
            data, change_type=change_type, service_provider_id=service_provider_id, idempotency_key=idempotency_key, limits=limits
        )
    parsed = parse_json(data, limits=limits)
    updates: dict[str, Any] = {}
    if idempotency_key and idempotency_key.strip():  # validated like the file's own key (model_copy does not)
        if len(idempotency_key.strip()) > MAX_IDEMPOTENCY_KEY:
            raise IntakeError(f"the idempotency key has {len(idempotency_key.strip())} characters; the limit is {MAX_IDEMPOTENCY_KEY}")
        updates["idempotency_key"] = idempotency_key.strip()
    if service_provider_id is not None and service_provider_id != parsed.request.service_provider_id:
        raise IntakeError(f"the file says serviceProviderId {parsed.request.service_provider_id}, the command line {service_provider_id}")
    try:
        option_change_type = ChangeType.parse(change_type) if change_type not in (None, "") else None
    except ValueError as exc:
        raise IntakeError(str(exc)) from None
    if option_change_type is not None and option_change_type is not parsed.request.change_type:
        raise IntakeError(f"the file says changeType {parsed.request.change_type.value}, the command line {change_type}")
    if updates:
        parsed.request = parsed.request.model_copy(update=updates)
    return parsed
