"""The console's reading pages: sign-in, the list, search, a bulk change, a device row, a device,
a submission (a request split by carrier: its children linked, issue 21).

Operators think in bulk changes and devices, the Dagster UI in runs: these pages answer "what
happened to this bulk change / this SIM" for the signed-in tenant only (another tenant's id is
"not found", as in the API). Everything is read through ``store.console`` and the store functions
the API uses (results paging, the CSV writer), so the console and the API cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from .. import settings
from ..domain import BulkChangeStatus, ChangeType, DeviceChangeStatus, outcome_of
from ..domain.approval import Role
from ..domain.enums import FINAL_DEVICE_STATUSES
from ..intake.api_query import whole_number
from ..intake.auth import identify_caller, role_refusal
from ..intake.deps import request_engine
from ..intake.parsing import plain_int
from ..intake.results_download import MEDIA_TYPES, download_response
from ..intake.submission_results import submission_csv_chunks
from ..store import approvals, results_paging
from ..store import console as q
from ..store.reference import list_service_providers
from ..store.submissions import ChildView, get_submission, iter_submission_results
from .ids import BulkChangeId, DeviceId, RowId, SubmissionId
from .render import BadRequest, NotFound, page
from .session import (
    ConsoleUser,
    check_csrf,
    check_login_csrf,
    console_user,
    end_session,
    login_csrf,
    remember_login,
    start_session,
)

__all__ = ["REFRESH_SECONDS", "dagster_runs_url", "router"]

router = APIRouter(prefix="/console", include_in_schema=False)
User = Annotated[ConsoleUser, Depends(console_user)]
Engine = Annotated[sa.Engine, Depends(request_engine)]
REFRESH_SECONDS = 3
LIST_PAGE_SIZE = 25
ROWS_PAGE_SIZE = 50
MAX_PAGE = 1_000_000
BULK_CHANGE_ID = re.compile(r"^#?\s*([0-9]{1,9})$")  # longer digit strings are identifiers (IMEI: 15)
SUBMISSION_ID = re.compile(r"^s(?:ubmission)?\s*#?\s*([0-9]{1,9})$", re.IGNORECASE)  # "S7", "submission 7"


def dagster_runs_url(bulk_change_id: int) -> str:
    """The Dagster UI's runs page filtered by the bulk change's run tag."""
    return f"{settings.current().dagster_ui_url}/runs?q[0]=tag%3Abulkchange%2Fbulk_change_id%3D{bulk_change_id}"


def _page_number(text: str | None) -> int:
    """The ``page`` asked for, at least 1 and at most MAX_PAGE (the offset stays a small number);
    the queries then show the last page for one past it."""
    n = plain_int(text or "") or 1
    return min(max(n, 1), MAX_PAGE)


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site: ``//evil``, ``/\\evil``)."""
    if target and target.startswith("/console") and not target.startswith(("//", "/\\")) and "\\" not in target:
        return target
    return "/console/"


def _summary(engine: sa.Engine, user: ConsoleUser, bulk_change_id: int) -> q.BulkChangeSummary:
    found = q.bulk_change_summary(engine, user.caller.tenant_id, bulk_change_id)
    if found is None:
        raise NotFound(f"no bulk change {bulk_change_id} for this tenant")
    return found


# --- sign-in -----------------------------------------------------------------------------------


def _login_page(request: Request, target: str, error: str | None = None, status_code: int = 200) -> Response:
    token, fresh = login_csrf(request)
    response = page(request, "login.html", status_code, next=target, error=error, csrf=token)
    remember_login(request, response, fresh)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, _safe_next(next))


@router.post("/login")
async def login(request: Request, engine: Engine) -> Response:
    """Verify the key as the API does (``intake.auth.identify_caller``), then start a session."""
    form = await request.form(max_files=0, max_fields=5)
    key, target = str(form.get("api_key") or ""), _safe_next(str(form.get("next") or ""))
    check_login_csrf(request, str(form.get("csrf") or ""))
    caller = await run_in_threadpool(identify_caller, engine, key) if key.strip() else None
    if caller is None:
        return _login_page(request, target, "That API key is not valid (unknown or revoked).", 401)
    response = RedirectResponse(target, status_code=303)
    start_session(request, response, caller)
    return response


@router.post("/logout")
async def logout(request: Request, user: User, engine: Engine) -> Response:
    """End the session on the server (a copy of the cookie no longer works) and in this browser."""
    form = await request.form(max_files=0, max_fields=5)
    check_csrf(user, str(form.get("csrf") or ""))
    response = RedirectResponse("/console/login", status_code=303)
    await end_session(engine, user, response)
    return response


# --- the list ----------------------------------------------------------------------------------


def _filters(params: dict[str, str], sp_ids: set[int]) -> tuple[q.BulkChangeFilter, list[str]]:
    """The list's filters from its query string, and a message per value that is not one."""
    errors: list[str] = []
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in BulkChangeStatus}:
        errors.append("status: not a bulk change status")
        status = None
    sp = whole_number(params.get("carrier") or "") if params.get("carrier") else None
    if params.get("carrier") and sp not in sp_ids:
        errors.append("carrier: not one of your service providers")
        sp = None
    change_type = None
    if params.get("type"):
        try:
            change_type = int(ChangeType.parse(params["type"]))
        except ValueError:
            errors.append("type: not a change type")
    days: dict[str, datetime | None] = {"from": None, "to": None}
    for name in days:
        if params.get(name):
            try:
                days[name] = datetime.combine(date.fromisoformat(params[name]), datetime.min.time())
            except ValueError:
                errors.append(f"{name}: not a date (YYYY-MM-DD)")
    before = days["to"] + timedelta(days=1) if days["to"] else None  # "to" is inclusive
    return q.BulkChangeFilter(status, sp, change_type, days["from"], before), errors


@router.get("/")
def bulk_change_list(request: Request, user: User, engine: Engine) -> Response:
    """Bulk changes newest first with their carrier, type, submitter, counts and progress; filters."""
    params = {k: request.query_params.get(k, "")[:40] for k in ("status", "carrier", "type", "from", "to", "page")}
    providers = list_service_providers(engine, user.caller.tenant_id)
    filters, errors = _filters(params, {p.id for p in providers})
    found = q.list_bulk_changes(
        engine, user.caller.tenant_id, filters, page=_page_number(params["page"]), page_size=LIST_PAGE_SIZE
    )
    return page(
        request,
        "list.html",
        user=user,
        found=found,
        params={k: v for k, v in params.items() if k != "page"},
        errors=errors,
        providers=providers,
        statuses=[s.value for s in BulkChangeStatus],
        change_types=list(ChangeType),
    )


# --- search ------------------------------------------------------------------------------------


@router.get("/search")
def search(request: Request, user: User, engine: Engine) -> Response:
    """A bulk change id goes to its page, a submission's ("S7") to the submission's; an ICCID /
    IMEI / MSISDN / EID to its device's page (several devices: a list to choose from)."""
    text = (request.query_params.get("q") or "").strip()[:64]
    if (found := SUBMISSION_ID.match(text)) and get_submission(engine, int(found.group(1)), user.caller.tenant_id):
        return RedirectResponse(f"/console/submissions/{int(found.group(1))}", status_code=303)
    matched = BULK_CHANGE_ID.match(text)
    if matched and q.bulk_change_summary(engine, user.caller.tenant_id, int(matched.group(1))):
        return RedirectResponse(f"/console/bulk-changes/{int(matched.group(1))}", status_code=303)
    devices = q.find_devices_by_identifier(engine, user.caller.tenant_id, text) if text else []
    if len(devices) == 1:
        return RedirectResponse(f"/console/devices/{devices[0]['id']}", status_code=303)
    return page(request, "search.html", 200 if devices or not text else 404, user=user, q=text, devices=devices)


# --- one bulk change ---------------------------------------------------------------------------


def _row_status(text: str | None) -> DeviceChangeStatus | None:
    """The device rows' ``status`` filter; empty is "any", an unknown one is refused (400) with the
    valid values, never silently ignored (a page or a CSV of every row that looks filtered)."""
    if not text:
        return None
    try:
        return DeviceChangeStatus(text)
    except ValueError:
        valid = ", ".join(s.value for s in DeviceChangeStatus)
        raise BadRequest(f"status: {text[:40]!r} is not a device row status; use one of {valid}") from None


@router.get("/bulk-changes/{bulk_change_id}")
def bulk_change_page(request: Request, user: User, engine: Engine, bulk_change_id: BulkChangeId) -> Response:
    """Header, progress (refreshing while it moves), outcome, the approval (and, for an approver, its
    Approve / Reject buttons while it waits), the device rows paged and filtered."""
    bc = _summary(engine, user, bulk_change_id)
    status = _row_status(request.query_params.get("status"))
    rows = results_paging.page_device_results(
        engine,
        user.caller.tenant_id,
        bulk_change_id,
        status=status,
        page=_page_number(request.query_params.get("page")),
        page_size=ROWS_PAGE_SIZE,
    )
    last = max(1, -(-rows.total // rows.page_size))
    if rows.page > last:  # past the end (a stale link, fewer rows of that status now): the last page
        rows = results_paging.page_device_results(
            engine, user.caller.tenant_id, bulk_change_id, status=status, page=last, page_size=ROWS_PAGE_SIZE
        )
    outcome = outcome_of(bc.status, bc.counts, held=bc.held)
    moving = outcome.value in ("in_progress", "waiting_on_carrier") and not bc.held
    return page(
        request,
        "bulk_change.html",
        user=user,
        bc=bc,
        outcome=outcome,
        refresh=REFRESH_SECONDS if moving else None,
        rows=rows,
        pages=last,
        status=status.value if status else "",
        statuses=[s.value for s in DeviceChangeStatus],
        dagster_url=dagster_runs_url(bulk_change_id),
        retryable=q.retryable_count(engine, user.caller.tenant_id, bulk_change_id),
        approval=approvals.get_approval(engine, bulk_change_id, bc.status),
        can_approve=role_refusal(user.caller, Role.APPROVER) is None,  # the API's role rule
    )


@router.get("/bulk-changes/{bulk_change_id}/devices.csv")
def results_csv(request: Request, user: User, engine: Engine, bulk_change_id: BulkChangeId) -> Response:
    """Every (matching) device row as CSV, written by the API's writer (spreadsheet-safe cells)."""
    _summary(engine, user, bulk_change_id)
    status = _row_status(request.query_params.get("status"))
    response = download_response(engine, user.caller.tenant_id, bulk_change_id, status, "csv")
    response.headers["Cache-Control"] = "no-store"  # tenant data, as the pages: not kept by a browser or proxy
    return response


@router.get("/bulk-changes/{bulk_change_id}/rows/{row_id}")
def row_page(
    request: Request,
    user: User,
    engine: Engine,
    bulk_change_id: BulkChangeId,
    row_id: RowId,
) -> Response:
    """One device row and its carrier exchanges: requests and answers as stored (redacted)."""
    bc = _summary(engine, user, bulk_change_id)
    found = q.row_exchanges(engine, user.caller.tenant_id, bulk_change_id, row_id)
    if found is None:
        raise NotFound(f"no device row {row_id} in bulk change {bulk_change_id}")
    return page(request, "row.html", user=user, bc=bc, row=found.row, exchanges=found.exchanges)


# --- one device --------------------------------------------------------------------------------


@router.get("/devices/{device_id}")
def device_page(request: Request, user: User, engine: Engine, device_id: DeviceId) -> Response:
    """Every bulk change that touched the device, and its before -> after history."""
    found = q.device_view(engine, user.caller.tenant_id, device_id)
    if found is None:
        raise NotFound(f"no device {device_id} for this tenant")
    return page(request, "device.html", user=user, view=found)


# --- one submission (a request split by service provider) ---------------------------------------

REFUSED_SHOWN = 100  # devices not placed listed on the page; the CSV has every one


@dataclass(frozen=True)
class _Child:
    view: ChildView
    total: int
    done: int


FINAL_STATUS_VALUES = frozenset(s.value for s in FINAL_DEVICE_STATUSES)


def _done(counts: dict[str, int]) -> int:
    """Rows that reached a final status (the progress bar's numerator)."""
    return sum(n for s, n in counts.items() if s in FINAL_STATUS_VALUES)


@router.get("/submissions/{submission_id}")
def submission_page(request: Request, user: User, engine: Engine, submission_id: SubmissionId) -> Response:
    """A submission: its status (derived from its children), progress, each child bulk change linked
    to its own page (where it is cancelled, retried or approved), the devices no carrier took."""
    view = get_submission(engine, submission_id, user.caller.tenant_id)
    if view is None:
        raise NotFound(f"no submission {submission_id} for this tenant")
    moving = not view.final and view.outcome.value in ("in_progress", "waiting_on_carrier")
    children = [_Child(c, sum(c.counts.values()), _done(c.counts)) for c in view.children]
    return page(
        request,
        "submission.html",
        user=user,
        view=view,
        outcome=view.outcome,
        done=view.done,
        children=children,
        refused=view.refused[:REFUSED_SHOWN],
        refresh=REFRESH_SECONDS if moving else None,
    )


@router.get("/submissions/{submission_id}/devices.csv")
def submission_csv(request: Request, user: User, engine: Engine, submission_id: SubmissionId) -> Response:
    """Every device of the submission as one CSV (the API's submission download): each child's rows
    with its bulk change and service provider, then the devices no service provider took."""
    if get_submission(engine, submission_id, user.caller.tenant_id) is None:
        raise NotFound(f"no submission {submission_id} for this tenant")
    rows = iter_submission_results(engine, submission_id, user.caller.tenant_id)
    return StreamingResponse(
        submission_csv_chunks(rows),
        media_type=MEDIA_TYPES["csv"],
        headers={
            "Content-Disposition": f'attachment; filename="submission-{submission_id}-devices.csv"',
            "Cache-Control": "no-store",  # tenant data, as the pages
        },
    )
