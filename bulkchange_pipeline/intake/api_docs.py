"""What ``/openapi.json`` says about the bodies the intake routes read and the downloads they
serve, kept beside each other: the request body of a submit or dry run (JSON, or XML valid against
the published XSD), the CSV upload form, and the per-device results (JSON pages, CSV or XML).

The routes read their bodies themselves (``api_bodies``: a byte cap, then JSON, XML or multipart),
so FastAPI cannot derive these from their signatures: without them the document would say the
routes take no body, and a schema-driven test would never send one.
"""

from __future__ import annotations

from typing import Any

from .request_schema import request_body_schema
from .xml_request import MEDIA_TYPES, REQUEST_NAMESPACE

REQUEST_XSD_ROUTE = "/schemas/bulk-change-request.xsd"
RESULTS_XSD_ROUTE = "/schemas/bulk-change-results.xsd"
SUBMISSION_RESULTS_XSD_ROUTE = "/schemas/submission-results.xsd"

_XML_REQUEST = {
    "schema": {
        "type": "string",
        "description": f'A <bulkChangeRequest xmlns="{REQUEST_NAMESPACE}"> document, UTF-8, valid against the XSD '
        f"at GET {REQUEST_XSD_ROUTE}: the JSON request's fields as elements. No DOCTYPE, processing "
        "instructions, CDATA or attributes.",
    }
}

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": request_body_schema()},
            **{media: _XML_REQUEST for media in MEDIA_TYPES},
        },
    }
}

CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "UTF-8 CSV: an identifier column (iccid, imei, msisdn, eid or device) and per-row values",
                        },
                        "changeType": {
                            "type": "string",
                            "description": "Change type number or name, unless the CSV has a changeType column",
                        },
                        "serviceProviderId": {
                            "type": "string",
                            "pattern": "^[0-9]{1,18}$",
                            "description": "Unless the CSV has a serviceProviderId column",
                        },
                        "idempotencyKey": {"type": "string", "maxLength": 200},
                        "processChanges": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "description": "false: store only (default true)",
                        },
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}

DEVICE_DOWNLOADS: dict[str, Any] = {
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/xml": {
            "schema": {
                "type": "string",
                "description": f"A <bulkChangeResults> document, valid against the XSD at GET {RESULTS_XSD_ROUTE}",
            }
        },
    },
    "description": "A page of device rows; with format=csv (or Accept: text/csv) every row as CSV, with "
    "format=xml every row as XML",
}

__all__ = [
    "CSV_BODY",
    "DEVICE_DOWNLOADS",
    "REQUEST_BODY",
    "REQUEST_XSD_ROUTE",
    "RESULTS_XSD_ROUTE",
    "SUBMISSION_RESULTS_XSD_ROUTE",
]
