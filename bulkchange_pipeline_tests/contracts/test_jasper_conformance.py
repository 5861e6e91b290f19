"""The Jasper simulator and our JasperClient held against the public description (`jasper.yaml`).

(a) The simulator, straight over HTTP: every example of the description is answered as described;
bad field values (an IP that is not one, a value outside an enum, a date past 180 days) are
refused with a 400 in the Jasper error shape and change nothing; no credentials / a bad key get the
two documented 401s. (b) Our client, run against the simulator behind `serve_recorded`: every
request it sends is a described operation, field by field.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange
from bulkchange_pipeline.carriers.jasper import JasperClient
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.contracts.contract import load_contract
from bulkchange_pipeline_tests.contracts.recording import serve_recorded
from bulkchange_pipeline_tests.simulators.fixtures import (
    JASPER_API_KEY,
    JASPER_USER,
    jasper_account,
    seed_jasper,
)

pytestmark = pytest.mark.timeout(60)

CONTRACT = load_contract("jasper")
AUTH = (JASPER_USER, JASPER_API_KEY)
EXAMPLE_ICCID = CONTRACT.operation("get_device").examples[0]["iccid"]


@pytest.fixture
def sim() -> Iterator[tuple[JasperSimulator, ServerHandle]]:
    simulator = JasperSimulator({JASPER_USER: JASPER_API_KEY}, rate_per_second=0, max_concurrency=1)
    simulator.seed_devices([{"iccid": EXAMPLE_ICCID, "status": "INVENTORY"}])
    with simulator.run_in_thread() as handle:
        yield simulator, handle


def _send(handle: ServerHandle, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, handle.root_url + path, timeout=5, **kwargs)


def _described(op_name: str, response: httpx.Response) -> list[str]:
    op = CONTRACT.operation(op_name)
    assert response.headers["content-type"] == "application/json", response.text
    return op.response_errors(response.status_code, response.json())


# -- (a) the simulator against the description --------------------------------------------------


def test_description_is_sourced_and_names_the_three_operations() -> None:
    assert set(CONTRACT.operations) == {"get_device", "edit_device", "list_devices"}
    assert {s["tag"] for s in CONTRACT.sources.values()} == {"D", "C", "I"}
    assert all(CONTRACT.operation(n).examples for n in CONTRACT.operations)


def test_get_device_example_is_answered_as_described(sim) -> None:
    _, handle = sim
    op = CONTRACT.operation("get_device")
    for example in op.examples:
        r = _send(handle, "GET", op.url(**example), auth=AUTH)
        assert r.status_code == 200 and _described("get_device", r) == []
        assert r.json()["iccid"] == example["iccid"]


@pytest.mark.parametrize("body", CONTRACT.operation("edit_device").examples)
def test_edit_device_examples_are_applied_as_described(sim, body) -> None:
    simulator, handle = sim
    op = CONTRACT.operation("edit_device")
    assert op.request_errors(body) == []  # the example is itself what the description allows
    r = _send(handle, "PUT", op.url(iccid=EXAMPLE_ICCID), auth=AUTH, json=body)
    assert r.status_code in (200, 202) and _described("edit_device", r) == []
    assert r.json() == {"iccid": EXAMPLE_ICCID}
    device = _send(handle, "GET", op.url(iccid=EXAMPLE_ICCID), auth=AUTH)
    assert _described("get_device", device) == []
    names = {"ipv4Address": "fixedIPAddress", "ipv6Address": "fixedIpv6Address"}
    for key, value in body.items():
        if key not in ("effectiveDate", "overageLimitOverride"):
            assert device.json()[names.get(key, key)] == value
    assert simulator.applied_counts[EXAMPLE_ICCID] == 1


@pytest.mark.parametrize("query", CONTRACT.operation("list_devices").examples)
def test_list_devices_examples_are_answered_as_described(sim, query) -> None:
    simulator, handle = sim
    seed_jasper(simulator, 3)
    op = CONTRACT.operation("list_devices")
    assert op.query_errors(query) == []
    r = _send(handle, "GET", op.path, auth=AUTH, params=query)
    assert r.status_code == 200 and _described("list_devices", r) == []
    page = r.json()
    assert page["pageNumber"] == int(query.get("pageNumber", 1))
    assert len(page["devices"]) <= int(query.get("pageSize", 50))
    if "status" in query:
        assert {d["status"] for d in page["devices"]} == {query["status"]}


FUTURE_181 = (dt.datetime.now(dt.UTC) + dt.timedelta(days=181)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
BAD_EDITS = [
    {"ipv4Address": "not-an-ip"},
    {"ipv4Address": "2001:db8::1"},
    {"ipv6Address": "not-an-ip"},
    {"ipv6Address": "192.0.2.1"},
    {"overageLimitOverride": "ALWAYS"},
    {"status": "ASLEEP"},
    {"ratePlan": 7},
    {"status": "DEACTIVATED", "effectiveDate": FUTURE_181},
    {"status": "DEACTIVATED", "effectiveDate": "18/04/2016"},
    {"effectiveDate": "2016-04-18T17:31:34+00:00"},
    {},
]


@pytest.mark.parametrize("body", BAD_EDITS)
def test_bad_edit_values_get_a_400_in_the_error_shape_and_change_nothing(sim, body) -> None:
    simulator, handle = sim
    op = CONTRACT.operation("edit_device")
    before = dict(simulator.device(EXAMPLE_ICCID))
    r = _send(handle, "PUT", op.url(iccid=EXAMPLE_ICCID), auth=AUTH, json=body)
    assert r.status_code == 400 and _described("edit_device", r) == []
    assert simulator.device(EXAMPLE_ICCID) == before and not simulator.scheduled.get(EXAMPLE_ICCID)
    assert simulator.applied_counts[EXAMPLE_ICCID] == 0


@pytest.mark.parametrize(
    "query",
    [{}, {"modifiedSince": "18/04/2016"}, {"modifiedSince": "2016-04-18T17:31:34+00:00", "pageSize": "51"}],
)
def test_bad_list_queries_get_a_400_in_the_error_shape(sim, query) -> None:
    _, handle = sim
    op = CONTRACT.operation("list_devices")
    assert op.query_errors(query) != []  # the description refuses them too
    r = _send(handle, "GET", op.path, auth=AUTH, params=query)
    assert r.status_code == 400 and _described("list_devices", r) == []


def test_an_unencoded_plus_in_a_date_time_is_refused_in_the_error_shape(sim) -> None:
    """The described `modifiedSince` ends in "+00:00"; sent unencoded, its `+` arrives as a space,
    which the description's pattern refuses: a 400 in the error shape, not a repaired date."""
    _, handle = sim
    op = CONTRACT.operation("list_devices")
    decoded = {"modifiedSince": "2016-04-18T17:31:34 00:00"}  # what "...34+00:00" decodes to
    assert op.query_errors(decoded) != []
    r = _send(handle, "GET", op.path + "?modifiedSince=2016-04-18T17:31:34+00:00", auth=AUTH)
    assert r.status_code == 400 and _described("list_devices", r) == []


@pytest.mark.parametrize("op_name", ["get_device", "edit_device", "list_devices"])
def test_missing_or_bad_credentials_get_the_documented_401s(sim, op_name) -> None:
    _, handle = sim
    op = CONTRACT.operation(op_name)
    path = op.url(iccid=EXAMPLE_ICCID) if "{iccid}" in op.path else op.path
    body = {"status": "ACTIVATED"} if op.method == "PUT" else None
    params = {"modifiedSince": "2016-04-18T17:31:34+00:00"} if op_name == "list_devices" else None
    r = _send(handle, op.method, path, json=body, params=params)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Jasper"'
    assert r.json() == {"errorMessage": "Full authentication is required to access this resource"}
    assert _described(op_name, r) == []
    r = _send(handle, op.method, path, json=body, params=params, auth=(JASPER_USER, "not-the-key"))
    assert r.status_code == 401 and r.json() == {"errorMessage": "Invalid credentials", "errorCode": "10000001"}
    assert _described(op_name, r) == []


def test_over_limit_answer_has_the_documented_code(sim) -> None:
    simulator, handle = sim
    simulator.configure(rate_per_second=1)
    op = CONTRACT.operation("get_device")
    answers = [_send(handle, "GET", op.url(iccid=EXAMPLE_ICCID), auth=AUTH) for _ in range(3)]
    refused = [r for r in answers if r.status_code != 200]
    assert refused and all(_described("get_device", r) == [] for r in refused)
    assert all(r.json()["errorCode"] == "40000029" for r in refused)


# -- (b) our client against the description --------------------------------------------------------


def _change(i: int, iccid: str, change_type: int, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, iccid, None, None, None, target)


def test_every_request_our_client_sends_is_a_described_operation() -> None:
    simulator = JasperSimulator({JASPER_USER: JASPER_API_KEY}, rate_per_second=0, max_concurrency=1)
    a, b, c, d, e = seed_jasper(simulator, 5, status="ACTIVATED")
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    changes = [
        _change(1, a, ChangeType.STATUS_UPDATE, status="deactivated"),
        _change(2, b, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOT_5GB", communication_plan="CP_LTE"),
        _change(3, c, ChangeType.CUSTOMER_ASSIGNMENT, customer_name="Acme"),
        _change(4, d, ChangeType.EDIT_USERNAME_COST_CENTER, username="alice", cost_center="CC-9"),
        _change(5, e, ChangeType.STATUS_UPDATE, status="DEACTIVATED", effective_date=soon),
        _change(6, "89012608999999999999", ChangeType.STATUS_UPDATE, status="DEACTIVATED"),  # unknown: 404
    ]
    with serve_recorded(simulator) as (handle, recorder):
        client = JasperClient(jasper_account(handle))

        async def run() -> None:
            try:
                await client.already_applied(changes)
                await client.apply(changes)
                await client.get_device(a)
            finally:
                await client.aclose()

        asyncio.run(run())
    sent = recorder.requests
    assert {(r.method, r.path.rsplit("/", 1)[0]) for r in sent} == {
        ("GET", "/rws/api/v1/devices"),
        ("PUT", "/rws/api/v1/devices"),
    }
    for r in sent:
        op = CONTRACT.find(r.method, r.path)
        assert op is not None, f"{r.method} {r.path} is no described operation"
        assert op.request_errors(r.body if r.raw_body else None) == [], (r.method, r.path, r.body)
        assert op.query_errors(r.query) == [] if op.spec.get("query") else r.query == {}
        assert r.headers["authorization"].startswith("Basic ")
        assert r.status in (200, 202, 404), (r.method, r.path, r.status)
    puts = [r for r in sent if r.method == "PUT"]
    assert len(puts) == len(changes) and any("effectiveDate" in r.body for r in puts)
