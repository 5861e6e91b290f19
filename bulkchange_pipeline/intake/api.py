"""The intake HTTP API: submit, dry-run, CSV upload, status, device results, cancel, retry-failed, resume.

Mounted on the same app as the carrier callbacks (``install_api`` in ``create_app``). Every route
takes an API key, resolves it to a tenant and works inside that tenant only: another tenant's
bulk change or service provider is answered 404, exactly like one that does not exist.

The rules live elsewhere and are shared with the CLI: parsing and limits (``parsing``),
validation and storage (``submit``), cancel/retry (``store.operations``), the CSV writer
(``render.write_results_csv``). Bodies are read here with a byte cap, so an oversize upload is
refused (413) before it is parsed; every error is an ``application/problem+json`` document.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..domain import PAYLOAD_KEYS, BulkChangeRequest, ChangeType, DeviceChangeStatus
from ..store import operations as ops
from ..store.bulk_changes import IdempotencyConflict, get_bulk_change, iter_device_results
from ..store.reference import get_service_provider
from .api_models import (
    PROBLEMS,
    ApiProblem,
    BulkChangeOut,
    CancelOut,
    DevicePageOut,
    DeviceResultOut,
    DryRunResponse,
    ResumeOut,
    RetryOut,
    SubmitResponse,
    ValidationSummary,
    capped_stream,
    install_problem_handlers,
    request_body_schema,
)
from .auth import Caller, caller_dependency
from .parsing import (
    MAX_ID,
    MAX_IDEMPOTENCY_KEY,
    IntakeError,
    IntakeLimits,
    decode_utf8,
    load_json,
    parse_csv,
    plain_int,
    request_from_dict,
    shown,
)
from .render import write_results_csv
from .submit import SubmitOutcome, submit
from .validation import RequestRejected

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small form fields around the file
FORM_FIELDS = ("file", "changeType", "serviceProviderId", "idempotencyKey", "processChanges")
CSV_CHUNK = 2_000
EngineFactory = Callable[[], sa.Engine]


def install_api(app: FastAPI, engine_for_request: EngineFactory, *, limits: IntakeLimits = IntakeLimits()) -> None:
    """Mount the intake API on ``app`` and make all of its errors problem documents."""
    app.include_router(api_router(engine_for_request, limits=limits))
    install_problem_handlers(app)


# --- request bodies -------------------------------------------------------------------------------


def _capped_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    return capped_stream(request, limit, lambda size: ApiProblem(413, _too_large(size, limit), title="Request body too large"))


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {'over ' if size <= limit + 1 else ''}{size / 1_048_576:.1f} MB; the limit is {limit / 1_048_576:.0f} MB: split the change into smaller ones"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_request(request: Request, limits: IntakeLimits, header_key: str | None) -> BulkChangeRequest:
    """The body as a BulkChangeRequest; a top-level ``effectiveDate`` goes into the payload object."""
    media = _media_type(request)
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiProblem(415, f"send the bulk change as application/json (got {media}); CSV files go to POST /bulk-changes/csv")
    raw = b"".join([chunk async for chunk in _capped_stream(request, limits.max_bytes)])
    try:
        text = decode_utf8(raw)
    except IntakeError as exc:
        raise ApiProblem(400, str(exc).replace("the file", "the request body"), title="Malformed request body") from None
    if not text.strip():
        raise ApiProblem(400, "the request body is empty: send a JSON object with serviceProviderId, changeType and devices",
                         title="Malformed request body")
    try:
        body = load_json(text)
    except IntakeError as exc:
        raise ApiProblem(400, str(exc).replace("the file", "the body"), title="Malformed request body") from None
    if isinstance(body, dict):
        body = _with_header_values(body, header_key)
    try:  # request_from_dict also refuses values no column can hold (parsing.check_values)
        return await run_in_threadpool(request_from_dict, body, limits=limits)
    except IntakeError as exc:
        raise ApiProblem(422, str(exc), title="Invalid bulk change request") from None


def _with_header_values(body: dict[str, Any], header_key: str | None) -> dict[str, Any]:
    body = dict(body)
    if header_key:
        if body.get("idempotencyKey") not in (None, header_key):
            raise ApiProblem(422, "the Idempotency-Key header and the body's idempotencyKey differ; send one of them",
                             title="Invalid bulk change request")
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


async def _csv_form(request: Request, limits: IntakeLimits) -> tuple[bytes, dict[str, str]]:
    """The uploaded file and the text fields of a multipart form, read under the byte cap."""
    if _media_type(request) != "multipart/form-data":
        raise ApiProblem(415, "upload the CSV as multipart/form-data with a 'file' field (and changeType, serviceProviderId)")
    parser = _Utf8FormParser(request.headers, _capped_stream(request, limits.max_bytes + FORM_OVERHEAD), max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiProblem(400, f"the multipart form cannot be read: {exc.message}", title="Malformed request body") from None
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
        raise ApiProblem(422, f"unknown form field {shown(unknown[0], 40)!r}: the upload takes {', '.join(FORM_FIELDS)}",
                         title="Invalid upload")
    if repeated := [n for n in dict.fromkeys(names) if names.count(n) > 1]:
        raise ApiProblem(422, f"form field {shown(repeated[0], 40)!r} is given more than once; give it once", title="Invalid upload")
    if len(data) > limits.max_bytes:
        raise ApiProblem(413, _too_large(len(data), limits.max_bytes), title="Request body too large")
    return data, fields  # NUL characters and other values no column can hold: parse_csv refuses them


# --- responses ------------------------------------------------------------------------------------


def results_csv_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``write_results_csv`` output, streamed: chunk by chunk, the header only on the first."""
    first = True
    while True:
        chunk = [row for _, row in zip(range(CSV_CHUNK), rows)]
        if not chunk and not first:
            return
        buf = io.StringIO()
        write_results_csv(buf, chunk)
        text = buf.getvalue()
        yield text if first else text.split("\r\n", 1)[1]
        first = False
        if len(chunk) < CSV_CHUNK:
            return


def _not_found(bulk_change_id: int) -> ApiProblem:
    return ApiProblem(404, f"no bulk change {bulk_change_id} for this API key's tenant", title="Bulk change not found")


BulkChangeId = Path(ge=1, le=MAX_ID, description="Bulk change id")


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route declares, by their wire names, its dependencies' included."""
    names = [f.alias for f in dependant.query_params]
    for sub in dependant.dependencies:
        names += [n for n in _query_names(sub) if n not in names]
    return names


def known_query_only(current: Callable[..., Any]) -> Callable[..., Any]:
    """A router dependency: refuse a query parameter the route does not declare (422, naming it and
    the ones the route accepts), so that a misspelt ``?pageSize`` or ``?stauts=`` is never silently
    ignored. It depends on the caller's authentication, so a request without a valid key is still
    answered 401 first."""

    def check(request: Request, _caller: Caller = Depends(current)) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute) or not request.query_params:
            return
        accepted = _query_names(route.dependant)
        unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in accepted]
        repeated = [name for name in dict.fromkeys(request.query_params.keys()) if len(request.query_params.getlist(name)) > 1]
        if repeated and not unknown:  # the last one would win silently: ?status=NEW&status=ERROR
            raise ApiProblem(422, f"query parameter {shown(repeated[0], 40)!r} is given more than once; give it once",
                             title="Repeated query parameter")
        if not unknown:
            return
        allowed = ", ".join(accepted) if accepted else "no query parameters"
        raise ApiProblem(
            422, f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(n[:40]) for n in unknown[:10])}: "
            f"{request.method} {route.path} accepts {allowed}", title="Unknown query parameter",
            errors=[{"loc": ["query", n[:40]], "msg": f"unknown query parameter; accepted: {allowed}"} for n in unknown[:10]],
        )

    return check


# --- routes ---------------------------------------------------------------------------------------


def api_router(engine_for_request: EngineFactory, *, limits: IntakeLimits = IntakeLimits()) -> APIRouter:
    """The intake routes; ``engine_for_request()`` gives the business database engine."""
    current = caller_dependency(engine_for_request)
    router = APIRouter(tags=["bulk changes"], responses={k: PROBLEMS[k] for k in (401, 422)},
                       dependencies=[Depends(known_query_only(current))])
    json_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_body_schema()}}}}
    idem = Header(None, alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY, description="Same as the body's idempotencyKey")

    def check_provider(engine: sa.Engine, caller: Caller, sp_id: int) -> None:
        if get_service_provider(engine, caller.tenant_id, sp_id) is None:
            raise ApiProblem(404, f"no service provider {sp_id} for this API key's tenant; "
                             "use the id of one of your own service providers", title="Service provider not found")

    def run_submit(caller: Caller, req: BulkChangeRequest, dry_run: bool, **kw: Any) -> SubmitOutcome:
        engine = engine_for_request()
        check_provider(engine, caller, req.service_provider_id)
        try:
            return submit(engine, caller.tenant_id, req, caller.label, dry_run=dry_run, **kw)
        except RequestRejected as exc:
            raise ApiProblem(422, str(exc), title="Bulk change refused") from None
        except IdempotencyConflict as exc:
            raise ApiProblem(409, str(exc), title="Idempotency key reused for a different request",
                             bulk_change_id=exc.bulk_change_id) from None

    def answer(outcome: SubmitOutcome, response: Response) -> SubmitResponse | DryRunResponse:
        if outcome.bulk_change_id is None:
            assert outcome.report is not None
            return DryRunResponse(message=outcome.message, validation=ValidationSummary.from_report(outcome.report))
        response.status_code = 201 if outcome.created else 200
        response.headers["Location"] = f"/bulk-changes/{outcome.bulk_change_id}"
        return SubmitResponse.from_outcome(outcome)

    @router.post(
        "/bulk-changes", status_code=201, response_model=SubmitResponse, openapi_extra=json_body,
        summary="Submit a bulk change (JSON)",
        responses={200: {"model": SubmitResponse, "description": "Idempotency key seen before: the existing bulk change, nothing new created"},
                   **{k: PROBLEMS[k] for k in (400, 404, 409, 413, 415)}},
    )
    async def submit_json(request: Request, response: Response, caller: Caller = Depends(current),
                          idempotency_key: str | None = idem) -> SubmitResponse | DryRunResponse:
        """Validate every device and store the bulk change with one row per device (refused devices as
        ERROR rows with their reason). The pipeline's sensor starts processing it."""
        req = await _json_request(request, limits, idempotency_key)
        return answer(await run_in_threadpool(run_submit, caller, req, False), response)

    @router.post(
        "/bulk-changes:dry-run", response_model=DryRunResponse, openapi_extra=json_body, summary="Validate a bulk change; store nothing",
        responses={k: PROBLEMS[k] for k in (400, 404, 409, 413, 415)},
    )
    async def dry_run(request: Request, response: Response, caller: Caller = Depends(current)) -> SubmitResponse | DryRunResponse:
        """The per-device validation report of a request, exactly as a submit would store it."""
        req = await _json_request(request, limits, None)
        return answer(await run_in_threadpool(run_submit, caller, req, True), response)

    csv_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "UTF-8 CSV: an identifier column (iccid, imei, msisdn, eid or device) and per-row values"},
            "changeType": {"type": "string", "description": "Change type number or name, unless the CSV has a changeType column"},
            "serviceProviderId": {"type": "string", "pattern": "^[0-9]{1,18}$", "description": "Unless the CSV has a serviceProviderId column"},
            "idempotencyKey": {"type": "string", "maxLength": 200},
            "processChanges": {"type": "string", "enum": ["true", "false"], "description": "false: store only (default true)"},
        },
        "additionalProperties": False,
    }}}}}

    @router.post(
        "/bulk-changes/csv", status_code=201, response_model=SubmitResponse | DryRunResponse, openapi_extra=csv_body,
        summary="Submit (or dry-run) a bulk change as a CSV upload",
        responses={200: {"model": SubmitResponse | DryRunResponse, "description": "Dry run, or idempotency key seen before"},
                   **{k: PROBLEMS[k] for k in (400, 404, 409, 413, 415)}},
    )
    async def submit_csv(request: Request, response: Response, caller: Caller = Depends(current),
                         dry_run: bool = Query(False, alias="dryRun", description="Only validate; store nothing"),
                         idempotency_key: str | None = idem) -> SubmitResponse | DryRunResponse:
        """One row per device, with the file limits of the CLI (size, rows, UTF-8, known columns)."""
        data, fields = await _csv_form(request, limits)
        sp_text = fields.get("serviceProviderId", "").strip()
        sp_id = plain_int(sp_text) if sp_text else None
        if sp_text and (sp_id is None or sp_id > MAX_ID):
            raise ApiProblem(422, f"serviceProviderId {shown(sp_text, 30)!r} is not a service provider id", title="Invalid upload")
        process_text = fields.get("processChanges", "true").strip().lower()
        if process_text not in ("true", "false"):
            raise ApiProblem(422, f"processChanges {shown(process_text, 20)!r} is not true or false", title="Invalid upload")
        key = fields.get("idempotencyKey") or None
        if idempotency_key and key not in (None, idempotency_key):
            raise ApiProblem(422, "the Idempotency-Key header and the idempotencyKey field differ; send one of them", title="Invalid upload")
        try:
            parsed = await run_in_threadpool(
                parse_csv, data, change_type=fields.get("changeType") or None, service_provider_id=sp_id,
                idempotency_key=key or idempotency_key, limits=limits, process_changes=process_text == "true",
            )
        except IntakeError as exc:
            raise ApiProblem(422, str(exc), title="Invalid CSV file") from None
        outcome = await run_in_threadpool(run_submit, caller, parsed.request, dry_run, row_errors=parsed.row_errors, row_numbers=parsed.row_numbers)
        if dry_run:
            response.status_code = 200
        return answer(outcome, response)

    @router.get("/bulk-changes/{bulk_change_id}", response_model=BulkChangeOut, summary="Status, counts and timings",
                responses={404: PROBLEMS[404]})
    def get_status(bulk_change_id: int = BulkChangeId, caller: Caller = Depends(current)) -> BulkChangeOut:
        """The header status (derived from the device rows), counts per device status, and timings."""
        engine = engine_for_request()
        bc = get_bulk_change(engine, bulk_change_id, caller.tenant_id)
        if bc is None:
            raise _not_found(bulk_change_id)
        return BulkChangeOut.from_row(bc, ops.last_updated(engine, bc["id"]))

    @router.get(
        "/bulk-changes/{bulk_change_id}/devices", response_model=DevicePageOut, summary="Per-device results (paged JSON, or CSV)",
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                         "description": "A page of device rows; with format=csv or Accept: text/csv, every row as CSV"},
                   404: PROBLEMS[404]},
    )
    def list_devices(
        request: Request,
        bulk_change_id: int = BulkChangeId,
        status: DeviceChangeStatus | None = Query(None, description="Only rows with this status"),
        page: int = Query(1, ge=1, le=1_000_000),
        page_size: int | None = Query(None, alias="pageSize", ge=1, le=ops.MAX_PAGE_SIZE,
                                      description="Rows per page (default 100), as the answer's pageSize"),
        legacy_page_size: int | None = Query(None, alias="page_size", ge=1, le=ops.MAX_PAGE_SIZE, deprecated=True,
                                             description="The earlier name of pageSize, still accepted"),
        format: Literal["json", "csv"] | None = Query(None, description="csv: download every (matching) row as CSV"),
        caller: Caller = Depends(current),
    ) -> Any:
        """JSON pages in row order; the CSV download streams every row (spreadsheet-safe cells).

        The page size is ``pageSize``, the name the answer uses. ``page_size``, the name this route
        had first, is still accepted (clients and tests send it) but deprecated; both with different
        values are refused. Any other query parameter is refused (``known_query_only``)."""
        if page_size is not None and legacy_page_size is not None and page_size != legacy_page_size:
            raise ApiProblem(422, f"pageSize={page_size} and page_size={legacy_page_size} differ: send pageSize only",
                             title="Invalid request")
        size = page_size or legacy_page_size or 100
        engine = engine_for_request()
        wants_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
        if wants_csv:
            if not ops.bulk_change_exists(engine, caller.tenant_id, bulk_change_id):
                raise _not_found(bulk_change_id)
            rows = iter_device_results(engine, caller.tenant_id, bulk_change_id)
            if status is not None:
                rows = (r for r in rows if r["status"] == status.value)
            return StreamingResponse(
                results_csv_chunks(iter(rows)), media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="bulk-change-{bulk_change_id}-devices.csv"'},
            )
        try:
            found = ops.page_device_results(engine, caller.tenant_id, bulk_change_id, status=status, page=page, page_size=size)
        except ops.BulkChangeNotFound:
            raise _not_found(bulk_change_id) from None
        more = found.page * found.page_size < found.total
        return DevicePageOut(
            items=[DeviceResultOut(**{**r, "change_request": r["change_request"] or {}}) for r in found.items],
            page=found.page, page_size=found.page_size, total=found.total, next_page=found.page + 1 if more else None,
        )

    @router.post("/bulk-changes/{bulk_change_id}/cancel", response_model=CancelOut, summary="Cancel the rows not yet sent",
                 responses={k: PROBLEMS[k] for k in (404, 409)})
    def cancel(bulk_change_id: int = BulkChangeId, caller: Caller = Depends(current)) -> CancelOut:
        """NEW and SCHEDULED rows become CANCELLED; rows already sent to the carrier finish normally."""
        try:
            r = ops.cancel_bulk_change(engine_for_request(), caller.tenant_id, bulk_change_id, by=caller.label)
        except ops.BulkChangeNotFound:
            raise _not_found(bulk_change_id) from None
        except ops.OperationRefused as exc:
            raise ApiProblem(409, str(exc), title="Nothing to cancel") from None
        message = f"cancelled {r.cancelled} device rows" + (f"; {r.still_processing} already sent finish normally" if r.still_processing else "")
        return CancelOut(id=r.bulk_change_id, cancelled=r.cancelled, still_processing=r.still_processing, status=r.status,
                         counts=r.counts, message=message)

    @router.post("/bulk-changes/{bulk_change_id}/retry-failed", response_model=RetryOut, summary="Retry the failed rows as a new run",
                 responses={k: PROBLEMS[k] for k in (404, 409)})
    def retry(bulk_change_id: int = BulkChangeId, caller: Caller = Depends(current)) -> RetryOut:
        """API_FAILED rows, and ERROR rows that failed while being processed (not validation refusals),
        go back to NEW; the bulk change gets a new attempt and the sensor starts a new run of it."""
        try:
            r = ops.retry_failed(engine_for_request(), caller.tenant_id, bulk_change_id, by=caller.label)
        except ops.BulkChangeNotFound:
            raise _not_found(bulk_change_id) from None
        except ops.OperationRefused as exc:
            raise ApiProblem(409, str(exc), title="Nothing to retry") from None
        return RetryOut(id=r.bulk_change_id, requeued=r.requeued, attempt=r.attempt, status=r.status, counts=r.counts,
                        message=f"{r.requeued} failed device rows queued again as attempt {r.attempt}")

    @router.post("/bulk-changes/{bulk_change_id}/resume", response_model=ResumeOut, summary="Finish a bulk change a crashed run left half-done",
                 responses={k: PROBLEMS[k] for k in (404, 409)})
    def resume(bulk_change_id: int = BulkChangeId, caller: Caller = Depends(current)) -> ResumeOut:
        """Rows a run did not finish (left NEW, or PROCESSING and never confirmed) are finished by a new
        attempt: the sensor starts one more run, which checks each row left PROCESSING at the carrier
        before sending it again. Finished rows are untouched (use retry-failed for failed ones)."""
        try:
            r = ops.resume_bulk_change(engine_for_request(), caller.tenant_id, bulk_change_id, by=caller.label)
        except ops.BulkChangeNotFound:
            raise _not_found(bulk_change_id) from None
        except ops.OperationRefused as exc:
            raise ApiProblem(409, str(exc), title="Nothing to resume") from None
        return ResumeOut(id=r.bulk_change_id, unfinished=r.unfinished, attempt=r.attempt, status=r.status, counts=r.counts,
                         message=f"{r.unfinished} unfinished device rows queued as attempt {r.attempt}")

    return router
