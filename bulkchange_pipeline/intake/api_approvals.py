"""Four-eyes approval over HTTP: ``POST /bulk-changes/{id}/approve`` and ``/reject``.

Both need a key with the approver role (``auth.approver_caller``: 403 otherwise). The rules are the
store's (``store.approvals``), shared with the CLI: the submitter's own key is refused (403 naming
the four-eyes rule), a bulk change that is not waiting is 409 saying what happened to it (approved,
rejected, expired or cancelled: only one decision ever wins), another tenant's is 404.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Path
from fastapi.concurrency import run_in_threadpool

from ..domain.requests import MAX_ID
from ..store import approvals as store
from ..store.operations import BulkChangeNotFound, OperationRefused
from .api_approval_models import DecisionOut, RejectIn
from .api_models import PROBLEMS, ApiProblem
from .api_query import known_query_only
from .auth import Caller, approver_caller
from .deps import request_engine
from .parsing import text_reason

__all__ = ["approvals"]

Approver = Annotated[Caller, Depends(approver_caller)]
Engine = Annotated[sa.Engine, Depends(request_engine)]
BulkChangeId = Path(ge=1, le=MAX_ID, description="Bulk change id")

approvals = APIRouter(
    tags=["approvals"],
    responses={k: PROBLEMS[k] for k in (400, 401, 403, 404, 409, 422)},
    dependencies=[Depends(known_query_only)],
)


def _decide(decision: str, engine: sa.Engine, caller: Caller, bulk_change_id: int, reason: str | None) -> DecisionOut:
    try:
        if reason is None:
            r = store.approve_bulk_change(engine, caller.tenant_id, bulk_change_id, by=caller.actor)
            message = f"approved: bulk change {bulk_change_id} is {r.status}; the sensor starts it"
        else:
            r = store.reject_bulk_change(engine, caller.tenant_id, bulk_change_id, by=caller.actor, reason=reason)
            message = f"rejected: bulk change {bulk_change_id} is {r.status}; nothing was sent"
    except BulkChangeNotFound:
        raise ApiProblem(
            404, f"no bulk change {bulk_change_id} for this API key's tenant", title="Bulk change not found"
        ) from None
    except store.SelfApprovalRefused as exc:
        raise ApiProblem(403, str(exc), title="Four-eyes rule") from None
    except OperationRefused as exc:
        raise ApiProblem(409, str(exc), title=f"Cannot {decision}") from None
    return DecisionOut(
        id=r.bulk_change_id,
        state=r.state,
        status=r.status,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        counts=r.counts,
        message=message,
    )


@approvals.post(
    "/bulk-changes/{bulk_change_id}/approve",
    response_model=DecisionOut,
    summary="Approve a bulk change awaiting approval (approver role; never your own)",
)
async def approve(caller: Approver, engine: Engine, bulk_change_id: int = BulkChangeId) -> DecisionOut:
    """It becomes NEW (the sensor starts it) or SCHEDULED; who and when go in its log and status."""
    return await run_in_threadpool(_decide, "approve", engine, caller, bulk_change_id, None)


@approvals.post(
    "/bulk-changes/{bulk_change_id}/reject",
    response_model=DecisionOut,
    summary="Reject a bulk change awaiting approval, with a reason (approver role)",
)
async def reject(
    caller: Approver, engine: Engine, body: Annotated[RejectIn, Body()], bulk_change_id: int = BulkChangeId
) -> DecisionOut:
    """Every row ends CANCELLED with the reason; the reason is kept exactly as sent."""
    if not body.reason.strip():
        raise ApiProblem(422, "reason: a rejection needs a reason (not only blanks)", title="Invalid request")
    if why := text_reason("reason", body.reason):
        raise ApiProblem(422, why, title="Invalid request")
    return await run_in_threadpool(_decide, "reject", engine, caller, bulk_change_id, body.reason)
