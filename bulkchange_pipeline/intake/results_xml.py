"""Per-device results as XML (``GET /bulk-changes/{id}/devices?format=xml``), valid against
``schemas/bulk_change_results.xsd``: the rows of the JSON answer, field for field, as elements.

Each row is first the JSON answer's item (``DeviceResultOut``: the same names, the same timestamps
ending in Z), so the XML and the JSON cannot say different things; then:

- a null field is left out, an empty text is an empty element;
- ``changeRequest`` is the JSON object as text (as in the CSV download), written ASCII-only (every
  other character as a ``\\uXXXX`` escape), so it carries any value exactly, even one XML 1.0 has
  no character for;
- text is escaped (``& < >``, and a carriage return as ``&#13;``, which a parser would otherwise
  read as a line feed); a character XML 1.0 cannot carry at all (a control character, a lone
  surrogate, U+FFFE/U+FFFF) is written as U+FFFD. Intake refuses such characters in what it
  stores (``parsing.text_reason``; an XML request cannot hold them), so only carrier text can
  contain one, and the document stays well-formed whatever a carrier answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .api_models import DeviceResultOut

RESULTS_NAMESPACE = "urn:bulkchange:results:1"
RESULTS_SCHEMA = "bulk_change_results.xsd"
XML_CHUNK = 2_000  # rows per streamed chunk
# The row's elements, in the order of the results XSD (the JSON answer's item names).
RESULT_ELEMENTS = (
    "id",
    "deviceId",
    "iccid",
    "msisdn",
    "imei",
    "eid",
    "status",
    "statusDetails",
    "attemptCount",
    "carrierRequestId",
    "changeRequest",
    "effectiveAt",
    "processedAt",
)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def xml_text(value: str) -> str:
    """``value`` as XML 1.0 element content that a parser reads back as ``value`` (characters XML
    1.0 cannot carry become U+FFFD)."""
    return _NOT_XML.sub("\ufffd", value).translate(_ESCAPES)


def result_item(row: dict[str, Any]) -> dict[str, Any]:
    """A device row (``store.device_rows.iter_device_results``) as the JSON answer's item."""
    return DeviceResultOut.from_row(row).model_dump(mode="json", by_alias=True)


def row_xml(item: dict[str, Any], elements: tuple[str, ...] = RESULT_ELEMENTS) -> str:
    """One ``deviceResult`` element of a JSON answer's ``item``: its ``elements`` in that order (a
    submission's file puts ``bulkChangeId`` and ``serviceProvider`` first), the one row writer of
    every results XML."""
    parts = ["  <deviceResult>"]
    for name in elements:
        value = item.get(name)
        if value is None:
            continue
        if name == "changeRequest":
            text = json.dumps(value, ensure_ascii=True)
        elif isinstance(value, bool):  # no row field is one today; written as xs:boolean if one becomes one
            text = "true" if value else "false"
        else:
            text = str(value)
        parts.append(f"<{name}>{xml_text(text)}</{name}>")
    parts.append("</deviceResult>\n")
    return "".join(parts)


def results_xml_chunks(bulk_change_id: int, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The XML document of ``rows``, streamed: the header, rows in chunks, the closing tag."""
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<bulkChangeResults xmlns="{RESULTS_NAMESPACE}">\n'
        f"  <bulkChangeId>{int(bulk_change_id)}</bulkChangeId>\n"
    )
    while chunk := [row for _, row in zip(range(XML_CHUNK), rows, strict=False)]:
        yield "".join(row_xml(result_item(row)) for row in chunk)
    yield "</bulkChangeResults>\n"


__all__ = [
    "RESULTS_NAMESPACE",
    "RESULTS_SCHEMA",
    "RESULT_ELEMENTS",
    "result_item",
    "results_xml_chunks",
    "row_xml",
    "xml_text",
]
