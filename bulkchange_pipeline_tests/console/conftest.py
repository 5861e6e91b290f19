"""Fixtures of the console tests: the real app (``create_app``) over HTTP on both backends, the demo
tenant and another one each with an API key, and helpers to sign in and read a form's CSRF token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bulkchange_pipeline.domain import BulkChangeStatus, DeviceChangeStatus
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.device_changes import LogRow, RowResult, claim, record_results
from bulkchange_pipeline.store.device_rows import iter_device_results

from ..intake.test_api import Api, make_api

CSRF = re.compile(r'name="csrf" value="([^"]*)"')
REFUSAL = "Rate plan locked: the SIM is in a \u202eKCOL\u202c state <script>alert(1)</script>"


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(client: TestClient, key: str) -> TestClient:
    form = client.get("/console/login")
    assert form.status_code == 200
    r = client.post(
        "/console/login", data={"api_key": key, "csrf": csrf_of(form.text), "next": "/console/"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    return client


@dataclass
class Console:
    api: Api
    client: TestClient  # signed in as the demo tenant's key
    demo_key: str
    other_key: str

    @property
    def engine(self) -> sa.Engine:
        return self.api.engine

    def fresh_client(self, **kw) -> TestClient:
        """Another browser: its own cookie jar, the same app."""
        return TestClient(self.api.client.app, **kw)

    def page(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200, r.text
        return r.text

    def csrf(self) -> str:
        return csrf_of(self.page("/console/"))

    def failed_bulk_change(self) -> tuple[int, list[dict]]:
        """A processed Jasper StatusUpdate of three devices: one done (with history), two refused
        by the carrier, each with its (redacted) exchanges; returns its id and device rows."""
        bc_id = self.api.submit(self.api.seed.sample_iccids["jasper"][:3])
        rows = list(iter_device_results(self.engine, self.api.seed.tenant_id, bc_id))
        ids = [r["id"] for r in rows]
        claim(self.engine, ids)
        exchange = LogRow(
            "PUT /rws/api/v1/devices/{iccid}",
            request_text='PUT /rws/api/v1/devices/x {"status": "RETIRED"} Authorization: [REDACTED]',
            response_text='{"errorCode": "10000024", "errorMessage": "Rate plan locked"}',
            response_status="400",
            has_errors=True,
            attempt=1,
        )
        results = [
            RowResult(
                ids[0],
                DeviceChangeStatus.PROCESSED,
                "ok",
                device_id=rows[0]["device_id"],
                new_values={"status": "RETIRED"},
                old_values={"status": "ACTIVATED"},
                logs=[LogRow("PUT ok", request_text="PUT one", response_text="{}", response_status="200")],
            ),
            RowResult(ids[1], DeviceChangeStatus.API_FAILED, REFUSAL, logs=[exchange]),
            RowResult(ids[2], DeviceChangeStatus.API_FAILED, "retries ran out", logs=[exchange, exchange]),
        ]
        record_results(
            self.engine, tenant_id=self.api.seed.tenant_id, bulk_change_id=bc_id, results=results, process_by="test"
        )
        set_bulk_status(self.engine, bc_id, BulkChangeStatus.PROCESSED)
        return bc_id, rows


@pytest.fixture
def console(engine: sa.Engine, db_url: str) -> Iterator[Console]:
    for api in make_api(engine, db_url, devices_per_carrier=20):
        demo_key = api.demo["Authorization"].removeprefix("Bearer ")
        yield Console(api, sign_in(api.client, demo_key), demo_key, api.other["X-API-Key"])
