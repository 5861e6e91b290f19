"""The console's actions: cancel, retry failed, release a held bulk change, approve or reject one
awaiting approval, and a CSV upload.

Each action is two steps, because each one reaches devices at a carrier: a GET page says what will
happen (how many rows), and only its form's POST, carrying the session's CSRF token, does it. The
POST calls the same ``store.operations`` function as the API, with the same caller label, and a
refusal (``OperationRefused``) is shown with its message. Approve and reject need the approver role
and call ``store.approvals`` as the API does, with the key as the four-eyes actor, so the submitter's
own key is refused with the rule's message; a rejection's reason gets the API's checks. The upload is dry-run first: the report
the API's dry run gives (``intake.csv_file.parse_csv`` and ``intake.submit.submit``), then the same
bytes, carried in the confirmation form, are parsed and validated again and submitted. The
confirmation carries a MAC of what the dry run showed (``session.upload_mac``: tenant, file digest,
service provider, change type, idempotency key), so it cannot submit another file or choice than
the one the operator saw; a mismatch is refused (400) and nothing is stored. Both forms are read
under a byte cap (the API's reader, ``intake.api_models.capped_stream``): an oversize upload is
refused (413) before it is spooled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from ..domain import ChangeType
from ..domain.approval import MAX_REASON_LENGTH, Role
from ..intake.api_bodies import FORM_OVERHEAD
from ..intake.api_models import ApiProblem, capped_stream
from ..intake.api_query import whole_number
from ..intake.auth import Caller, role_refusal
from ..intake.csv_file import parse_csv
from ..intake.deps import request_engine, request_limits
from ..intake.parsing import IntakeError, IntakeLimits, text_reason
from ..intake.submit import SubmitOutcome, submit
from ..intake.validation import RequestRejected
from ..store import approvals
from ..store import console as q
from ..store import operations as ops
from ..store.idempotency import IdempotencyConflict
from ..store.reference import get_service_provider, list_service_providers
from .ids import BulkChangeId
from .render import NotFound, page
from .session import ConsoleUser, check_csrf, console_user, upload_mac, upload_mac_matches

__all__ = ["ACTIONS", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)
User = Annotated[ConsoleUser, Depends(console_user)]
Engine = Annotated[sa.Engine, Depends(request_engine)]
Limits = Annotated[IntakeLimits, Depends(request_limits)]


@dataclass(frozen=True)
class Action:
    title: str
    button: str
    run: Callable[..., Any]
    done: Callable[[Any], str]
    role: Role = Role.SUBMITTER  # the API's role for the same action
    reason: bool = False  # the form asks for a reason (reject)


def _approve(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: approvals.Actor, reason: str) -> Any:
    return approvals.approve_bulk_change(engine, tenant_id, bulk_change_id, by=by)


def _reject(engine: sa.Engine, tenant_id: int, bulk_change_id: int, *, by: approvals.Actor, reason: str) -> Any:
    return approvals.reject_bulk_change(engine, tenant_id, bulk_change_id, by=by, reason=reason)


ACTIONS = {
    "cancel": Action(
        "Cancel",
        "Cancel the rows not yet sent",
        ops.cancel_bulk_change,
        lambda r: (
            f"Cancelled {r.cancelled} device rows"
            + (f"; {r.still_processing} already sent finish normally." if r.still_processing else ".")
        ),
    ),
    "retry-failed": Action(
        "Retry failed",
        "Retry the failed rows",
        ops.retry_failed,
        lambda r: f"{r.requeued} failed device rows queued again as attempt {r.attempt}.",
    ),
    "release": Action(
        "Release",
        "Release it",
        ops.release_bulk_change,
        lambda r: (
            "Released: the sensor starts it "
            + ("when its effective date comes." if r.status == "SCHEDULED" else "on its next tick.")
        ),
    ),
    # Four-eyes approval: the store's rules (``store.approvals``), as the API and the CLI apply them.
    "approve": Action(
        "Approve",
        "Approve it",
        _approve,
        lambda r: f"Approved by {r.decided_by}: bulk change {r.bulk_change_id} is {r.status}; the sensor starts it.",
        role=Role.APPROVER,
    ),
    "reject": Action(
        "Reject",
        "Reject it",
        _reject,
        lambda r: f"Rejected by {r.decided_by}: bulk change {r.bulk_change_id} is {r.status}; nothing was sent.",
        role=Role.APPROVER,
        reason=True,
    ),
}


def _what_happens(action: str, bc: q.BulkChangeSummary, retryable: int) -> str:
    c = bc.counts
    if action == "cancel":
        unsent = c.get("NEW", 0) + c.get("SCHEDULED", 0)
        return (
            f"{unsent} device rows not yet sent (NEW, SCHEDULED) become CANCELLED. "
            f"{c.get('PROCESSING', 0)} rows already sent to the carrier finish normally."
        )
    if action == "retry-failed":
        return (
            f"{retryable} failed device rows (carrier refusals, and rows that failed while processing) go back "
            "to NEW as a new attempt, and the pipeline sends them again. Rows refused at validation are not retried."
        )
    accepted = bc.total - c.get("ERROR", 0)
    if action == "approve":
        return (
            f"The bulk change starts: its {accepted} accepted device rows go to the carrier. "
            "Four eyes: you cannot approve a bulk change you submitted."
        )
    if action == "reject":
        return f"Its {accepted} accepted device rows become CANCELLED with your reason; nothing is sent."
    return f"The held bulk change starts: its {accepted} accepted device rows go to the carrier."


def _action(name: str) -> Action:
    if name not in ACTIONS:
        raise NotFound("no such action")
    return ACTIONS[name]


def _confirm_page(
    request: Request, user: ConsoleUser, engine: sa.Engine, bulk_change_id: int, name: str, **extra: Any
) -> Response:
    bc = q.bulk_change_summary(engine, user.caller.tenant_id, bulk_change_id)
    if bc is None:
        raise NotFound(f"no bulk change {bulk_change_id} for this tenant")
    retryable = q.retryable_count(engine, user.caller.tenant_id, bulk_change_id)
    extra.setdefault("status_code", 200)
    return page(
        request,
        "confirm.html",
        extra.pop("status_code"),
        user=user,
        bc=bc,
        name=name,
        action=_action(name),
        what=_what_happens(name, bc, retryable),
        approval=approvals.get_approval(engine, bulk_change_id, bc.status),
        **{"refused": None, "done": None, "reason": "", **extra},
    )


@router.get("/bulk-changes/{bulk_change_id}/{name}")
def confirm(request: Request, user: User, engine: Engine, name: str, bulk_change_id: BulkChangeId) -> Response:
    """What the action will do, and the button that does it."""
    _action(name)
    return _confirm_page(request, user, engine, bulk_change_id, name)


@router.post("/bulk-changes/{bulk_change_id}/{name}")
async def act(request: Request, user: User, engine: Engine, name: str, bulk_change_id: BulkChangeId) -> Response:
    """Do it, as the API does (same store function, same caller label); a refusal is shown (409)."""
    action = _action(name)
    form = await request.form(max_files=0, max_fields=5)
    check_csrf(user, str(form.get("csrf") or ""))

    async def again(status_code: int, **extra: Any) -> Response:
        return await run_in_threadpool(
            _confirm_page, request, user, engine, bulk_change_id, name, status_code=status_code, **extra
        )

    if refused := role_refusal(user.caller, action.role):  # the API's role rule (403)
        return await again(403, refused=refused)
    sent = form.get("reason")
    reason = sent if isinstance(sent, str) else ""
    kwargs: dict[str, Any] = {"by": user.caller.label}
    if action.role is Role.APPROVER:
        if action.reason and (why := _reason_refusal(reason)):
            return await again(422, refused=why, reason=reason)
        kwargs = {"by": user.caller.actor, "reason": reason}
    try:
        result = await run_in_threadpool(action.run, engine, user.caller.tenant_id, bulk_change_id, **kwargs)
    except ops.BulkChangeNotFound:
        raise NotFound(f"no bulk change {bulk_change_id} for this tenant") from None
    except approvals.SelfApprovalRefused as exc:  # the four-eyes rule (the API's 403)
        return await again(403, refused=str(exc))
    except ops.OperationRefused as exc:
        return await again(409, refused=str(exc))
    return await again(200, done=action.done(result))


def _reason_refusal(reason: str) -> str | None:
    """Why a rejection's reason cannot be stored as typed (the API's checks), or None."""
    if not reason.strip():
        return "a rejection needs a reason (not only blanks)"
    if len(reason) > MAX_REASON_LENGTH:
        return f"the reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH}"
    return text_reason("the reason", reason)


# --- CSV upload: dry run, then confirm ----------------------------------------------------------


def _check(
    engine: sa.Engine,
    caller: Caller,
    data: bytes,
    sp_text: str,
    type_text: str,
    key: str,
    limits: IntakeLimits,
    dry: bool,
) -> SubmitOutcome:
    """Parse and validate (and unless ``dry`` store) an upload, exactly as ``POST /bulk-changes/csv``."""
    sp_id = whole_number(sp_text)  # the API's rule of an id: digits only
    if sp_id is None or get_service_provider(engine, caller.tenant_id, sp_id) is None:
        raise RequestRejected("choose one of your service providers")
    try:
        change_type = ChangeType.parse(type_text)
    except ValueError:
        raise RequestRejected("choose a change type") from None
    parsed = parse_csv(data, change_type=change_type, service_provider_id=sp_id, idempotency_key=key, limits=limits)
    return submit(
        engine,
        caller.tenant_id,
        parsed.request,
        caller.label,
        dry_run=dry,
        row_errors=parsed.row_errors,
        row_numbers=parsed.row_numbers,
        actor=caller.actor,
    )


def _accepted(outcome: SubmitOutcome, limit: int = 200) -> list[tuple[int, Any]]:
    """The first accepted rows with their file line numbers, for the report's second table."""
    report = outcome.report
    if report is None:
        return []
    pairs = zip(report.row_numbers, report.rows, strict=False)
    return [(n, r) for n, r in pairs if r.status.value != "ERROR"][:limit]


def _upload_page(
    request: Request, user: ConsoleUser, engine: sa.Engine, status_code: int = 200, **ctx: Any
) -> Response:
    ctx = {
        "error": None,
        "report": None,
        "message": None,
        **{name: "" for name in ("file_b64", "sp", "type", "key", "mac")},
        **ctx,
    }
    providers = list_service_providers(engine, user.caller.tenant_id)
    return page(
        request, "upload.html", status_code, user=user, providers=providers, change_types=list(ChangeType), **ctx
    )


@router.get("/upload")
def upload_form(request: Request, user: User, engine: Engine) -> Response:
    return _upload_page(request, user, engine)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _size(n: int) -> str:
    return f"{n / 1_048_576:.0f} MB" if n >= 1_048_576 else f"{n / 1024:.0f} KB"


def _too_large(limits: IntakeLimits) -> str:
    return f"the file is too large: the limit is {_size(limits.max_bytes)} per upload; split it into smaller files"


async def _form(request: Request, limits: IntakeLimits, carried: bool) -> dict[str, Any]:
    """The upload form's fields, read under a byte cap: the file's limit, plus the form around it
    (``carried``: the confirmation, where the file comes back base64-encoded, a third larger)."""
    file_cap = -(-limits.max_bytes // 3) * 4 if carried else limits.max_bytes
    cap = file_cap + FORM_OVERHEAD
    stream = capped_stream(request, cap, lambda size: ApiProblem(413, _too_large(limits)))
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    parser: MultiPartParser | FormParser
    if media == "multipart/form-data":
        parser = MultiPartParser(request.headers, stream, max_files=1, max_fields=10, max_part_size=cap)
    else:
        parser = FormParser(request.headers, stream, max_fields=10, max_part_size=cap)
    try:
        form = await parser.parse()
    except ApiProblem as exc:
        raise _Refused(exc.status, exc.detail) from None
    except MultiPartException as exc:
        raise _Refused(400, f"the form cannot be read: {exc.message}") from None
    return dict(form.items())


@router.post("/upload")
async def upload_dry_run(request: Request, user: User, engine: Engine, limits: Limits) -> Response:
    """Step 1: the dry-run report of the chosen file; nothing stored."""
    try:
        form = await _form(request, limits, carried=False)
    except _Refused as exc:
        return _upload_page(request, user, engine, exc.status, error=str(exc))
    check_csrf(user, str(form.get("csrf") or ""))
    upload = form.get("file")
    sp, change_type = str(form.get("service_provider") or ""), str(form.get("change_type") or "")
    if not isinstance(upload, UploadFile):
        return _upload_page(request, user, engine, 422, error="choose a CSV file", sp=sp, type=change_type)
    data = await upload.read(limits.max_bytes + 1)
    await upload.close()
    if len(data) > limits.max_bytes:
        return _upload_page(request, user, engine, 413, error=_too_large(limits), sp=sp, type=change_type)
    key = f"console-{secrets.token_hex(12)}"  # the confirmation submits once, however often it is clicked
    try:
        outcome = await run_in_threadpool(_check, engine, user.caller, data, sp, change_type, key, limits, True)
    except (IntakeError, RequestRejected, IdempotencyConflict) as exc:
        return _upload_page(request, user, engine, 422, error=str(exc), sp=sp, type=change_type)
    return _upload_page(
        request,
        user,
        engine,
        report=outcome.report,
        accepted_rows=_accepted(outcome),
        message=outcome.message,
        file_b64=base64.b64encode(data).decode("ascii"),
        digest=hashlib.sha256(data).hexdigest()[:16],
        filename=upload.filename or "upload.csv",
        sp=sp,
        type=change_type,
        key=key,
        mac=upload_mac(user.caller.tenant_id, data, sp, change_type, key),
    )


@router.post("/upload/confirm")
async def upload_confirm(request: Request, user: User, engine: Engine, limits: Limits) -> Response:
    """Step 2: the file of the dry run validated again and submitted; on to the new bulk change's page."""
    try:
        form = await _form(request, limits, carried=True)
    except _Refused as exc:
        return _upload_page(request, user, engine, exc.status, error=str(exc))
    check_csrf(user, str(form.get("csrf") or ""))
    if refused := role_refusal(user.caller, Role.SUBMITTER):  # the API's role rule (403)
        return _upload_page(request, user, engine, 403, error=refused)
    sp, change_type = str(form.get("service_provider") or ""), str(form.get("change_type") or "")
    key = str(form.get("idempotency_key") or "")
    try:
        data = base64.b64decode(str(form.get("file_b64") or ""), validate=True)
    except (binascii.Error, ValueError):
        return _upload_page(request, user, engine, 422, error="the confirmation lost its file: upload it again")
    if len(data) > limits.max_bytes:
        return _upload_page(request, user, engine, 413, error=_too_large(limits))
    if not key.startswith("console-") or len(key) > 64:
        return _upload_page(request, user, engine, 422, error="the confirmation is incomplete: upload the file again")
    if not upload_mac_matches(str(form.get("mac") or ""), user.caller.tenant_id, data, sp, change_type, key):
        return _upload_page(
            request,
            user,
            engine,
            400,
            error="this confirmation is not the file of the dry run shown (another file, service provider or "
            "change type was sent back): nothing was submitted; upload the file again and check its report",
        )
    try:
        outcome = await run_in_threadpool(_check, engine, user.caller, data, sp, change_type, key, limits, False)
    except (IntakeError, RequestRejected, IdempotencyConflict) as exc:
        return _upload_page(request, user, engine, 422, error=str(exc), sp=sp, type=change_type)
    return RedirectResponse(f"/console/bulk-changes/{outcome.bulk_change_id}", status_code=303)
