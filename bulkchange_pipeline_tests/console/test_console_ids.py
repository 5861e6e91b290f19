"""Ids in the console's paths and forms follow the API's rule (``intake.api_query.whole_number``):
ASCII digits and nothing else. Before, FastAPI's int parameter took ``1.0``, `` 1``, ``+1`` and
fullwidth ``１`` as 1 on the console while the API refused them (422), so
``POST /console/bulk-changes/1.0/cancel`` cancelled bulk change 1. Every respelling of a real id is
the console's "not found" page (404), the API's 422 for the same spelling, and changes nothing;
the id in digits still works. Both backends, over HTTP through the real app."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.intake.api_query import whole_number
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.device_rows import iter_device_results

from .conftest import Console, csrf_of
from .test_console_actions import _upload
from .test_console_submissions import _split

_DIGIT_SETS = ["０１２３４５６７８９", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "⁰¹²³⁴⁵⁶⁷⁸⁹", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"]
_AROUND = [" ", "\t", "\u00a0", "\u200b", "\u202e", "+", "-", "0x", "#", "%20", "\n", "\x00"]
_AFTER = [".0", ".", "e0", "_0", ",0", " ", "\u00a0", "\u200b", "\ufeff", "\n", "/.", ";", "l", "\ufe0f"]


def _respelt(draw: st.DrawFn, number: int) -> str:
    """``number`` written another way that int() or a careless reader still takes as that number."""
    digits = str(number)
    how = draw(st.sampled_from(["before", "after", "digits", "both"]))
    if how == "digits":
        table = draw(st.sampled_from(_DIGIT_SETS))
        at = draw(st.integers(0, len(digits) - 1))  # one digit or all of them from another script
        whole = draw(st.booleans())
        return "".join(table[int(d)] if whole or i == at else d for i, d in enumerate(digits))
    before = draw(st.sampled_from(_AROUND)) if how in ("before", "both") else ""
    after = draw(st.sampled_from(_AFTER)) if how in ("after", "both") else ""
    return before + digits + after


@st.composite
def _hostile(draw: st.DrawFn, number: int) -> str:
    """Mostly ``number`` respelt; sometimes any text at all."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=12))
    return _respelt(draw, number)


def _path(template: str, segment: str) -> str:
    return template.format(quote(segment, safe=""))


@pytest.mark.parametrize("spelt", ["1.0", " 1", "1 ", "+1", "１", "٣", "1\u200b", "0x1", "1e0", "1_0", "\u00a01"])
def test_whole_number_refuses_what_int_accepts(spelt: str) -> None:
    assert whole_number(spelt) is None
    assert whole_number("1") == 1 and whole_number("007") == 7
    assert whole_number("9" * 5000) is None  # past int()'s digit limit: refused, not a 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_respelt_id_is_not_found_on_every_console_route_and_changes_nothing(console: Console, data) -> None:
    api = console.api
    if not hasattr(console, "_ids"):  # one set of rows per test, not per example
        bc_id = api.submit(api.seed.sample_iccids["jasper"][:2])
        row = next(iter(iter_device_results(console.engine, api.seed.tenant_id, bc_id)))
        sid, _ = _split(console)
        console._ids = (bc_id, row["id"], row["device_id"], sid)  # type: ignore[attr-defined]
    bc_id, row_id, device_id, sid = console._ids  # type: ignore[attr-defined]
    routes = [
        ("/console/bulk-changes/{}", bc_id, "/bulk-changes/{}"),
        ("/console/bulk-changes/{}/devices.csv", bc_id, "/bulk-changes/{}/devices"),
        ("/console/bulk-changes/{}/cancel", bc_id, "/bulk-changes/{}"),
        (f"/console/bulk-changes/{bc_id}/rows/{{}}", row_id, None),
        ("/console/devices/{}", device_id, None),
        ("/console/submissions/{}", sid, "/submissions/{}"),
        ("/console/submissions/{}/devices.csv", sid, "/submissions/{}"),
    ]
    template, number, api_template = data.draw(st.sampled_from(routes), label="route")
    segment = data.draw(_hostile(number), label="segment")
    if whole_number(segment) is not None or segment in ("", ".", ".."):
        return  # digits are an id (someone's or nobody's), and a client resolves dots before sending
    r = console.client.get(_path(template, segment), follow_redirects=False)
    assert r.status_code in (404, 307), (segment, r.status_code, r.text[:300])  # 307: a trailing slash dropped
    if r.status_code == 404:
        assert r.headers["content-type"].startswith("text/html") and "Not found" in r.text, segment
    assert console.client.get(template.format(number)).status_code == 200  # the id in digits is that page
    if api_template is not None:
        refused = api.client.get(_path(api_template, segment), headers=api.demo)
        assert 400 <= refused.status_code < 500 and refused.status_code != 200, segment
    if template.endswith("/cancel"):
        csrf = csrf_of(console.client.get(template.format(number)).text)
        posted = console.client.post(_path(template, segment), data={"csrf": csrf}, follow_redirects=False)
        assert posted.status_code in (404, 307), (segment, posted.status_code)
        assert count_rows_by_status(console.engine, bc_id) == {"NEW": 2}  # nothing was cancelled


@pytest.mark.parametrize("spelt", ["{}.0", " {}", "{} ", "+{}", "fullwidth", "\u00a0{}"])
def test_a_respelt_id_cannot_cancel_and_the_api_refuses_it_alike(console: Console, spelt: str) -> None:
    bc_id = console.api.submit(console.api.seed.sample_iccids["jasper"][:2])
    text = _fullwidth(bc_id) if spelt == "fullwidth" else spelt.format(bc_id)
    path = f"/console/bulk-changes/{quote(text, safe='')}"
    csrf = csrf_of(console.page(f"/console/bulk-changes/{bc_id}/cancel"))
    r = console.client.post(path + "/cancel", data={"csrf": csrf})
    assert r.status_code == 404 and "is not an id" in r.text and "digits only" in r.text, r.text[:300]
    assert count_rows_by_status(console.engine, bc_id) == {"NEW": 2}
    api_path = path.removeprefix("/console")
    assert console.api.client.get(api_path, headers=console.api.demo).status_code == 422
    anonymous = console.fresh_client().get(path, follow_redirects=False)  # signing in still comes first
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login")


def _fullwidth(number: int) -> str:
    return "".join(_DIGIT_SETS[0][int(d)] for d in str(number))


@pytest.mark.parametrize("spelt", [" {}", "{} ", "+{}", "{}.0", "fullwidth"])
def test_a_form_id_follows_the_same_rule(console: Console, spelt: str) -> None:
    """The upload's service provider and the list's carrier filter: digits only, as in the API."""
    sp = console.api.jasper
    text = _fullwidth(sp) if spelt == "fullwidth" else spelt.format(sp)
    data = f"iccid,status\n{console.api.seed.sample_iccids['jasper'][0]},RETIRED\n".encode()
    refused = _upload(console, data, service_provider=text)
    assert refused.status_code == 422 and "choose one of your service providers" in refused.text
    assert _upload(console, data).status_code == 200  # the id in digits
    listed = console.client.get("/console/", params={"carrier": text})
    assert listed.status_code == 200 and "carrier: not one of your service providers" in listed.text
    assert "carrier: not one" not in console.page(f"/console/?carrier={sp}")
