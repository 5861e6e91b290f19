"""A submission's results as XML, for a request file dropped as XML without a service provider:
its results go back in the format it came in, as one file for the whole submission.

The document is the bulk change results' (``results_xml``: the same namespace, the same
``deviceResult`` elements written by the same writer, ``results_xml.row_xml``), with ``submissionResults`` /
``submissionId`` at the top and each row's ``bulkChangeId`` and ``serviceProvider`` in front of its
fields; a device no service provider took has neither, and no ``id`` (it has no device row). The
rows are ``intake.submission_results.submission_result_item``, so the XML, the JSON and the CSV of
a submission say the same thing. ``schemas/submission_results.xsd`` describes the document (a
test validates what this writes against it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..results_xml import RESULT_ELEMENTS, RESULTS_NAMESPACE, XML_CHUNK, row_xml
from ..submission_results import submission_result_item

__all__ = ["SUBMISSION_ELEMENTS", "SUBMISSION_RESULTS_SCHEMA", "submission_xml_chunks"]

SUBMISSION_RESULTS_SCHEMA = "submission_results.xsd"  # in ``schemas/``: the document's XSD
SUBMISSION_ELEMENTS = ("bulkChangeId", "serviceProvider", *RESULT_ELEMENTS)


def submission_xml_chunks(submission_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The XML document of a submission's ``rows`` (``iter_submission_results``), streamed."""
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<submissionResults xmlns="{RESULTS_NAMESPACE}">\n'
        f"  <submissionId>{int(submission_id)}</submissionId>\n"
    )
    while chunk := [row for _, row in zip(range(XML_CHUNK), rows, strict=False)]:
        yield "".join(row_xml(submission_result_item(row), SUBMISSION_ELEMENTS) for row in chunk)
    yield "</submissionResults>\n"
