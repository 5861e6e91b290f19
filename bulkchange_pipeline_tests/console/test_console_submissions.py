"""The console's submission page (issue 21) over HTTP on both backends: a request split by carrier
shows one status, progress and its children linked to their bulk change pages (which link back),
the devices no service provider took, and one CSV of every device; another tenant's submission
and any malformed id are a 4xx page, never a 5xx."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.domain import BulkChangeRequest, BulkChangeStatus
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.device_changes import claim
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import demo_iccid

from .conftest import Console, sign_in

NOT_IN_INVENTORY = demo_iccid(1, 0, 999)


def _split(console: Console) -> tuple[int, list[int]]:
    """A StatusUpdate of two Jasper devices, one ThingSpace device and one in no inventory, without
    a service provider: one submission of two children."""
    seed = console.api.seed
    request = BulkChangeRequest.model_validate(
        {
            "changeType": "StatusUpdate",
            "devices": [
                seed.sample_iccids["jasper"][0],
                {"iccid": seed.sample_iccids["thingspace"][0], "targetStatus": "deactive"},
                seed.sample_iccids["jasper"][1],
                NOT_IN_INVENTORY,
            ],
            "statusUpdate": {"targetStatus": "DEACTIVATED"},
        }
    )
    outcome = submit(console.engine, seed.tenant_id, request, "api-key:ops")
    assert outcome.submission_id is not None
    return outcome.submission_id, [c.bulk_change_id for c in outcome.children]


def test_the_submission_page_shows_one_status_its_children_and_the_devices_not_placed(console: Console) -> None:
    sid, (jasper, thingspace) = _split(console)
    text = console.page(f"/console/submissions/{sid}")
    assert f"Submission {sid}" in text and "StatusUpdate across 2 service providers" in text
    assert "3 of 4 device rows" not in text and "1 of 4 device rows final" in text  # the refused one is final
    children = text.split('id="children"')[1].split("</table>")[0]
    assert (
        f'href="/console/bulk-changes/{jasper}"' in children
        and f'href="/console/bulk-changes/{thingspace}"' in children
    )
    assert "AT&amp;T Control Center (POD19)" in children and "Verizon ThingSpace" in children
    refused = text.split('id="refused"')[1]
    assert NOT_IN_INVENTORY in refused and "in this tenant&#39;s inventory" in refused
    assert "refreshing every" in text  # NEW: waiting for its runs, as a bulk change's page does

    for child in (jasper, thingspace):  # each child links its submission; a lone bulk change does not
        page = console.page(f"/console/bulk-changes/{child}")
        assert f'id="submission" href="/console/submissions/{sid}"' in page
    lone = console.api.submit(console.api.seed.sample_iccids["jasper"][5:6])
    assert 'id="submission"' not in console.page(f"/console/bulk-changes/{lone}")

    rows = list(iter_device_results(console.engine, console.api.seed.tenant_id, jasper))
    claim(console.engine, [r["id"] for r in rows])  # a run took the Jasper child's rows: it moves
    set_bulk_status(console.engine, jasper, BulkChangeStatus.PROCESSING)
    moving = console.page(f"/console/submissions/{sid}")
    assert "refreshing every" in moving and "PROCESSING" in moving


def test_one_csv_holds_every_device_of_the_submission(console: Console) -> None:
    sid, (jasper, thingspace) = _split(console)
    r = console.client.get(f"/console/submissions/{sid}/devices.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert (
        r.headers["cache-control"] == "no-store" and f"submission-{sid}-devices.csv" in r.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["bulkChangeId"] for row in rows] == [str(jasper), str(jasper), str(thingspace), ""]
    assert rows[-1]["iccid"] == NOT_IN_INVENTORY and rows[-1]["status"] == "ERROR"


def test_search_and_the_list_lead_to_the_submission(console: Console) -> None:
    sid, (jasper, thingspace) = _split(console)
    for text in (f"S{sid}", f"s {sid}", f"submission #{sid}", f"Submission{sid}"):
        r = console.client.get("/console/search", params={"q": text}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/console/submissions/{sid}", text
    missing = console.client.get("/console/search", params={"q": f"S{sid + 1000}"})
    assert missing.status_code == 404 and "no bulk change or submission with that id" in missing.text
    intruder = sign_in(console.fresh_client(), console.other_key)
    assert intruder.get("/console/search", params={"q": f"S{sid}"}).status_code == 404
    listed = console.page("/console/").split('id="bulk-changes"')[1]
    assert listed.count(f'href="/console/submissions/{sid}"') == 2  # both children are marked


def test_another_tenants_submission_is_not_found_and_signing_in_is_required(console: Console) -> None:
    sid, _ = _split(console)
    intruder = sign_in(console.fresh_client(), console.other_key)
    for path in (f"/console/submissions/{sid}", f"/console/submissions/{sid}/devices.csv"):
        r = intruder.get(path)
        assert r.status_code == 404 and f"no submission {sid} for this tenant" in r.text, path
        missing = console.client.get(path.replace(str(sid), str(sid + 1000)))
        assert missing.status_code == 404, path
        anonymous = console.fresh_client().get(path, follow_redirects=False)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login")


_SEGMENTS = st.one_of(
    st.text(min_size=1, max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["0", "٣", "1_0", "+1", "1e3", "9223372036854775808", "S1", "%2e%2e", " 1"]),
).filter(lambda s: s not in (".", ".."))  # a client resolves those to another page before sending


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=_SEGMENTS, csv_link=st.booleans())
def test_any_submission_id_in_the_path_is_a_4xx_page_never_a_5xx(
    console: Console, segment: str, csv_link: bool
) -> None:
    path = f"/console/submissions/{quote(segment, safe='')}" + ("/devices.csv" if csv_link else "")
    r = console.client.get(path)  # "0/" (%2F) is redirected without the slash first, then refused
    assert 400 <= r.status_code < 500, (segment, r.status_code, r.text[:300])
    assert "text/html" in r.headers["content-type"]
