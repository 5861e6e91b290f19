"""Reading the intake API's request bodies: a JSON or XML bulk change or a multipart CSV upload, under a
byte cap, so an oversize body is refused (413) before it is parsed; what cannot be read is an
``ApiProblem`` (400, 413, 415 or 422) saying what to send instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType
from .api_models import ApiProblem, capped_stream
from .parsing import IntakeError, IntakeLimits, decode_utf8, load_json, request_from_dict, shown
from .xml_request import MalformedXml, is_xml_media_type, xml_request_body

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small form fields around the file
FORM_FIELDS = ("file", "changeType", "serviceProviderId", "idempotencyKey", "processChanges")


def _capped_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    return capped_stream(
        request, limit, lambda size: ApiProblem(413, _too_large(size, limit), title="Request body too large")
    )


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {'over ' if size <= limit + 1 else ''}{size / 1_048_576:.1f} MB; the limit is {limit / 1_048_576:.0f} MB: split the change into smaller ones"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_bulk_change_request(request: Request, limits: IntakeLimits, header_key: str | None) -> BulkChangeRequest:
    """The body, JSON or XML by its media type, as a BulkChangeRequest.

    Both are read under the byte cap and decoded to the same dict (XML by ``xml_request``, checked
    against its XSD first); from there one path: the Idempotency-Key header and a top-level
    ``effectiveDate`` (``_with_header_values``), then ``request_from_dict``. What cannot be read is
    400, what is not a valid request 422.
    """
    media = _media_type(request)
    xml = is_xml_media_type(media)
    if media and not xml and media != "application/json" and not media.endswith("+json"):
        raise ApiProblem(
            415,
            f"send the bulk change as application/json or application/xml (got {media}); "
            "CSV files go to POST /bulk-changes/csv",
        )
    charset = _charset(request)
    if xml and charset not in (None, "utf-8", "utf8"):
        raise ApiProblem(415, f"send the XML as UTF-8 (the Content-Type says charset={shown(charset, 30)})")
    raw = b"".join([chunk async for chunk in _capped_stream(request, limits.max_bytes)])
    body = await (run_in_threadpool(_xml_body, raw, limits) if xml else _json_body(raw))
    if isinstance(body, dict):
        body = _with_header_values(body, header_key)
    try:  # request_from_dict also refuses values no column can hold (parsing.check_values)
        return await run_in_threadpool(request_from_dict, body, limits=limits)
    except IntakeError as exc:
        raise ApiProblem(422, str(exc), title="Invalid bulk change request") from None


def _charset(request: Request) -> str | None:
    for param in request.headers.get("content-type", "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def _json_body(raw: bytes) -> Any:
    try:
        text = decode_utf8(raw)
    except IntakeError as exc:
        raise ApiProblem(
            400, str(exc).replace("the file", "the request body"), title="Malformed request body"
        ) from None
    if not text.strip():
        raise ApiProblem(
            400,
            "the request body is empty: send a JSON object with serviceProviderId, changeType and devices",
            title="Malformed request body",
        )
    try:
        return load_json(text)
    except IntakeError as exc:
        raise ApiProblem(400, str(exc).replace("the file", "the body"), title="Malformed request body") from None


def _xml_body(raw: bytes, limits: IntakeLimits) -> dict[str, Any]:
    """The XML body as the dict a JSON body decodes to; 400 unreadable, 422 not the schema's."""
    try:
        return xml_request_body(raw, limits=limits)
    except MalformedXml as exc:
        raise ApiProblem(400, str(exc), title="Malformed request body") from None
    except IntakeError as exc:
        raise ApiProblem(422, str(exc), title="Invalid bulk change request") from None


def _with_header_values(body: dict[str, Any], header_key: str | None) -> dict[str, Any]:
    body = dict(body)
    if header_key:
        if body.get("idempotencyKey") not in (None, header_key):
            raise ApiProblem(
                422,
                "the Idempotency-Key header and the body's idempotencyKey differ; send one of them",
                title="Invalid bulk change request",
            )
        body["idempotencyKey"] = header_key
    if "effectiveDate" in body:
        date = body.pop("effectiveDate")
        try:
            key = PAYLOAD_KEYS[ChangeType.parse(body.get("changeType"))]
        except ValueError:
            return body  # request_from_dict names the bad change type
        payload = body.get(key) if isinstance(body.get(key), dict) else {}
        body[key] = {"effectiveDate": date, **payload}  # a date inside the payload wins
    return body


class _Utf8FormParser(MultiPartParser):
    """Starlette's multipart parser, except that a text field that is not valid UTF-8 is refused.

    Starlette decodes such a field as Latin-1 instead (``_user_safe_decode``), so ``b"\\xff"`` in
    the idempotencyKey field would be stored as ``"ÿ"``: a value the client never sent. (The file
    itself is bytes; ``parse_csv`` decodes it with its own, line-numbered error.)
    """

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"the form field {shown(part.field_name)!r} is not UTF-8 text") from None
        super().on_part_end()


async def read_csv_form(request: Request, limits: IntakeLimits) -> tuple[bytes, dict[str, str]]:
    """The uploaded file and the text fields of a multipart form, read under the byte cap."""
    if _media_type(request) != "multipart/form-data":
        raise ApiProblem(
            415, "upload the CSV as multipart/form-data with a 'file' field (and changeType, serviceProviderId)"
        )
    parser = _Utf8FormParser(
        request.headers, _capped_stream(request, limits.max_bytes + FORM_OVERHEAD), max_files=1, max_fields=10
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiProblem(
            400, f"the multipart form cannot be read: {exc.message}", title="Malformed request body"
        ) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiProblem(422, "no file: send the CSV in a multipart field named 'file'", title="Invalid upload")
        data = await upload.read()
        names = [k for k, _ in form.multi_items()]
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    finally:
        await form.close()
    # An unknown field (processchanges, a typo) or a repeated one would be ignored or last-wins:
    # refused, so that what is stored is what was meant.
    if unknown := [n for n in dict.fromkeys(names) if n not in FORM_FIELDS]:
        raise ApiProblem(
            422,
            f"unknown form field {shown(unknown[0], 40)!r}: the upload takes {', '.join(FORM_FIELDS)}",
            title="Invalid upload",
        )
    if repeated := [n for n in dict.fromkeys(names) if names.count(n) > 1]:
        raise ApiProblem(
            422, f"form field {shown(repeated[0], 40)!r} is given more than once; give it once", title="Invalid upload"
        )
    if len(data) > limits.max_bytes:
        raise ApiProblem(413, _too_large(len(data), limits.max_bytes), title="Request body too large")
    return data, fields  # NUL characters and other values no column can hold: parse_csv refuses them


__all__ = ["FORM_FIELDS", "FORM_OVERHEAD", "read_bulk_change_request", "read_csv_form"]
