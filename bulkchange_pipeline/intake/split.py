"""One request across carriers: split a request without a service provider into one bulk change
per service provider, under one submission (issue 21).

Every device identifier is looked up set-based in the tenant's whole inventory (every service
provider) and the devices are grouped by the service provider that holds them, in request order.
Each group is validated by the one validator (``validation.validate_request``) as a request of its
own: a copy of the request with that ``serviceProviderId`` and only its devices, the row numbers
being the devices' positions in the original request. So a change type a carrier cannot do refuses
that carrier's rows (its child is all ERROR), not the whole request.

A device no service provider can take is refused before placement, with its reason: not in this
tenant's inventory (the same words as validation, whether or not another tenant has it), in more
than one service provider's inventory (ambiguous: name it with its service provider), an
identifier that is not valid, or a row that did not parse (a CSV ``row_errors`` entry).

The tenant's approval policy is applied to the WHOLE submission (device count summed over the
children, irreversible if any child is), so splitting cannot slip under its limit; when it holds
the submission, every child with devices to send waits in AWAITING_APPROVAL with its own approval
request naming the submission. Parent, children and refusals are stored in one transaction
(``store.submissions.create_submission``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..domain import BulkChangeRequest, DeviceChangeStatus, DeviceEntry, IdentifierKind, classify, normalize
from ..domain.approval import ApprovalPolicy, approval_needed
from ..domain.identifiers import CHECKS
from ..store import reference as ref
from ..store.approvals import Actor, cli_actor, get_policy, insert_pending
from ..store.bulk_changes import NewBulkChange, new_status
from ..store.submissions import (
    HELD_STATUSES,
    ChildView,
    NewSubmission,
    RefusedRow,
    create_submission,
    find_submission_by_key,
    get_submission,
    submission_state,
)
from .submit import ChildOutcome, SubmitOutcome, dry_run_head, request_fingerprint, stored_request
from .validation import RowError, ValidationReport, carrier_label, validate_request

__all__ = ["Placement", "place_devices", "split_approval", "submit_split"]

_FIELDS = ("iccid", "device", "imei", "msisdn", "eid")  # validation's order: the identifier a row is known by


@dataclass
class Placement:
    """Where each device of a request goes: device indexes per service provider (in request order)
    and the rows no service provider takes."""

    groups: dict[int, list[int]] = field(default_factory=dict)  # service provider id -> 0-based device indexes
    refused: list[RowError] = field(default_factory=list)
    # what the inventory holds for every identifier looked up (an empty list: nothing), handed to
    # each child's validation so a device is read once
    known: dict[IdentifierKind, dict[str, list[ref.DeviceRecord]]] = field(default_factory=dict)


def _identifier(entry: DeviceEntry) -> tuple[str, IdentifierKind | None, str | None]:
    """(identifier as given, its kind, why it is not a valid identifier or None)."""
    for name in _FIELDS:
        raw = getattr(entry, name)
        if raw:
            raw = str(raw)
            if name == "device":
                kind, reason = classify(raw)
                return raw, kind, reason
            kind = IdentifierKind(name)
            return raw, kind, CHECKS[kind](raw)
    return "", None, "no device identifier on this row"


def place_devices(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    *,
    row_errors: Mapping[int, str] | None = None,
    row_numbers: Sequence[int] | None = None,
) -> Placement:
    """Group the request's devices by the service provider whose inventory holds them (one
    set-based lookup per identifier kind); refuse, with the reason, those none or several hold."""
    entries = request.entries()
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(entries) + 1))
    if len(numbers) != len(entries):
        raise ValueError("row_numbers must have one number per device")
    errors = row_errors or {}
    out = Placement()
    keyed: dict[int, tuple[IdentifierKind, str, str]] = {}
    wanted: dict[IdentifierKind, set[str]] = {}
    for i, entry in enumerate(entries):
        raw, kind, reason = _identifier(entry)
        reason = errors.get(i) or reason
        if reason is not None or kind is None:
            out.refused.append(RowError(numbers[i], raw[:200], reason or "not a device identifier"))
            continue
        value = normalize(raw)
        keyed[i] = (kind, value, raw)
        wanted.setdefault(kind, set()).add(value)
    found = {kind: ref.find_devices(engine, tenant_id, kind, values) for kind, values in wanted.items()}
    out.known = {kind: {v: found[kind].get(v, []) for v in values} for kind, values in wanted.items()}
    names = {sp.id: sp.name for sp in ref.list_service_providers(engine, tenant_id)} if keyed else {}
    for i, (kind, value, raw) in keyed.items():
        candidates = found[kind].get(value, [])
        live = [d for d in candidates if d.archived_at is None] or candidates  # an archived twin does not count
        providers = list(dict.fromkeys(d.service_provider_id for d in live))
        if len(providers) == 1:
            out.groups.setdefault(providers[0], []).append(i)
            continue
        if not providers:
            reason = f"no device with {kind.name} {value} in this tenant's inventory"
        else:
            held = ", ".join(repr(names.get(p, str(p))) for p in providers)
            reason = (
                f"{kind.name} {value} is in the inventory of {len(providers)} service providers ({held}); "
                "submit it with the serviceProviderId it is for"
            )
        out.refused.append(RowError(numbers[i], raw[:200], reason))
    out.refused.sort(key=lambda e: e.row)
    return out


def split_approval(engine: sa.Engine, tenant_id: int, reports: Sequence[ValidationReport]) -> str | None:
    """Why the tenant's policy holds this submission, judged over ALL its children, or None: the
    accepted devices summed over the children, and irreversible when any child is."""
    policy = get_policy(engine, tenant_id)
    if policy.max_devices is None and not policy.irreversible:
        return None
    accepted = {
        id(r): [row.change_request for row in r.rows if row.status is not DeviceChangeStatus.ERROR] for r in reports
    }
    total = sum(len(a) for a in accepted.values())
    if not total:
        return None
    reasons = []
    first = reports[0]
    if size := approval_needed(
        ApprovalPolicy(max_devices=policy.max_devices), total, first.change_type, first.service_provider.integration, []
    ):
        reasons.append(f"{size} (over the whole submission)")
    if policy.irreversible:
        for r in reports:
            integration = r.service_provider.integration
            why = approval_needed(
                ApprovalPolicy(irreversible=True), len(accepted[id(r)]), r.change_type, integration, accepted[id(r)]
            )
            if why:
                reasons.append(f"{carrier_label(integration)}: {why}")
    return "; ".join(dict.fromkeys(reasons)) or None


def submit_split(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    created_by: str,
    dry_run: bool = False,
    *,
    row_errors: Mapping[int, str] | None = None,
    row_numbers: Sequence[int] | None = None,
    actor: Actor | None = None,
    undo_of: int | None = None,
) -> SubmitOutcome:
    """``submit`` for a request without a service provider: place, validate per service provider,
    apply the approval policy over the whole, and (unless ``dry_run``) store one submission.

    The same idempotency key and request again answers the stored submission (``created`` False);
    a key used for another request, or by a bulk change, raises ``IdempotencyConflict`` (on a dry
    run too). ``undo_of`` is ignored: an undo always names its service provider.
    """
    del undo_of
    key = request.idempotency_key
    fingerprint = request_fingerprint(request) if key else None
    if key:
        existing = find_submission_by_key(engine, tenant_id, key, fingerprint)
        if existing is not None and not dry_run:
            return _already(engine, tenant_id, existing)
    placement = place_devices(engine, tenant_id, request, row_errors=row_errors, row_numbers=row_numbers)
    numbers = list(row_numbers) if row_numbers is not None else list(range(1, len(request.devices) + 1))
    reports = []
    for sp_id, indexes in placement.groups.items():
        child = request.model_copy(
            update={
                "service_provider_id": sp_id,
                "devices": [request.devices[i] for i in indexes],
                "idempotency_key": None,
            }
        )
        reports.append(
            validate_request(engine, tenant_id, child, row_numbers=[numbers[i] for i in indexes], known=placement.known)
        )
    needed = split_approval(engine, tenant_id, reports)
    if dry_run:
        children = [_child(r, None, None, needed) for r in reports]
        counts = submission_state([_view(c) for c in children], len(placement.refused), 0).counts
        return SubmitOutcome(
            None,
            None,
            False,
            None,
            _summary(dry_run_head(needed), children, placement.refused),
            counts,
            None,
            children,
            placement.refused,
            split=True,
        )
    submitted = actor or cli_actor(created_by)
    hours = get_policy(engine, tenant_id).expires_after_hours
    news = [_new_child(engine, tenant_id, request, r, created_by, needed, submitted, hours) for r in reports]
    stored = create_submission(
        engine,
        NewSubmission(
            tenant_id=tenant_id,
            change_type=int(request.change_type),
            request=stored_request(request),
            created_by=created_by,
            children=news,
            refused=[RefusedRow(e.row, e.identifier, e.reason) for e in placement.refused],
            idempotency_key=key,
            request_fingerprint=fingerprint,
        ),
    )
    if not stored.created:  # lost a race with a concurrent submission of the same key
        return _already(engine, tenant_id, stored.submission_id)
    children = [
        _child(r, bc_id, new_status(n).value, needed)
        for r, n, bc_id in zip(reports, news, stored.bulk_change_ids, strict=True)
    ]
    state = submission_state([_view(c, held=not request.process_changes) for c in children], len(placement.refused), 0)
    status, counts = state.status, state.counts
    head = f"created submission {stored.submission_id} ({status})" + (
        f"; it awaits approval because {needed}" if needed else ""
    )
    return SubmitOutcome(
        None,
        None,
        True,
        status,
        _summary(head, children, placement.refused),
        counts,
        stored.submission_id,
        children,
        placement.refused,
        split=True,
    )


def _new_child(
    engine: sa.Engine,
    tenant_id: int,
    request: BulkChangeRequest,
    report: ValidationReport,
    created_by: str,
    needed: str | None,
    submitted: Actor,
    hours: int,
) -> NewBulkChange:
    """A child bulk change as ``store.submissions`` inserts it; held for approval with the rest of
    the submission when the policy says so and it has devices to send."""
    sp = report.service_provider
    held = needed is not None and report.accepted > 0
    new = NewBulkChange(
        tenant_id=tenant_id,
        service_provider_id=sp.id,
        change_type=int(request.change_type),
        portal_type=report.portal_type,
        process_changes=request.process_changes,
        request={**stored_request(request), "serviceProviderId": sp.id, "deviceCount": report.total},
        created_by=created_by,
        rows=report.rows,
        awaiting_approval=held,
    )
    if held:
        new.on_stored = lambda conn, bc_id: insert_pending(
            conn,
            bulk_change_id=bc_id,
            tenant_id=tenant_id,
            needed_because=f"submission {new.submission_id} needs approval: {needed}",
            submitted=submitted,
            expires_after_hours=hours,
        )
    return new


def _child(report: ValidationReport, bc_id: int | None, status: str | None, needed: str | None) -> ChildOutcome:
    sp = report.service_provider
    return ChildOutcome(
        service_provider_id=sp.id,
        service_provider_name=sp.name,
        integration=sp.integration.value,
        bulk_change_id=bc_id,
        status=status,
        counts=report.counts(),
        accepted=report.accepted,
        refused=len(report.errors),
        report=report,
    )


def _view(c: ChildOutcome, *, held: bool = False) -> ChildView:
    status = c.status or "NEW"
    return ChildView(
        c.bulk_change_id or 0,
        c.service_provider_id,
        c.service_provider_name,
        c.integration,
        status,
        c.counts,
        held=held and status in HELD_STATUSES,
    )


def _already(engine: sa.Engine, tenant_id: int, submission_id: int) -> SubmitOutcome:
    view = get_submission(engine, submission_id, tenant_id)
    assert view is not None  # found by its key in this tenant a moment ago; submissions are not deleted
    children = [
        ChildOutcome(
            c.service_provider_id,
            c.service_provider_name,
            c.integration,
            c.bulk_change_id,
            c.status,
            c.counts,
            accepted=sum(c.counts.values()) - c.counts.get(DeviceChangeStatus.ERROR.value, 0),
            refused=c.counts.get(DeviceChangeStatus.ERROR.value, 0),
        )
        for c in view.children
    ]
    refused = [RowError(r.row, r.identifier, r.reason) for r in view.refused]
    return SubmitOutcome(
        None,
        None,
        False,
        view.status,
        f"already submitted as submission {submission_id}; nothing new created",
        view.counts,
        submission_id,
        children,
        refused,
        split=True,
    )


def _summary(head: str, children: Sequence[ChildOutcome], refused: Sequence[RowError]) -> str:
    total = sum(c.accepted + c.refused for c in children) + len(refused)
    accepted = sum(c.accepted for c in children)
    split = ", ".join(
        f"{c.service_provider_name}: {c.accepted + c.refused} devices"
        + (f" as bulk change {c.bulk_change_id}" if c.bulk_change_id is not None else "")
        for c in children
    )
    parts = [f"{accepted} of {total} devices accepted"]
    if refused_total := total - accepted:
        parts.append(f"{refused_total} refused ({len(refused)} not placed with any service provider)")
    where = f"split into {len(children)} bulk change{'s' if len(children) != 1 else ''}" + (
        f" ({split})" if split else ""
    )
    return f"{head}: {where}; " + ", ".join(parts)
