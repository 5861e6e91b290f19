"""The console's reading pages over HTTP (both backends): search by each identifier kind, the list
and its filters, a bulk change with a failed device drilled down to its carrier exchanges, the CSV
download, and identifiers with bidi/control characters shown escaped."""

from __future__ import annotations

import csv
import html
import io
from datetime import date, timedelta

import pytest

from bulkchange_pipeline.console import pages
from bulkchange_pipeline.domain import BulkChangeStatus
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.bulk_changes import set_bulk_status

from .conftest import REFUSAL, Console


def test_search_by_bulk_change_id_and_each_identifier_kind(console: Console) -> None:
    bc_id, rows = console.failed_bulk_change()
    r = console.client.get(f"/console/search?q={bc_id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/console/bulk-changes/{bc_id}"
    [jasper] = [
        d for d in ref.live_devices(console.engine, console.api.seed.tenant_id) if d["id"] == rows[0]["device_id"]
    ]
    for kind in ("iccid", "imei", "msisdn"):
        r = console.client.get(f"/console/search?q={jasper[kind]}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/console/devices/{jasper['id']}", kind
    teal = ref.live_devices(console.engine, console.api.seed.tenant_id, console.api.seed.service_providers["teal"])[0]
    r = console.client.get(f"/console/search?q={teal['eid']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/console/devices/{teal['id']}"
    missing = console.client.get("/console/search?q=89011000000000009999")
    assert missing.status_code == 404 and "Nothing of this tenant" in missing.text


def test_device_page_lists_its_bulk_changes_and_before_after_history(console: Console) -> None:
    bc_id, rows = console.failed_bulk_change()
    text = console.page(f"/console/devices/{rows[0]['device_id']}")
    assert f'href="/console/bulk-changes/{bc_id}"' in text and f'/rows/{rows[0]["id"]}"' in text
    history = text.split('id="history"')[1]
    assert "ACTIVATED" in history and "RETIRED" in history and "&rarr;" in history


def test_list_shows_carrier_type_submitter_counts_and_filters(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed, _ = console.failed_bulk_change()
    queued = console.api.submit(console.api.seed.sample_iccids["jasper"][3:5])
    thingspace = console.api.seed.service_providers["thingspace"]
    r = console.api.client.post(
        "/bulk-changes",
        json={
            "serviceProviderId": thingspace,
            "changeType": 1,
            "devices": console.api.seed.sample_iccids["thingspace"][:1],
            "statusUpdate": {"status": "deactive"},
            "processChanges": False,
        },
        headers=console.api.demo,
    )
    assert r.status_code == 201, r.text
    held = r.json()["id"]
    text = console.page("/console/")
    table = text.split('id="bulk-changes"')[1]
    position = {i: table.index(f'href="/console/bulk-changes/{i}"') for i in (failed, queued, held)}
    assert position[held] < position[queued] < position[failed]  # newest first
    assert "StatusUpdate" in table and "api-key:ops" in table and "done with failures" in table and "held" in table

    def ids(query: str) -> set[int]:
        page = console.page(f"/console/?{query}")
        return {i for i in (failed, queued, held) if f'href="/console/bulk-changes/{i}"' in page}

    assert ids("status=PROCESSED") == {failed}
    assert ids(f"carrier={thingspace}") == {held}
    assert ids("type=1") == {failed, queued, held} and ids("type=4") == set()
    today = date.today()
    assert ids(f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}") == {failed, queued, held}
    assert ids(f"from={today + timedelta(days=2)}") == set()
    bad = console.page("/console/?type=nonsense&from=yesterday")
    assert "type: not a change type" in bad and "from: not a date" in bad
    monkeypatch.setattr(pages, "LIST_PAGE_SIZE", 2)
    first, second = console.page("/console/"), console.page("/console/?page=2")
    assert (
        "Page 1 of 2" in first
        and 'href="/console/?page=2"' in first
        and f'href="/console/bulk-changes/{failed}"' in second
    )


def test_bulk_change_page_drills_down_to_a_failed_devices_carrier_exchanges(console: Console) -> None:
    bc_id, rows = console.failed_bulk_change()
    text = console.page(f"/console/bulk-changes/{bc_id}")
    assert "done with failures" in text and "3 of 3 device rows final" in text
    assert 'http-equiv="refresh"' not in text  # final: nothing to refresh
    assert "runs?q[0]=tag%3Abulkchange%2Fbulk_change_id%3D" + str(bc_id) in text
    failed = console.page(f"/console/bulk-changes/{bc_id}?status=API_FAILED")
    devices = failed.split('id="devices"')[1]
    assert rows[1]["iccid"] in devices and rows[2]["iccid"] in devices and rows[0]["iccid"] not in devices
    # the reason shows its bidi override and markup as text, never obeyed or run
    assert "\u202e" not in failed and "\\u202eKCOL\\u202c" in failed
    assert "<script>alert(1)</script>" not in failed and "&lt;script&gt;alert(1)&lt;/script&gt;" in failed
    link = f"/console/bulk-changes/{bc_id}/rows/{rows[2]['id']}"
    assert link in devices
    drill = console.page(link)
    assert drill.count('class="card exchange"') == 2 and "HTTP 400" in drill and "try 1" in drill
    assert '{"errorCode": "10000024", "errorMessage": "Rate plan locked"}' in html.unescape(drill)
    assert "Authorization: [REDACTED]" in drill


def test_live_progress_refreshes_while_rows_move(console: Console) -> None:
    bc_id = console.api.submit(console.api.seed.sample_iccids["jasper"][:2])
    set_bulk_status(console.engine, bc_id, BulkChangeStatus.PROCESSING)
    text = console.page(f"/console/bulk-changes/{bc_id}")
    assert f'<meta http-equiv="refresh" content="{pages.REFRESH_SECONDS}">' in text and "0 of 2" in text


def test_csv_download_uses_the_api_writer(console: Console) -> None:
    bc_id, rows = console.failed_bulk_change()
    r = console.client.get(f"/console/bulk-changes/{bc_id}/devices.csv?status=API_FAILED")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    body = list(csv.DictReader(io.StringIO(r.text)))
    assert [b["iccid"] for b in body] == [rows[1]["iccid"], rows[2]["iccid"]]
    assert body[0]["status_details"] == REFUSAL
    api = console.api.client.get(
        f"/bulk-changes/{bc_id}/devices?format=csv&status=API_FAILED", headers=console.api.demo
    )
    assert api.text == r.text


def test_a_page_number_past_the_end_shows_the_last_page(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    bc_id, rows = console.failed_bulk_change()
    newer = console.api.submit(console.api.seed.sample_iccids["jasper"][3:5])
    one = console.page(f"/console/bulk-changes/{bc_id}?page=2")
    assert "Page 1 of 1" in one and rows[2]["iccid"] in one.split('id="devices"')[1]
    monkeypatch.setattr(pages, "ROWS_PAGE_SIZE", 2)
    last = console.page(f"/console/bulk-changes/{bc_id}?page=999999999")
    assert "Page 2 of 2" in last and rows[2]["iccid"] in last.split('id="devices"')[1]
    assert "Next &rarr;" not in last
    monkeypatch.setattr(pages, "LIST_PAGE_SIZE", 1)
    oldest = console.page("/console/?page=7")
    assert "Page 2 of 2" in oldest and f'href="/console/bulk-changes/{bc_id}"' in oldest
    assert f'href="/console/bulk-changes/{newer}"' not in oldest


@pytest.mark.parametrize(
    "path",
    [
        "/console/bulk-changes/abc",
        "/console/bulk-changes/0",
        "/console/bulk-changes/-1",
        "/console/bulk-changes/99999999999999999999999",
        "/console/bulk-changes/1/rows/x",
        "/console/bulk-changes/nope/cancel",
        "/console/devices/%C2%B2",
        "/console/devices/1e3",
        "/console/no-such-page",
    ],
)
def test_an_invalid_id_or_path_is_the_consoles_html_page_not_json(console: Console, path: str) -> None:
    r = console.client.get(path)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), (path, r.text[:200])
    assert "Not found" in r.text and '<div class="msg error">' in r.text and r.headers["cache-control"] == "no-store"


def test_the_api_keeps_its_problem_json_for_invalid_ids(console: Console) -> None:
    r = console.api.client.get("/bulk-changes/abc", headers=console.api.demo)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_an_unknown_row_status_filter_is_refused_with_the_valid_ones(console: Console) -> None:
    bc_id, _ = console.failed_bulk_change()
    for path in (f"/console/bulk-changes/{bc_id}?status=FAILED", f"/console/bulk-changes/{bc_id}/devices.csv?status=x"):
        r = console.client.get(path)
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), path
        assert "API_FAILED" in r.text and "PROCESSED" in r.text and "status" in r.text
    assert console.client.get(f"/console/bulk-changes/{bc_id}/devices.csv?status=").status_code == 200


def test_csv_download_is_not_cached(console: Console) -> None:
    bc_id, _ = console.failed_bulk_change()
    r = console.client.get(f"/console/bulk-changes/{bc_id}/devices.csv")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
