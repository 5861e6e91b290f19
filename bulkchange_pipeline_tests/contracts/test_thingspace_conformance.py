"""ThingSpace conformance (issue 17): (a) the simulator driven over HTTP with the examples of
`thingspace.yaml` (Verizon's public description and its SDK docs' own examples, never our client)
answers in the described shapes, refuses a body missing a required field in the documented error
shape instead of filling it in, accepts one without an optional field (accountName included), and
answers an unknown path as the gateway does; (b) every request our `ThingSpaceClient` puts on the
wire, recorded by `recording.serve_recorded`, is a described operation whose body matches the
description field by field, and the simulator accepted each one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange
from bulkchange_pipeline.carriers.thingspace import ThingSpaceClient
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator
from bulkchange_pipeline.simulators.thingspace_rules import make_devices
from bulkchange_pipeline_tests.contracts.contract import Contract, Operation, load_contract
from bulkchange_pipeline_tests.contracts.recording import serve_recorded
from bulkchange_pipeline_tests.simulators.fixtures import (
    TS_ACCOUNT,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
    thingspace_account,
)

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "0000123456-00001"  # the account name of the description's examples
APP = ("conformance-app-key", "conformance-app-secret")
PATH_PARAMS = {"serviceType": "4G", "accountName": ACCOUNT, "serviceName": "CarrierService"}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract("thingspace")


@pytest.fixture
def served(contract: Contract) -> Iterator[ServerHandle]:
    """A simulator whose UWS user is the one of the description's login example."""
    login = contract.operation("login").examples[0]
    sim = ThingSpaceSimulator({APP[0]: APP[1]}, {login["username"]: (login["password"], ACCOUNT)})
    with sim.run_in_thread() as handle:
        yield handle
    sim.close()


class Wire:
    """Raw HTTP as the description says: token, login, then Bearer + VZ-M2M-Token on each call."""

    def __init__(self, handle: ServerHandle, contract: Contract) -> None:
        self.contract = contract
        self.http = httpx.Client(base_url=handle.root_url, timeout=5)
        token_op = contract.operation("token")
        got = self.http.post(token_op.path, auth=APP, data={"grant_type": "client_credentials"})
        assert got.status_code == 200 and token_op.response_errors(200, got.json()) == [], got.text
        self.token = got.json()["access_token"]
        login = contract.operation("login")
        got = self.send(login, login.examples[0])
        assert got.status_code == 200 and login.response_errors(200, got.json()) == [], got.text
        self.session = got.json()["sessionToken"]

    def send(self, op: Operation, body: Any = None, path: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        if getattr(self, "session", None):
            headers["VZ-M2M-Token"] = self.session
        return self.http.request(op.method, path or op.url(**PATH_PARAMS), json=body, headers=headers)

    def conforms(self, op: Operation, answer: httpx.Response) -> None:
        assert op.response_errors(answer.status_code, answer.json()) == [], (op.name, answer.status_code, answer.text)


def change(i: int, dev: dict, change_type: int = ChangeType.STATUS_UPDATE, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, dev["iccid"], dev.get("imei"), None, None, target)


def with_examples(contract: Contract) -> list[tuple[str, int]]:
    return [(op.name, i) for op in contract.operations.values() for i in range(len(op.examples))]


def _required(op: Operation) -> list[str]:
    return list((op.spec.get("request") or {}).get("required", []))


CONTRACT = load_contract("thingspace")
EXAMPLES = with_examples(CONTRACT)
REQUIRED = [(op.name, f) for op in CONTRACT.operations.values() if op.examples for f in _required(op)]
OPTIONAL = [
    (op.name, f)
    for op in CONTRACT.operations.values()
    if op.examples and op.name != "login"
    for f in op.examples[0]
    if f not in _required(op)
]


# -- (a) the simulator against the description ----------------------------------------------------


@pytest.mark.parametrize(("name", "index"), EXAMPLES)
def test_each_example_is_answered_as_described(served, contract: Contract, name: str, index: int) -> None:
    wire = Wire(served, contract)
    op = contract.operation(name)
    answer = wire.send(op, op.examples[index])
    assert 200 <= answer.status_code < 300, answer.text
    wire.conforms(op, answer)


@pytest.mark.parametrize(("name", "field"), REQUIRED)
def test_a_missing_required_field_is_refused_in_the_documented_shape(
    served, contract: Contract, name: str, field: str
) -> None:
    wire = Wire(served, contract)
    op = contract.operation(name)
    body = {k: v for k, v in op.examples[0].items() if k != field}
    answer = wire.send(op, body)
    assert 400 <= answer.status_code < 500, (name, field, answer.status_code, answer.text)
    assert jsonschema.Draft202012Validator(contract.errors["default"]).is_valid(answer.json()), answer.text


@pytest.mark.parametrize(("name", "field"), OPTIONAL)
def test_a_missing_optional_field_is_accepted(served, contract: Contract, name: str, field: str) -> None:
    """accountName above all: optional on every device action in Verizon's description."""
    wire = Wire(served, contract)
    op = contract.operation(name)
    answer = wire.send(op, {k: v for k, v in op.examples[0].items() if k != field})
    assert 200 <= answer.status_code < 300, (name, field, answer.text)
    wire.conforms(op, answer)


# Values the description refuses (issue 17): sent as they are, never coerced or filled in.
BAD_VALUES = [
    ("deactivate", {"reasonCode": "XX"}),
    ("deactivate", {"reasonCode": "ff"}),
    ("deactivate", {"etfWaiver": "no"}),
    ("deactivate", {"etfWaiver": 0}),
    ("activate", {"mdnZipCode": "9880"}),
    ("activate", {"mdnZipCode": 98801}),
    ("suspend", {"devices": [{"deviceIds": [{"kind": "ICCID", "id": "89148000000800139708"}]}]}),
]


@pytest.mark.parametrize(("name", "change"), BAD_VALUES)
def test_a_value_the_description_refuses_is_refused_in_the_documented_shape(
    served, contract: Contract, name: str, change: dict[str, Any]
) -> None:
    wire = Wire(served, contract)
    op = contract.operation(name)
    body = {**op.examples[0], **change}
    assert op.request_errors(body) != []  # the description refuses it too
    answer = wire.send(op, body)
    assert answer.status_code == 400, (name, change, answer.text)
    assert jsonschema.Draft202012Validator(contract.errors["default"]).is_valid(answer.json()), answer.text


def _service_types(contract: Contract) -> list[str]:
    return list(contract.operation("device_id").spec["x-path-params"]["serviceType"]["enum"])


@pytest.mark.parametrize("service_type", ["4g", "5G", "serviceType6"])
def test_an_undocumented_service_type_is_refused_in_the_documented_shape(
    served, contract: Contract, service_type: str
) -> None:
    """`{serviceType}` of the device-id change: the documented types only (one spelling)."""
    assert service_type not in _service_types(contract)
    wire = Wire(served, contract)
    op = contract.operation("device_id")
    answer = wire.send(op, op.examples[0], path=op.url(**{**PATH_PARAMS, "serviceType": service_type}))
    assert answer.status_code == 400, answer.text
    assert jsonschema.Draft202012Validator(contract.errors["default"]).is_valid(answer.json()), answer.text
    for documented in _service_types(contract):
        path = op.url(**{**PATH_PARAMS, "serviceType": documented})
        assert wire.send(op, op.examples[0], path=path).status_code == 200, documented


def test_reads_session_end_and_refusals_answer_as_described(served, contract: Contract) -> None:
    wire = Wire(served, contract)
    op = contract.operation
    suspend = wire.send(op("suspend"), op("suspend").examples[0]).json()["requestId"]
    status = wire.send(op("request_status"), path=op("request_status").url(accountName=ACCOUNT, requestId=suspend))
    wire.conforms(op("request_status"), status)
    wire.conforms(op("callback_register"), wire.send(op("callback_register"), op("callback_register").examples[0]))
    listed = wire.send(op("callback_list"))
    wire.conforms(op("callback_list"), listed)
    assert [c["serviceName"] for c in listed.json()] == ["CarrierService"]
    wire.conforms(op("callback_delete"), wire.send(op("callback_delete")))
    wrong = wire.send(op("activate"), {**op("activate").examples[0], "accountName": "0000999999-00001"})
    assert wrong.status_code == 400 and wrong.json()["errorCode"].endswith("REQUEST_FAILED.AccountNotFound")
    wire.conforms(op("activate"), wrong)
    ended = wire.send(op("logout"))
    assert ended.json() == {"sessionToken": wire.session}
    wire.conforms(op("logout"), ended)
    after = wire.send(op("suspend"), op("suspend").examples[0])
    assert after.status_code == 400 and "SessionToken" in after.json()["errorCode"]
    wire.conforms(op("suspend"), after)


def test_the_device_list_pages_as_described(served, contract: Contract) -> None:
    served.simulator.seed_devices(make_devices(150))
    wire = Wire(served, contract)
    op = contract.operation("devices_list")
    first = wire.send(op, op.examples[1])
    assert first.status_code == 202 and first.json()["hasMoreData"] is True
    wire.conforms(op, first)
    last_id = first.json()["devices"][-1]["extendedAttributes"][0]
    assert last_id["key"] == "DeviceId"
    rest = wire.send(op, {**op.examples[1], "largestDeviceIdSeen": int(last_id["value"])})
    assert rest.status_code == 200 and len(rest.json()["devices"]) == 50
    wire.conforms(op, rest)
    old = wire.send(op, {"accountName": ACCOUNT, "lastSeenDeviceId": last_id["value"]})
    assert old.status_code == 400 and op.response_errors(400, old.json()) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/m2m/v1/devices/actions/nonsense"),
        ("PUT", "/api/m2m/v1/devices/actions/deviceid"),  # the older spelling
        ("GET", "/api/m2m/v1/devices/actions/list"),  # a known path, another method
        ("GET", "/api/m2m/v2/devices"),
    ],
)
def test_an_unknown_path_answers_the_gateway_shape(served, contract: Contract, method: str, path: str) -> None:
    wire = Wire(served, contract)
    answer = wire.http.request(method, path, headers={"Authorization": f"Bearer {wire.token}"})
    assert answer.status_code == 400
    assert jsonschema.Draft202012Validator(contract.errors["gateway"]).is_valid(answer.json()), answer.text
    assert answer.json()["fault"]["code"] == "900906"


# -- (b) our client against the description -------------------------------------------------------


def test_every_request_our_client_sends_is_described(contract: Contract, callback_receiver) -> None:
    _, rhandle = callback_receiver
    sim = ThingSpaceSimulator({TS_CLIENT_ID: TS_CLIENT_SECRET}, {TS_USER: (TS_PASSWORD, TS_ACCOUNT)})
    d = make_devices(8)
    for dev, state in zip(d, ("deactive", "active", "active", "suspend", "active", "active", "deactive", "active")):
        dev["state"] = state
    sim.seed_devices([*d, *make_devices(120, start=100)])
    swapped = make_devices(1, start=900)[0]
    changes = [
        change(1, d[0], status="active", current_status="deactive", carrier_rate_plan="M2M-4G-1GB"),
        change(2, d[1], status="deactive"),
        change(3, d[2], status="suspend"),
        change(4, d[3], status="restore"),
        change(5, d[4], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="M2M-4G-5GB"),
        change(6, d[5], ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=swapped["iccid"]),
        change(7, d[7], status="active"),  # current state unknown: read first
    ]
    failing = change(8, d[6], status="restore")  # a deactive device cannot be restored

    async def drive(client: ThingSpaceClient) -> int:
        try:
            await client.register_callback()
            results = await client.apply(changes) + await client.apply([failing])  # alone: status works
            assert all(r.status == "PROCESSING" for r in results), [r.detail for r in results]
            assert sim.wait_idle(10)
            failing.carrier_request_id = results[-1].carrier_request_id
            (polled,) = await client.poll([failing])  # reads the device, then the request status
            assert polled is not None and polled.status == "API_FAILED"
            return len(await client.list_devices())
        finally:
            await client.aclose()

    try:
        with serve_recorded(sim) as (handle, recorder):
            client = ThingSpaceClient(thingspace_account(handle, callback_base_url=rhandle.root_url))
            assert asyncio.run(drive(client)) == 128
    finally:
        sim.close()
    used = set()
    for rec in recorder.requests:
        op = contract.find(rec.method, rec.path)
        assert op is not None, f"undescribed call {rec.method} {rec.path}"
        used.add(op.name)
        assert op.request_errors(rec.body) == [], (op.name, rec.body)
        assert rec.query == {} and 200 <= rec.status < 300, (op.name, rec.status, rec.raw_body[:300])
        if op.name == "device_id":
            assert rec.path.split("/")[-3] in _service_types(contract), rec.path
        if op.name == "token":
            assert rec.headers["authorization"].startswith("Basic ")
            assert rec.raw_body == b"grant_type=client_credentials"
            continue
        assert rec.headers["authorization"].startswith("Bearer ")
        assert (op.name == "login") != ("vz-m2m-token" in rec.headers), op.name
        if rec.raw_body:
            assert rec.headers["content-type"].startswith("application/json"), op.name
    assert used == {
        "token",
        "login",
        "logout",
        "activate",
        "deactivate",
        "suspend",
        "restore",
        "plan",
        "device_id",
        "devices_list",
        "request_status",
        "callback_register",
    }
    pages = [r.body for r in recorder.requests if r.path.endswith("/devices/actions/list") and "deviceId" not in r.body]
    assert [p["largestDeviceIdSeen"] > 0 for p in pages] == [False, True]
