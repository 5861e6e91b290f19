"""The XML contracts of the intake API, published: ``GET /schemas/bulk-change-request.xsd`` (what
an XML submission is validated against) and ``GET /schemas/bulk-change-results.xsd`` (what
``?format=xml`` downloads of a bulk change are valid against) and ``GET
/schemas/submission-results.xsd`` (the same for a submission across carriers).

Without an API key, like ``/openapi.json``: a schema holds no tenant data, it is the same file for
everyone (the one in the repo, ``schemas/``), and the tools that read one (an XML editor, xmllint
--schema, a code generator, a partner's integration build) fetch it by URL and cannot send a key.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..schemas import schema_path
from .api_docs import REQUEST_XSD_ROUTE, RESULTS_XSD_ROUTE, SUBMISSION_RESULTS_XSD_ROUTE
from .drops.submission_xml import SUBMISSION_RESULTS_SCHEMA
from .results_xml import RESULTS_SCHEMA
from .xml_request import REQUEST_SCHEMA

XSD_MEDIA_TYPE = "application/xml"
PUBLISHED = {
    REQUEST_XSD_ROUTE: REQUEST_SCHEMA,
    RESULTS_XSD_ROUTE: RESULTS_SCHEMA,
    SUBMISSION_RESULTS_XSD_ROUTE: SUBMISSION_RESULTS_SCHEMA,
}
WHAT = {
    REQUEST_SCHEMA: "an XML bulk change request",
    RESULTS_SCHEMA: "a bulk change's XML results download",
    SUBMISSION_RESULTS_SCHEMA: "a submission's XML results download (every child bulk change)",
}

schemas = APIRouter(tags=["schemas"])


def _publish(route: str, file_name: str) -> None:
    content = schema_path(file_name).read_bytes()  # read once: the file ships with the package

    def serve() -> Response:
        return Response(content, media_type=XSD_MEDIA_TYPE, headers={"Cache-Control": "public, max-age=3600"})

    what = WHAT[file_name]
    schemas.add_api_route(
        route,
        serve,
        methods=["GET"],
        response_class=Response,
        summary=f"The XSD of {what}",
        description=f"The XML Schema (XSD 1.0) of {what}; no API key needed.",
        responses={200: {"content": {XSD_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "The XSD"}},
        name=f"xsd_{file_name.removesuffix('.xsd')}",
    )


for _route, _file in PUBLISHED.items():
    _publish(_route, _file)

__all__ = ["PUBLISHED", "XSD_MEDIA_TYPE", "schemas"]
