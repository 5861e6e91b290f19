"""Console sign-in over HTTP (``create_app``, both backends): an API key checked as the API checks
it, a signed session cookie that never holds the key, CSRF on every POST, and tenant isolation."""

from __future__ import annotations

from bulkchange_pipeline.console.session import COOKIE
from bulkchange_pipeline.store.api_keys import list_api_keys, revoke_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status

from .conftest import Console, csrf_of, sign_in


def test_no_cookie_redirects_to_sign_in_and_back(console: Console) -> None:
    browser = console.fresh_client()
    r = browser.get("/console/bulk-changes/1?status=ERROR", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Fbulk-changes%2F1%3Fstatus%3DERROR"
    form = browser.get(r.headers["location"])
    assert 'name="next" value="/console/bulk-changes/1?status=ERROR"' in form.text
    done = browser.post(
        "/console/login",
        data={"api_key": console.demo_key, "csrf": csrf_of(form.text), "next": "/console/bulk-changes/1?status=ERROR"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/bulk-changes/1?status=ERROR"


def test_sign_in_sets_a_signed_http_only_strict_cookie_without_the_key(console: Console) -> None:
    browser = console.fresh_client()
    form = browser.get("/console/login")
    r = browser.post(
        "/console/login", data={"api_key": console.demo_key, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("bulkchange_console="))
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/console" in attrs and "secure" not in attrs
    assert console.demo_key not in cookie and console.demo_key.removeprefix("bc_") not in cookie
    home = browser.get("/console/")
    assert home.status_code == 200 and "signed in as api-key:ops" in home.text
    assert home.headers["cache-control"] == "no-store"


def test_cookie_is_secure_over_https(console: Console) -> None:
    browser = console.fresh_client(base_url="https://testserver")
    form = browser.get("/console/login")
    r = browser.post(
        "/console/login", data={"api_key": console.demo_key, "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("bulkchange_console="))
    assert "secure" in cookie.lower()


def test_wrong_key_is_refused_and_signs_nobody_in(console: Console) -> None:
    browser = console.fresh_client()
    form = browser.get("/console/login")
    r = browser.post(
        "/console/login", data={"api_key": "bc_not-a-key", "csrf": csrf_of(form.text)}, follow_redirects=False
    )
    assert r.status_code == 401 and "not valid" in r.text
    assert not any(c.startswith("bulkchange_console=") for c in r.headers.get_list("set-cookie"))
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_without_its_form_token_is_refused(console: Console) -> None:
    browser = console.fresh_client()
    r = browser.post("/console/login", data={"api_key": console.demo_key}, follow_redirects=False)
    assert r.status_code == 403
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_tampered_cookie_and_revoked_key_end_the_session(console: Console) -> None:
    browser = sign_in(console.fresh_client(), console.demo_key)
    token = browser.cookies.get("bulkchange_console")
    key_id, tenant, expires, session_id, sig = token.split(".")
    browser.cookies.set(
        "bulkchange_console",
        f"{key_id}.{console.api.seed.other_tenant_id}.{expires}.{session_id}.{sig}",
        path="/console",
    )
    assert browser.get("/console/", follow_redirects=False).status_code == 303  # signature no longer matches
    browser.cookies.set("bulkchange_console", token, path="/console")
    assert browser.get("/console/").status_code == 200
    [ops_key] = [k for k in list_api_keys(console.engine, console.api.seed.tenant_id) if k.name == "ops"]
    revoke_api_key(console.engine, console.api.seed.tenant_id, ops_key.id)
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_session_token(console: Console) -> None:
    browser = sign_in(console.fresh_client(), console.demo_key)
    assert browser.post("/console/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert browser.get("/console/").status_code == 200
    csrf = csrf_of(browser.get("/console/").text)
    r = browser.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_a_cookie_replayed_after_sign_out_is_refused(console: Console) -> None:
    """Sign-out ends the session on the server, not only in the browser: a copy of the cookie taken
    before (another tab, a proxy log, a stolen laptop) no longer opens the console."""
    browser = sign_in(console.fresh_client(), console.demo_key)
    token = browser.cookies.get(COOKIE)
    csrf = csrf_of(browser.get("/console/").text)
    assert browser.post("/console/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    replay = console.fresh_client()
    r = replay.get("/console/", headers={"Cookie": f"{COOKIE}={token}"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    again = replay.post("/console/logout", data={"csrf": csrf}, headers={"Cookie": f"{COOKIE}={token}"})
    assert "signed in as" not in again.text  # a revoked session cannot sign out twice either
    assert console.client.get("/console/").status_code == 200  # the key's other sessions live on


def test_each_sign_in_is_its_own_session_with_its_own_csrf_token(console: Console) -> None:
    first = sign_in(console.fresh_client(), console.demo_key)
    second = sign_in(console.fresh_client(), console.demo_key)  # same key, same second
    assert first.cookies.get(COOKIE) != second.cookies.get(COOKIE)
    csrf_first, csrf_second = csrf_of(first.get("/console/").text), csrf_of(second.get("/console/").text)
    assert csrf_first != csrf_second
    bc_id = console.api.submit(console.api.seed.sample_iccids["jasper"][:2])
    refused = second.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf_first})
    assert refused.status_code == 403 and count_rows_by_status(console.engine, bc_id) == {"NEW": 2}
    done = second.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf_second})
    assert done.status_code == 200 and count_rows_by_status(console.engine, bc_id) == {"CANCELLED": 2}


def test_another_tenant_sees_none_of_it(console: Console) -> None:
    bc_id, rows = console.failed_bulk_change()
    intruder = sign_in(console.fresh_client(), console.other_key)
    home = intruder.get("/console/")
    assert home.status_code == 200 and f'href="/console/bulk-changes/{bc_id}"' not in home.text
    for path in (
        f"/console/bulk-changes/{bc_id}",
        f"/console/bulk-changes/{bc_id}/devices.csv",
        f"/console/bulk-changes/{bc_id}/rows/{rows[1]['id']}",
        f"/console/bulk-changes/{bc_id}/cancel",
        f"/console/devices/{rows[0]['device_id']}",
    ):
        r = intruder.get(path)
        assert r.status_code == 404 and "Not found" in r.text, path
        assert "Rate plan locked" not in r.text
    searched = intruder.get(f"/console/search?q={rows[0]['iccid']}")
    assert searched.status_code == 404 and "Nothing of this tenant" in searched.text
    by_id = intruder.get(f"/console/search?q={bc_id}", follow_redirects=False)
    assert by_id.status_code == 404
    csrf = csrf_of(home.text)
    r = intruder.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf})
    assert r.status_code == 404
    assert console.api.client.get(f"/bulk-changes/{bc_id}", headers=console.api.demo).json()["status"] == "PROCESSED"
