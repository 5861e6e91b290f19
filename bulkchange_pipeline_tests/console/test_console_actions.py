"""The console's actions over HTTP (both backends): cancel, retry failed and release, each a
confirmation page (GET, nothing changes) and a POST carrying the session's CSRF token, refused
with the store's message when there is nothing to do; and a CSV upload shown as a dry-run report
before the operator confirms it."""

from __future__ import annotations

import base64
import re

from bulkchange_pipeline.intake.deps import request_limits
from bulkchange_pipeline.intake.parsing import IntakeLimits
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change

from ..intake.conftest import table_counts
from .conftest import Console


def _status(console: Console, bc_id: int) -> dict:
    return console.api.client.get(f"/bulk-changes/{bc_id}", headers=console.api.demo).json()


def test_cancel_is_confirmed_then_done_and_refused_once_nothing_is_left(console: Console) -> None:
    bc_id = console.api.submit(console.api.seed.sample_iccids["jasper"][:3])
    page = console.page(f"/console/bulk-changes/{bc_id}/cancel")
    assert "3 device rows not yet sent (NEW, SCHEDULED) become CANCELLED" in page
    assert count_rows_by_status(console.engine, bc_id) == {"NEW": 3}  # the GET changed nothing
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    forged = console.client.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": "x" + csrf[1:]})
    missing = console.client.post(f"/console/bulk-changes/{bc_id}/cancel")
    assert forged.status_code == missing.status_code == 403
    assert count_rows_by_status(console.engine, bc_id) == {"NEW": 3}
    done = console.client.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf})
    assert done.status_code == 200 and "Cancelled 3 device rows." in done.text
    assert _status(console, bc_id)["status"] == "CANCELLED"
    again = console.client.post(f"/console/bulk-changes/{bc_id}/cancel", data={"csrf": csrf})
    assert again.status_code == 409 and "Refused:" in again.text
    log = console.api.client.get(f"/bulk-changes/{bc_id}/devices", headers=console.api.demo).json()
    assert {d["status"] for d in log["items"]} == {"CANCELLED"}


def test_retry_failed_is_confirmed_then_done(console: Console) -> None:
    bc_id, _ = console.failed_bulk_change()
    page = console.page(f"/console/bulk-changes/{bc_id}")
    assert f'href="/console/bulk-changes/{bc_id}/retry-failed">Retry 2 failed' in page
    confirm = console.page(f"/console/bulk-changes/{bc_id}/retry-failed")
    assert "2 failed device rows" in confirm
    done = console.client.post(f"/console/bulk-changes/{bc_id}/retry-failed", data={"csrf": console.csrf()})
    assert done.status_code == 200 and "2 failed device rows queued again as attempt 1." in done.text
    assert count_rows_by_status(console.engine, bc_id) == {"PROCESSED": 1, "NEW": 2}
    again = console.client.post(f"/console/bulk-changes/{bc_id}/retry-failed", data={"csrf": console.csrf()})
    assert again.status_code == 409 and "Refused:" in again.text


def test_release_a_held_bulk_change(console: Console) -> None:
    bc_id = console.api.submit(console.api.seed.sample_iccids["jasper"][:2], processChanges=False)
    page = console.page(f"/console/bulk-changes/{bc_id}")
    assert "held" in page and f'href="/console/bulk-changes/{bc_id}/release"' in page
    assert "2 accepted device rows go to the carrier" in console.page(f"/console/bulk-changes/{bc_id}/release")
    done = console.client.post(f"/console/bulk-changes/{bc_id}/release", data={"csrf": console.csrf()})
    assert done.status_code == 200 and "Released: the sensor starts it on its next tick." in done.text
    again = console.client.post(f"/console/bulk-changes/{bc_id}/release", data={"csrf": console.csrf()})
    assert again.status_code == 409 and "Refused:" in again.text


def _upload(console: Console, data: bytes, **fields: str):
    form = {
        "csrf": console.csrf(),
        "service_provider": str(console.api.jasper),
        "change_type": "1",
        **fields,
    }
    return console.client.post("/console/upload", data=form, files={"file": ("devices.csv", data, "text/csv")})


def test_upload_shows_the_dry_run_then_submits_the_same_file_once(console: Console) -> None:
    good = console.api.seed.sample_iccids["jasper"][:2]
    data = ("iccid,status\n" + "".join(f"{i},RETIRED\n" for i in good) + "8901100000000000999,RETIRED\n").encode()
    before = table_counts(console.engine)
    report = _upload(console, data)
    assert report.status_code == 200, report.text
    assert "2 of 3 devices accepted" in report.text and "1 refused" in report.text
    refused = report.text.split('id="refused"')[1]
    assert "8901100000000000999" in refused and "ICCID" in refused and ">4<" in refused  # its file line
    assert table_counts(console.engine) == before  # a dry run stores nothing
    fields = dict(
        re.findall(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)"', report.text.split("/upload/confirm")[1])
    )
    assert set(fields) == {"csrf", "service_provider", "change_type", "idempotency_key", "file_b64", "mac"}
    r = console.client.post("/console/upload/confirm", data=fields, follow_redirects=False)
    assert r.status_code == 303
    bc_id = int(r.headers["location"].rsplit("/", 1)[1])
    assert count_rows_by_status(console.engine, bc_id) == {"NEW": 2, "ERROR": 1}
    assert get_bulk_change(console.engine, bc_id)["created_by"] == "api-key:ops"  # the API's label for the key
    twice = console.client.post("/console/upload/confirm", data=fields, follow_redirects=False)
    assert twice.headers["location"] == r.headers["location"]  # a second click creates nothing new
    assert console.client.post("/console/upload/confirm", data={**fields, "csrf": "forged"}).status_code == 403
    lost = console.client.post("/console/upload/confirm", data={**fields, "file_b64": "%%%"})
    assert lost.status_code == 422 and "upload it again" in lost.text


def _confirm_fields(html: str) -> dict[str, str]:
    form = html.split("/upload/confirm")[1]
    return dict(re.findall(r'<input type="hidden" name="([a-z_0-9]+)" value="([^"]*)"', form))


def test_a_confirmation_is_refused_unless_it_is_the_dry_run_that_was_shown(console: Console) -> None:
    """The confirmation carries a MAC of (tenant, file digest, service provider, change type, key):
    a different file, change type or service provider than the dry run's, or a forged MAC, is
    refused (400) and nothing is stored."""
    shown = "".join(f"{i},RETIRED\n" for i in console.api.seed.sample_iccids["jasper"][:2])
    report = _upload(console, ("iccid,status\n" + shown).encode())
    assert report.status_code == 200, report.text
    fields = _confirm_fields(report.text)
    swapped = "iccid,status\n" + "".join(f"{i},RETIRED\n" for i in console.api.seed.sample_iccids["jasper"][2:9])
    before = table_counts(console.engine)
    for tampered in (
        {"file_b64": base64.b64encode(swapped.encode()).decode()},  # another file, never dry-run
        {"change_type": "4"},
        {"service_provider": str(console.api.seed.service_providers["thingspace"])},
        {"idempotency_key": "console-" + "0" * 24},
        {"mac": "0" * len(fields["mac"])},
        {"mac": ""},
    ):
        r = console.client.post("/console/upload/confirm", data={**fields, **tampered}, follow_redirects=False)
        assert r.status_code == 400, (tampered, r.status_code)
        assert "not the file of the dry run" in r.text and r.headers["content-type"].startswith("text/html")
    assert table_counts(console.engine) == before
    ok = console.client.post("/console/upload/confirm", data=fields, follow_redirects=False)
    assert ok.status_code == 303
    assert count_rows_by_status(console.engine, int(ok.headers["location"].rsplit("/", 1)[1])) == {"NEW": 2}


def test_an_upload_over_the_limit_is_refused_before_it_is_spooled(console: Console) -> None:
    console.api.client.app.dependency_overrides[request_limits] = lambda: IntakeLimits(max_bytes=2048)
    try:
        row = f"{console.api.seed.sample_iccids['jasper'][0]},RETIRED\n"
        before = table_counts(console.engine)
        for rows in (200, 5000):  # ~6 KB: read, then refused; ~150 KB: refused while it streams in
            big = _upload(console, ("iccid,status\n" + row * rows).encode())
            assert big.status_code == 413 and "the limit is 2 KB" in big.text, rows
            assert big.headers["content-type"].startswith("text/html") and 'id="upload-error"' in big.text
        fits = _upload(console, ("iccid,status\n" + row).encode())
        assert fits.status_code == 200, fits.text
        fields = _confirm_fields(fits.text)
        padded = {**fields, "file_b64": base64.b64encode(b"x" * 8000).decode()}
        r = console.client.post("/console/upload/confirm", data=padded)
        assert r.status_code == 413 and "the limit is" in r.text
        streamed = {**fields, "file_b64": base64.b64encode(b"x" * 200_000).decode()}
        assert console.client.post("/console/upload/confirm", data=streamed).status_code == 413
        assert table_counts(console.engine) == before
    finally:
        console.api.client.app.dependency_overrides.clear()


def test_upload_refusals_are_shown_on_the_form(console: Console) -> None:
    semicolons = _upload(console, b"iccid;status\n8901;RETIRED\n")
    assert semicolons.status_code == 422 and 'id="upload-error"' in semicolons.text
    other = _upload(console, b"iccid\n1\n", service_provider=str(console.api.seed.other_service_provider_id))
    assert other.status_code == 422 and "choose one of your service providers" in other.text
