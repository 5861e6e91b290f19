"""The file formats a drop inbox takes, each with its reader and the writer of its results: one
registry, so a format is added in one place (``register_format``) and its results go back in the
format it came in.

CSV, JSON and XML are read by ``request_file.parse_request_data`` (the same parsing as the CLI
and the API) and answered by the results writers of the API's downloads (``results_csv``,
``results_xml``; JSON as the API's result items). A file without a service provider becomes a
submission split by carrier; its one results file is written by ``write_submission`` (the API's
submission download, ``submission_results``; XML by ``submission_xml``). A format whose file is not one request (X12:
an 856 makes one bulk change per configured change, is answered at once with a 997 numbered from
the database, and its 824 waits for all of them) brings its own ``take`` instead of ``read`` and
``write_results``: the inbox still finds, moves and reports the file (``x12_files`` registers it).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from ...store.file_drops import DropSettings
from ..parsing import IntakeLimits, ParsedFile
from ..request_file import parse_request_data
from ..results_csv import write_results_csv
from ..results_xml import result_item, results_xml_chunks
from ..submission_results import submission_csv_chunks, submission_json_chunks
from ..xml_request import looks_like_xml
from .submission_xml import submission_xml_chunks

__all__ = [
    "DropDefaults",
    "DropFormat",
    "FORMATS",
    "OwnIntake",
    "TakeFile",
    "format_named",
    "known_suffixes",
    "pick_format",
    "register_format",
    "results_json_chunks",
]


@dataclass(frozen=True)
class DropDefaults:
    """What the tenant's drop settings say for a file that does not say it itself (a CSV without
    ``changeType``/``serviceProviderId`` columns), and the idempotency key the file is stored under."""

    tenant_id: int
    idempotency_key: str
    service_provider_id: int | None = None
    change_type: int | None = None
    limits: IntakeLimits = IntakeLimits()


@dataclass(frozen=True)
class OwnIntake:
    """What a format's own ``take`` made of a file; the inbox then moves the file accordingly."""

    outcome: Literal["taken", "resend", "rejected"]
    text: str  # the reason (rejected/<name>.reason.txt), the note (a resend) or the report line
    outbox: tuple[tuple[str, str], ...] = ()  # (name, content) written to the outbox before the move


# (engine, the tenant's drop settings, the file's safe name, its bytes, limits): raises nothing
# for bad input, it answers ``OwnIntake("rejected", reason)``.
TakeFile = Callable[[sa.Engine, DropSettings, str, bytes, IntakeLimits], OwnIntake]


@dataclass(frozen=True)
class DropFormat:
    """One format: ``name`` is stored with the drop and picks the writer of its results."""

    name: str
    suffixes: tuple[str, ...]  # lower case, with the dot
    read: Callable[[bytes, DropDefaults], ParsedFile] | None  # raises IntakeError: the file is refused
    write_results: Callable[[int, Iterator[dict[str, Any]]], Iterator[str]] | None  # (bulk change id, rows)
    results_suffix: str
    sniff: Callable[[bytes], bool] | None = None  # a file whose suffix names no format
    # Written to the outbox at once as ``<stem>.ack<results_suffix>``: (file bytes, refusal or None).
    acknowledge: Callable[[bytes, str | None], bytes | None] | None = None
    take: TakeFile | None = None  # the format's own intake, instead of ``read`` and ``write_results``
    # A submission's one results file: (submission id, ``iter_submission_results`` rows).
    write_submission: Callable[[int, Iterator[dict[str, Any]]], Iterator[str]] | None = None


def _reader(suffix: str) -> Callable[[bytes, DropDefaults], ParsedFile]:
    def read(data: bytes, defaults: DropDefaults) -> ParsedFile:
        # The drop settings' defaults are options for a CSV only: a JSON or XML file says its own,
        # and an option that differs from the file would refuse it.
        csv = suffix == ".csv"
        return parse_request_data(
            data,
            suffix,
            change_type=defaults.change_type if csv else None,
            service_provider_id=defaults.service_provider_id if csv else None,
            idempotency_key=defaults.idempotency_key,
            limits=defaults.limits,
        )

    return read


def _csv_chunks(bulk_change_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    write_results_csv(buf, rows)
    yield buf.getvalue()


def results_json_chunks(bulk_change_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``{"bulkChangeId": n, "devices": [...]}``, each device as the API's JSON result item, streamed."""
    yield f'{{"bulkChangeId": {int(bulk_change_id)}, "devices": ['
    first = True
    for row in rows:
        yield ("\n" if first else ",\n") + json.dumps(result_item(row), ensure_ascii=False)
        first = False
    yield "\n]}\n"


def _is_json(data: bytes) -> bool:
    return data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in (b"{", b"[")


def _submission_csv_chunks(submission_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    return submission_csv_chunks(rows)


FORMATS: list[DropFormat] = [
    DropFormat(
        "json",
        (".json",),
        _reader(".json"),
        results_json_chunks,
        ".json",
        _is_json,
        write_submission=submission_json_chunks,
    ),
    DropFormat(
        "xml",
        (".xml",),
        _reader(".xml"),
        results_xml_chunks,
        ".xml",
        looks_like_xml,
        write_submission=submission_xml_chunks,
    ),
    # A CSV is what is left: a file without a suffix (or ``.txt``) that is not JSON, XML or X12.
    DropFormat("csv", (".csv",), _reader(".csv"), _csv_chunks, ".csv", None, write_submission=_submission_csv_chunks),
]
_PLAIN_SUFFIXES = ("", ".txt")


def register_format(fmt: DropFormat) -> None:
    """Add (or replace, by name) a format; it is tried before CSV when sniffing."""
    FORMATS[:] = [f for f in FORMATS if f.name != fmt.name]
    FORMATS.insert(0, fmt)


def format_named(name: str) -> DropFormat | None:
    return next((f for f in FORMATS if f.name == name), None)


def pick_format(suffix: str, data: bytes) -> DropFormat | None:
    """The format of a file: by its suffix, else by its content (JSON, XML, a registered sniff)
    when the suffix is empty or ``.txt`` or unknown, else CSV for an empty or ``.txt`` suffix;
    None: a file type no format takes (refused with the suffixes that are taken)."""
    suffix = suffix.lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            return fmt
    for fmt in FORMATS:
        if fmt.sniff is not None and fmt.sniff(data):
            return fmt
    return format_named("csv") if suffix in _PLAIN_SUFFIXES else None


def known_suffixes() -> list[str]:
    return sorted(s for f in FORMATS for s in f.suffixes)
