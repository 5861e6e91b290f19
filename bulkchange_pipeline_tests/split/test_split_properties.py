"""Hostile input at the new ways in of a split (hypothesis, both backends): ``POST /bulk-changes``
and ``:dry-run`` without serviceProviderId, and every ``/submissions`` route with arbitrary ids,
query parameters and bodies. The property, for every input: a 4xx problem document with a reason
and nothing stored, or accepted and round-tripped (the submission holds every device sent, once,
either in a child or refused with a reason); never a 5xx."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from bulkchange_pipeline.store.api_keys import create_api_key

from ..intake import hostile_inputs as h
from ..intake.test_api import Api, make_api
from .conftest import UNKNOWN_ICCID, stored_counts

EXAMPLES = int(os.environ.get("BULKCHANGE_HOSTILE_EXAMPLES", "30"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("BULKCHANGE_HOSTILE_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=5)


def _problem(r: Any) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["detail"].strip(), r.text


@st.composite
def device(draw: st.DrawFn, known: list[str]) -> Any:
    """Mostly an inventory identifier (this tenant's, unknown, another tenant's); now and then a
    per-device value, or something that is no device at all."""
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(st.sampled_from(known))
    if kind < 8:
        return {"iccid": draw(st.sampled_from(known)), "costCenter": draw(st.one_of(st.just("CC-2"), h.HOSTILE_TEXT))}
    if kind == 8:
        keys = st.sampled_from([*h.ID_FIELDS, "costCenter", "username", "x"])
        return draw(st.dictionaries(keys, h.HOSTILE_SCALAR, max_size=3))
    return draw(h.HOSTILE_SCALAR)


@st.composite
def bodies(draw: st.DrawFn, seed: Any) -> Any:
    """Mostly a valid request without serviceProviderId (so the split runs), with one field made
    hostile now and then; sometimes no request at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(h.HOSTILE_VALUE)
    known = [i for ids in seed.sample_iccids.values() for i in ids] + [UNKNOWN_ICCID, *seed.other_iccids[:2]]
    body: dict[str, Any] = {"changeType": 10, "devices": draw(st.lists(device(known), min_size=0, max_size=8))}
    body["usernameCostCenterUpdate"] = {"costCenter": "CC-1"}
    mutation = draw(st.sampled_from(["none", "none", "none", "none", "changeType", "payload", "status", "header"]))
    if mutation == "changeType":
        body["changeType"] = draw(st.one_of(st.sampled_from([1, "EditUsernameCostCenter", 6, "10"]), h.HOSTILE_SCALAR))
    elif mutation == "payload":
        body["usernameCostCenterUpdate"] = draw(st.dictionaries(h.HOSTILE_TEXT, h.HOSTILE_SCALAR, max_size=2))
    elif mutation == "status":  # a payload of another change type
        body["statusUpdate"] = {"status": draw(st.sampled_from(["DEACTIVATED", "S", ""]))}
    elif mutation == "header":
        name = draw(st.sampled_from(["idempotencyKey", "processChanges", "portalTypeId", "deferIfLimited", "junk"]))
        body[name] = draw(st.one_of(st.sampled_from(["k-1", True, 0, 2]), h.HOSTILE_VALUE))
    return body


def _sent_identifiers(body: Any) -> int:
    return len(body["devices"])


@PROPERTY
@given(data=st.data())
def test_submit_without_service_provider_is_refused_clearly_or_round_trips(api: Api, data: st.DataObject) -> None:
    body = data.draw(bodies(api.seed))
    dry = data.draw(st.booleans())
    note(repr(body))
    before = stored_counts(api.engine)
    path = "/bulk-changes:dry-run" if dry else "/bulk-changes"
    r = api.client.post(
        path, content=h.to_bytes(h.dump(body)), headers={**api.demo, "Content-Type": "application/json"}
    )
    _problem(r)
    event(f"{'dry run' if dry else 'submit'} answered {r.status_code}")
    if r.status_code >= 400 or dry:
        assert stored_counts(api.engine) == before
        return
    answer = r.json()
    if "submissionId" not in answer:  # a named service provider cannot be in these bodies
        raise AssertionError(answer)
    sid = answer["submissionId"]
    assert r.status_code in (200, 202) and r.headers["location"] == f"/submissions/{sid}"
    items = api.client.get(f"/submissions/{sid}/devices", headers=api.demo).json()["items"]
    assert len(items) == _sent_identifiers(body) == sum(answer["counts"].values())
    assert all(i["statusDetails"] for i in items if i["status"] == "ERROR")  # every refusal has its reason
    status = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert status["counts"] == answer["counts"] and status["status"] == answer["status"]


ODD_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    h.HOSTILE_TEXT,
    st.sampled_from(["0", "1", "01", "1e3", "9223372036854775807", "9223372036854775808", "1:cancel", "%00", ".."]),
)
# The GET routes this property covers, as the OpenAPI document names them (for
# ``intake/test_hostile_properties.test_every_get_route_is_covered``).
SUBMISSION_GET_ROUTES = {"/submissions/{submission_id}", "/submissions/{submission_id}/devices"}
ROUTES = [
    ("get", "/submissions/{id}"),
    ("get", "/submissions/{id}/devices"),
    ("post", "/submissions/{id}:cancel"),
    ("post", "/submissions/{id}:retry-failed"),
    ("post", "/submissions/{id}:approve"),
    ("post", "/submissions/{id}:reject"),
]


@PROPERTY
@given(data=st.data())
def test_submission_routes_answer_4xx_with_a_reason_and_change_nothing(
    api: Api, data: st.DataObject, caplog: pytest.LogCaptureFixture
) -> None:
    if not hasattr(api, "approver"):  # one submission and an approver key per test, reused by every example
        api.approver = {"X-API-Key": create_api_key(api.engine, api.seed.tenant_id, "boss", roles=("approver",))}  # type: ignore[attr-defined]
        r = api.client.post(
            "/bulk-changes",
            json={
                "changeType": 10,
                "devices": api.seed.sample_iccids["jasper"][:2],
                "usernameCostCenterUpdate": {"costCenter": "C"},
            },
            headers=api.demo,
        )
        api.sid = r.json()["submissionId"]  # type: ignore[attr-defined]
    method, template = data.draw(st.sampled_from(ROUTES))
    ident = data.draw(st.one_of(ODD_IDS, st.just(api.sid)))  # type: ignore[attr-defined]
    path = template.replace("{id}", quote(str(ident), safe="", errors="surrogatepass"))
    odd_params = st.dictionaries(st.sampled_from(["format", "page", "status", "x"]), h.HOSTILE_TEXT, max_size=2)
    params = data.draw(st.one_of(st.sampled_from([{}, {}, {}, {"format": "csv"}, {"format": "json"}]), odd_params))
    headers = data.draw(st.sampled_from([api.demo, api.other, api.approver, {}]))  # type: ignore[attr-defined]
    body = data.draw(st.one_of(st.none(), h.HOSTILE_VALUE, st.builds(lambda r: {"reason": r}, h.HOSTILE_TEXT)))
    note(f"{method} {path} {params} {body!r}")
    before = stored_counts(api.engine)
    if params:
        path += "?" + urlencode(params, errors="surrogatepass")
    kw: dict[str, Any] = {"headers": headers}
    if method == "post" and body is not None:
        kw["content"] = h.to_bytes(h.dump(body))
        kw["headers"] = {**headers, "Content-Type": "application/json"}
    with caplog.at_level(logging.ERROR):
        r = getattr(api.client, method)(path, **kw)
    _problem(r)
    event(f"{method} answered {r.status_code}")
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
    if r.status_code >= 400:
        assert stored_counts(api.engine) == before
