"""Teal conformance: the simulator and our client held against `teal.yaml`, the public description.

(a) Each described example goes straight over HTTP to the simulator; the synchronous answer, the
operation result it leads to (102 first, then the records) and the callback must be as described;
a missing required field or parameter is a 4xx in the error envelope, and missing or wrong
ApiKey/ApiSecret the described 401. (b) Our TealClient runs against the simulator behind the
recorder, and every request it sent must be a described operation, field by field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange, DeviceResult
from bulkchange_pipeline.carriers.teal import TealClient
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.clock import ManualClock
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.simulators.teal import TealSimulator
from bulkchange_pipeline.simulators.teal_rules import DEFAULT_PLANS, make_eids
from bulkchange_pipeline_tests.contracts.contract import Contract, Operation, load_contract
from bulkchange_pipeline_tests.contracts.recording import serve_recorded
from bulkchange_pipeline_tests.simulators.teal_fixtures import (
    TEAL_API_KEY,
    TEAL_API_SECRET,
    CallbackReceiver,
    teal_account,
)
from bulkchange_pipeline_tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

AUTH = {"ApiKey": TEAL_API_KEY, "ApiSecret": TEAL_API_SECRET}
DELAY = 0.5  # simulated seconds an example's operation takes


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract("teal")


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """Where the examples' callbacks go (their public example URL is not ours to call)."""
    rec = CallbackReceiver()
    with run_app_in_thread(rec.app()) as handle:
        rec.handle = handle
        yield rec


@pytest.fixture
def served(contract: Contract, sim_clock: ManualClock) -> Iterator[tuple[TealSimulator, httpx.Client]]:
    """A simulator on the test's clock, holding the examples' eSIMs (STOPPED, not active) and
    plan, and an authorised HTTP client for it."""
    sim = TealSimulator(
        {TEAL_API_KEY: TEAL_API_SECRET},
        calls_per_minute=0,
        operation_delay_seconds=DELAY,
        read_delay_seconds=DELAY,
        clock=sim_clock,
    )
    eids, plans = _example_ids(contract)
    sim.seed_devices({"eid": e, "deviceStatus": "STOPPED", "active": False} for e in eids)
    sim.configure(plans=[*DEFAULT_PLANS, *({"uuid": p, "name": f"plan {p[:6]}"} for p in plans)])
    try:
        with sim.run_in_thread() as handle, httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
            yield sim, http
    finally:
        sim.close()


def _example_ids(contract: Contract) -> tuple[set[str], set[str]]:
    eids: set[str] = set()
    plans: set[str] = set()
    for op in contract.operations.values():
        for example in op.examples:
            if op.method == "GET" and "eid" in example:
                eids.add(example["eid"])
            for entry in example.get("entries", []) if op.method == "POST" else []:
                eids.add(entry["eid"] if isinstance(entry, dict) else entry)
                if isinstance(entry, dict):
                    plans.add(entry["planUuid"])
    return eids, plans


def _requests(op: Operation) -> list[tuple[dict[str, Any], Any]]:
    """(query, body) of each example: GET examples are queries; POST examples are bodies, with
    the operation's `query_examples`."""
    if op.method == "GET":
        return [(dict(example), None) for example in op.examples]
    return list(zip((dict(q) for q in op.spec["query_examples"]), op.examples, strict=True))


def _schema_errors(schema: dict[str, Any], body: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(body)]


QUEUED = ["esims_list", "esims_info", "plans", "enable", "disable", "activate", "assign_plan"]


# -- (a) the simulator against the description ----------------------------------------------------


@pytest.mark.parametrize("name", QUEUED)
def test_each_example_is_queued_then_answered_as_described(contract, served, receiver, sim_clock, name) -> None:
    sim, http = served
    op, result_op = contract.operation(name), contract.operation("operation_result")
    assert op.examples, f"{name} has no example"
    for query, body in _requests(op):
        assert op.query_errors(query) == [] and op.request_errors(body) == []  # the example itself
        if "callbackUrl" in query:
            query["callbackUrl"] = receiver.base_url + "/callbacks/teal?from=example"
        r = http.request(op.method, op.url(), params=query, json=body)
        assert r.status_code == 200, r.text
        assert op.response_errors(200, r.json()) == []
        assert "entries" not in r.json()  # nothing but the queued reply comes back at once
        href = r.json()["link"]["operationResult"]["href"]
        assert href.endswith(f"{result_op.path}?requestId={query['requestId']}")

        pending = http.get(result_op.path, params={"requestId": query["requestId"]})
        assert result_op.response_errors(pending.status_code, pending.json()) == []
        assert pending.status_code == 202 and pending.json()["status"] == 102

        sim_clock.advance(DELAY)
        done = wait_until(
            lambda href=href: (a := http.get(href)).status_code == 200 and a,
            timeout=5,
            interval=0.01,
            what=f"{name}'s result",
        )
        assert result_op.response_errors(200, done.json()) == []
        assert _schema_errors(op.spec["result"], done.json()) == []
        entries = done.json()["entries"]
        if op.method == "POST":
            assert [e["success"] for e in entries] == [True] * len(body["entries"])
        elif name == "esims_info":
            assert [e["eid"] for e in entries] == [query["eid"]]
        else:
            assert entries
        if "callbackUrl" in query:  # called back with requestId appended to the given URL
            assert receiver.wait_for({query["requestId"]})
            (cb,) = [c for c in receiver.received if c["query"]["requestId"] == query["requestId"]]
            assert cb["query"]["from"] == "example"
    if name == "activate":
        assert all(d["active"] for d in sim.esims.values())


@pytest.mark.parametrize("name", [*QUEUED, "operation_result"])
def test_a_missing_required_field_or_parameter_is_a_described_4xx(contract, served, name) -> None:
    sim, http = served
    op = contract.operation(name)
    query, body = _requests(op)[0]
    for field in op.spec["query"]["required"]:
        r = http.request(op.method, op.url(), params={k: v for k, v in query.items() if k != field}, json=body)
        assert 400 <= r.status_code < 500, (field, r.status_code)
        assert op.response_errors(r.status_code, r.json()) == [], field
        assert r.json()["errorCode"] == "VALIDATION_ERROR"
    for field in (op.spec.get("request") or {}).get("required", []):
        r = http.request(op.method, op.url(), params=query, json={k: v for k, v in body.items() if k != field})
        assert 400 <= r.status_code < 500 and op.response_errors(r.status_code, r.json()) == [], field
    stats = sim.stats()
    assert stats["operations_enqueued"] + stats["reads_enqueued"] == 0  # nothing refused was queued


@pytest.mark.parametrize("name", [*QUEUED, "operation_result"])
def test_missing_or_wrong_credentials_get_the_described_refusal(contract, served, name) -> None:
    sim, http = served
    op = contract.operation(name)
    query, body = _requests(op)[0]
    for headers in ({}, {"ApiKey": TEAL_API_KEY}, {"ApiSecret": TEAL_API_SECRET}, {**AUTH, "ApiSecret": "nope"}):
        r = httpx.request(op.method, str(http.base_url) + op.url(), params=query, json=body, headers=headers)
        assert r.status_code == 401 and op.response_errors(401, r.json()) == [], headers
        assert r.json()["errorCode"] == "UNAUTHORIZED"
    assert sim.stats()["auth_failures"] == 4


# -- (b) our client against the description -------------------------------------------------------


def _change(i: int, eid: str, change_type: ChangeType, target: dict[str, str]) -> DeviceChange:
    return DeviceChange(i, i, change_type, None, None, None, eid, target)


def _run(client: TealClient, step: Any) -> Any:
    async def go() -> Any:
        try:
            return await step(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _settle(client: TealClient, changes: list[DeviceChange], accepted: list[DeviceResult]) -> list[DeviceResult]:
    ids = {r.device_change_id: r.carrier_request_id for r in accepted}
    todo = [dataclasses.replace(c, carrier_request_id=ids[c.device_change_id]) for c in changes]
    final: dict[int, DeviceResult] = {}
    deadline = time.monotonic() + 10
    while len(final) < len(todo) and time.monotonic() < deadline:
        open_ = [c for c in todo if c.device_change_id not in final]
        for c, r in zip(open_, _run(client, lambda cl, o=open_: cl.poll(o)), strict=True):
            if r is not None:
                final[c.device_change_id] = r
        time.sleep(0.05)
    return [final[c.device_change_id] for c in todo]


def test_client_requests_match_the_description_field_by_field(contract, receiver) -> None:
    sim = TealSimulator(
        {TEAL_API_KEY: TEAL_API_SECRET}, calls_per_minute=0, operation_delay_seconds=0.1, read_delay_seconds=0.1
    )
    stopped, online, planned = make_eids(3, start=900)
    sim.seed_devices([{"eid": stopped, "deviceStatus": "STOPPED"}, {"eid": online}, {"eid": planned}])
    plan_5gb = DEFAULT_PLANS[1]["uuid"]
    changes = [
        _change(1, stopped, ChangeType.STATUS_UPDATE, {"status": "online"}),
        _change(2, online, ChangeType.STATUS_UPDATE, {"status": "stopped"}),
        _change(3, planned, ChangeType.CARRIER_RATE_PLAN_CHANGE, {"carrier_rate_plan": plan_5gb}),
    ]
    try:
        with serve_recorded(sim) as (handle, recorder):
            client = TealClient(teal_account(handle, callback_base_url=receiver.base_url))
            before = _run(client, lambda cl: cl.already_applied(changes))
            accepted = _run(client, lambda cl: cl.apply(changes))
            final = _settle(client, changes, accepted)
            after = _run(client, lambda cl: cl.already_applied(changes))
    finally:
        sim.close()
    assert before == [None, None, None] and [r.status for r in final] == ["PROCESSED"] * 3
    assert all(r is not None and r.status == "PROCESSED" for r in after)  # found once in effect
    used: set[str] = set()
    for rec in recorder.requests:
        op = contract.find(rec.method, rec.path)
        assert op is not None, f"undescribed call {rec.method} {rec.path}"
        used.add(op.name)
        assert op.query_errors(rec.query) == [], (op.name, rec.query)
        assert op.request_errors(rec.body) == [], (op.name, rec.body)
        assert rec.headers.get("apikey") == TEAL_API_KEY and rec.headers.get("apisecret") == TEAL_API_SECRET
        assert str(rec.status) in op.spec["responses"], (op.name, rec.status)
    assert used == {"esims_info", "operation_result", "enable", "disable", "assign_plan"}
    writes = [r for r in recorder.requests if r.method == "POST"]
    assert writes and all(r.query["callbackUrl"] == receiver.base_url + "/callbacks/teal" for r in writes)
    assert all("callbackUrl" not in r.query for r in recorder.requests if r.path.endswith("/esims/info"))


def test_the_check_catches_the_read_issue_17_found(contract) -> None:
    """The read our client used to send (the eSIM list filtered by EID, entries expected at once)
    is not what the description says; the field-by-field check must say so."""
    old = {"requestId": "a" * 32, "eid": make_eids(1)[0], "offset": "0", "limit": "1"}
    errors = contract.find("GET", "/api/v1/esims").query_errors(old)
    assert errors and any("eid" in e for e in errors)
    assert contract.find("GET", "/api/v1/esims/info").query_errors({**old, "offset": "0"})  # no offset there


# -- (c) what the description does not give is refused in the envelope (issue 17) ----------------

# (method, path, status): unknown paths, an unknown operation, and served paths with a method
# they do not take.
NO_ROUTE = [
    ("GET", "/api/v1/nope", 404),
    ("GET", "/api/v2/esims", 404),
    ("POST", "/api/v1/esims/nope", 404),
    ("GET", "/", 404),
    ("DELETE", "/api/v1/esims", 405),
    ("GET", "/api/v1/esims/enable", 405),
    ("POST", "/api/v1/operation-result", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), NO_ROUTE)
def test_an_unknown_path_or_method_answers_in_the_error_envelope_after_auth(
    contract, served, method, path, status
) -> None:
    sim, http = served
    assert contract.find(method, path) is None  # really undescribed
    r = http.request(method, path, params={"requestId": "a" * 32})
    assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
    assert _schema_errors(contract.errors["default"], r.json()) == [] and r.json()["errorCode"] == "GENERIC_ERROR"
    assert ("allow" in r.headers) is (status == 405)
    r = httpx.request(method, str(http.base_url).rstrip("/") + path, headers={"ApiKey": TEAL_API_KEY})
    assert r.status_code == 401 and _schema_errors(contract.errors["401"], r.json()) == []  # auth first
    assert sim.stats()["reads_enqueued"] + sim.stats()["operations_enqueued"] == 0


_EXTRA = {"eid": make_eids(1)[0], "offset": "0", "limit": "1", "callbackUrl": "http://x.test/cb", "lockProfile": "true"}


@pytest.mark.parametrize("name", [*QUEUED, "operation_result"])
def test_a_query_parameter_the_description_does_not_give_is_refused(contract, served, name) -> None:
    sim, http = served
    op = contract.operation(name)
    query, body = _requests(op)[0]
    extras = {k: v for k, v in _EXTRA.items() if k not in op.spec["query"]["properties"]}
    assert extras
    for key, value in extras.items():
        assert op.query_errors({**query, key: value})  # the description refuses it too
        r = http.request(op.method, op.url(), params={**query, key: value}, json=body)
        assert r.status_code == 400 and op.response_errors(400, r.json()) == [], (key, r.text)
        assert r.json()["errorCode"] == "VALIDATION_ERROR" and key in r.json()["message"]
    twice = [*query.items(), ("requestId", query["requestId"])]  # one parameter given twice
    r = http.request(op.method, op.url(), params=twice, json=body)
    assert r.status_code == 400 and r.json()["errorCode"] == "VALIDATION_ERROR"
    stats = sim.stats()
    assert stats["operations_enqueued"] + stats["reads_enqueued"] == 0


def test_the_old_esims_eid_read_is_refused_not_answered_with_the_first_page(contract, served) -> None:
    """The read issue 17 found (`esims?eid=`) used to be queued and answered with the first page
    of every eSIM, so a client reading "its" eSIM got someone else's."""
    sim, http = served
    old = {"requestId": "a" * 32, "eid": make_eids(1)[0], "offset": "0", "limit": "1"}
    r = http.get("/api/v1/esims", params=old)
    assert r.status_code == 400 and contract.operation("esims_list").response_errors(400, r.json()) == []
    assert r.json()["errorCode"] == "VALIDATION_ERROR" and "eid" in r.json()["message"]
    assert "a" * 32 not in sim.operations and sim.stats()["reads_enqueued"] == 0
