"""A submission's results as one file (``store.submissions.iter_submission_results``): every device
of every child, then the devices no service provider took, as CSV or JSON. The API's
``GET /submissions/{id}/devices`` streams it; a file drop's outbox can write the same file.

The CSV is the bulk change's results CSV (``results_csv``, spreadsheet-safe cells) with the child's
``bulkChangeId`` and ``serviceProvider`` in front; the JSON items are the bulk change results' items
(``DeviceResultOut``) with the same two fields.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .api_models import DeviceResultOut
from .results_csv import CSV_CHUNK, RESULT_COLUMNS, safe_cell

__all__ = [
    "SUBMISSION_COLUMNS",
    "submission_csv_chunks",
    "submission_json_chunks",
    "submission_result_item",
    "write_submission_csv",
]

SUBMISSION_COLUMNS = ("bulkChangeId", "serviceProvider", *RESULT_COLUMNS)


def write_submission_csv(out: IO[str], rows: Iterable[dict[str, Any]], *, header: bool = True) -> int:
    """Stream a submission's results as CSV; returns the number of rows written."""
    writer = csv.writer(out)
    if header:
        writer.writerow(SUBMISSION_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([safe_cell(row.get(c)) for c in SUBMISSION_COLUMNS])
        n += 1
    return n


def submission_csv_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``write_submission_csv`` output in chunks of ``CSV_CHUNK`` rows, the header first."""
    first = True
    while True:
        chunk = [row for _, row in zip(range(CSV_CHUNK), rows, strict=False)]
        buf = io.StringIO()
        write_submission_csv(buf, chunk, header=first)
        first = False
        yield buf.getvalue()
        if len(chunk) < CSV_CHUNK:
            return


def submission_result_item(row: dict[str, Any]) -> dict[str, Any]:
    """One row as the JSON download's item: ``DeviceResultOut`` plus ``bulkChangeId``,
    ``serviceProvider`` (null for a device no service provider took; its ``id`` is null too)."""
    head = {"bulkChangeId": row.get("bulkChangeId"), "serviceProvider": row.get("serviceProvider")}
    if row["id"] is not None:
        return {**head, **DeviceResultOut.from_row(row).model_dump(mode="json", by_alias=True)}
    names = DeviceResultOut.model_fields
    return {**head, **{names[k].alias or k: row.get(k) for k in names}}


def submission_json_chunks(submission_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``{"submissionId": N, "items": [...]}``, streamed item by item (chunked)."""
    yield f'{{"submissionId": {int(submission_id)}, "items": ['
    first = True
    while chunk := [row for _, row in zip(range(CSV_CHUNK), rows, strict=False)]:
        text = ",".join(json.dumps(submission_result_item(r), default=str) for r in chunk)
        yield text if first else "," + text
        first = False
    yield "]}\n"
