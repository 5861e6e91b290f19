"""Wire shapes of a submission (a request split by service provider, ``intake.split``): the answer
to a submit or dry run without ``serviceProviderId``, its status, and its operations. camelCase like
the rest of the API (``api_models``)."""

from __future__ import annotations

from pydantic import Field

from ..domain import change_type_name
from ..store.submission_ops import SubmissionOperation
from ..store.submissions import SubmissionView
from .api_models import ApiModel, UtcDatetime, ValidationSummary
from .submit import ChildOutcome, SubmitOutcome
from .validation import RowError

__all__ = [
    "REFUSED_SHOWN",
    "ChildOperationOut",
    "RefusedOut",
    "SplitChildOut",
    "SubmissionDryRunOut",
    "SubmissionOperationOut",
    "SubmissionOut",
    "SubmissionStatusOut",
]

REFUSED_SHOWN = 100  # refused devices listed in an answer; the results file has every one


class RefusedOut(ApiModel):
    row: int = Field(description="1-based position of the device in the request, or its CSV line")
    identifier: str = Field(description="The identifier as given")
    reason: str

    @classmethod
    def listed(cls, rows: list[RowError]) -> list[RefusedOut]:
        return [cls(row=r.row, identifier=r.identifier, reason=r.reason) for r in rows[:REFUSED_SHOWN]]


class SplitChildOut(ApiModel):
    """One service provider's bulk change of the submission (on a dry run: what it would be)."""

    bulk_change_id: int | None = Field(description="The child bulk change (null on a dry run)")
    service_provider_id: int
    service_provider_name: str
    integration: str
    status: str | None = Field(description="The child's status (null on a dry run)")
    counts: dict[str, int] = Field(description="Device rows by status")
    validation: ValidationSummary | None = Field(
        None, description="The child's validation report (absent for a repeated idempotency key)"
    )

    @classmethod
    def from_child(cls, c: ChildOutcome) -> SplitChildOut:
        return cls(
            bulk_change_id=c.bulk_change_id,
            service_provider_id=c.service_provider_id,
            service_provider_name=c.service_provider_name,
            integration=c.integration,
            status=c.status,
            counts=c.counts,
            validation=ValidationSummary.from_report(c.report) if c.report else None,
        )


class SubmissionOut(ApiModel):
    """A request without ``serviceProviderId``, split into one bulk change per service provider."""

    submission_id: int
    created: bool = Field(description="False when the idempotency key was used before: nothing new was created")
    status: str = Field(description="Derived from the children: one status for the whole submission")
    counts: dict[str, int] = Field(description="Device rows of every child by status, refused devices as ERROR")
    children: list[SplitChildOut]
    refused: list[RefusedOut] = Field(
        description=f"The first {REFUSED_SHOWN} devices no service provider could take, with the reason"
    )
    refused_total: int = Field(description="How many devices no service provider could take")
    message: str

    @classmethod
    def from_outcome(cls, o: SubmitOutcome) -> SubmissionOut:
        assert o.submission_id is not None and o.status is not None
        return cls(
            submission_id=o.submission_id,
            created=o.created,
            status=o.status,
            counts=o.counts or {},
            children=[SplitChildOut.from_child(c) for c in o.children],
            refused=RefusedOut.listed(o.refused),
            refused_total=len(o.refused),
            message=o.message,
        )


class SubmissionDryRunOut(ApiModel):
    message: str
    stored: bool = Field(False, description="Always false: a dry run stores nothing")
    counts: dict[str, int]
    children: list[SplitChildOut] = Field(description="The split: one bulk change per service provider")
    refused: list[RefusedOut]
    refused_total: int

    @classmethod
    def from_outcome(cls, o: SubmitOutcome) -> SubmissionDryRunOut:
        return cls(
            message=o.message,
            counts=o.counts or {},
            children=[SplitChildOut.from_child(c) for c in o.children],
            refused=RefusedOut.listed(o.refused),
            refused_total=len(o.refused),
        )


class SubmissionStatusOut(ApiModel):
    id: int
    status: str = Field(
        description="Derived from the children, never stored: AWAITING_APPROVAL while any child awaits; "
        "PROCESSED, ERROR or CANCELLED (final) once every child is final; else what the open children's rows say"
    )
    outcome: str = Field(
        description="What an operator needs to know at a glance, as for one bulk change: done, "
        "done_with_failures, waiting_on_carrier, scheduled, held (every open child submitted with "
        "processChanges=false: POST /submissions/{id}:release), awaiting_approval, cancelled, "
        "unfinished (a child's run stopped with rows left: resume that bulk change) or in_progress"
    )
    final: bool = Field(description="Every child is final: nothing more will change unless an operator acts")
    change_type: int
    change_type_name: str
    total: int
    done: int = Field(description="Device rows in a final status: the progress is done of total")
    counts: dict[str, int]
    children: list[SplitChildOut]
    refused: list[RefusedOut]
    refused_total: int
    created_by: str
    created_at: UtcDatetime
    idempotency_key: str | None

    @classmethod
    def from_view(cls, v: SubmissionView) -> SubmissionStatusOut:
        return cls(
            id=v.id,
            status=v.status,
            outcome=v.outcome.value,
            final=v.final,
            change_type=v.change_type,
            change_type_name=change_type_name(v.change_type),
            total=v.total,
            done=v.done,
            counts=v.counts,
            children=[
                SplitChildOut(
                    bulk_change_id=c.bulk_change_id,
                    service_provider_id=c.service_provider_id,
                    service_provider_name=c.service_provider_name,
                    integration=c.integration,
                    status=c.status,
                    counts=c.counts,
                )
                for c in v.children
            ],
            refused=RefusedOut.listed([RowError(r.row, r.identifier, r.reason) for r in v.refused]),
            refused_total=len(v.refused),
            created_by=v.created_by,
            created_at=v.created_at,
            idempotency_key=v.idempotency_key,
        )


class ChildOperationOut(ApiModel):
    bulk_change_id: int
    done: bool = Field(description="False: this child was left as it was; message says why")
    message: str


class SubmissionOperationOut(ApiModel):
    submission_id: int
    status: str = Field(description="The submission's status after the operation")
    counts: dict[str, int]
    children: list[ChildOperationOut]
    message: str

    @classmethod
    def from_result(cls, r: SubmissionOperation, verb: str) -> SubmissionOperationOut:
        return cls(
            submission_id=r.submission_id,
            status=r.status,
            counts=r.counts,
            children=[
                ChildOperationOut(
                    bulk_change_id=c.bulk_change_id,
                    done=c.done,
                    message=f"{verb}: bulk change {c.bulk_change_id} is {c.result.status}" if c.done else c.message,
                )
                for c in r.children
            ],
            message=f"{verb} {r.done} of {len(r.children)} bulk changes of submission {r.submission_id}; "
            f"it is {r.status}",
        )
