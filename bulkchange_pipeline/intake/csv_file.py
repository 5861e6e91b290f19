"""A CSV request file: one row per device, an identifier column plus per-row values.

``parse_csv`` reads it in named steps: the bytes (``_csv_check``: size, UTF-8, no NUL), the header
(``_csv_header``) and its columns (``_column_keys``: every one known, none twice, an identifier
among them, commas as separators), the device rows (``_csv_rows``: ragged rows kept with their
reason), then the request they make (``_csv_request``). File-level problems raise ``IntakeError``
(nothing in the file can be trusted); a ragged row becomes a row error, so the other rows still go
through validation (DESIGN R4).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Self, cast, overload

from pydantic import ValidationError

from ..domain import BulkChangeRequest, ChangeType, DeviceEntry, canonical_key
from ..domain.requests import FIELD_ALIASES, MAX_DEVICES_PER_REQUEST, TARGET_MODELS
from .parsing import (
    DATE_KEYS,
    IntakeError,
    IntakeLimits,
    ParsedFile,
    change_type_option,
    check_size,
    check_values,
    decode_utf8,
    explain_validation,
    plain_text,
    shown,
)

ID_COLUMNS = ("iccid", "imei", "msisdn", "eid", "device")
HEADER_COLUMNS = {
    "changeType": "change_type",
    "serviceProviderId": "service_provider_id",
    "idempotencyKey": "idempotency_key",
}


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
    ``serviceProviderId`` columns, which must then hold the same value on every row (no service
    provider at all: ``submit`` splits the devices by their service provider). The steps:
    the bytes (``_csv_check``), the header (``_csv_header``) and its columns (``_column_keys``), the
    device rows (``_csv_rows``), then the request they make (``_csv_request``).
    """
    check_each = _csv_check(data, limits)
    reader = csv.reader(_lines(data), strict=True)
    header = _csv_header(reader)
    fixed = {
        "changeType": change_type_option(change_type),
        "serviceProviderId": service_provider_id,
        "idempotencyKey": idempotency_key,
    }
    keys = _column_keys(header)
    rows = _csv_rows(reader, keys, limits, check_each or any(k in DATE_KEYS for k in keys))
    request = _csv_request(keys, rows, _resolve_header_values(fixed, rows.header_values), process_changes, data)
    return ParsedFile(request, "csv", rows.errors, rows.lines)


SCAN_BYTES = 1 << 20  # the file is decoded and scanned a megabyte at a time (see ``_csv_check``)


def _csv_check(data: bytes, limits: IntakeLimits) -> bool:
    """The file's bytes: within the size limit, UTF-8, not empty, no NUL character. Returns whether
    its values need ``check_values`` one by one: only when the text holds what ``text_reason``
    refuses (``plain_text``) or a date column (``_csv_rows``), so a plain file is not held to the
    check row by row (seconds for a million rows) to find nothing.

    Decoded and scanned a megabyte at a time and never held as one text: each step is a short C
    call, so the HTTP app's event loop gets the GIL between them (decoding 31 MB at once held it
    for tens of milliseconds), and the text is not a second copy of the file in memory."""
    check_size(len(data), limits)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    blank, plain = True, True
    for start in range(0, len(data), SCAN_BYTES):
        end = start + SCAN_BYTES
        try:
            piece = decoder.decode(data[start:end], final=end >= len(data))
        except UnicodeDecodeError:
            decode_utf8(data)  # the whole file's error: the offset and line of the byte
            raise
        blank = blank and (not piece or piece.isspace())
        plain = plain and plain_text(piece)
    if blank:
        raise IntakeError("the file is empty")
    _refuse_nul(data)
    return not plain


def _lines(data: bytes) -> io.TextIOWrapper:
    """The file's lines as ``csv`` reads them (any line break, kept), decoded a block at a time
    from the bytes: ``io.StringIO`` over the whole text would hold it again as 4 bytes a character."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")


def _csv_header(reader: Any) -> list[str]:
    """The first line with a non-blank cell."""
    try:
        header: list[str] = next(reader)
        while not any(cell.strip() for cell in header):
            header = next(reader)
    except StopIteration:
        raise IntakeError("the file is empty") from None
    except csv.Error as exc:
        raise IntakeError(f"CSV error on line {reader.line_num}: {exc}") from None
    return header


CSV_SEPARATOR_FIXES = {
    ";": "a spreadsheet set to a language with decimal commas saves ';' as its CSV separator: save the file with "
    "',' as the field delimiter, or replace the semicolons with commas",
    "\t": "save it as CSV (comma delimited), not as tab-delimited text",
}


def _column_keys(header: list[str]) -> list[str]:
    """The canonical key of every header cell; a file whose columns are not all known, are given
    twice, hold no identifier or are not comma-separated is refused as a whole."""
    known_all = _field_names(None)
    keys: list[str] = []
    unknown: list[str] = []
    for cell in header:
        key = _column_key(cell, known_all)
        if key is None:
            unknown.append(cell.strip() or "(blank)")
        keys.append(key or "")
    for sep, fix in CSV_SEPARATOR_FIXES.items():  # one unknown column "iccid;status": the file is not comma-separated
        if unknown and any(_column_key(part, known_all) for cell in header if sep in cell for part in cell.split(sep)):
            name = "semicolon" if sep == ";" else "tab"
            raise IntakeError(
                f"the file looks {name}-separated (header {', '.join(header)[:80]!r}): separate the columns "
                f"with commas; {fix}"
            )
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
        raise IntakeError(
            f"no identifier column: the header must name one of {', '.join(ID_COLUMNS)} (found: {', '.join(header)})"
        )
    return keys


class CsvDevices(Sequence[DeviceEntry]):
    """The device rows of a parsed CSV file, read again from its bytes each time they are iterated.

    Why not a list: a million ``DeviceEntry`` objects held at once cost about a gigabyte, and
    validating them in one pydantic call held the GIL for seconds (the HTTP app stopped answering).
    ``chunks`` gives them ``size`` at a time with their file lines, which is how ``submit``
    validates and stores a file; iterating gives them one by one (what ``BulkChangeRequest.entries``
    and the fingerprint do). The file was read once already (``parse_csv``), so every row is known
    to parse.
    """

    def __init__(self, data: bytes, keys: list[str], count: int) -> None:
        self._data, self._keys, self._count = data, keys, count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> DeviceEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[DeviceEntry]: ...
    def __getitem__(self, index: int | slice) -> DeviceEntry | list[DeviceEntry]:
        """By position (reads the file up to it: a list of ``list(devices)`` is the way to index
        many)."""
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        return next(islice(iter(self), index, None))

    def __iter__(self) -> Iterator[DeviceEntry]:
        for _, record, _ in self._records():
            yield DeviceEntry.model_validate(record)

    def chunks(self, size: int) -> Iterator[tuple[list[DeviceEntry], list[int]]]:
        """The devices ``size`` at a time, each chunk with the file line of every device."""
        entries: list[DeviceEntry] = []
        lines: list[int] = []
        for line, record, _ in self._records():
            entries.append(DeviceEntry.model_validate(record))
            lines.append(line)
            if len(entries) >= size:
                yield entries, lines
                entries, lines = [], []
        if entries:
            yield entries, lines

    def _records(self) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
        reader = csv.reader(_lines(self._data), strict=True)
        _csv_header(reader)
        return _csv_records(reader, self._keys)


def _csv_records(reader: Any, keys: list[str]) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """Every non-blank row: its file line, its device values and its cells (a header-column value,
    ``changeType`` and the like, is left out of the values)."""
    for cells in _non_blank(reader):
        yield reader.line_num, _record(keys, cells), cells


def _non_blank(reader: Any) -> Iterator[list[str]]:
    for cells in reader:
        if any(map(str.strip, cells)):
            yield cells


def _record(keys: list[str], cells: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in zip(keys, cells, strict=False):  # a ragged row: ``_csv_rows`` records its reason
        value = value.strip()
        if value and key not in HEADER_COLUMNS:
            record[key] = value
    return record


class FileLines(array):  # type: ignore[type-arg]  # array is not subscriptable at run time
    """The file line of every device row, 8 bytes each (a list of ints costs 36 a row: 28 MB more
    for a million rows). Equal to the list of the same numbers, as the list it replaces was."""

    def __new__(cls) -> Self:
        return cast(Self, super().__new__(cls, "q"))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return self.tolist() == other
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None


@dataclass
class _CsvRows:
    """What reading every device row once found: how many, the file line of each, the reasons of
    ragged ones, the header-column values and the first row's values (the rows themselves are read
    again, chunk by chunk, from ``CsvDevices``)."""

    count: int = 0
    lines: FileLines = field(default_factory=FileLines)
    errors: dict[int, str] = field(default_factory=dict)  # 0-based device index -> reason
    header_values: dict[str, set[str]] = field(default_factory=lambda: {h: set() for h in HEADER_COLUMNS})
    first: dict[str, Any] = field(default_factory=dict)


def _csv_rows(reader: Any, keys: list[str], limits: IntakeLimits, check_each: bool = True) -> _CsvRows:
    """Every non-blank row checked once (header-column values collected apart, every value held to
    ``check_values`` when ``check_each``: ``_csv_check`` tells when no value can fail it); a ragged
    row is kept, with its reason, so the other rows still go through validation."""
    rows = _CsvRows()
    width = len(keys)
    header_keys = [(i, key) for i, key in enumerate(keys) if key in HEADER_COLUMNS]
    try:
        for cells in _non_blank(reader):
            line = reader.line_num
            if rows.count >= limits.max_rows:
                raise IntakeError(
                    f"the file has more than {limits.max_rows:,} device rows; the limit is {limits.max_rows:,}: split it"
                )
            if len(cells) != width:
                rows.errors[rows.count] = (
                    f"line {line} has {len(cells)} cells, the header has {width}; check for an unquoted comma"
                )
            for i, key in header_keys:
                value = cells[i].strip() if i < len(cells) else None
                if value or (value == "" and key == "serviceProviderId"):  # blank: split, never mixed with an id
                    rows.header_values[key].add(value)
            if check_each or not rows.count:  # the values are built only where they are looked at
                record = _record(keys, cells)
                if check_each:
                    check_values(record)  # values no column can hold refuse the file (as for JSON)
                if not rows.count:
                    rows.first = record
            rows.count += 1
            rows.lines.append(line)
    except csv.Error as exc:
        raise IntakeError(f"CSV error on line {reader.line_num}: {exc}") from None
    if not rows.count:
        raise IntakeError("the file has a header but no device rows")
    return rows


def _csv_request(
    keys: list[str], rows: _CsvRows, resolved: dict[str, Any], process_changes: bool, data: bytes
) -> BulkChangeRequest:
    """The request the rows make, once the change type and service provider are known and every
    value column is a field of that change type. The header is validated once, with the first
    device; the devices are the file's (``CsvDevices``), validated chunk by chunk."""
    ct = resolved["changeType"]
    if ct is None:
        raise IntakeError("no change type: pass --change-type (e.g. StatusUpdate or 1) or add a changeType column")
    foreign = sorted({k for k in keys if k and k not in ID_COLUMNS and k not in HEADER_COLUMNS} - _field_names(ct))
    if foreign:
        raise IntakeError(
            f"column(s) {', '.join(foreign)} are not fields of {ct.label}; its fields are: {', '.join(sorted(_field_names(ct)))}"
        )
    if rows.count > MAX_DEVICES_PER_REQUEST:
        raise IntakeError(
            f"invalid request: devices: List should have at most {MAX_DEVICES_PER_REQUEST} items after validation, "
            f"not {rows.count}"
        )
    try:
        head = BulkChangeRequest(
            serviceProviderId=resolved["serviceProviderId"],
            changeType=ct,
            idempotencyKey=resolved["idempotencyKey"],
            processChanges=process_changes,
            devices=[DeviceEntry.model_validate(rows.first)],
        )
    except ValidationError as exc:
        raise IntakeError("invalid request: " + explain_validation(exc)) from None
    check_values(head.to_json())  # the request as it will be stored: options and header columns
    return head.model_copy(update={"devices": CsvDevices(data, keys, rows.count)})


def _refuse_nul(data: bytes) -> None:
    """A NUL character anywhere refuses the whole file, with its line, like a byte that is not UTF-8.

    No text CSV holds one: a NUL means a UTF-16 file (whose ASCII text is valid UTF-8 with a NUL
    after every character) or a binary file (an .xlsx) saved as .csv, so no row of it can be
    trusted. A ragged row, by contrast, leaves the other rows readable, so it is refused per row.
    """
    at = data.find(b"\x00")  # in UTF-8 the byte 0 is the character NUL and nothing else
    if at >= 0:
        line = data.count(b"\n", 0, at) + 1
        raise IntakeError(
            f"the file contains a NUL character (line {line}), so it is not a text CSV (a UTF-16 or .xlsx file?): "
            "save it as 'CSV UTF-8'"
        )


def _resolve_header_values(fixed: dict[str, Any], found: dict[str, set[str]]) -> dict[str, Any]:
    out = dict(fixed)
    for name, values in found.items():
        if out[name] is not None:  # given apart (option, drop settings): it fills the blank cells
            values = values - {""}
        if "" in values:  # blank on some rows (split them) and set on others (one provider): never guessed
            if len(values) > 1:
                given = ", ".join(shown(v, 40) for v in sorted(values - {""})[:10])
                raise IntakeError(
                    f"column {name} is blank on some rows and {given} on others: give it on every row, or leave "
                    "it blank on every row (or drop the column) to split the devices by their service provider"
                )
            continue
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


__all__ = ["HEADER_COLUMNS", "ID_COLUMNS", "CsvDevices", "parse_csv"]
