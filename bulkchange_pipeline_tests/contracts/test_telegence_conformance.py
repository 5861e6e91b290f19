"""Telegence conformance (issue 17), PROVISIONAL like `telegence.yaml` (public client code [C] and
inference [I]; AT&T publishes no spec for these APIs).

(a) The simulator, driven straight over HTTP with the description's examples (built from the
public sources' bodies, not from our client), answers in the described shapes; every body that
drops a field the description requires is refused with a 4xx in Telegence's error shapes (the
simulator is at least as strict as the description); missing or wrong app-id/app-secret is refused.
(b) Every request our `TelegenceClient` sends for the pipeline's operations, recorded by
`recording.serve_recorded`, is a described operation whose body matches field by field, including
the IMEI/ICCID swap carrying serviceZipCode, singleUserCode and technologyType read from the line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange, DeviceResult
from bulkchange_pipeline.carriers.telegence import TelegenceClient
from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline.simulators.telegence import TelegenceSimulator
from bulkchange_pipeline.simulators.telegence_rules import make_imeis
from bulkchange_pipeline_tests.contracts.contract import Contract, Operation, _errors, load_contract
from bulkchange_pipeline_tests.contracts.recording import RecordingApp, serve_recorded
from bulkchange_pipeline_tests.simulators.telegence_fixtures import (
    TELEGENCE_APP_ID,
    TELEGENCE_APP_SECRET,
    activation_changes,
    seed_lines,
    telegence_account,
)

pytestmark = pytest.mark.timeout(60)

AUTH = {"app-id": TELEGENCE_APP_ID, "app-secret": TELEGENCE_APP_SECRET, "Accept": "application/json"}
# Subscriber numbers as the public script's csv has them (att-scripts-swap).
SOURCE_NUMBERS = ["7605766567", "6292641971", "6158918504", "6154852876", "6155931619", "6292468621"]


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract("telegence")


@pytest.fixture
def served() -> Iterator[tuple[TelegenceSimulator, ServerHandle, RecordingApp]]:
    """A simulator taking any plan (the sources' plan codes) whose activations settle on the first
    poll, behind the recorder."""
    sim = TelegenceSimulator({TELEGENCE_APP_ID: TELEGENCE_APP_SECRET}, activation_polls=0)
    sim.configure(plans=None)
    with serve_recorded(sim) as (handle, recorder):
        yield sim, handle, recorder


def seed_source_line(sim: TelegenceSimulator, k: int, **fields: Any) -> str:
    """An active line under a source's subscriber number, with its own SIM and IMEI."""
    number = SOURCE_NUMBERS[k]
    sim.seed_devices(
        [
            {
                "subscriberNumber": number,
                "sim": make_iccids(1, start=500 + k, prefix="89011704")[0],
                "BLIMEI": make_imeis(1, start=500 + k)[0],
                **fields,
            }
        ]
    )
    return number


def body_of(response: httpx.Response) -> Any:
    """The answer as JSON, or its text (Telegence also refuses in plain text)."""
    try:
        return response.json()
    except ValueError:
        return response.text


def dropped(example: Any) -> Iterator[tuple[str, Any]]:
    """Every variant of `example` missing one field: each object key and each array element,
    at any depth, named by its path."""
    if isinstance(example, dict):
        for key, value in example.items():
            yield key, {k: v for k, v in example.items() if k != key}
            for where, variant in dropped(value):
                yield f"{key}/{where}", {**example, key: variant}
    elif isinstance(example, list):
        for i, value in enumerate(example):
            name = value.get("name", i) if isinstance(value, dict) else i
            yield f"[{name}]", example[:i] + example[i + 1 :]
            for where, variant in dropped(value):
                yield f"[{name}]/{where}", [*example[:i], variant, *example[i + 1 :]]


def dated(example: Any, sim: TelegenceSimulator) -> Any:
    """The example with its effectiveDate (the sources' 2024 dates) moved to the simulator's today,
    so that a body is refused for what it lacks, not for being back-dated."""
    if isinstance(example, dict) and "effectiveDate" in example:
        return {**example, "effectiveDate": sim.clock.now().date().isoformat() + "Z"}
    return example


def chars(body: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in body["serviceCharacteristic"]}


# -- (a) the simulator against the description ------------------------------------------------------


def test_each_example_is_answered_as_described(contract: Contract, served) -> None:
    sim, handle, _ = served
    detail, line_update = contract.operation("subscriber_detail"), contract.operation("line_update")
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        for k, example in enumerate(line_update.examples):
            number = seed_source_line(sim, k)
            r = http.get(detail.url(subscriberNumber=number))
            assert r.status_code == 200 and detail.response_errors(200, r.json()) == []
            r = http.patch(line_update.url(subscriberNumber=number), json=dated(example, sim))
            assert r.status_code == 200, (example, r.text)
            assert line_update.response_errors(200, r.json()) == [], example
        swapped = chars(line_update.examples[-1])
        held = sim.device(SOURCE_NUMBERS[len(line_update.examples) - 1])
        assert (held["sim"], held["BLIMEI"]) == (swapped["sim"], swapped["IMEI"])


def test_activation_example_is_answered_as_described(contract: Contract, served) -> None:
    _, handle, _ = served
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        activation, status = contract.operation("activation"), contract.operation("activation_status")
        r = http.post(activation.url(), json=activation.examples[0])
        assert r.status_code == 200 and activation.response_errors(200, r.json()) == [], r.text
        request_id = r.json()[0]["id"]
        r = http.get(status.url(requestId=request_id))
        assert r.status_code == 200 and status.response_errors(200, r.json()) == [], r.text
        assert r.json()[0]["service"]["status"] == "active" and r.json()[0]["service"]["subscriberNumber"]


def _refused(op: Operation, response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, (op.name, what, response.status_code, response.text)
    assert op.response_errors(response.status_code, body_of(response)) == [], (op.name, what, response.text)


def test_dropping_any_required_field_is_refused(contract: Contract, served) -> None:
    """Every field whose absence the description rejects, the simulator rejects too (never fills
    it in), in one of Telegence's error shapes, and nothing is applied."""
    sim, handle, _ = served
    line_update, activation = contract.operation("line_update"), contract.operation("activation")
    refused: list[str] = []
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        number = seed_source_line(sim, 0)
        for example in line_update.examples:
            for where, variant in dropped(dated(example, sim)):
                if not line_update.request_errors(variant):
                    continue  # optional in the description (e.g. a status change's effectiveDate)
                _refused(line_update, http.patch(line_update.url(subscriberNumber=number), json=variant), where)
                refused.append(where)
        for where, variant in dropped(activation.examples[0]):
            if activation.request_errors(variant):
                _refused(activation, http.post(activation.url(), json=variant), where)
                refused.append(where)
    for name in ("reasonCode", "serviceZipCode", "singleUserCode", "technologyType", "IMEI", "sim"):
        assert f"serviceCharacteristic/[{name}]" in refused  # the swap's six, each on its own
    assert {"effectiveDate", "mode", "reasonCode", "[0]/service/serviceSpecification"} <= set(refused)
    assert sim.stats()["applied_total"] == 0 and not sim.activations


def test_the_other_spelling_is_refused(contract: Contract, served) -> None:
    """technologyType belongs to the swap and deviceTechnologyType to the activation: neither
    operation takes the other's name, and a status mode is a letter only."""
    sim, handle, _ = served
    line_update, activation = contract.operation("line_update"), contract.operation("activation")
    swap = json.loads(json.dumps(line_update.examples[-1]))
    for c in swap["serviceCharacteristic"]:
        if c["name"] == "technologyType":
            c["name"] = "deviceTechnologyType"
    act = json.loads(json.dumps(activation.examples[0]))
    for c in act[0]["service"]["serviceCharacteristic"]:
        if c["name"] == "deviceTechnologyType":
            c["name"] = "technologyType"
    variants = [
        (line_update, swap),
        (line_update, {"mode": "suspend", "reasonCode": "CR"}),
        (line_update, {"mode": "S", "reasonCode": "CR", "effectiveDate": "05/01/2030"}),
        (activation, act),
    ]
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        number = seed_source_line(sim, 0)
        for op, body in variants:
            assert op.request_errors(body), body  # the description does not allow it either
            url = op.url(subscriberNumber=number) if "{" in op.path else op.url()
            _refused(op, http.request(op.method, url, json=body), json.dumps(body))
    assert sim.stats()["applied_total"] == 0


def test_missing_or_wrong_credentials_are_refused(contract: Contract, served) -> None:
    sim, handle, _ = served
    number = seed_source_line(sim, 0)
    calls = [
        ("subscriber_detail", {"subscriberNumber": number}, None),
        ("line_update", {"subscriberNumber": number}, contract.operation("line_update").examples[1]),
        ("activation", {}, contract.operation("activation").examples[0]),
        ("activation_status", {"requestId": "any"}, None),
    ]
    wrong = [{}, {"app-id": TELEGENCE_APP_ID}, {"app-id": TELEGENCE_APP_ID, "app-secret": "wrong"}]
    with httpx.Client(base_url=handle.base_url, timeout=5) as http:
        for name, params, body in calls:
            op = contract.operation(name)
            for headers in wrong:
                r = http.request(op.method, op.url(**params), json=body, headers=headers)
                assert r.status_code in contract.raw["auth"]["refusal_status"], (name, headers, r.status_code)
                assert op.response_errors(r.status_code, body_of(r)) == [], (name, r.text)
    assert sim.stats()["applied_total"] == 0 and sim.device(number)["subscriberStatus"] == "A"


def test_esim_and_unknown_line_answers_are_described(contract: Contract, served) -> None:
    sim, handle, _ = served
    line_update = contract.operation("line_update")
    esim = seed_source_line(sim, 0, esim=True)
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        r = http.patch(line_update.url(subscriberNumber=esim), json=line_update.examples[-1])
        assert r.status_code == 404 and r.json()["description"] == "/service/"
        assert line_update.response_errors(404, r.json()) == []
        r = http.patch(line_update.url(subscriberNumber="2145559999"), json=line_update.examples[1])
        assert r.status_code == 404 and line_update.response_errors(404, body_of(r)) == []


# -- (b) our client against the description ----------------------------------------------------------


def _change(i: int, msisdn: str, change_type: ChangeType, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, None, None, msisdn, None, target)


def _run(client: TelegenceClient, work: Any) -> Any:
    async def go() -> Any:
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_every_request_the_client_sends_is_described_field_by_field(contract: Contract, served) -> None:
    sim, handle, recorder = served
    lines = seed_lines(sim, 8)
    sim.seed_devices([{"subscriberNumber": lines[1]["msisdn"], "sim": lines[1]["iccid"], "subscriberStatus": "S"}])
    sim.seed_devices([{**lines[5], "subscriberNumber": lines[5]["msisdn"], "serviceZipCode": "92008"}])
    new = activation_changes(2, start=4242)
    T = ChangeType
    changes = [
        _change(1, lines[0]["msisdn"], T.STATUS_UPDATE, status="S"),
        _change(2, lines[1]["msisdn"], T.STATUS_UPDATE, status="A"),
        _change(3, lines[2]["msisdn"], T.STATUS_UPDATE, status="C", reason_code="CR"),
        _change(4, lines[3]["msisdn"], T.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="APX250LT2"),
        _change(5, lines[4]["msisdn"], T.CHANGE_ICCID_AND_IMEI, new_iccid=new[0].iccid, new_imei=new[0].imei),
        _change(6, lines[5]["msisdn"], T.CHANGE_ICCID_AND_IMEI, new_imei=new[1].imei),
        _change(7, lines[6]["msisdn"], T.EDIT_USERNAME_COST_CENTER, username="Dock 7", cost_center="CC-42"),
        *activation_changes(2, start=9000, first_id=8),
    ]
    client = TelegenceClient(telegence_account(handle))
    results: list[DeviceResult] = _run(client, lambda c: c.apply(changes))
    assert [r.status for r in results] == [DeviceChangeStatus.PROCESSED] * 7 + [DeviceChangeStatus.PROCESSING] * 2, [
        r.detail for r in results
    ]
    pending = [
        DeviceChange(
            c.device_change_id, c.device_id, c.change_type, c.iccid, c.imei, None, None, c.target, r.carrier_request_id
        )
        for c, r in zip(changes[7:], results[7:], strict=True)
    ]
    polled = _run(TelegenceClient(telegence_account(handle)), lambda c: c.poll(pending))
    assert [p.status for p in polled] == [DeviceChangeStatus.PROCESSED] * 2
    checks = [changes[0], changes[3], changes[4]]
    answers = _run(TelegenceClient(telegence_account(handle)), lambda c: c.already_applied(checks))
    assert all(a is not None and a.status == DeviceChangeStatus.PROCESSED for a in answers)

    seen: set[str] = set()
    for rec in recorder.requests:
        op = contract.find(rec.method, rec.path)
        assert op is not None, f"{rec.method} {rec.path} is not a described Telegence operation"
        assert op.request_errors(rec.body) == [], (op.name, rec.body)
        assert rec.headers.get("app-id") == TELEGENCE_APP_ID and rec.headers.get("app-secret")
        assert 200 <= rec.status < 300, (op.name, rec.status, rec.body)
        seen.add(op.name)
    assert seen == set(contract.operations) - {"subscriber_list"}  # served, never called by our client

    def swap_sent(msisdn: str) -> dict[str, str]:
        (patch,) = recorder.calls("PATCH", msisdn)
        calls = recorder.calls(path_contains=msisdn)
        assert calls.index(patch) > 0 and calls[calls.index(patch) - 1].method == "GET"  # read, then swap
        schema = {
            "$ref": "#/$defs/equipment_change",
            "$defs": contract.operation("line_update").spec["request"]["$defs"],
        }
        assert _errors(schema, patch.body) == [], patch.body
        return chars(patch.body)

    both, imei_only = swap_sent(lines[4]["msisdn"]), swap_sent(lines[5]["msisdn"])
    assert both == {
        "reasonCode": "CUST_OWN_EQU",
        "serviceZipCode": "75001",
        "singleUserCode": "IOTSOC1GB",
        "technologyType": "LTE",  # the line's BLDeviceTechnologyType
        "IMEI": new[0].imei,
        "sim": new[0].iccid,
    }
    assert imei_only["serviceZipCode"] == "92008" and imei_only["sim"] == lines[5]["iccid"]  # current values
    assert imei_only["IMEI"] == new[1].imei
    assert sim.device(lines[5]["msisdn"])["BLIMEI"] == new[1].imei


def test_a_swap_the_detail_cannot_complete_fails_without_a_guess(served) -> None:
    """A line whose detail has no BLDeviceTechnologyType: no value is invented, the row fails
    naming it and no PATCH is sent; an operator-set `technology_type` on the account may stand in."""
    sim, handle, recorder = served
    line = seed_lines(sim, 1)[0]
    sim.lines[line["msisdn"]]["BLDeviceTechnologyType"] = ""
    new_imei = activation_changes(1, start=777)[0].imei
    swap = _change(1, line["msisdn"], ChangeType.CHANGE_ICCID_AND_IMEI, new_imei=new_imei)
    (failed,) = _run(TelegenceClient(telegence_account(handle)), lambda c: c.apply([swap]))
    assert failed.status == DeviceChangeStatus.API_FAILED and "BLDeviceTechnologyType" in failed.detail
    assert recorder.calls("PATCH") == [] and len(recorder.calls("GET")) == 1
    account = telegence_account(handle, extra={"technology_type": "LTE"})
    (done,) = _run(TelegenceClient(account), lambda c: c.apply([swap]))
    assert done.status == DeviceChangeStatus.PROCESSED, done.detail
    assert chars(recorder.calls("PATCH")[0].body)["technologyType"] == "LTE"


# -- (c) the subscriber list and what no operation describes (issue 17) ----------------------------


def test_subscriber_list_is_answered_as_described_and_needs_both_paging_headers(contract: Contract, served) -> None:
    sim, handle, _ = served
    listing = contract.operation("subscriber_list")
    for k in range(3):
        seed_source_line(sim, k)
    seed_source_line(sim, 3, subscriberStatus="S")
    seed_source_line(sim, 4, subscriberStatus="C")  # never listed [C]
    headers = listing.examples[0]
    assert _errors(listing.spec["request_headers"], headers) == []
    with httpx.Client(base_url=handle.base_url, headers=AUTH, timeout=5) as http:
        r = http.get(listing.url(), headers=headers)
        assert r.status_code == 200 and listing.response_errors(200, r.json()) == [], r.text
        assert {e["subscriberNumber"] for e in r.json()} == set(SOURCE_NUMBERS[:4])
        assert all(r.headers.get(h) for h in listing.spec["response_headers"])
        r = http.get(listing.url(), headers={"current-page": "2", "page-size": "3"})
        assert [e["subscriberNumber"] for e in r.json()] == [sorted(SOURCE_NUMBERS[:4])[3]]
        assert r.headers["page-total"] == "2"
        for name in listing.spec["request_headers"]["required"]:  # none filled in
            without = {k: v for k, v in headers.items() if k != name}
            assert _errors(listing.spec["request_headers"], without)
            _refused(listing, http.get(listing.url(), headers=without), name)
        for bad in ({**headers, "page-size": "0"}, {**headers, "current-page": "one"}):
            _refused(listing, http.get(listing.url(), headers=bad), str(bad))
        assert listing.query_errors({"subscriberStatus": "S"})
        _refused(listing, http.get(listing.url(), headers=headers, params={"subscriberStatus": "S"}), "a filter")


# (method, path, status): unknown paths and served paths with a method they do not take.
NO_ROUTE = [
    ("GET", "/sp/mobility/lineconfig/api/v2/service/7605766567", 404),
    ("GET", "/sp/mobility/subscribers", 404),
    ("POST", "/sp/mobilityactivations/api/v1/serviceactivation/x/cancel", 404),
    ("DELETE", "/sp/mobility/lineconfig/api/v1/service/7605766567", 405),
    ("PUT", "/sp/mobility/lineconfig/api/v1/service/7605766567", 405),
    ("GET", "/sp/mobilityactivations/api/v1/serviceactivation", 405),
]


@pytest.mark.parametrize(("method", "path", "status"), NO_ROUTE)
def test_an_unknown_path_or_method_answers_in_telegence_json_after_auth(
    contract: Contract, served, method: str, path: str, status: int
) -> None:
    sim, handle, _ = served
    assert contract.find(method, path) is None  # really undescribed
    with httpx.Client(base_url=handle.base_url, timeout=5) as http:
        r = http.request(method, path, headers=AUTH)
        assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
        assert _errors(contract.errors["default"], r.json()) == [] and isinstance(r.json(), dict)
        assert ("allow" in r.headers) is (status == 405)
        r = http.request(method, path, headers={"app-id": TELEGENCE_APP_ID})  # auth first
        assert r.status_code in contract.raw["auth"]["refusal_status"]
        assert _errors(contract.errors["default"], r.json()) == []
    assert sim.stats()["auth_failures"] == 1 and sim.stats()["applied_total"] == 0
