"""Submissions over HTTP: a request without ``serviceProviderId`` split by service provider
(``intake.split``), and the submission as one resource.

- ``POST /bulk-changes`` (JSON, XML, CSV form) without a service provider answers 202 with the
  split (``SubmissionOut``) and ``Location: /submissions/{id}``; the same key again 200, the same
  body. ``POST /bulk-changes:dry-run`` answers the split and stores nothing. Those routes stay in
  ``api``; the submit plumbing they share (``run_submit``, ``answer``) lives here.
- ``GET /submissions/{id}``: one status, counts, children, refused devices;
  ``GET /submissions/{id}/devices``: one results file (CSV or JSON) of every child and the refusals;
  ``POST /submissions/{id}:cancel`` / ``:retry-failed`` / ``:release`` (submitter), ``:approve`` / ``:reject``
  (approver): the store's rules, child by child (``store.submissions``).

Another tenant's submission is 404 exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..domain import BulkChangeRequest
from ..domain.requests import MAX_ID
from ..store import submission_ops as ops
from ..store import submissions as store
from ..store.approvals import SelfApprovalRefused
from ..store.idempotency import IdempotencyConflict
from ..store.operations import OperationRefused
from ..store.reference import get_service_provider
from .api_approval_models import RejectIn
from .api_models import PROBLEMS, ApiProblem, DryRunResponse, SubmitResponse, ValidationSummary
from .api_query import known_query_only
from .api_submission_models import SubmissionDryRunOut, SubmissionOperationOut, SubmissionOut, SubmissionStatusOut
from .auth import Caller, approver_caller, authenticated_caller, submitter_caller
from .deps import request_engine
from .drops.submission_xml import submission_xml_chunks
from .parsing import text_reason
from .results_download import MEDIA_TYPES, download_format
from .submission_results import submission_csv_chunks, submission_json_chunks
from .submit import SubmitOutcome, submit
from .validation import RequestRejected

__all__ = ["SPLIT_ANSWER", "SUBMIT_ANSWERS", "answer", "run_submit", "submission_routes"]

CurrentCaller = Annotated[Caller, Depends(authenticated_caller)]
Submitter = Annotated[Caller, Depends(submitter_caller)]
Approver = Annotated[Caller, Depends(approver_caller)]
Engine = Annotated[sa.Engine, Depends(request_engine)]
SubmissionId = Path(ge=1, le=MAX_ID, description="Submission id")

# What a submit route may answer: one bulk change, or a split into a submission.
SUBMIT_ANSWERS = SubmitResponse | SubmissionOut | DryRunResponse | SubmissionDryRunOut
SPLIT_ANSWER = {
    202: {
        "model": SubmissionOut,
        "description": "No serviceProviderId: split into one bulk change per service provider under one "
        "submission (Location: /submissions/{id}); the same idempotency key again answers 200 with the same body",
    }
}


# --- the submit plumbing of api's routes ------------------------------------------------------------


def _check_provider(engine: sa.Engine, caller: Caller, sp_id: int) -> None:
    if get_service_provider(engine, caller.tenant_id, sp_id) is None:
        raise ApiProblem(
            404,
            f"no service provider {sp_id} for this API key's tenant; use the id of one of your own service providers",
            title="Service provider not found",
        )


def run_submit(engine: sa.Engine, caller: Caller, req: BulkChangeRequest, dry_run: bool, **kw: Any) -> SubmitOutcome:
    """``submit`` for the caller's tenant (run in a worker thread), its refusals as problems. A
    named service provider must be the tenant's (404); none named: the request is split."""
    if req.service_provider_id is not None:
        _check_provider(engine, caller, req.service_provider_id)
    try:
        return submit(engine, caller.tenant_id, req, caller.label, dry_run=dry_run, actor=caller.actor, **kw)
    except RequestRejected as exc:
        raise ApiProblem(422, str(exc), title="Bulk change refused") from None
    except IdempotencyConflict as exc:
        raise ApiProblem(
            409,
            str(exc),
            title="Idempotency key reused for a different request",
            bulk_change_id=exc.bulk_change_id,
            submission_id=exc.submission_id,
        ) from None


def answer(outcome: SubmitOutcome, response: Response) -> Any:
    """The answer of a submit route: the bulk change (201/200, Location /bulk-changes/{id}), the
    split (202/200, Location /submissions/{id}), or a dry run's report (200)."""
    if outcome.split:
        if outcome.submission_id is None:
            response.status_code = 200
            return SubmissionDryRunOut.from_outcome(outcome)
        response.status_code = 202 if outcome.created else 200
        response.headers["Location"] = f"/submissions/{outcome.submission_id}"
        return SubmissionOut.from_outcome(outcome)
    if outcome.bulk_change_id is None:
        assert outcome.report is not None
        return DryRunResponse(message=outcome.message, validation=ValidationSummary.from_report(outcome.report))
    response.status_code = 201 if outcome.created else 200
    response.headers["Location"] = f"/bulk-changes/{outcome.bulk_change_id}"
    return SubmitResponse.from_outcome(outcome)


# --- a submission: status, results, operations ---------------------------------------------------

submission_routes = APIRouter(
    tags=["submissions"],
    responses={k: PROBLEMS[k] for k in (401, 404, 422)},
    dependencies=[Depends(known_query_only)],
)


def _not_found(submission_id: int) -> ApiProblem:
    return ApiProblem(404, f"no submission {submission_id} for this API key's tenant", title="Submission not found")


@submission_routes.get(
    "/submissions/{submission_id}", response_model=SubmissionStatusOut, summary="A submission's status and children"
)
def get_submission(caller: CurrentCaller, engine: Engine, submission_id: int = SubmissionId) -> SubmissionStatusOut:
    """One status for the whole submission (derived from its children), device counts, each child
    bulk change (``GET /bulk-changes/{id}`` for its details) and the devices no service provider took."""
    view = store.get_submission(engine, submission_id, caller.tenant_id)
    if view is None:
        raise _not_found(submission_id)
    return SubmissionStatusOut.from_view(view)


@submission_routes.get(
    "/submissions/{submission_id}/devices",
    summary="One results file of every device of the submission (JSON, CSV or XML)",
    responses={
        200: {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/xml": {"schema": {"type": "string"}},
            },
            "description": "Every device of every child bulk change, then the refused devices: "
            '{"submissionId", "items"} as JSON, CSV with format=csv (or Accept: text/csv), XML with format=xml',
        }
    },
)
def submission_devices(
    request: Request,
    caller: CurrentCaller,
    engine: Engine,
    submission_id: int = SubmissionId,
    format: Literal["json", "csv", "xml"] | None = Query(None, description="json (default), csv or xml"),
) -> StreamingResponse:
    """Each row carries its child's ``bulkChangeId`` and ``serviceProvider`` (absent or null for a
    refused device). The same file a file drop's outbox writes for the submission."""
    if store.get_submission(engine, submission_id, caller.tenant_id) is None:
        raise _not_found(submission_id)
    download = download_format(format, request.headers.get("accept", ""))
    rows = store.iter_submission_results(engine, submission_id, caller.tenant_id)
    if download is None:
        return StreamingResponse(submission_json_chunks(submission_id, rows), media_type="application/json")
    chunks = submission_csv_chunks(rows) if download == "csv" else submission_xml_chunks(submission_id, rows)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[download],
        headers={"Content-Disposition": f'attachment; filename="submission-{submission_id}-devices.{download}"'},
    )


def _operate(
    operation: Callable[[], ops.SubmissionOperation], submission_id: int, verb: str, refused: str
) -> SubmissionOperationOut:
    try:
        return SubmissionOperationOut.from_result(operation(), verb)
    except ops.SubmissionNotFound:
        raise _not_found(submission_id) from None
    except SelfApprovalRefused as exc:
        raise ApiProblem(403, str(exc), title="Four-eyes rule") from None
    except OperationRefused as exc:
        raise ApiProblem(409, str(exc), title=refused) from None


OPERATION_PROBLEMS: dict[int | str, dict[str, Any]] = {k: PROBLEMS[k] for k in (403, 409)}


@submission_routes.post(
    "/submissions/{submission_id}:cancel",
    response_model=SubmissionOperationOut,
    summary="Cancel the rows not yet sent, in every child",
    responses=OPERATION_PROBLEMS,
)
def cancel(caller: Submitter, engine: Engine, submission_id: int = SubmissionId) -> SubmissionOperationOut:
    """Each child's NEW and SCHEDULED rows become CANCELLED; rows already sent finish normally.
    A child with nothing left to cancel is reported, not an error; 409 when no child had any."""
    return _operate(
        lambda: ops.cancel_submission(engine, caller.tenant_id, submission_id, by=caller.label),
        submission_id,
        "cancelled",
        "Nothing to cancel",
    )


@submission_routes.post(
    "/submissions/{submission_id}:retry-failed",
    response_model=SubmissionOperationOut,
    summary="Retry the failed rows of every child",
    responses=OPERATION_PROBLEMS,
)
def retry(caller: Submitter, engine: Engine, submission_id: int = SubmissionId) -> SubmissionOperationOut:
    """Each child with failed rows gets a new attempt (``POST /bulk-changes/{id}/retry-failed``'s
    rule); the devices no service provider took are never retried. 409 when no child had any."""
    return _operate(
        lambda: ops.retry_failed_submission(engine, caller.tenant_id, submission_id, by=caller.label),
        submission_id,
        "retried",
        "Nothing to retry",
    )


@submission_routes.post(
    "/submissions/{submission_id}:release",
    response_model=SubmissionOperationOut,
    summary="Release every held child (submitted with processChanges=false)",
    responses=OPERATION_PROBLEMS,
)
def release(caller: Submitter, engine: Engine, submission_id: int = SubmissionId) -> SubmissionOperationOut:
    """Each held child is released as ``POST /bulk-changes/{id}/release`` would: the sensor starts
    it. A child not held is reported, not an error; 409 when no child was held."""
    return _operate(
        lambda: ops.release_submission(engine, caller.tenant_id, submission_id, by=caller.label),
        submission_id,
        "released",
        "Nothing to release",
    )


@submission_routes.post(
    "/submissions/{submission_id}:approve",
    response_model=SubmissionOperationOut,
    summary="Approve every child awaiting approval (approver role; never your own)",
    responses=OPERATION_PROBLEMS,
)
async def approve(caller: Approver, engine: Engine, submission_id: int = SubmissionId) -> SubmissionOperationOut:
    """The policy held the whole submission; approving it releases every child."""
    return await run_in_threadpool(
        _operate,
        lambda: ops.approve_submission(engine, caller.tenant_id, submission_id, by=caller.actor),
        submission_id,
        "approved",
        "Cannot approve",
    )


@submission_routes.post(
    "/submissions/{submission_id}:reject",
    response_model=SubmissionOperationOut,
    summary="Reject every child awaiting approval, with a reason (approver role)",
    responses={**OPERATION_PROBLEMS, 400: PROBLEMS[400]},
)
async def reject(
    caller: Approver, engine: Engine, body: Annotated[RejectIn, Body()], submission_id: int = SubmissionId
) -> SubmissionOperationOut:
    """Every row of every waiting child ends CANCELLED with the reason; nothing is sent."""
    if not body.reason.strip():
        raise ApiProblem(422, "reason: a rejection needs a reason (not only blanks)", title="Invalid request")
    if why := text_reason("reason", body.reason):
        raise ApiProblem(422, why, title="Invalid request")
    return await run_in_threadpool(
        _operate,
        lambda: ops.reject_submission(engine, caller.tenant_id, submission_id, by=caller.actor, reason=body.reason),
        submission_id,
        "rejected",
        "Cannot reject",
    )
