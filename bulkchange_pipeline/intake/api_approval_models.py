"""The API's answers about four-eyes approval: the ``approval`` object of a bulk change's status, and
the answer to approve / reject. Kept apart from ``api_models`` (which holds every other answer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from ..domain.approval import MAX_REASON_LENGTH
from .api_models import ApiModel, BulkChangeOut, UtcDatetime

__all__ = ["ApprovalOut", "BulkChangeStatusOut", "DecisionOut", "RejectIn"]


class ApprovalOut(ApiModel):
    """Who submitted, approved or rejected a bulk change that needed approval, and when."""

    state: str = Field(description="pending, approved, rejected, expired, or cancelled (cancelled while it waited)")
    needed_because: str = Field(description="What in the tenant's approval policy made it wait")
    submitted_by: str
    requested_at: UtcDatetime
    expires_at: UtcDatetime = Field(description="When it ends (CANCELLED) if nobody approves or rejects it")
    decided_by: str | None = Field(None, description="Who approved or rejected it (approval-expiry: it expired)")
    decided_at: UtcDatetime | None = None
    reason: str | None = Field(None, description="The rejection's reason, as given (or why it expired)")


class BulkChangeStatusOut(BulkChangeOut):
    """``BulkChangeOut`` with its approval (null when none was needed)."""

    approval: ApprovalOut | None = None

    @classmethod
    def with_approval(
        cls, bc: dict[str, Any], last_activity_at: datetime | None, approval: dict[str, Any] | None
    ) -> BulkChangeStatusOut:
        base = BulkChangeOut.from_row(bc, last_activity_at)
        return cls(**base.model_dump(), approval=ApprovalOut(**approval) if approval else None)


class RejectIn(ApiModel):
    """A rejection: the reason is required and is stored and returned exactly as sent."""

    reason: str = Field(min_length=1, max_length=MAX_REASON_LENGTH, description="Why it is rejected")


class DecisionOut(ApiModel):
    id: int
    state: str = Field(description="approved or rejected")
    status: str = Field(description="The bulk change's status now: NEW/SCHEDULED (approved) or CANCELLED (rejected)")
    decided_by: str
    decided_at: UtcDatetime
    counts: dict[str, int]
    message: str
