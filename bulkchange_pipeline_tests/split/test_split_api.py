"""The split over HTTP (the real app from ``create_app``, both backends): POST /bulk-changes (JSON,
XML, CSV) without serviceProviderId answers 202 with the submission, the submission's status and
one results file, cancel, retry-failed, approve / reject, and another tenant's submission as 404."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from lxml import etree

from bulkchange_pipeline.domain import BulkChangeStatus, DeviceChangeStatus
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.approvals import set_policy
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.schema import device_change

from ..intake import xml_inputs as x
from ..intake.test_api import Api, make_api
from .conftest import UNKNOWN_ICCID, edit_body, stored_counts


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def _three(api: Api) -> list[str]:
    s = api.seed.sample_iccids
    return [s["jasper"][0], s["telegence"][0], s["pond"][0], s["jasper"][1], UNKNOWN_ICCID]


def _post(api: Api, body: dict, **headers: str):
    return api.client.post("/bulk-changes", json=body, headers={**api.demo, **headers})


def test_submit_without_service_provider_answers_the_split(api: Api) -> None:
    r = _post(api, edit_body(_three(api), idempotencyKey="s-1"))
    assert r.status_code == 202, r.text
    body = r.json()
    sid = body["submissionId"]
    assert r.headers["location"] == f"/submissions/{sid}" and body["created"] is True
    assert body["status"] == "NEW" and body["counts"] == {"NEW": 4, "ERROR": 1}
    assert [c["integration"] for c in body["children"]] == ["jasper", "telegence", "pond"]
    assert [c["counts"] for c in body["children"]] == [{"NEW": 2}, {"NEW": 1}, {"NEW": 1}]
    assert body["refused"] == [
        {
            "row": 5,
            "identifier": UNKNOWN_ICCID,
            "reason": f"no device with ICCID {UNKNOWN_ICCID} in this tenant's inventory",
        }
    ]
    assert body["refusedTotal"] == 1

    before = stored_counts(api.engine)
    again = _post(api, edit_body(_three(api)), **{"Idempotency-Key": "s-1"})
    assert again.status_code == 200 and again.json()["submissionId"] == sid and again.json()["created"] is False
    assert [c["bulkChangeId"] for c in again.json()["children"]] == [c["bulkChangeId"] for c in body["children"]]
    assert again.json()["refused"] == body["refused"]
    assert stored_counts(api.engine) == before

    status = api.client.get(f"/submissions/{sid}", headers=api.demo)
    assert status.status_code == 200
    s = status.json()
    assert (s["id"], s["status"], s["total"], s["changeTypeName"]) == (sid, "NEW", 5, "EditUsernameCostCenter")
    assert [c["bulkChangeId"] for c in s["children"]] == [c["bulkChangeId"] for c in body["children"]]
    child = api.client.get(f"/bulk-changes/{s['children'][0]['bulkChangeId']}", headers=api.demo)
    assert child.status_code == 200 and child.json()["status"] == "NEW"


def test_a_reused_key_across_a_bulk_change_and_a_submission_is_409(api: Api) -> None:
    one = _post(api, edit_body(_three(api)[:1], serviceProviderId=api.jasper, idempotencyKey="k"))
    assert one.status_code == 201
    r = _post(api, edit_body(_three(api), idempotencyKey="k"))
    assert r.status_code == 409 and f"bulk change {one.json()['id']}" in r.json()["detail"]
    split = _post(api, edit_body(_three(api), idempotencyKey="k2"))
    r = _post(api, edit_body(_three(api)[:1], serviceProviderId=api.jasper, idempotencyKey="k2"))
    assert r.status_code == 409 and f"submission {split.json()['submissionId']}" in r.json()["detail"]


def test_dry_run_answers_the_split_and_stores_nothing(api: Api) -> None:
    before = stored_counts(api.engine)
    r = api.client.post("/bulk-changes:dry-run", json=edit_body(_three(api)), headers=api.demo)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] is False and body["refusedTotal"] == 1
    assert [(c["integration"], c["bulkChangeId"]) for c in body["children"]] == [
        ("jasper", None),
        ("telegence", None),
        ("pond", None),
    ]
    assert [c["validation"]["accepted"] for c in body["children"]] == [2, 1, 1]
    assert stored_counts(api.engine) == before


def test_a_dry_run_that_places_no_device_answers_the_refusals(api: Api) -> None:
    """Found by the schema test: a split with no child at all is still a split (not a 500)."""
    r = api.client.post("/bulk-changes:dry-run", json=edit_body([UNKNOWN_ICCID, "nonsense"]), headers=api.demo)
    assert r.status_code == 200, r.text
    assert (r.json()["children"], r.json()["refusedTotal"], r.json()["counts"]) == ([], 2, {"ERROR": 2})


def test_xml_and_csv_without_service_provider_are_split_too(api: Api) -> None:
    r = api.client.post("/bulk-changes", content=x.to_xml(edit_body(_three(api))), headers={**api.demo, **x_headers()})
    assert r.status_code == 202, r.text
    assert len(r.json()["children"]) == 3
    text = "iccid,costCenter\n" + "".join(f"{i},CC-9\n" for i in _three(api))
    r = api.client.post(
        "/bulk-changes/csv",
        files={"file": ("devices.csv", text.encode(), "text/csv")},
        data={"changeType": "10"},
        headers=api.demo,
    )
    assert r.status_code == 202, r.text
    assert [e["row"] for e in r.json()["refused"]] == [6]  # the CSV line
    dry = api.client.post(
        "/bulk-changes/csv",
        params={"dryRun": "true"},
        files={"file": ("devices.csv", text.encode(), "text/csv")},
        data={"changeType": "10"},
        headers=api.demo,
    )
    assert dry.status_code == 200 and dry.json()["stored"] is False


def x_headers() -> dict[str, str]:
    return {"Content-Type": "application/xml"}


def test_one_results_file_of_every_device(api: Api) -> None:
    sid = _post(api, edit_body(_three(api))).json()["submissionId"]
    as_json = api.client.get(f"/submissions/{sid}/devices", headers=api.demo)
    assert as_json.status_code == 200
    items = as_json.json()["items"]
    assert as_json.json()["submissionId"] == sid and len(items) == 5
    assert [i["iccid"] for i in items][-1] == UNKNOWN_ICCID and items[-1]["bulkChangeId"] is None
    assert {i["serviceProvider"] for i in items[:4]} == {"AT&T Control Center (POD19)", "AT&T Telegence", "Pond IoT"}
    as_csv = api.client.get(f"/submissions/{sid}/devices", params={"format": "csv"}, headers=api.demo)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["iccid"] for r in rows] == [i["iccid"] for i in items]
    assert [r["bulkChangeId"] for r in rows] == [str(i["bulkChangeId"] or "") for i in items]
    by_accept = api.client.get(f"/submissions/{sid}/devices", headers={**api.demo, "Accept": "text/csv"})
    assert by_accept.text == as_csv.text
    as_xml = api.client.get(f"/submissions/{sid}/devices", params={"format": "xml"}, headers=api.demo)
    assert as_xml.status_code == 200 and as_xml.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(as_xml.content)
    assert [e.findtext("{*}iccid") for e in root.iter("{*}deviceResult")] == [i["iccid"] for i in items]


def test_cancel_reaches_every_child(api: Api) -> None:
    body = _post(api, edit_body(_three(api))).json()
    sid, kids = body["submissionId"], [c["bulkChangeId"] for c in body["children"]]
    with api.engine.connect() as conn:
        sent = (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == kids[0])
                .order_by(device_change.c.id)
            )
            .scalars()
            .first()
        )
    claim(api.engine, [sent])  # one row of the Jasper child is already at the carrier
    r = api.client.post(f"/submissions/{sid}:cancel", headers=api.demo)
    assert r.status_code == 200, r.text
    assert [(c["bulkChangeId"], c["done"]) for c in r.json()["children"]] == [(k, True) for k in kids]
    assert r.json()["status"] == "PROCESSING" and r.json()["counts"] == {"PROCESSING": 1, "CANCELLED": 3, "ERROR": 1}
    again = api.client.post(f"/submissions/{sid}:cancel", headers=api.demo)
    assert again.status_code == 409 and "nothing to cancel in submission" in again.json()["detail"]


def test_cancel_of_every_row_makes_the_submission_cancelled(api: Api) -> None:
    sid = _post(api, edit_body(_three(api))).json()["submissionId"]
    r = api.client.post(f"/submissions/{sid}:cancel", headers=api.demo)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    assert api.client.get(f"/submissions/{sid}", headers=api.demo).json()["status"] == "CANCELLED"


def test_retry_failed_reaches_every_child_with_failed_rows(api: Api) -> None:
    body = _post(api, edit_body(_three(api))).json()
    sid, kids = body["submissionId"], [c["bulkChangeId"] for c in body["children"]]
    busy = api.client.post(f"/submissions/{sid}:retry-failed", headers=api.demo)
    assert busy.status_code == 409 and "nothing to retry in submission" in busy.json()["detail"]
    for bc_id in kids:  # every child ran: the Jasper and Pond ones with a failed row
        with api.engine.connect() as conn:
            ids = list(
                conn.execute(sa.select(device_change.c.id).where(device_change.c.bulk_change_id == bc_id)).scalars()
            )
        claim(api.engine, ids)
        failed = bc_id != kids[1]
        results = [RowResult(ids[0], DeviceChangeStatus.API_FAILED if failed else DeviceChangeStatus.PROCESSED, "x")]
        results += [RowResult(i, DeviceChangeStatus.PROCESSED, "ok") for i in ids[1:]]
        record_results(api.engine, tenant_id=api.seed.tenant_id, bulk_change_id=bc_id, results=results, process_by="t")
        set_bulk_status(api.engine, bc_id, BulkChangeStatus.PROCESSED)
    assert api.client.get(f"/submissions/{sid}", headers=api.demo).json()["status"] == "PROCESSED"
    r = api.client.post(f"/submissions/{sid}:retry-failed", headers=api.demo)
    assert r.status_code == 200, r.text
    assert [(c["bulkChangeId"], c["done"]) for c in r.json()["children"]] == [
        (kids[0], True),
        (kids[1], False),
        (kids[2], True),
    ]
    assert "nothing to retry" in r.json()["children"][1]["message"]
    assert r.json()["counts"] == {"PROCESSED": 2, "NEW": 2, "ERROR": 1} and r.json()["status"] == "PROCESSING"


def test_approve_and_reject_apply_to_every_child(api: Api) -> None:
    set_policy(api.engine, api.seed.tenant_id, ApprovalPolicy(max_devices=3))
    approver = {"X-API-Key": create_api_key(api.engine, api.seed.tenant_id, "boss", roles=("approver",))}
    first = _post(api, edit_body(_three(api))).json()
    assert first["status"] == "AWAITING_APPROVAL" and {c["status"] for c in first["children"]} == {"AWAITING_APPROVAL"}
    sid = first["submissionId"]
    assert api.client.post(f"/submissions/{sid}:approve", headers=api.demo).status_code == 403  # no approver role
    r = api.client.post(f"/submissions/{sid}:approve", headers=approver)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "NEW" and all(c["done"] for c in r.json()["children"])
    assert api.client.post(f"/submissions/{sid}:approve", headers=approver).status_code == 409

    second = _post(api, edit_body(_three(api))).json()["submissionId"]
    blank = api.client.post(f"/submissions/{second}:reject", json={"reason": "  "}, headers=approver)
    assert blank.status_code == 422
    r = api.client.post(f"/submissions/{second}:reject", json={"reason": "not this week"}, headers=approver)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"


def test_another_tenants_submission_is_not_found(api: Api) -> None:
    sid = _post(api, edit_body(_three(api))).json()["submissionId"]
    before = stored_counts(api.engine)
    for method, path in (
        ("get", f"/submissions/{sid}"),
        ("get", f"/submissions/{sid}/devices"),
        ("get", f"/submissions/{sid}/devices?format=csv"),
        ("post", f"/submissions/{sid}:cancel"),
        ("post", f"/submissions/{sid}:retry-failed"),
        ("get", f"/submissions/{sid + 1000}"),
    ):
        headers = api.other if str(sid) in path and "1000" not in path else api.demo
        r = getattr(api.client, method)(path, headers=headers)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json" and "no submission" in r.json()["detail"]
    assert stored_counts(api.engine) == before
    assert api.client.get(f"/submissions/{sid}", headers=api.demo).json()["status"] == "NEW"
