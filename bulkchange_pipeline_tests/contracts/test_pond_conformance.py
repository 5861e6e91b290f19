"""Pond conformance (issue 17), PROVISIONAL like the description in `pond.yaml` (AMOP code [C] and
inference [I]; Pond publishes no API documentation): (a) the simulator driven over HTTP with
requests built from the description answers in the described shapes and refuses what the
description does not allow; (b) every request our `PondClient` sends, recorded by
`recording.serve_recorded`, is a described operation whose body and query match field by field."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange
from bulkchange_pipeline.carriers.pond import PondClient
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.pond import PondSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.contracts.contract import Contract, _errors, load_contract
from bulkchange_pipeline_tests.contracts.recording import RecordingApp, serve_recorded
from bulkchange_pipeline_tests.simulators.pond_fixtures import (
    NEW_PLAN,
    OLD_PLAN,
    POND_DISTRIBUTOR,
    POND_SECRET,
    POND_USER,
    pond_account,
    pond_sim,  # noqa: F401 - fixture
    seed_pond,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract("pond")


@pytest.fixture
def http(pond_sim: ServerHandle) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=pond_sim.root_url, auth=(POND_USER, POND_SECRET), timeout=5) as client:
        yield client


def send(contract: Contract, http: httpx.Client, name: str, example: Any = None, **path: Any) -> httpx.Response:
    op = contract.operation(name)
    url = op.url(distributor=POND_DISTRIBUTOR, **{k: str(v) for k, v in path.items()})
    if op.method == "GET":
        return http.get(url, params=example or {})
    return http.request(op.method, url, json=example)


def conforms(contract: Contract, name: str, response: httpx.Response, status: int) -> Any:
    body = response.json()
    assert response.status_code == status, (name, response.status_code, body)
    assert contract.operation(name).response_errors(status, body) == [], (name, body)
    return body


def refused(contract: Contract, name: str, response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, (name, response.status_code, response.text)
    assert contract.operation(name).response_errors(status, response.json()) == []


# -- (a) the simulator against the description ----------------------------------------------------


def test_rate_plan_change_steps_answer_in_the_described_shapes(contract, http, pond_sim) -> None:  # noqa: F811
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    ops = contract.operations
    types = conforms(
        contract,
        "list_package_types",
        send(contract, http, "list_package_types", ops["list_package_types"].examples[0], inventory_id=1),
        200,
    )
    assert types["isLastPage"] is False and len(types["elements"]) == 2
    conforms(contract, "get_device", send(contract, http, "get_device", iccid=iccid), 200)
    before = conforms(
        contract,
        "list_packages",
        send(contract, http, "list_packages", ops["list_packages"].examples[0], iccid=iccid),
        200,
    )
    (old,) = before["elements"]
    assert (old["packageTypeId"], old["status"], before["isLastPage"]) == (OLD_PLAN, "ACTIVE", True)

    added = conforms(
        contract, "add_package", send(contract, http, "add_package", ops["add_package"].examples[0], iccid=iccid), 201
    )
    assert added["status"] == "PENDING"
    activate, terminate = ops["set_package_status"].examples
    conforms(
        contract,
        "set_package_status",
        send(contract, http, "set_package_status", activate, iccid=iccid, package_id=added["packageId"]),
        200,
    )
    conforms(
        contract,
        "set_package_status",
        send(contract, http, "set_package_status", terminate, iccid=iccid, package_id=old["packageId"]),
        200,
    )
    for example in ops["set_service_status"].examples:
        body = conforms(
            contract, "set_service_status", send(contract, http, "set_service_status", example, iccid=iccid), 200
        )
        assert {s["enabled"] for s in body["services"]} == {example["enabled"]}
    assert [p["packageTypeId"] for p in pond_sim.simulator.active_packages(iccid)] == [NEW_PLAN]


def test_add_package_takes_only_an_integer_package_type_id(contract, http, pond_sim) -> None:  # noqa: F811
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    for body in (
        {"packageTypeId": str(NEW_PLAN)},  # RatePlanId is a C# long: one spelling only
        {"packageTypeId": float(NEW_PLAN) + 0.5},
        {"packageTypeId": True},
        {},  # required, never filled in
        {"packageTypeId": NEW_PLAN, "status": "ACTIVE"},  # nothing undescribed
        {"PackageTypeId": NEW_PLAN},
    ):
        refused(contract, "add_package", send(contract, http, "add_package", body, iccid=iccid))
    assert len(pond_sim.simulator.device(iccid)["packages"]) == 1  # nothing was added


def test_status_bodies_take_only_described_values(contract, http, pond_sim) -> None:  # noqa: F811
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    (package,) = pond_sim.simulator.device(iccid)["packages"]
    for body in (
        {"status": "active"},
        {"status": "PENDING"},
        {"status": "DELETED"},
        {},
        {"status": "TERMINATED", "x": 1},
    ):
        refused(
            contract,
            "set_package_status",
            send(contract, http, "set_package_status", body, iccid=iccid, package_id=package["packageId"]),
        )
    for body in ({"enabled": "false"}, {"enabled": 0}, {}, {"enabled": True, "services": ["DATA"]}):
        refused(contract, "set_service_status", send(contract, http, "set_service_status", body, iccid=iccid))


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": ""}, {"offset": "-1"}, {"offset": ""}])
def test_paging_outside_the_described_range_is_refused(contract, http, query) -> None:
    refused(contract, "list_package_types", send(contract, http, "list_package_types", query, inventory_id=1))


def test_auth_and_distributor_errors_use_the_error_envelope(contract, pond_sim) -> None:  # noqa: F811
    url = pond_sim.root_url + contract.operation("list_package_types").url(
        distributor=POND_DISTRIBUTOR, inventory_id="1"
    )
    refused(contract, "list_package_types", httpx.get(url), 401)
    refused(contract, "list_package_types", httpx.get(url, auth=(POND_USER, "wrong")), 401)
    other = url.replace(f"/{POND_DISTRIBUTOR}/", "/9999/")
    refused(contract, "list_package_types", httpx.get(other, auth=(POND_USER, POND_SECRET)), 403)


# -- (b) our client's requests against the description --------------------------------------------


def change(i: int, iccid: str, change_type: int, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, iccid, None, None, None, target)


def check_recorded(contract: Contract, recorder: RecordingApp) -> list[str]:
    problems: list[str] = []
    for r in recorder.requests:
        op = contract.find(r.method, r.path)
        if op is None:
            problems.append(f"{r.method} {r.path}: not a described operation")
            continue
        problems += [f"{op.name} body {e}" for e in op.request_errors(r.body if r.raw_body else None)]
        problems += [f"{op.name} query {e}" for e in op.query_errors(r.query)]
        if not r.headers.get("authorization", "").startswith("Basic "):
            problems.append(f"{op.name}: no Basic credentials")
    return problems


def test_client_requests_match_the_description_field_by_field(contract) -> None:
    sim = PondSimulator({POND_USER: (POND_SECRET, POND_DISTRIBUTOR)}, rate_per_second=0, max_concurrency=0)
    a, b = seed_pond(sim, 2)
    with serve_recorded(sim) as (handle, recorder):

        async def go() -> None:
            client = PondClient(pond_account(handle))
            try:
                changes = [
                    change(1, a, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan=str(NEW_PLAN)),
                    change(2, b, ChangeType.STATUS_UPDATE, status="DEACTIVATED"),
                ]
                results = await client.apply(changes)
                assert [r.status.name for r in results] == ["PROCESSED", "PROCESSED"], [r.detail for r in results]
                assert all(r is not None for r in await client.already_applied(changes))
                assert len(await client.list_package_types(1)) == 4
            finally:
                await client.aclose()

        asyncio.run(go())
    names = {op.name for r in recorder.requests if (op := contract.find(r.method, r.path))}
    assert names == set(contract.operations), names
    assert check_recorded(contract, recorder) == []


def test_a_text_plan_id_is_not_sent(contract) -> None:
    """A plan id that cannot be a package type id (an integer) is refused before any call, so
    the client never sends an undescribed packageTypeId."""
    sim = PondSimulator({POND_USER: (POND_SECRET, POND_DISTRIBUTOR)}, rate_per_second=0, max_concurrency=0)
    (a,) = seed_pond(sim, 1)
    with serve_recorded(sim) as (handle, recorder):

        async def go() -> list:
            client = PondClient(pond_account(handle))
            try:
                return await client.apply(
                    [change(1, a, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IoT 1GB")]
                )
            finally:
                await client.aclose()

        (result,) = asyncio.run(go())
    assert result.status.name == "API_FAILED" and "not a Pond package type id" in result.detail
    assert recorder.calls("POST") == [] and check_recorded(contract, recorder) == []


# (method, path under the API root, status): unknown paths and served paths with a method they
# do not take.
NO_ROUTE = [
    ("GET", f"/api/{POND_DISTRIBUTOR}/devices", 404),
    ("GET", f"/api/{POND_DISTRIBUTOR}/sims/89000000000000000001", 404),
    ("POST", "/api/v2/devices", 404),
    ("DELETE", f"/api/{POND_DISTRIBUTOR}/devices/89000000000000000001", 405),
    ("POST", f"/api/{POND_DISTRIBUTOR}/devices/89000000000000000001/packages/1/status", 405),
    ("GET", f"/api/{POND_DISTRIBUTOR}/devices/89000000000000000001/services/status", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), NO_ROUTE)
def test_an_unknown_path_or_method_answers_in_the_error_envelope_after_auth(
    contract,
    pond_sim,  # noqa: F811
    method,
    path,
    status,  # noqa: F811
) -> None:
    assert contract.find(method, path) is None  # really undescribed
    url = pond_sim.root_url.rstrip("/") + path
    r = httpx.request(method, url, auth=(POND_USER, POND_SECRET))
    assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
    assert _errors(contract.errors["default"], r.json()) == []
    assert ("allow" in r.headers) is (status == 405)
    r = httpx.request(method, url, auth=(POND_USER, "wrong"))  # auth first
    assert r.status_code == 401 and _errors(contract.errors["default"], r.json()) == []
    assert pond_sim.simulator.stats()["applied_total"] == 0
