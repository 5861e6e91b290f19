"""Four-eyes approval in the console (both backends): a bulk change awaiting approval shows its
approval (why, who submitted, when it expires) and, for a key with the approver role, Approve and
Reject; each is a confirmation page and a POST with the session's CSRF token that calls the same
``store.approvals`` as the API, so the submitter's own key is refused with the four-eyes rule's
message, a rejection needs a reason and keeps it exactly, and a viewer sees no buttons and is
refused (403) when it posts anyway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from bulkchange_pipeline.console.render import visible
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.store import approvals
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change

from .conftest import Console, csrf_of, sign_in


@pytest.fixture
def held(console: Console) -> Iterator[Console]:
    """The demo tenant's policy holds more than 2 devices for approval."""
    approvals.set_policy(console.engine, console.api.seed.tenant_id, ApprovalPolicy(max_devices=2))
    yield console


def _browser(console: Console, name: str, *roles: str) -> TestClient:
    key = create_api_key(console.engine, console.api.seed.tenant_id, name, roles)
    return sign_in(console.fresh_client(), key)


def _waiting(console: Console, n: int = 3) -> int:
    """A bulk change awaiting approval, submitted over the API by the demo key (``ops``)."""
    body = console.api.status_body(console.api.seed.sample_iccids["jasper"][:n])
    r = console.api.client.post("/bulk-changes", json=body, headers=console.api.demo)
    assert r.status_code == 201 and r.json()["status"] == "AWAITING_APPROVAL", r.text
    return int(r.json()["id"])


def _post(client: TestClient, bc_id: int, action: str, **fields: str):
    csrf = csrf_of(client.get(f"/console/bulk-changes/{bc_id}/{action}").text)
    return client.post(f"/console/bulk-changes/{bc_id}/{action}", data={"csrf": csrf, **fields})


def test_page_shows_the_approval_and_another_user_approves(held: Console) -> None:
    bc_id = _waiting(held)
    lead = _browser(held, "lead", "approver")
    page = lead.get(f"/console/bulk-changes/{bc_id}").text
    assert 'id="approval"' in page and "3 devices" in page and "api-key:ops at" in page
    assert 'id="approval-expires"' in page
    assert f'href="/console/bulk-changes/{bc_id}/approve"' in page
    assert f'href="/console/bulk-changes/{bc_id}/reject"' in page
    confirm = lead.get(f"/console/bulk-changes/{bc_id}/approve")
    assert confirm.status_code == 200 and "accepted device rows go to the carrier" in confirm.text
    assert get_bulk_change(held.engine, bc_id)["status"] == "AWAITING_APPROVAL"  # the GET changed nothing
    done = _post(lead, bc_id, "approve")
    assert done.status_code == 200, done.text
    assert f"Approved by api-key:lead: bulk change {bc_id} is NEW" in done.text
    assert get_bulk_change(held.engine, bc_id)["status"] == "NEW"
    after = lead.get(f"/console/bulk-changes/{bc_id}").text
    assert "Approved by</dt>" in after and "api-key:lead at" in after
    assert f'href="/console/bulk-changes/{bc_id}/approve"' not in after  # decided: no buttons
    again = _post(lead, bc_id, "approve")
    assert again.status_code == 409 and "no longer awaiting approval: approved by api-key:lead" in again.text


def test_the_submitter_cannot_approve_its_own(held: Console) -> None:
    key = create_api_key(held.engine, held.api.seed.tenant_id, "both", ("submitter", "approver"))
    body = held.api.status_body(held.api.seed.sample_iccids["jasper"][:3])
    r = held.api.client.post("/bulk-changes", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201 and r.json()["status"] == "AWAITING_APPROVAL", r.text
    bc_id = r.json()["id"]
    own = sign_in(held.fresh_client(), key)
    refused = _post(own, bc_id, "approve")
    assert refused.status_code == 403
    assert "four-eyes rule: a bulk change is approved by someone other than the one who submitted it" in refused.text
    assert get_bulk_change(held.engine, bc_id)["status"] == "AWAITING_APPROVAL"
    # Withdrawing (rejecting) its own is allowed: four eyes are needed to act, not to refrain.
    withdrawn = _post(own, bc_id, "reject", reason="wrong devices")
    assert withdrawn.status_code == 200 and "nothing was sent" in withdrawn.text


def test_reject_needs_a_reason_then_shows_it(held: Console) -> None:
    bc_id = _waiting(held)
    lead = _browser(held, "lead", "approver")
    assert 'name="reason"' in lead.get(f"/console/bulk-changes/{bc_id}/reject").text
    for blank in ({}, {"reason": ""}, {"reason": " \n\t "}):
        r = _post(lead, bc_id, "reject", **blank)
        assert r.status_code == 422 and "a rejection needs a reason" in r.text
    assert get_bulk_change(held.engine, bc_id)["status"] == "AWAITING_APPROVAL"
    done = _post(lead, bc_id, "reject", reason="not during <the> freeze")
    assert done.status_code == 200 and "Rejected by api-key:lead" in done.text
    assert count_rows_by_status(held.engine, bc_id) == {"CANCELLED": 3}
    page = lead.get(f"/console/bulk-changes/{bc_id}").text
    assert "Rejected by</dt>" in page and "not during &lt;the&gt; freeze" in page


def test_viewer_and_submitter_see_no_buttons_and_a_forged_post_is_refused(held: Console) -> None:
    bc_id = _waiting(held)
    for browser in (_browser(held, "audit", "viewer"), held.client):  # viewer; the demo key: submitter only
        page = browser.get(f"/console/bulk-changes/{bc_id}").text
        assert 'id="approval"' in page  # it sees the approval...
        assert f"/console/bulk-changes/{bc_id}/approve" not in page  # ...but no buttons
        assert f"/console/bulk-changes/{bc_id}/reject" not in page
        for action, fields in (("approve", {}), ("reject", {"reason": "x"})):
            r = _post(browser, bc_id, action, **fields)
            assert r.status_code == 403 and "needs the approver role" in r.text
    no_csrf = _browser(held, "lead", "approver").post(f"/console/bulk-changes/{bc_id}/approve")
    assert no_csrf.status_code == 403
    assert get_bulk_change(held.engine, bc_id)["status"] == "AWAITING_APPROVAL"
    assert approvals.get_approval(held.engine, bc_id, "AWAITING_APPROVAL")["decided_by"] is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(min_size=0, max_size=300))
def test_any_reject_reason_is_stored_exactly_or_refused_with_a_message(held: Console, reason: str) -> None:
    bc_id = _waiting(held)
    lead = _browser(held, "lead-h", "approver")
    r = _post(lead, bc_id, "reject", reason=reason)
    assert r.status_code < 500, r.text
    approval = approvals.get_approval(held.engine, bc_id, get_bulk_change(held.engine, bc_id)["status"])
    if r.status_code == 200:
        assert approval["state"] == "rejected" and approval["reason"] == reason
        assert str(escape(visible(reason))) in r.text  # shown as the console shows text (invisibles as \\u....)
    else:
        assert r.status_code == 422 and "Refused: " in r.text
        assert approval["state"] == "pending" and approval["reason"] is None  # nothing stored
