"""Four-eyes approval through the API, the store and the CLI (both backends; no pipeline run).

- every mutating API-key route has a role check (walked over the app's routes, so a new route
  without one fails here), and a viewer key is answered 403 with the rule on each of them;
- reject needs a reason and keeps it exactly (Hypothesis over arbitrary text: stored and returned
  as sent, or 422, never a 5xx); approve, reject, expiry and cancel: only one decision wins;
- resume and retry-failed never start a waiting bulk change; rebuild-status never releases it;
- the CLI: ``approve --as`` refuses the submitter's own name, ``reject --reason``, the policy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import ChangeType, Integration
from bulkchange_pipeline.domain.approval import ApprovalPolicy, approval_needed, irreversible_reason
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.intake.auth import ROLE_CHECKS, authenticated_caller
from bulkchange_pipeline.store import approvals
from bulkchange_pipeline.store.api_keys import create_api_key, identify_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change, list_waiting
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.operations import OperationRefused, resume_bulk_change
from bulkchange_pipeline.store.rebuild import rebuild_status

from ..intake.test_api import Api, make_api

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
READ_ONLY_POSTS = {"/bulk-changes:dry-run"}  # validates and stores nothing: any key may


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    for a in make_api(engine, db_url, devices_per_carrier=20):
        approvals.set_policy(engine, a.seed.tenant_id, ApprovalPolicy(max_devices=2, irreversible=True))
        yield a


def _key(api: Api, name: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_api_key(api.engine, api.seed.tenant_id, name, roles)}"}


def _waiting(api: Api, n: int = 3) -> int:
    """A bulk change the policy holds (more than 2 devices), submitted by the ``ops`` key."""
    r = api.client.post("/bulk-changes", json=api.status_body(api.seed.sample_iccids["jasper"][:n]), headers=api.demo)
    assert r.status_code == 201 and r.json()["status"] == "AWAITING_APPROVAL", r.text
    return r.json()["id"]


# --- roles ----------------------------------------------------------------------------------------


def _api_routes(routes: Any) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(inner.routes)


def _calls(dependant: Any) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _keyed_mutating_routes() -> list[tuple[str, str]]:
    out = []
    for route in _api_routes(create_app("sqlite://").routes):
        calls = _calls(route.dependant)
        if authenticated_caller in calls:
            out += [(method, route.path) for method in sorted(route.methods & MUTATING)]
    return out


def test_every_mutating_route_with_an_api_key_has_a_role_check() -> None:
    routes = _keyed_mutating_routes()
    assert ("POST", "/bulk-changes/{bulk_change_id}/approve") in routes and len(routes) >= 10
    by_route = {(m, r.path): r for r in _api_routes(create_app("sqlite://").routes) for m in r.methods}
    missing = [
        (method, path)
        for method, path in routes
        if path not in READ_ONLY_POSTS and not set(ROLE_CHECKS) & _calls(by_route[method, path].dependant)
    ]
    assert missing == [], f"mutating routes without a role check (auth.submitter_caller / approver_caller): {missing}"


def test_a_viewer_is_refused_on_every_mutating_route_with_the_rule(api: Api) -> None:
    viewer = _key(api, "vic", "viewer")
    bc_id = _waiting(api)
    for method, path in _keyed_mutating_routes():
        url = (
            path.replace("{bulk_change_id}", str(bc_id))
            .replace("{subscription_id}", "1")
            .replace("{delivery_id}", "1")
            .replace("{submission_id}", "1")  # ids in digits: a malformed one is 422 before any role check
        )
        r = api.client.request(method, url, headers=viewer, json={"reason": "x"})
        if path in READ_ONLY_POSTS:
            assert r.status_code != 403, (method, path)
            continue
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "this API key has the role viewer" in r.json()["detail"] and "role" in r.json()["detail"]
    assert get_bulk_change(api.engine, bc_id)["status"] == "AWAITING_APPROVAL"  # nothing changed
    assert api.client.get(f"/bulk-changes/{bc_id}", headers=viewer).status_code == 200  # a viewer reads


def test_keys_made_before_roles_keep_every_right_and_new_ones_default_to_submitter(api: Api) -> None:
    with api.engine.begin() as conn:  # a key as revision 0013 left an older one: the column default
        conn.execute(
            sa.text("INSERT INTO api_key (tenant_id, name, key_hash, created_at) VALUES (:t, 'old', 'h', :c)"),
            {"t": api.seed.tenant_id, "c": utcnow()},
        )
        roles = conn.execute(sa.text("SELECT roles FROM api_key WHERE name = 'old'")).scalar_one()
    assert roles == "submitter,approver"
    key = create_api_key(api.engine, api.seed.tenant_id, "new")
    assert {r.value for r in identify_key(api.engine, key).roles} == {"submitter"}
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        create_api_key(api.engine, api.seed.tenant_id, "x", ["admin"])


# --- decisions ------------------------------------------------------------------------------------


def test_reject_needs_a_reason_and_cancels_every_row_with_it(api: Api) -> None:
    lead = _key(api, "lead", "approver")
    bc_id = _waiting(api)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        r = api.client.post(f"/bulk-changes/{bc_id}/reject", headers=lead, json=body)
        assert r.status_code == 422, (body, r.text)
    for raw in ('{"reason": "\\ud800"}', '{"reason": "a\\u0000b"}', '{"reason": "\\u001b[31m"}'):  # no UTF-8, NUL, ESC
        r = api.client.post(
            f"/bulk-changes/{bc_id}/reject", headers={**lead, "Content-Type": "application/json"}, content=raw
        )
        assert r.status_code == 422, (raw, r.text)
    r = api.client.post(f"/bulk-changes/{bc_id}/reject", headers=lead, json={"reason": "wrong rate plan month"})
    assert r.status_code == 200 and (r.json()["state"], r.json()["status"]) == ("rejected", "CANCELLED")
    assert count_rows_by_status(api.engine, bc_id) == {"CANCELLED": 3}
    rows = api.client.get(f"/bulk-changes/{bc_id}/devices", headers=api.demo).json()["items"]
    assert {row["statusDetails"] for row in rows} == {"Rejected by api-key:lead: wrong rate plan month"}
    status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()
    assert (status["approval"]["state"], status["approval"]["reason"]) == ("rejected", "wrong rate plan month")
    late = api.client.post(f"/bulk-changes/{bc_id}/approve", headers=lead)
    assert late.status_code == 409 and "rejected by api-key:lead" in late.json()["detail"]


def test_approve_of_something_not_waiting_or_not_ours_is_refused(api: Api) -> None:
    lead = _key(api, "lead", "approver")
    body = {**api.status_body(api.seed.sample_iccids["jasper"][:1]), "statusUpdate": {"status": "ACTIVATED"}}
    small = api.client.post("/bulk-changes", json=body, headers=api.demo).json()["id"]  # one reversible change
    r = api.client.post(f"/bulk-changes/{small}/approve", headers=lead)
    assert r.status_code == 409 and "does not need approval" in r.json()["detail"]
    bc_id = _waiting(api)
    other = api.client.post(f"/bulk-changes/{bc_id}/approve", headers=api.other)
    assert other.status_code in (403, 404)  # the other tenant's key: no role (old default) or not found
    stranger = _key_other(api)
    assert api.client.post(f"/bulk-changes/{bc_id}/approve", headers=stranger).status_code == 404


def _key_other(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_api_key(api.engine, api.seed.other_tenant_id, 'x', ['approver'])}"}


def test_a_cancelled_waiting_one_cannot_be_approved_and_resume_or_rebuild_never_release_one(api: Api) -> None:
    lead = _key(api, "lead", "approver")
    bc_id = _waiting(api)
    assert api.client.post(f"/bulk-changes/{bc_id}/resume", headers=api.demo).status_code == 409
    assert api.client.post(f"/bulk-changes/{bc_id}/retry-failed", headers=api.demo).status_code == 409
    with pytest.raises(OperationRefused, match="AWAITING_APPROVAL"):
        resume_bulk_change(api.engine, api.seed.tenant_id, bc_id, by="t")
    rebuild_status(api.engine, tenant_id=api.seed.tenant_id)
    assert get_bulk_change(api.engine, bc_id)["status"] == "AWAITING_APPROVAL"
    assert bc_id not in [q.id for q in list_waiting(api.engine, 0, 100)]  # the sensor's query

    assert api.client.post(f"/bulk-changes/{bc_id}/cancel", headers=api.demo).status_code == 200
    status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()
    assert (status["status"], status["approval"]["state"]) == ("CANCELLED", "cancelled")
    r = api.client.post(f"/bulk-changes/{bc_id}/approve", headers=lead)
    assert r.status_code == 409 and "no longer awaiting approval" in r.json()["detail"]


def test_dry_run_says_it_would_wait(api: Api) -> None:
    r = api.client.post(
        "/bulk-changes:dry-run", json=api.status_body(api.seed.sample_iccids["jasper"][:3]), headers=api.demo
    )
    assert r.status_code == 200 and "it would await approval because 3 devices" in r.json()["message"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(min_size=0, max_size=300))
def test_any_reject_reason_is_kept_exactly_or_refused_with_a_4xx(api: Api, reason: str) -> None:
    lead = _key(api, "lead-h", "approver")
    bc_id = _waiting(api)
    r = api.client.post(f"/bulk-changes/{bc_id}/reject", headers=lead, json={"reason": reason})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        assert r.json()["state"] == "rejected"
        status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()
        assert status["approval"]["reason"] == reason
        assert status["status"] == "CANCELLED"
    else:
        assert r.status_code == 422 and r.json()["detail"]
        assert get_bulk_change(api.engine, bc_id)["status"] == "AWAITING_APPROVAL"  # nothing stored


# --- race: two real transactions on PostgreSQL ----------------------------------------------------


@pytest.mark.parametrize("first", ["approve", "reject", "expire"])
def test_only_one_decision_wins_when_two_interleave(api: Api, first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first decision is held inside its transaction (after its conditional UPDATE, before its
    commit); the second then runs for real and must wait for the row lock; the first commits; the
    second is refused (or on SQLite waits for the writer and is refused the same way)."""
    if api.engine.dialect.name != "postgresql":
        pytest.skip("row locks and READ COMMITTED re-checks are PostgreSQL's; SQLite serialises writers")
    tenant, bc_id = api.seed.tenant_id, _waiting(api)
    bob, carol = approvals.Actor("api-key:bob", "api-key#900"), approvals.Actor("api-key:carol", "api-key#901")
    inside, go = threading.Event(), threading.Event()
    real_record = approvals._record

    def held_record(conn, *args, **kw):  # noqa: ANN001 - the store's private signature
        if threading.current_thread().name == "first":
            inside.set()
            assert go.wait(10)
        return real_record(conn, *args, **kw)

    monkeypatch.setattr(approvals, "_record", held_record)
    decisions = {
        "approve": lambda: approvals.approve_bulk_change(api.engine, tenant, bc_id, by=bob),
        "reject": lambda: approvals.reject_bulk_change(api.engine, tenant, bc_id, by=bob, reason="no"),
        "expire": lambda: approvals.expire_overdue(api.engine, utcnow() + timedelta(days=30)),
    }
    results: dict[str, Any] = {}

    def run(name: str, work: Any) -> None:
        try:
            results[name] = work()
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[name] = exc

    t1 = threading.Thread(target=run, args=("first", decisions[first]), name="first")
    t1.start()
    assert inside.wait(10)
    second = "reject" if first == "approve" else "approve"
    second_work = {
        "approve": lambda: approvals.approve_bulk_change(api.engine, tenant, bc_id, by=carol),
        "reject": lambda: approvals.reject_bulk_change(api.engine, tenant, bc_id, by=carol, reason="race"),
    }[second]
    t2 = threading.Thread(target=run, args=("second", second_work), name="second")
    t2.start()
    with api.engine.connect() as conn:  # the second is blocked on the first's row lock, really
        for _ in range(100):
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if waiting:
                break
            threading.Event().wait(0.05)
    assert waiting == 1 and t2.is_alive()
    go.set()
    t1.join(10)
    t2.join(10)
    assert not isinstance(results["first"], Exception), results["first"]
    assert isinstance(results["second"], OperationRefused), results["second"]
    assert "no longer awaiting approval" in str(results["second"])
    final = get_bulk_change(api.engine, bc_id)
    expected = {"approve": ("NEW", {"NEW": 3}), "reject": ("CANCELLED", {"CANCELLED": 3})}
    assert (final["status"], final["counts"]) == expected["approve" if first == "approve" else "reject"]
    with api.engine.connect() as conn:
        state = approvals.approval_of(conn, bc_id, final["status"])
    assert (
        state is not None
        and state["state"] == {"approve": "approved", "reject": "rejected", "expire": "expired"}[first]
    )


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_policy_approve_as_and_reject(api: Api, db_url: str) -> None:
    runner = CliRunner()
    base = ["--tenant", "demo", "--database-url", db_url]
    shown = runner.invoke(main, ["approval-policy", "set", "--max-devices", "2", "--irreversible", *base])
    assert shown.exit_code == 0 and "more than 2 devices or changes the carrier cannot reverse" in shown.output
    assert "expires after 72 hours" in runner.invoke(main, ["approval-policy", "show", *base]).output

    made = runner.invoke(main, ["api-key", "create", "--name", "audit", "--role", "viewer", *base])
    assert made.exit_code == 0 and "(viewer)" in made.output
    listed = runner.invoke(main, ["api-key", "list", *base])
    assert "viewer" in listed.output and "submitter,approver" not in listed.output.split("audit")[1].split("\n")[0]

    from bulkchange_pipeline.domain import BulkChangeRequest
    from bulkchange_pipeline.intake.submit import submit

    request = BulkChangeRequest.model_validate(api.status_body(api.seed.sample_iccids["jasper"][:3]))
    outcome = submit(api.engine, api.seed.tenant_id, request, "cli:alice")
    assert outcome.status == "AWAITING_APPROVAL"
    own = runner.invoke(main, ["approve", str(outcome.bulk_change_id), "--as", "alice", *base])
    assert own.exit_code == 1 and "four-eyes rule" in own.output
    ok = runner.invoke(main, ["approve", str(outcome.bulk_change_id), "--as", "bob", *base])
    assert ok.exit_code == 0 and "approved by cli:bob; it is NEW" in ok.output

    again = submit(api.engine, api.seed.tenant_id, request.model_copy(update={"idempotency_key": "k2"}), "cli:alice")
    blank = runner.invoke(main, ["reject", str(again.bulk_change_id), "--reason", "  ", *base])
    assert blank.exit_code == 1 and "--reason must not be blank" in blank.output
    rejected = runner.invoke(main, ["reject", str(again.bulk_change_id), "--reason", "not this week", *base])
    assert rejected.exit_code == 0 and "rejected by cli:" in rejected.output and "CANCELLED" in rejected.output


# --- the rule table --------------------------------------------------------------------------------


def test_the_irreversible_table() -> None:
    jasper, teal = Integration.JASPER, Integration.TEAL
    assert irreversible_reason(ChangeType.STATUS_UPDATE, jasper, [{"status": "retired"}])
    assert irreversible_reason(ChangeType.STATUS_UPDATE, jasper, [{"status": "ACTIVATED"}]) is None
    assert irreversible_reason(ChangeType.STATUS_UPDATE, Integration.TELEGENCE, [{"status": "C"}])
    assert irreversible_reason(ChangeType.STATUS_UPDATE, teal, [{"status": "online"}]) is None
    assert irreversible_reason(ChangeType.CHANGE_ICCID_AND_IMEI, teal, [{}])
    assert irreversible_reason(ChangeType.CARRIER_RATE_PLAN_CHANGE, jasper, [{"status": "RETIRED"}]) is None
    policy = ApprovalPolicy(max_devices=10, irreversible=False)
    assert approval_needed(policy, 10, ChangeType.ARCHIVAL, jasper, []) is None  # not more than 10; rule off
    assert approval_needed(policy, 11, ChangeType.ARCHIVAL, jasper, []) == "11 devices is more than the policy's 10"
    assert approval_needed(ApprovalPolicy(max_devices=0), 0, ChangeType.ARCHIVAL, jasper, []) is None  # all refused


# --- console ---------------------------------------------------------------------------------------


def test_the_console_refuses_a_viewer_what_the_api_refuses_and_shows_awaiting_approval(api: Api) -> None:
    from ..console.conftest import csrf_of, sign_in

    bc_id = _waiting(api)
    viewer_key = create_api_key(api.engine, api.seed.tenant_id, "vic", ["viewer"])
    browser = sign_in(api.client.__class__(api.client.app), viewer_key)
    page = browser.get(f"/console/bulk-changes/{bc_id}")
    assert page.status_code == 200 and "AWAITING_APPROVAL" in page.text
    confirm = browser.get(f"/console/bulk-changes/{bc_id}/cancel")
    r = browser.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf_of(confirm.text)})
    assert r.status_code == 403 and "needs the submitter role" in r.text
    assert get_bulk_change(api.engine, bc_id)["status"] == "AWAITING_APPROVAL"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(min_size=0, max_size=120))
def test_any_cli_reject_reason_is_kept_exactly_or_refused_in_one_line(api: Api, db_url: str, reason: str) -> None:
    bc_id = _waiting(api)
    r = CliRunner().invoke(
        main, ["reject", str(bc_id), "--reason", reason, "--tenant", "demo", "--database-url", db_url]
    )
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    status = get_bulk_change(api.engine, bc_id)["status"]
    if r.exit_code == 0:
        with api.engine.connect() as conn:
            assert approvals.approval_of(conn, bc_id, status)["reason"] == reason
        assert status == "CANCELLED"
    else:
        assert r.exit_code in (1, 2) and r.output.strip() and status == "AWAITING_APPROVAL"
