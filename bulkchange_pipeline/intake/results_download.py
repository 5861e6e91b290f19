"""A bulk change's device rows as a file to download, CSV or XML: the one place that reads the rows
for both (every row in id order, or every row of one status), streamed, so a million-row bulk
change is never held in memory. The API's ``?format=csv|xml`` and the console's CSV link serve it;
the writers are ``results_csv`` and ``results_xml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import sqlalchemy as sa
from fastapi.responses import StreamingResponse

from ..domain import DeviceChangeStatus
from ..store.device_rows import iter_device_results
from .results_csv import results_csv_chunks
from .results_xml import results_xml_chunks

DownloadFormat = Literal["csv", "xml"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "xml": "application/xml; charset=utf-8"}


def result_rows(
    engine: sa.Engine, tenant_id: int, bulk_change_id: int, status: DeviceChangeStatus | None = None
) -> Iterator[dict[str, Any]]:
    """The device rows a download holds: every row of the bulk change, or only ``status`` ones."""
    rows: Iterator[dict[str, Any]] = iter(iter_device_results(engine, tenant_id, bulk_change_id))
    if status is not None:
        rows = (r for r in rows if r["status"] == status.value)
    return rows


def download_format(format: str | None, accept: str) -> DownloadFormat | None:
    """The file a results request asks for: ``?format=csv|xml``, or CSV by ``Accept: text/csv``;
    None for the JSON pages. (XML only by ``format``: browsers list application/xml in their
    Accept header, and a browser opening the route should get the JSON it always got.)"""
    if format == "xml":
        return "xml"
    if format == "csv" or (format is None and "text/csv" in accept):
        return "csv"
    return None


def download_response(
    engine: sa.Engine,
    tenant_id: int,
    bulk_change_id: int,
    status: DeviceChangeStatus | None = None,
    format: DownloadFormat = "csv",
) -> StreamingResponse:
    """The rows as a streamed CSV (spreadsheet-safe cells) or XML (valid against the results XSD)
    attachment."""
    rows = result_rows(engine, tenant_id, bulk_change_id, status)
    chunks = results_csv_chunks(rows) if format == "csv" else results_xml_chunks(bulk_change_id, rows)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="bulk-change-{bulk_change_id}-devices.{format}"'},
    )


__all__ = ["MEDIA_TYPES", "DownloadFormat", "download_format", "download_response", "result_rows"]
