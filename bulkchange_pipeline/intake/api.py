"""The intake HTTP API: submit, dry-run, CSV upload, status, device results, cancel, retry-failed, resume.

Mounted on the same app as the carrier callbacks (``install_api`` in ``create_app``). Every route
but the published XSDs takes an API key, resolves it to a tenant and works inside that tenant
only: another tenant's bulk change or service provider is answered 404, exactly like one that does
not exist.

One module-level router per resource (``submissions``: the JSON, XML and CSV ways in, whose
answer for a request without a service provider is a split into a submission, served by
``api_submissions.submission_routes``;
``bulk_changes``: status and device results; ``operations``: cancel, retry-failed, resume;
``api_schemas.schemas``: the XSDs, open to anyone). What differs per app, the database engine and
the limits, reaches the routes as dependencies (``deps``). The rules live elsewhere and are shared
with the CLI: parsing and limits (``parsing``, ``xml_request``), validation and storage
(``submit``), cancel/retry (``store.operations``), the downloads (``results_download``). Bodies
are read with a byte cap (``api_bodies``), so an oversize upload is refused (413) before it is
parsed; every error is an ``application/problem+json`` document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..domain import DeviceChangeStatus
from ..domain.requests import MAX_ID, MAX_IDEMPOTENCY_KEY
from ..store import operations as ops
from ..store.approvals import get_approval
from ..store.bulk_changes import get_bulk_change
from .api_approval_models import BulkChangeStatusOut
from .api_approvals import approvals
from .api_bodies import read_bulk_change_request, read_csv_form
from .api_docs import CSV_BODY, DEVICE_DOWNLOADS, REQUEST_BODY
from .api_models import (
    PROBLEMS,
    ApiProblem,
    CancelOut,
    DevicePageOut,
    DeviceResultOut,
    DryRunResponse,
    ReleaseOut,
    ResumeOut,
    RetryOut,
    SubmitResponse,
    install_problem_handlers,
)
from .api_notifications import notifications
from .api_query import known_query_only
from .api_schemas import schemas
from .api_submission_models import SubmissionDryRunOut, SubmissionOut
from .api_submissions import SPLIT_ANSWER, SUBMIT_ANSWERS, answer, run_submit, submission_routes
from .api_undo import undo_router
from .auth import Caller, authenticated_caller, submitter_caller
from .csv_file import parse_csv
from .deps import EngineFactory, bind, request_engine, request_limits
from .parsing import IntakeError, IntakeLimits, plain_int, shown
from .results_download import download_format, download_response

R = TypeVar("R")

CurrentCaller = Annotated[Caller, Depends(authenticated_caller)]
Submitter = Annotated[Caller, Depends(submitter_caller)]  # 403 without the submitter role (``auth``)
Engine = Annotated[sa.Engine, Depends(request_engine)]
Limits = Annotated[IntakeLimits, Depends(request_limits)]


def install_api(app: FastAPI, engine_for_request: EngineFactory, *, limits: IntakeLimits = IntakeLimits()) -> None:
    """Mount the intake API on ``app`` (its routes use ``engine_for_request()`` and ``limits``) and
    make all of its errors problem documents."""
    bind(app, engine_for_request, limits)
    for router in ROUTERS:
        app.include_router(router)
    install_problem_handlers(app)


# --- responses ------------------------------------------------------------------------------------


def _not_found(bulk_change_id: int) -> ApiProblem:
    return ApiProblem(404, f"no bulk change {bulk_change_id} for this API key's tenant", title="Bulk change not found")


BulkChangeId = Path(ge=1, le=MAX_ID, description="Bulk change id")


def _router() -> APIRouter:
    """One resource's router: every route answers 401 without a valid key and 422 for a request it
    cannot take (including an unknown query parameter)."""
    return APIRouter(
        tags=["bulk changes"], responses={k: PROBLEMS[k] for k in (401, 422)}, dependencies=[Depends(known_query_only)]
    )


# --- submissions: JSON, dry run, CSV upload -------------------------------------------------------

submissions = _router()

IDEMPOTENCY_KEY = Header(
    None, alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY, description="Same as the body's idempotencyKey"
)
SUBMIT_PROBLEMS = {k: PROBLEMS[k] for k in (400, 403, 404, 409, 413, 415)}


@submissions.post(
    "/bulk-changes",
    status_code=201,
    response_model=SubmitResponse | SubmissionOut,
    openapi_extra=REQUEST_BODY,
    summary="Submit a bulk change (JSON or XML)",
    responses={
        200: {
            "model": SubmitResponse | SubmissionOut,
            "description": "Idempotency key seen before: the existing bulk change or submission, nothing new created",
        },
        **SPLIT_ANSWER,
        **SUBMIT_PROBLEMS,
    },
)
async def submit_json(
    request: Request,
    response: Response,
    caller: Submitter,
    engine: Engine,
    limits: Limits,
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> Any:
    """Validate every device and store the bulk change with one row per device (refused devices as
    ERROR rows with their reason). The pipeline's sensor starts processing it. The body is JSON, or
    XML (``Content-Type: application/xml``) valid against ``GET /schemas/bulk-change-request.xsd``.
    Without ``serviceProviderId`` the devices are split by their service provider into one
    submission (202, ``api_submissions``)."""
    req = await read_bulk_change_request(request, limits, idempotency_key)
    return answer(await run_in_threadpool(run_submit, engine, caller, req, False), response)


@submissions.post(
    "/bulk-changes:dry-run",
    response_model=DryRunResponse | SubmissionDryRunOut,
    openapi_extra=REQUEST_BODY,
    summary="Validate a bulk change; store nothing",
    responses=SUBMIT_PROBLEMS,
)
async def dry_run(request: Request, response: Response, caller: CurrentCaller, engine: Engine, limits: Limits) -> Any:
    """The per-device validation report of a request (JSON or XML), exactly as a submit would store
    it; without ``serviceProviderId`` the split, with each child's report."""
    req = await read_bulk_change_request(request, limits, None)
    return answer(await run_in_threadpool(run_submit, engine, caller, req, True), response)


@submissions.post(
    "/bulk-changes/csv",
    status_code=201,
    response_model=SUBMIT_ANSWERS,
    openapi_extra=CSV_BODY,
    summary="Submit (or dry-run) a bulk change as a CSV upload",
    responses={
        200: {"model": SUBMIT_ANSWERS, "description": "Dry run, or idempotency key seen before"},
        **SPLIT_ANSWER,
        **SUBMIT_PROBLEMS,
    },
)
async def submit_csv(
    request: Request,
    response: Response,
    caller: Submitter,
    engine: Engine,
    limits: Limits,
    dry_run: bool = Query(False, alias="dryRun", description="Only validate; store nothing"),
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> Any:
    """One row per device, with the file limits of the CLI (size, rows, UTF-8, known columns);
    without ``serviceProviderId`` (field or column) the split, as for JSON."""
    data, fields = await read_csv_form(request, limits)
    sp_text = fields.get("serviceProviderId", "").strip()
    sp_id = plain_int(sp_text) if sp_text else None
    if sp_text and (sp_id is None or sp_id > MAX_ID):
        raise ApiProblem(
            422, f"serviceProviderId {shown(sp_text, 30)!r} is not a service provider id", title="Invalid upload"
        )
    process_text = fields.get("processChanges", "true").strip().lower()
    if process_text not in ("true", "false"):
        raise ApiProblem(
            422, f"processChanges {shown(process_text, 20)!r} is not true or false", title="Invalid upload"
        )
    key = fields.get("idempotencyKey") or None
    if idempotency_key and key not in (None, idempotency_key):
        raise ApiProblem(
            422,
            "the Idempotency-Key header and the idempotencyKey field differ; send one of them",
            title="Invalid upload",
        )
    try:
        parsed = await run_in_threadpool(
            parse_csv,
            data,
            change_type=fields.get("changeType") or None,
            service_provider_id=sp_id,
            idempotency_key=key or idempotency_key,
            limits=limits,
            process_changes=process_text == "true",
        )
    except IntakeError as exc:
        raise ApiProblem(422, str(exc), title="Invalid CSV file") from None
    outcome = await run_in_threadpool(
        run_submit,
        engine,
        caller,
        parsed.request,
        dry_run,
        row_errors=parsed.row_errors,
        row_numbers=parsed.row_numbers,
    )
    out = answer(outcome, response)
    if dry_run:
        response.status_code = 200
    return out


# --- a bulk change: status and per-device results -------------------------------------------------

bulk_changes = _router()


@bulk_changes.get(
    "/bulk-changes/{bulk_change_id}",
    response_model=BulkChangeStatusOut,
    summary="Status, counts and timings",
    responses={404: PROBLEMS[404]},
)
def get_status(caller: CurrentCaller, engine: Engine, bulk_change_id: int = BulkChangeId) -> BulkChangeStatusOut:
    """The header status (derived from the device rows), counts per device status, timings, and
    who submitted, approved or rejected it when it needed approval (``approval``)."""
    bc = get_bulk_change(engine, bulk_change_id, caller.tenant_id)
    if bc is None:
        raise _not_found(bulk_change_id)
    approval = get_approval(engine, bc["id"], bc["status"])
    return BulkChangeStatusOut.with_approval(bc, ops.last_updated(engine, bc["id"]), approval)


@bulk_changes.get(
    "/bulk-changes/{bulk_change_id}/devices",
    response_model=DevicePageOut,
    summary="Per-device results (paged JSON, or CSV or XML)",
    responses={200: DEVICE_DOWNLOADS, 404: PROBLEMS[404]},
)
def list_devices(
    request: Request,
    caller: CurrentCaller,
    engine: Engine,
    bulk_change_id: int = BulkChangeId,
    status: DeviceChangeStatus | None = Query(None, description="Only rows with this status"),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int | None = Query(
        None,
        alias="pageSize",
        ge=1,
        le=ops.MAX_PAGE_SIZE,
        description="Rows per page (default 100), as the answer's pageSize",
    ),
    legacy_page_size: int | None = Query(
        None,
        alias="page_size",
        ge=1,
        le=ops.MAX_PAGE_SIZE,
        deprecated=True,
        description="The earlier name of pageSize, still accepted",
    ),
    format: Literal["json", "csv", "xml"] | None = Query(
        None,
        description="csv or xml: download every (matching) row as CSV, or as XML (GET /schemas/bulk-change-results.xsd)",
    ),
) -> Any:
    """JSON pages in row order; the CSV and XML downloads stream every row (``results_download``).

    The page size is ``pageSize``, the name the answer uses. ``page_size``, the name this route
    had first, is still accepted (clients and tests send it) but deprecated; both with different
    values are refused. Any other query parameter is refused (``known_query_only``)."""
    if page_size is not None and legacy_page_size is not None and page_size != legacy_page_size:
        raise ApiProblem(
            422,
            f"pageSize={page_size} and page_size={legacy_page_size} differ: send pageSize only",
            title="Invalid request",
        )
    size = page_size or legacy_page_size or 100
    download = download_format(format, request.headers.get("accept", ""))
    if download is not None:
        if not ops.bulk_change_exists(engine, caller.tenant_id, bulk_change_id):
            raise _not_found(bulk_change_id)
        return download_response(engine, caller.tenant_id, bulk_change_id, status, download)
    try:
        found = ops.page_device_results(
            engine, caller.tenant_id, bulk_change_id, status=status, page=page, page_size=size
        )
    except ops.BulkChangeNotFound:
        raise _not_found(bulk_change_id) from None
    more = found.page * found.page_size < found.total
    return DevicePageOut(
        items=[DeviceResultOut.from_row(r) for r in found.items],
        page=found.page,
        page_size=found.page_size,
        total=found.total,
        next_page=found.page + 1 if more else None,
    )


# --- operations on a bulk change: cancel, retry-failed, resume, release ------------------------------------

operations = _router()
OPERATION_PROBLEMS = {k: PROBLEMS[k] for k in (403, 404, 409)}


def _operate(operation: Callable[..., R], engine: sa.Engine, caller: Caller, bulk_change_id: int, refused: str) -> R:
    """One of ``store.operations``' functions for the caller's tenant: unknown is 404, nothing to do 409."""
    try:
        return operation(engine, caller.tenant_id, bulk_change_id, by=caller.label)
    except ops.BulkChangeNotFound:
        raise _not_found(bulk_change_id) from None
    except ops.OperationRefused as exc:
        raise ApiProblem(409, str(exc), title=refused) from None


@operations.post(
    "/bulk-changes/{bulk_change_id}/cancel",
    response_model=CancelOut,
    summary="Cancel the rows not yet sent",
    responses=OPERATION_PROBLEMS,
)
def cancel(caller: Submitter, engine: Engine, bulk_change_id: int = BulkChangeId) -> CancelOut:
    """NEW and SCHEDULED rows become CANCELLED; rows already sent to the carrier finish normally."""
    r = _operate(ops.cancel_bulk_change, engine, caller, bulk_change_id, "Nothing to cancel")
    message = f"cancelled {r.cancelled} device rows" + (
        f"; {r.still_processing} already sent finish normally" if r.still_processing else ""
    )
    return CancelOut(
        id=r.bulk_change_id,
        cancelled=r.cancelled,
        still_processing=r.still_processing,
        status=r.status,
        counts=r.counts,
        message=message,
    )


@operations.post(
    "/bulk-changes/{bulk_change_id}/retry-failed",
    response_model=RetryOut,
    summary="Retry the failed rows as a new run",
    responses=OPERATION_PROBLEMS,
)
def retry(caller: Submitter, engine: Engine, bulk_change_id: int = BulkChangeId) -> RetryOut:
    """API_FAILED rows, and ERROR rows that failed while being processed (not validation refusals),
    go back to NEW; the bulk change gets a new attempt and the sensor starts a new run of it."""
    r = _operate(ops.retry_failed, engine, caller, bulk_change_id, "Nothing to retry")
    return RetryOut(
        id=r.bulk_change_id,
        requeued=r.requeued,
        attempt=r.attempt,
        status=r.status,
        counts=r.counts,
        message=f"{r.requeued} failed device rows queued again as attempt {r.attempt}",
    )


@operations.post(
    "/bulk-changes/{bulk_change_id}/resume",
    response_model=ResumeOut,
    summary="Finish a bulk change a crashed run left half-done",
    responses=OPERATION_PROBLEMS,
)
def resume(caller: Submitter, engine: Engine, bulk_change_id: int = BulkChangeId) -> ResumeOut:
    """Rows a run did not finish (left NEW, or PROCESSING and never confirmed) are finished by a new
    attempt: the sensor starts one more run, which checks each row left PROCESSING at the carrier
    before sending it again. Finished rows are untouched (use retry-failed for failed ones)."""
    r = _operate(ops.resume_bulk_change, engine, caller, bulk_change_id, "Nothing to resume")
    return ResumeOut(
        id=r.bulk_change_id,
        unfinished=r.unfinished,
        attempt=r.attempt,
        status=r.status,
        counts=r.counts,
        message=f"{r.unfinished} unfinished device rows queued as attempt {r.attempt}",
    )


@operations.post(
    "/bulk-changes/{bulk_change_id}/release",
    response_model=ReleaseOut,
    summary="Start a held bulk change (submitted with processChanges=false)",
    responses=OPERATION_PROBLEMS,
)
def release(caller: Submitter, engine: Engine, bulk_change_id: int = BulkChangeId) -> ReleaseOut:
    """A held bulk change was stored and validated but not started; released, the sensor starts it
    (a SCHEDULED one when its effective date comes). 409 when it is not held or no longer waiting."""
    r = _operate(ops.release_bulk_change, engine, caller, bulk_change_id, "Nothing to release")
    when = "when its effective date comes" if r.status == "SCHEDULED" else "on its next tick"
    return ReleaseOut(
        id=r.bulk_change_id, status=r.status, counts=r.counts, message=f"released: the sensor starts it {when}"
    )


ROUTERS = (submissions, submission_routes, bulk_changes, operations, approvals, undo_router, schemas, notifications)

__all__ = [
    "ROUTERS",
    "bulk_changes",
    "install_api",
    "operations",
    "submissions",
]
