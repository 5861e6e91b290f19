"""Per-device results as CSV: one writer for the API's download and the CLI's ``results --csv``.

Cells are spreadsheet-safe: text from carriers ends up here, and a cell starting with ``=`` would
run as a formula when the file is opened.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
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


__all__ = ["RESULT_COLUMNS", "safe_cell", "write_results_csv"]
