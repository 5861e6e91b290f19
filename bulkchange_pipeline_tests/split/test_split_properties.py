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
    known = _known(seed)
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


def _names(item: dict[str, Any], ident: str) -> bool:
    """The results row is the device ``ident`` (its ICCID column, or as the request named it)."""
    asked = item.get("changeRequest") or {}
    return ident in (item.get("iccid"), asked.get("device"), asked.get("iccid"))


def _known(seed: Any) -> list[str]:
    """The identifiers ``bodies`` draws from: this tenant's devices, one in no inventory, another tenant's."""
    return [i for ids in seed.sample_iccids.values() for i in ids] + [UNKNOWN_ICCID, *seed.other_iccids[:2]]


def _known_identifier(device: Any, known: list[str]) -> str | None:
    """The ICCID a row names when it is one of the drawn identifiers (a bare string, or
    ``{"iccid": ..., "costCenter": ...}``), else None."""
    if isinstance(device, str) and device in known:
        return device
    if isinstance(device, dict) and set(device) == {"iccid", "costCenter"} and device["iccid"] in known:
        return str(device["iccid"])
    return None


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
    # every inventory identifier sent is in the file exactly as many times as it was sent (once per row)
    known = _known(api.seed)
    for ident in {d for d in (_known_identifier(d, known) for d in body["devices"]) if d}:
        sent = sum(1 for d in body["devices"] if _known_identifier(d, known) == ident)
        assert sum(1 for i in items if _names(i, ident)) == sent, (ident, items)
    assert all(i["statusDetails"] for i in items if i["status"] == "ERROR")  # every refusal has its reason
    status = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert status["counts"] == answer["counts"] and status["status"] == answer["status"]


ODD_IDS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    h.HOSTILE_TEXT,
    st.sampled_from(
        [
            "0",
            "1",
            "01",
            "1e3",
            "9223372036854775807",
            "9223372036854775808",
            "1:cancel",
            "%00",
            "..",
            "1.0",
            " 1",
            "1 ",
        ]
    ),
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
    ("post", "/submissions/{id}:release"),
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
        return
    # a 2xx is only ever this tenant's own submission, named by its id in digits, with a key that may
    sid = api.sid  # type: ignore[attr-defined]
    assert str(ident).isascii() and str(ident).isdigit() and int(ident) == sid, path
    assert headers is not api.other and headers, (path, headers)
    if method == "get" and template.endswith("/devices"):
        fmt = params.get("format", "json")
        kinds = {"json": "application/json", "csv": "text/csv", "xml": "application/xml"}
        assert r.headers["content-type"].startswith(kinds[fmt])
        if fmt == "json":
            assert r.json()["submissionId"] == sid and len(r.json()["items"]) == 2
        elif fmt == "csv":
            assert len(r.text.strip().splitlines()) == 3  # the header and the two devices
        else:
            assert f"<submissionId>{sid}</submissionId>" in r.text and r.text.count("<deviceResult>") == 2
        return
    answer = r.json()
    if method == "get":
        assert answer["id"] == sid and answer["total"] == 2 and answer["done"] <= answer["total"]
        return
    assert answer["submissionId"] == sid and any(c["done"] for c in answer["children"]), answer
    now = api.client.get(f"/submissions/{sid}", headers=api.demo).json()
    assert (now["status"], now["counts"]) == (answer["status"], answer["counts"])  # it says what it did
