"""The intake HTTP API over HTTP (the real app from ``create_app``, on both backends): submit,
idempotency, dry run, a CSV upload of 10,000 rows run end to end by the pipeline, status, paged results and CSV download, cancel,
retry-failed, and the OpenAPI document."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.domain import BulkChangeStatus, DeviceChangeStatus
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.intake.results_csv import write_results_csv
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import start_park
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import list_waiting, set_bulk_status
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.schema import device_change
from bulkchange_pipeline.store.seed import (
    DemoSeed,
    demo_credentials_names,
    demo_iccid,
    point_demo_at,
    seed_demo,
)

from ..defs.harness import fast_definitions
from .conftest import table_counts

BAD_ICCID = "8901100000000000999"


@dataclass
class Api:
    client: TestClient
    engine: sa.Engine
    seed: DemoSeed
    demo: dict[str, str]  # headers with the demo tenant's key
    other: dict[str, str]  # headers with the other tenant's key

    @property
    def jasper(self) -> int:
        return self.seed.service_providers["jasper"]

    def status_body(self, devices: list, **extra) -> dict:
        return {
            "serviceProviderId": self.jasper,
            "changeType": 1,
            "devices": devices,
            "statusUpdate": {"status": "RETIRED"},
            **extra,
        }

    def submit(self, devices: list, **extra) -> int:
        r = self.client.post("/bulk-changes", json=self.status_body(devices, **extra), headers=self.demo)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def make_api(engine: sa.Engine, db_url: str, devices_per_carrier: int = 50) -> Iterator[Api]:
    seed = seed_demo(engine, devices_per_carrier=devices_per_carrier)
    demo_key = create_api_key(engine, seed.tenant_id, "ops")
    other_key = create_api_key(engine, seed.other_tenant_id, "intruder")
    with TestClient(create_app(db_url)) as client:
        yield Api(client, engine, seed, {"Authorization": f"Bearer {demo_key}"}, {"X-API-Key": other_key})


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url)


def test_submit_json_creates_rows_and_reports_refusals(api: Api) -> None:
    devices = [
        *api.seed.sample_iccids["jasper"][:3],
        {"iccid": api.seed.sample_iccids["jasper"][3], "targetStatus": "DEACTIVATED"},
        BAD_ICCID,
    ]
    r = api.client.post("/bulk-changes", json=api.status_body(devices), headers=api.demo)
    assert r.status_code == 201 and r.headers["location"] == f"/bulk-changes/{r.json()['id']}"
    body = r.json()
    assert body["created"] is True and body["status"] == "NEW" and body["counts"] == {"NEW": 4, "ERROR": 1}
    v = body["validation"]
    assert (v["total"], v["accepted"], v["refused"], v["changeTypeName"]) == (5, 4, 1, "StatusUpdate")
    [error] = v["errors"]
    assert (error["row"], error["device"]) == (5, BAD_ICCID) and error["reason"].startswith("ICCID")
    rows = list(iter_device_results(api.engine, api.seed.tenant_id, body["id"]))
    assert [r["change_request"].get("status") for r in rows[:4]] == ["RETIRED"] * 3 + [
        "DEACTIVATED"
    ]  # per-device value


def test_same_idempotency_key_creates_nothing_new(api: Api) -> None:
    devices = api.seed.sample_iccids["jasper"][:2]
    first = api.client.post("/bulk-changes", json=api.status_body(devices, idempotencyKey="k-1"), headers=api.demo)
    assert first.status_code == 201
    before = table_counts(api.engine)
    again = api.client.post(
        "/bulk-changes", json=api.status_body(devices), headers={**api.demo, "Idempotency-Key": "k-1"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert "nothing new created" in again.json()["message"]
    assert table_counts(api.engine) == before


def test_dry_run_stores_nothing(api: Api) -> None:
    before = table_counts(api.engine)
    r = api.client.post(
        "/bulk-changes:dry-run",
        json=api.status_body([*api.seed.sample_iccids["jasper"][:3], BAD_ICCID]),
        headers=api.demo,
    )
    assert r.status_code == 200
    assert (
        r.json()["stored"] is False
        and r.json()["validation"]["accepted"] == 3
        and len(r.json()["validation"]["errors"]) == 1
    )
    assert table_counts(api.engine) == before


def test_future_effective_date_schedules_rows(api: Api) -> None:
    r = api.client.post(
        "/bulk-changes",
        json=api.status_body(api.seed.sample_iccids["jasper"][:2], effectiveDate="2999-01-01T00:00:00Z"),
        headers=api.demo,
    )
    assert r.status_code == 201 and r.json()["status"] == "SCHEDULED" and r.json()["counts"] == {"SCHEDULED": 2}
    status = api.client.get(f"/bulk-changes/{r.json()['id']}", headers=api.demo).json()
    assert status["effectiveAt"].startswith("2999-01-01T00:00:00")


def test_status_pages_and_csv_download_match_the_database(api: Api) -> None:
    bc_id = api.submit([*api.seed.sample_iccids["jasper"][:7], BAD_ICCID])
    status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo)
    assert status.status_code == 200
    s = status.json()
    assert (s["status"], s["total"], s["counts"], s["createdBy"]) == ("NEW", 8, {"NEW": 7, "ERROR": 1}, "api-key:ops")
    assert s["createdAt"].endswith("Z") and s["processedAt"] is None and s["attempt"] == 0

    pages, page = [], 1
    while page:
        body = api.client.get(
            f"/bulk-changes/{bc_id}/devices", params={"page": page, "page_size": 3}, headers=api.demo
        ).json()
        assert body["total"] == 8
        pages.extend(body["items"])
        page = body["nextPage"]
    db_rows = list(iter_device_results(api.engine, api.seed.tenant_id, bc_id))
    assert [p["id"] for p in pages] == [r["id"] for r in db_rows]
    assert [p["status"] for p in pages] == [r["status"] for r in db_rows]
    errors = api.client.get(f"/bulk-changes/{bc_id}/devices", params={"status": "ERROR"}, headers=api.demo).json()
    assert errors["total"] == 1 and errors["items"][0]["statusDetails"] == db_rows[-1]["status_details"]

    expected = io.StringIO()
    write_results_csv(expected, db_rows)
    by_param = api.client.get(f"/bulk-changes/{bc_id}/devices", params={"format": "csv"}, headers=api.demo)
    by_accept = api.client.get(f"/bulk-changes/{bc_id}/devices", headers={**api.demo, "Accept": "text/csv"})
    for r in (by_param, by_accept):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text == expected.getvalue()


# PostgreSQL only: the production backend, and a minute of CI per backend. On SQLite the CSV upload
# path runs in the smaller upload tests of intake/, and 10,000 devices through the job in
# defs/test_pipeline_scale_and_crash.py.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_csv_upload_of_10000_rows_is_processed_end_to_end_and_downloads_identically(
    engine: sa.Engine, db_url: str, dagster_instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's acceptance case: 10,000 rows uploaded as CSV, run by the real sensor and job
    against the Jasper simulator, then the CSV download equals the database, row for row."""
    for api in make_api(engine, db_url, devices_per_carrier=0):
        with start_park() as park:
            point_demo_at(engine, park.base_urls, unlimited=True)
            for key, value in park.credentials_env(demo_credentials_names(), credential_env_key).items():
                monkeypatch.setenv(key, value)
            jasper = api.jasper
            iccids = [demo_iccid(1, 0, i) for i in range(10_000)]
            ref.insert_devices(
                engine, api.seed.tenant_id, jasper, [{"iccid": i, "status": "ACTIVATED"} for i in iccids]
            )
            park.simulators["jasper"].seed_devices({"iccid": i, "status": "ACTIVATED"} for i in iccids)
            text = "iccid,targetStatus\n" + "".join(f"{i},DEACTIVATED\n" for i in iccids)
            r = api.client.post(
                "/bulk-changes/csv",
                headers=api.demo,
                files={"file": ("devices.csv", text.encode(), "text/csv")},
                data={"changeType": "StatusUpdate", "serviceProviderId": str(jasper), "idempotencyKey": "big-1"},
            )
            assert r.status_code == 201, r.text
            assert r.json()["counts"] == {"NEW": 10_000} and r.json()["validation"]["accepted"] == 10_000
            bc_id = r.json()["id"]

            _, runs = tick_and_run(dagster_instance, fast_definitions(), run_config=QUIET)
            assert [run.success for run in runs] == [True]
            status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()
            assert (status["status"], status["counts"]) == ("PROCESSED", {"PROCESSED": 10_000})
            sim = park.simulators["jasper"]
            assert {sim.device(i)["status"] for i in iccids} == {"DEACTIVATED"}
            assert sim.stats()["total_calls"] == 10_000  # one PUT per device, nothing sent twice

        download = api.client.get(f"/bulk-changes/{bc_id}/devices?format=csv", headers=api.demo)
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert len(rows) == 10_000 and [row["iccid"] for row in rows] == iccids
        assert {row["status"] for row in rows} == {"PROCESSED"}
        expected = io.StringIO()
        write_results_csv(expected, iter_device_results(engine, api.seed.tenant_id, bc_id))
        assert download.text == expected.getvalue()


def _rows(engine: sa.Engine, bc_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(device_change).where(device_change.c.bulk_change_id == bc_id).order_by(device_change.c.id)
        ).all()


def test_cancel_over_http_keeps_a_processing_row(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:4])
    first = _rows(api.engine, bc_id)[0].id
    claim(api.engine, [first])  # already sent to the carrier
    r = api.client.post(f"/bulk-changes/{bc_id}/cancel", headers=api.demo)
    assert r.status_code == 200
    assert (r.json()["cancelled"], r.json()["stillProcessing"], r.json()["status"]) == (3, 1, "PROCESSING")
    assert [row.status for row in _rows(api.engine, bc_id)] == ["PROCESSING", "CANCELLED", "CANCELLED", "CANCELLED"]
    again = api.client.post(f"/bulk-changes/{bc_id}/cancel", headers=api.demo)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert "nothing to cancel" in again.json()["detail"]


def test_retry_failed_over_http_starts_a_new_attempt(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:3])
    ids = [row.id for row in _rows(api.engine, bc_id)]
    claim(api.engine, ids)
    busy = api.client.post(f"/bulk-changes/{bc_id}/retry-failed", headers=api.demo)
    set_bulk_status(api.engine, bc_id, BulkChangeStatus.PROCESSING)
    running = api.client.post(f"/bulk-changes/{bc_id}/retry-failed", headers=api.demo)
    assert busy.status_code == running.status_code == 409 and "finished" in running.json()["detail"]
    results = [
        RowResult(ids[0], DeviceChangeStatus.PROCESSED, "ok"),
        RowResult(ids[1], DeviceChangeStatus.API_FAILED, "refused: rate plan locked", carrier_request_id="x-1"),
        RowResult(ids[2], DeviceChangeStatus.API_FAILED, "retries ran out"),
    ]
    record_results(api.engine, tenant_id=api.seed.tenant_id, bulk_change_id=bc_id, results=results, process_by="test")
    set_bulk_status(api.engine, bc_id, BulkChangeStatus.PROCESSED)

    r = api.client.post(f"/bulk-changes/{bc_id}/retry-failed", headers=api.demo)
    assert r.status_code == 200
    assert (r.json()["requeued"], r.json()["attempt"], r.json()["status"]) == (2, 1, "NEW")
    rows = _rows(api.engine, bc_id)
    assert [row.status for row in rows] == ["PROCESSED", "NEW", "NEW"] and rows[1].carrier_request_id is None
    assert [(q.id, q.attempt) for q in list_waiting(api.engine, 0, 10)] == [(bc_id, 1)]
    assert api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()["attempt"] == 1


def test_resume_over_http_queues_the_unfinished_rows_once(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:3])
    ids = [row.id for row in _rows(api.engine, bc_id)]
    queued = api.client.post(f"/bulk-changes/{bc_id}/resume", headers=api.demo)
    assert queued.status_code == 409 and "already queued" in queued.json()["detail"]
    # A crashed run: one row recorded, one claimed (fate unknown), one NEW; header ERROR.
    claim(api.engine, ids[:2])
    record_results(
        api.engine,
        tenant_id=api.seed.tenant_id,
        bulk_change_id=bc_id,
        process_by="test",
        results=[RowResult(ids[0], DeviceChangeStatus.PROCESSED, "ok")],
    )
    set_bulk_status(api.engine, bc_id, BulkChangeStatus.ERROR)
    r = api.client.post(f"/bulk-changes/{bc_id}/resume", headers=api.demo)
    assert r.status_code == 200, r.text
    assert (r.json()["unfinished"], r.json()["attempt"], r.json()["status"]) == (2, 1, "NEW")
    assert [(q.id, q.attempt) for q in list_waiting(api.engine, 0, 10)] == [(bc_id, 1)]
    assert [row.status for row in _rows(api.engine, bc_id)] == [
        "PROCESSED",
        "PROCESSING",
        "NEW",
    ]  # untouched: the run checks them
    assert api.client.post(f"/bulk-changes/{bc_id}/resume", headers=api.other).status_code == 404


def test_a_held_bulk_change_waits_until_released_once(api: Api) -> None:
    """processChanges=false stores and validates it; the sensor does not see it until an operator
    releases it; releasing twice, another tenant's, or a cancelled one is refused."""
    held = api.submit(api.seed.sample_iccids["jasper"][:2], processChanges=False)
    assert held not in [q.id for q in list_waiting(api.engine, 0, 100)]
    assert api.client.get(f"/bulk-changes/{held}", headers=api.demo).json()["outcome"] == "held"
    assert api.client.post(f"/bulk-changes/{held}/release", headers=api.other).status_code == 404

    r = api.client.post(f"/bulk-changes/{held}/release", headers=api.demo)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["counts"]) == ("NEW", {"NEW": 2})
    assert "sensor starts it" in r.json()["message"]
    assert held in [q.id for q in list_waiting(api.engine, 0, 100)]
    assert api.client.get(f"/bulk-changes/{held}", headers=api.demo).json()["outcome"] == "in_progress"
    again = api.client.post(f"/bulk-changes/{held}/release", headers=api.demo)
    assert again.status_code == 409 and "is not held" in again.json()["detail"]

    cancelled = api.submit(api.seed.sample_iccids["jasper"][2:4], processChanges=False)
    assert api.client.post(f"/bulk-changes/{cancelled}/cancel", headers=api.demo).status_code == 200
    refused = api.client.post(f"/bulk-changes/{cancelled}/release", headers=api.demo)
    assert refused.status_code == 409 and "only a NEW or SCHEDULED" in refused.json()["detail"]
    assert cancelled not in [q.id for q in list_waiting(api.engine, 0, 100)]


def test_openapi_documents_every_route(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    wanted = {
        ("/bulk-changes", "post"),
        ("/bulk-changes:dry-run", "post"),
        ("/bulk-changes/csv", "post"),
        ("/bulk-changes/{bulk_change_id}", "get"),
        ("/bulk-changes/{bulk_change_id}/devices", "get"),
        ("/bulk-changes/{bulk_change_id}/cancel", "post"),
        ("/bulk-changes/{bulk_change_id}/retry-failed", "post"),
        ("/bulk-changes/{bulk_change_id}/release", "post"),
    }
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert wanted <= listed
    for path, method in wanted:
        op = doc["paths"][path][method]
        assert op["tags"] == ["bulk changes"] and op.get("summary") and op.get("security")
        assert "application/problem+json" in op["responses"]["401"]["content"]
        assert "$ref" in str(
            op["responses"]["200" if "200" in op["responses"] else "201"]["content"]["application/json"]["schema"]
        )
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])
    body = doc["paths"]["/bulk-changes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"serviceProviderId", "changeType", "devices", "idempotencyKey", "effectiveDate"} <= set(body["properties"])
    upload = doc["paths"]["/bulk-changes/csv"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["file"]["format"] == "binary"
    assert "text/csv" in doc["paths"]["/bulk-changes/{bulk_change_id}/devices"]["get"]["responses"]["200"]["content"]
