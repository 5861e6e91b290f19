"""Per-device results as CSV: one writer for the API's download (``results_download``) and the
CLI's ``results --csv``.

Cells are spreadsheet-safe: text from carriers ends up here, and a cell starting with ``=`` would
run as a formula when the file is opened.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

RESULT_COLUMNS = (
    "id",
    "iccid",
    "msisdn",
    "imei",
    "eid",
    "status",
    "status_details",
    "attempt_count",
    "carrier_request_id",
    "effective_at",
    "processed_at",
    "change_request",
)


def safe_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (text from carriers ends up here)."""
    if value is None:
        return ""
    text = json.dumps(value, default=str, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("+-").replace(".", "", 1).isdigit():
        return "'" + text
    return text


def write_results_csv(out: IO[str], rows: Iterable[dict[str, Any]]) -> int:
    """Stream device results as CSV; returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([safe_cell(row.get(c)) for c in RESULT_COLUMNS])
        n += 1
    return n


CSV_CHUNK = 2_000  # rows per streamed chunk


def results_csv_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``write_results_csv`` output, streamed: chunk by chunk, the header only on the first."""
    first = True
    while True:
        chunk = [row for _, row in zip(range(CSV_CHUNK), rows, strict=False)]
        if not chunk and not first:
            return
        buf = io.StringIO()
        write_results_csv(buf, chunk)
        text = buf.getvalue()
        yield text if first else text.split("\r\n", 1)[1]
        first = False
        if len(chunk) < CSV_CHUNK:
            return


__all__ = [
    "CSV_CHUNK",
    "RESULT_COLUMNS",
    "results_csv_chunks",
    "safe_cell",
    "write_results_csv",
]
