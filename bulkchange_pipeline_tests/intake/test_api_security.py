"""API keys, tenant isolation on every endpoint, and errors as problem documents (both backends)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bulkchange_pipeline.intake.api import install_api
from bulkchange_pipeline.intake.parsing import IntakeLimits
from bulkchange_pipeline.store.api_keys import (
    create_api_key,
    list_api_keys,
    revoke_api_key,
    tenant_for_key,
)
from bulkchange_pipeline.store.schema import api_key

from .conftest import table_counts
from .test_api import Api, make_api

PROBLEM_KEYS = {"type", "title", "status", "detail"}


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def assert_problem(r, status: int, *, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status and body["detail"]
    assert contains.lower() in body["detail"].lower()
    return body


def test_keys_are_stored_hashed_and_resolve_to_their_tenant(api: Api) -> None:
    key = create_api_key(api.engine, api.seed.tenant_id, "portal")
    assert key.startswith("bc_") and len(key) == 35
    with api.engine.connect() as conn:
        stored = conn.execute(sa.select(api_key.c.key_hash).where(api_key.c.name == "portal")).scalar_one()
    assert stored == hashlib.sha256(key.encode()).hexdigest() and key not in stored
    assert tenant_for_key(api.engine, key) == api.seed.tenant_id
    assert tenant_for_key(api.engine, key + "x") is None and tenant_for_key(api.engine, "") is None
    [portal] = [k for k in list_api_keys(api.engine, api.seed.tenant_id) if k.name == "portal"]
    assert not revoke_api_key(api.engine, api.seed.other_tenant_id, portal.id)  # not the other tenant's to revoke
    assert revoke_api_key(api.engine, api.seed.tenant_id, portal.id)
    assert tenant_for_key(api.engine, key) is None
    assert_problem(
        api.client.get("/bulk-changes/1", headers={"Authorization": f"Bearer {key}"}), 401, contains="revoked"
    )


def test_missing_or_bad_key_is_401_on_every_route(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:1])
    calls = [
        ("post", "/bulk-changes"),
        ("post", "/bulk-changes:dry-run"),
        ("post", "/bulk-changes/csv"),
        ("get", f"/bulk-changes/{bc_id}"),
        ("get", f"/bulk-changes/{bc_id}/devices"),
        ("post", f"/bulk-changes/{bc_id}/cancel"),
        ("post", f"/bulk-changes/{bc_id}/retry-failed"),
    ]
    for headers in (
        {},
        {"Authorization": "Bearer bc_not-a-key"},
        {"X-API-Key": "x" * 500},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ):
        for method, path in calls:
            r = api.client.request(
                method, path, headers=headers, json=api.status_body(["x"]) if method == "post" else None
            )
            assert_problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).status_code == 200  # the valid key still works


def test_other_tenants_bulk_change_is_not_found_on_every_endpoint(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:3])
    before = table_counts(api.engine)
    for method, path in [
        ("get", f"/bulk-changes/{bc_id}"),
        ("get", f"/bulk-changes/{bc_id}/devices"),
        ("get", f"/bulk-changes/{bc_id}/devices?format=csv"),
        ("post", f"/bulk-changes/{bc_id}/cancel"),
        ("post", f"/bulk-changes/{bc_id}/retry-failed"),
    ]:
        other = api.client.request(method, path, headers=api.other)
        missing = api.client.request(method, path.replace(f"/{bc_id}", "/999999"), headers=api.other)
        assert_problem(other, 404, contains=f"no bulk change {bc_id}")
        assert other.json()["title"] == missing.json()["title"]  # indistinguishable from an id that does not exist
    assert table_counts(api.engine) == before
    assert api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()["counts"] == {"NEW": 3}


def test_other_tenants_service_provider_and_devices_are_refused(api: Api) -> None:
    before = table_counts(api.engine)
    body = api.status_body(api.seed.sample_iccids["jasper"][:2])  # the demo tenant's provider and devices
    for path in ("/bulk-changes", "/bulk-changes:dry-run"):
        assert_problem(
            api.client.post(path, json=body, headers=api.other), 404, contains=f"no service provider {api.jasper}"
        )
    csv_form = {"changeType": "1", "serviceProviderId": str(api.jasper)}
    upload = api.client.post(
        "/bulk-changes/csv",
        headers=api.other,
        data=csv_form,
        files={"file": ("d.csv", f"iccid,targetStatus\n{api.seed.sample_iccids['jasper'][0]},RETIRED\n", "text/csv")},
    )
    assert_problem(upload, 404, contains="service provider")
    assert table_counts(api.engine) == before

    # With its own provider, the demo tenant's devices are unknown to the other tenant (not "someone else's").
    own = {**body, "serviceProviderId": api.seed.other_service_provider_id}
    report = api.client.post("/bulk-changes:dry-run", json=own, headers=api.other).json()["validation"]
    assert report["accepted"] == 0 and all("in this tenant's inventory" in e["reason"] for e in report["errors"])

    # The same idempotency key in two tenants names two bulk changes.
    mine = api.client.post("/bulk-changes", json={**body, "idempotencyKey": "shared"}, headers=api.demo).json()
    theirs = api.client.post(
        "/bulk-changes",
        json={**own, "devices": api.seed.other_iccids[:1], "idempotencyKey": "shared"},
        headers=api.other,
    ).json()
    assert mine["created"] and theirs["created"] and mine["id"] != theirs["id"]


def test_errors_are_problem_documents(api: Api) -> None:
    h = {**api.demo, "Content-Type": "application/json"}
    assert_problem(
        api.client.post("/bulk-changes", content=b'{"serviceProviderId": 1,', headers=h), 400, contains="not valid JSON"
    )
    assert_problem(api.client.post("/bulk-changes", content=b"\xff\xfe{}", headers=h), 400, contains="UTF-8")
    assert_problem(api.client.post("/bulk-changes", content=b"", headers=h), 400, contains="empty")
    unknown = assert_problem(
        api.client.post("/bulk-changes", json=api.status_body(["x"], changeType=6), headers=api.demo),
        422,
        contains="unknown change type 6",
    )
    assert "1 StatusUpdate" in unknown["detail"]
    assert_problem(api.client.post("/bulk-changes", json=[1, 2], headers=api.demo), 422, contains="JSON object")
    assert_problem(
        api.client.post("/bulk-changes", json=api.status_body([], foo=1), headers=api.demo), 422, contains="foo"
    )
    assert_problem(
        api.client.post("/bulk-changes", json=api.status_body(["x"], serviceProviderId=10**30), headers=api.demo),
        422,
        contains="too large",
    )
    assert_problem(
        api.client.post("/bulk-changes", content=b"iccid\n1", headers={**api.demo, "Content-Type": "text/csv"}),
        415,
        contains="/bulk-changes/csv",
    )
    assert_problem(
        api.client.post(
            "/bulk-changes",
            json=api.status_body(["x"], idempotencyKey="a"),
            headers={**api.demo, "Idempotency-Key": "b"},
        ),
        422,
        contains="differ",
    )
    paged = assert_problem(api.client.get("/bulk-changes/1/devices?page_size=0&status=NOPE", headers=api.demo), 422)
    assert {tuple(e["loc"]) for e in paged["errors"]} == {("query", "page_size"), ("query", "status")}
    assert_problem(api.client.get("/bulk-changes/not-a-number", headers=api.demo), 422, contains="bulk_change_id")
    assert_problem(api.client.get("/no-such-route", headers=api.demo), 404)

    bad_csv = api.client.post(
        "/bulk-changes/csv",
        headers=api.demo,
        data={"serviceProviderId": str(api.jasper)},
        files={"file": ("d.csv", b"colour,targetStatus\nred,RETIRED\n", "text/csv")},
    )
    assert_problem(bad_csv, 422, contains="unknown column")
    assert_problem(api.client.post("/bulk-changes/csv", headers=api.demo, data={"changeType": "1"}), 415)
    no_file = api.client.post("/bulk-changes/csv", headers=api.demo, files={"other": ("d.csv", b"x", "text/csv")})
    assert_problem(no_file, 422, contains="field named 'file'")


def test_oversize_bodies_are_413_before_anything_is_stored(engine: sa.Engine, api: Api) -> None:
    app = FastAPI()
    install_api(app, lambda: engine, limits=IntakeLimits(max_bytes=2_000, max_rows=5))
    before = table_counts(engine)
    with TestClient(app) as small:
        big = api.status_body(api.seed.sample_iccids["jasper"] * 20)
        assert_problem(small.post("/bulk-changes", json=big, headers=api.demo), 413, contains="limit is")
        upload = "iccid,targetStatus\n" + "".join(f"{i},RETIRED\n" for i in api.seed.sample_iccids["jasper"] * 20)
        r = small.post(
            "/bulk-changes/csv",
            headers=api.demo,
            files={"file": ("d.csv", upload.encode() * 3, "text/csv")},
            data={"changeType": "1", "serviceProviderId": str(api.jasper)},
        )
        assert_problem(r, 413, contains="split")
        rows = "iccid,targetStatus\n" + "".join(f"{i},RETIRED\n" for i in api.seed.sample_iccids["jasper"][:6])
        r = small.post(
            "/bulk-changes/csv",
            headers=api.demo,
            files={"file": ("d.csv", rows.encode(), "text/csv")},
            data={"changeType": "1", "serviceProviderId": str(api.jasper)},
        )
        assert_problem(r, 422, contains="limit is 5")
    assert table_counts(engine) == before


def test_hostile_inputs_get_a_4xx_never_a_5xx(api: Api) -> None:
    ic = api.seed.sample_iccids["jasper"][:2]
    status = {"status": "RETIRED"}
    bodies = [
        api.status_body(ic, statusUpdate={"status": {"nested": [1]}}),
        api.status_body([{"iccid": 123}]),
        api.status_body(ic, effectiveDate="garbage"),
        api.status_body(ic, statusUpdate={**status, "effectiveDate": "9999-12-31T23:59:59-05:00"}),
        api.status_body(ic, statusUpdate={**status, "effectiveDate": "0001-01-01T00:00:00+05:00"}),
        api.status_body(ic, changeType=4, statusUpdate=None, customerRatePlanUpdate={"customerRatePlanId": 2**62}),
        api.status_body(ic, serviceProviderId=-1),
        api.status_body(ic, changeType=True),
        api.status_body(["\x00" * 30]),
        api.status_body(ic, idempotencyKey="a\x00b"),
        api.status_body(ic, statusUpdate={**status, "reasonCode": "\x00"}),
        api.status_body([{"iccid": ic[0], "costCenter": '=HYPERLINK("http://x")'}]),
        api.status_body(["' OR 1=1; DROP TABLE device; --"]),
    ]
    before = table_counts(api.engine)
    for body in bodies:
        for path in ("/bulk-changes:dry-run", "/bulk-changes"):
            r = api.client.post(path, json=body, headers=api.demo)
            assert r.status_code < 500, (body, r.text)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_problem(
        api.client.post("/bulk-changes", content=deep, headers={**api.demo, "Content-Type": "application/json"}), 400
    )
    for data in (
        b"iccid,targetStatus\n8901\x00,RETIRED\n",
        f"iccid,effectiveDate\n{ic[0]},9999-12-31T23:59:59-05:00\n".encode(),
    ):
        r = api.client.post(
            "/bulk-changes/csv",
            headers=api.demo,
            files={"file": ("d.csv", data, "text/csv")},
            data={"changeType": "1", "serviceProviderId": str(api.jasper)},
        )
        assert_problem(r, 422)
    after = table_counts(api.engine)
    assert after["device"] == before["device"] and after["device_history"] == before["device_history"]
