"""Undo over HTTP: ``POST /bulk-changes/{id}/undo`` (``?dryRun=true`` only shows it).

Submitter role, like any submission (``auth.submitter_caller``: 403 otherwise). The undo is built
and submitted by ``intake.undo`` through the one submit path, so validation, the approval policy
and idempotency answer as they do for ``POST /bulk-changes``: 201 for a new undo, 200 when this
original was undone before (nothing new), 404 for another tenant's or an unknown id, 409 for an
original not finished yet.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from ..domain.requests import MAX_ID
from ..store.idempotency import IdempotencyConflict
from ..store.operations import BulkChangeNotFound, OperationRefused
from .api_models import PROBLEMS, ApiModel, ApiProblem, SubmitResponse, ValidationSummary
from .api_query import known_query_only
from .auth import Caller, submitter_caller
from .deps import request_engine
from .undo import UndoOutcome, undo
from .validation import RequestRejected

__all__ = ["LeftOutOut", "UndoResponse", "undo_router"]

Submitter = Annotated[Caller, Depends(submitter_caller)]
Engine = Annotated[sa.Engine, Depends(request_engine)]

undo_router = APIRouter(
    tags=["bulk changes"],
    responses={k: PROBLEMS[k] for k in (401, 403, 404, 409, 422)},
    dependencies=[Depends(known_query_only)],
)


class LeftOutOut(ApiModel):
    device: str
    reason: str


class UndoResponse(ApiModel):
    original_id: int = Field(description="The bulk change undone")
    change_type: int
    stored: bool = Field(description="False for a dry run, or when nothing was left to restore")
    message: str
    restored: list[dict[str, object]] = Field(description="Each device with the values it goes back to")
    left_out: list[LeftOutOut] = Field(description="Devices not restored, each with its reason")
    bulk_change: SubmitResponse | None = Field(None, description="The undo bulk change (absent for a dry run)")
    validation: ValidationSummary | None = Field(None, description="The validation report of the undo request")


def _run(engine: sa.Engine, caller: Caller, bulk_change_id: int, dry_run: bool) -> UndoOutcome:
    try:
        return undo(engine, caller.tenant_id, bulk_change_id, caller.label, dry_run=dry_run, actor=caller.actor)
    except BulkChangeNotFound:
        raise ApiProblem(
            404, f"no bulk change {bulk_change_id} for this API key's tenant", title="Bulk change not found"
        ) from None
    except OperationRefused as exc:
        raise ApiProblem(409, str(exc), title="Cannot undo") from None
    except RequestRejected as exc:
        raise ApiProblem(422, str(exc), title="Undo refused") from None
    except IdempotencyConflict as exc:
        raise ApiProblem(409, str(exc), title="Undo already made", bulk_change_id=exc.bulk_change_id) from None


@undo_router.post(
    "/bulk-changes/{bulk_change_id}/undo",
    status_code=201,
    response_model=UndoResponse,
    summary="Undo a bulk change: restore its processed devices' recorded before-values (submitter role)",
    responses={
        200: {
            "model": UndoResponse,
            "description": "A dry run, nothing left to restore, or this original undone before: nothing new created",
        }
    },
)
async def undo_bulk_change(
    response: Response,
    caller: Submitter,
    engine: Engine,
    bulk_change_id: int = Path(ge=1, le=MAX_ID, description="The bulk change to undo"),
    dry_run: bool = Query(False, alias="dryRun", description="Only show what would be restored; store nothing"),
) -> UndoResponse:
    """A new bulk change linked to the original (``undoOf``), through validation and approval like
    any submission; rows it cannot restore are listed with their reason."""
    outcome = await run_in_threadpool(_run, engine, caller, bulk_change_id, dry_run)
    sub = outcome.submitted
    stored = sub is not None and sub.bulk_change_id is not None
    if sub is not None and sub.bulk_change_id is not None:
        response.status_code = 201 if sub.created else 200
        response.headers["Location"] = f"/bulk-changes/{sub.bulk_change_id}"
    else:
        response.status_code = 200
    return UndoResponse(
        original_id=outcome.plan.original_id,
        change_type=int(outcome.plan.change_type),
        stored=stored,
        message=outcome.message,
        restored=outcome.plan.restored,
        left_out=[LeftOutOut(device=x.device, reason=x.reason) for x in outcome.plan.left_out],
        bulk_change=SubmitResponse.from_outcome(sub) if stored and sub is not None else None,
        validation=ValidationSummary.from_report(sub.report) if sub is not None and sub.report else None,
    )
