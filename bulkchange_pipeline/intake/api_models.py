"""Wire shapes of the intake HTTP API: response models and problem documents (the request body's
schema for the API document is ``intake.request_schema``).

Responses are camelCase, like the seed's request shape. The models exist so ``/openapi.json``
documents every answer, and so a schema-driven test run can check that every response matches
what the document promises. Errors are RFC 9457 problem documents (``application/problem+json``)
for the whole app: routing, auth, request validation, refusals and unexpected failures alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..domain import DeviceChangeStatus, bulk_status_detail, change_type_name, outcome_of
from .submit import SubmitOutcome
from .validation import ValidationReport

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# The schema stores naive UTC; on the wire a timestamp says so (ISO 8601 ending in Z).
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Problem(ApiModel):
    """An error as an RFC 9457 problem document."""

    type: str = Field(description="URI naming the kind of problem, e.g. /problems/not-found")
    title: str = Field(description="Short summary of the kind of problem")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong in this request and what to do about it")
    instance: str | None = Field(None, description="The request path")
    errors: list[dict[str, Any]] | None = Field(None, description="Per-field problems of an invalid request")
    bulk_change_id: int | None = Field(
        None,
        description="The bulk change the problem is about, e.g. the one that "
        "already holds a reused idempotency key (409)",
    )
    submission_id: int | None = Field(
        None,
        description="The submission the problem is about, e.g. the one that already holds a reused idempotency key (409)",
    )


class RowErrorOut(ApiModel):
    row: int = Field(description="1-based position of the device in the request, or its CSV line")
    device: str = Field(description="The identifier as given")
    reason: str


class ValidationSummary(ApiModel):
    """The per-device validation report: what a dry run shows and what a submit stored."""

    service_provider_id: int
    service_provider_name: str
    change_type: int
    change_type_name: str
    total: int
    accepted: int
    scheduled: int
    refused: int
    counts: dict[str, int] = Field(description="Device rows by status (NEW, SCHEDULED, ERROR)")
    errors: list[RowErrorOut] = Field(description="Every refused device with its reason")
    warnings: list[str]

    @classmethod
    def from_report(cls, report: ValidationReport) -> ValidationSummary:
        return cls(
            service_provider_id=report.service_provider.id,
            service_provider_name=report.service_provider.name,
            change_type=int(report.change_type),
            change_type_name=change_type_name(report.change_type),
            total=report.total,
            accepted=report.accepted,
            scheduled=report.scheduled,
            refused=len(report.errors),
            counts=report.counts(),
            errors=[RowErrorOut(row=e.row, device=e.identifier, reason=e.reason) for e in report.errors],
            warnings=list(report.warnings),
        )


STATUS_DETAIL = (
    "What the status alone does not say, else null: an ERROR bulk change whose every device was refused at "
    "validation says 'nothing was sent: all N devices were refused at validation' (nothing to retry or resume: "
    "correct the devices and submit again)"
)


class SubmitResponse(ApiModel):
    id: int = Field(description="The bulk change id")
    created: bool = Field(description="False when the idempotency key was used before: nothing new was created")
    status: str = Field(description="Bulk change status")
    status_detail: str | None = Field(None, description=STATUS_DETAIL)
    message: str
    counts: dict[str, int] = Field(default_factory=dict, description="Device rows by status")
    validation: ValidationSummary | None = Field(
        None, description="The validation report (absent for a repeated idempotency key)"
    )

    @classmethod
    def from_outcome(cls, outcome: SubmitOutcome) -> SubmitResponse:
        assert outcome.bulk_change_id is not None and outcome.status is not None
        return cls(
            id=outcome.bulk_change_id,
            created=outcome.created,
            status=outcome.status,
            status_detail=bulk_status_detail(outcome.status, outcome.counts or {}),
            message=outcome.message,
            counts=outcome.counts or {},
            validation=ValidationSummary.from_report(outcome.report) if outcome.report else None,
        )


class DryRunResponse(ApiModel):
    message: str
    stored: bool = Field(False, description="Always false: a dry run stores nothing")
    validation: ValidationSummary


class BulkChangeOut(ApiModel):
    id: int
    service_provider_id: int
    change_type: int
    change_type_name: str
    status: str
    status_detail: str | None = Field(None, description=STATUS_DETAIL)
    outcome: str = Field(
        description="What an operator needs to know at a glance: done, done_with_failures, waiting_on_carrier, "
        "scheduled, held, cancelled, unfinished or in_progress (as on the Dagster partition and the console)"
    )
    process_changes: bool
    attempt: int = Field(description="0 for the first run; each retry-failed adds one")
    total: int
    counts: dict[str, int]
    created_by: str
    created_at: UtcDatetime
    effective_at: UtcDatetime | None = Field(None, description="Next effective date of its scheduled rows (UTC)")
    processed_at: UtcDatetime | None
    last_activity_at: UtcDatetime | None = Field(None, description="When a device row last changed (UTC)")
    idempotency_key: str | None
    undo_of: int | None = Field(None, description="The bulk change this one undoes (POST /bulk-changes/{id}/undo)")
    submission_id: int | None = Field(
        None, description="The submission this bulk change is one child of (GET /submissions/{id}), or null"
    )

    @classmethod
    def from_row(cls, bc: dict[str, Any], last_activity_at: datetime | None) -> BulkChangeOut:
        """From ``store.bulk_changes.get_bulk_change`` (header plus live counts)."""
        return cls(
            id=bc["id"],
            service_provider_id=bc["service_provider_id"],
            change_type=bc["change_type"],
            change_type_name=change_type_name(bc["change_type"]),
            status=bc["status"],
            status_detail=bulk_status_detail(bc["status"], bc["counts"]),
            outcome=outcome_of(bc["status"], bc["counts"], held=not bc["process_changes"]).value,
            process_changes=bc["process_changes"],
            attempt=bc["attempt"],
            total=bc["total"],
            counts=bc["counts"],
            created_by=bc["created_by"],
            created_at=bc["created_at"],
            effective_at=bc["effective_at"],
            processed_at=bc["processed_at"],
            last_activity_at=last_activity_at,
            idempotency_key=bc["idempotency_key"],
            undo_of=bc.get("undo_of"),
            submission_id=bc.get("submission_id"),
        )


class DeviceResultOut(ApiModel):
    id: int
    device_id: int | None
    iccid: str | None
    msisdn: str | None
    imei: str | None
    eid: str | None
    status: DeviceChangeStatus
    status_details: str | None
    attempt_count: int
    carrier_request_id: str | None
    change_request: dict[str, Any]
    effective_at: UtcDatetime | None
    processed_at: UtcDatetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceResultOut:
        """From ``store`` (``iter_device_results``, ``page_device_results``): the one row-to-wire
        step of the JSON pages and the XML download."""
        return cls(**{**row, "change_request": row["change_request"] or {}})


class DevicePageOut(ApiModel):
    items: list[DeviceResultOut]
    page: int
    page_size: int
    total: int = Field(description="Rows matching the filter")
    next_page: int | None = Field(description="The next page number, or null on the last page")


class CancelOut(ApiModel):
    id: int
    cancelled: int = Field(description="Device rows not yet sent that are now CANCELLED")
    still_processing: int = Field(description="Device rows already sent: they finish normally")
    status: str
    counts: dict[str, int]
    message: str


class RetryOut(ApiModel):
    id: int
    requeued: int = Field(description="Failed device rows put back to NEW")
    attempt: int
    status: str
    counts: dict[str, int]
    message: str


class ResumeOut(ApiModel):
    id: int
    unfinished: int = Field(description="Device rows no run finished, which the new attempt finishes")
    attempt: int
    status: str
    counts: dict[str, int]
    message: str


class ReleaseOut(ApiModel):
    id: int
    status: str = Field(description="NEW: the sensor starts it; SCHEDULED: it starts when its effective date comes")
    counts: dict[str, int]
    message: str


# --- problem documents (RFC 9457) ---------------------------------------------------------------


class ApiProblem(Exception):
    """An error with a status and a reason a person can act on; answered as a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        bulk_change_id: int | None = None,
        submission_id: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.title, self.errors = status, detail, title, errors
        self.bulk_change_id, self.submission_id = bulk_change_id, submission_id


async def capped_stream(request: Request, limit: int, too_large: Callable[[int], ApiProblem]) -> AsyncIterator[bytes]:
    """The request body's chunks, refused with ``too_large(size)`` (a 413) past ``limit`` bytes.

    The one body reader of the app (intake and callbacks). A declared Content-Length over the limit
    is refused before reading; one that is not a plain ASCII number (``²``, 5000 digits: a server
    in front usually refuses those first, an ASGI test client does not) is ignored and the bytes
    are counted as they come, so no header can turn into a 500.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 15 or int(declared) > limit):
        raise too_large(int(declared) if len(declared) <= 15 else 10**15)
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise too_large(seen)
            yield chunk
    except ClientDisconnect:  # nobody to answer; one line, not two tracebacks (ours and the server's)
        log.info("%s %s: the client disconnected after %d bytes of its body", request.method, request.url.path, seen)
        raise ApiProblem(
            400, "the client disconnected before the request body was complete", title="Incomplete request body"
        ) from None


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    bulk_change_id: int | None = None,
    submission_id: int | None = None,
) -> JSONResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = Problem(
        type=f"/problems/{phrase.lower().replace(' ', '-')}",
        title=title or phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
        bulk_change_id=bulk_change_id,
        submission_id=submission_id,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True, by_alias=True), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Every error of the app (routing, auth, validation, ours, unexpected) as problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return problem_response(
            request,
            exc.status,
            exc.detail,
            title=exc.title,
            errors=exc.errors,
            bulk_change_id=exc.bulk_change_id,
            submission_id=exc.submission_id,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        detail = (
            "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors[:10]) or "invalid request"
        )
        return problem_response(request, 422, detail, title="Invalid request", errors=errors)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request,
            500,
            "an internal error occurred; nothing was half-stored (each change is one "
            "transaction). Try again, and report it if it persists",
        )

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_error)


# Documented error answers (application/problem+json), by status, for route `responses=`.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": HTTPStatus(status).phrase}
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}


class CallbackStored(ApiModel):
    """A callback was accepted: how many outcomes were stored, how many were duplicates."""

    stored: int
    duplicates: int
