"""The Jasper simulator against the wire format: OpenAPI fragments, auth, limits, faults, rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys

import httpx
import jsonschema
import pytest

from bulkchange_pipeline.simulators.jasper_rules import (
    JASPER_TRANSITIONS,
    STATUSES,
    is_legal_transition,
    make_iccids,
)
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.fixtures import (
    JASPER_API_KEY,
    JASPER_USER,
    operation_schema,
    seed_jasper,
    strict,
    validate,
)
from bulkchange_pipeline_tests.waiting import wait_for_server

DEVICE_PATH = "/v{apiVersion}/devices/{iccid}"
AUTH = (JASPER_USER, JASPER_API_KEY)

pytestmark = pytest.mark.timeout(60)  # a hung server must not hang CI


def client(handle) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url + "/", auth=AUTH, timeout=5)


def test_get_device_matches_device_details_schema(jasper_sim) -> None:
    (iccid,) = seed_jasper(jasper_sim.simulator, 1, status="ACTIVATED", customer="Acme")
    schema = operation_schema(DEVICE_PATH, "get", "200")
    with client(jasper_sim) as c:
        r = c.get(f"devices/{iccid}")
    assert r.status_code == 200
    body = r.json()
    validate(body, strict(schema))  # every field the simulator sends is a DeviceDetails field
    assert body["iccid"] == iccid and body["status"] == "ACTIVATED" and body["customer"] == "Acme"


def test_put_accepts_edit_model_bodies_and_returns_iccid(jasper_sim) -> None:
    (iccid,) = seed_jasper(jasper_sim.simulator, 1)
    edit_schema = strict(operation_schema(DEVICE_PATH, "put"))
    body = {"ratePlan": "IOT_1GB", "communicationPlan": "CP_Data", "accountCustom1": "alice"}
    validate(body, edit_schema)
    with client(jasper_sim) as c:
        r = c.put(f"devices/{iccid}", json=body)
        assert r.status_code == 200 and r.json() == {"iccid": iccid}
        device = c.get(f"devices/{iccid}").json()
    assert (device["ratePlan"], device["communicationPlan"], device["accountCustom1"]) == (
        "IOT_1GB",
        "CP_Data",
        "alice",
    )
    assert jasper_sim.simulator.applied_counts[iccid] == 1


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "10000024"),
        ({"effectiveDate": "2030-01-01T00:00:00+00:00"}, "10000024"),
        ({"ratePlan": 5}, "10000024"),
        ({"nickname": "x"}, "10000024"),
        ({"status": "SLEEPING"}, "10000017"),
    ],
)
def test_put_refuses_invalid_bodies(jasper_sim, body, code) -> None:
    (iccid,) = seed_jasper(jasper_sim.simulator, 1)
    with client(jasper_sim) as c:
        r = c.put(f"devices/{iccid}", json=body)
    assert r.status_code == 400
    assert r.json()["errorCode"] == code and r.json()["errorMessage"]
    assert jasper_sim.simulator.applied_counts[iccid] == 0


def test_unknown_device_is_404(jasper_sim) -> None:
    with client(jasper_sim) as c:
        r = c.get("devices/89012608999999999999")
    assert r.status_code == 404 and set(r.json()) == {"errorMessage", "errorCode"}


def test_auth_errors_use_jasper_bodies(jasper_sim) -> None:
    url = jasper_sim.base_url + "/devices/" + make_iccids(1)[0]
    r = httpx.get(url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="Jasper"'
    assert r.json() == {"errorMessage": "Full authentication is required to access this resource"}
    r = httpx.get(url, auth=(JASPER_USER, "wrong-key"))
    assert r.status_code == 401
    assert r.json() == {"errorMessage": "Invalid credentials", "errorCode": "10000001"}


def test_rate_limit_answers_40000029_for_rest_of_window(jasper_sim) -> None:
    jasper_sim.simulator.configure(rate_per_second=5)
    iccid = seed_jasper(jasper_sim.simulator, 1)[0]
    with client(jasper_sim) as c:
        answers = [c.get(f"devices/{iccid}") for _ in range(12)]
    refused = [r for r in answers if r.status_code != 200]
    # 12 calls in well under a second span at most two windows of 5 admitted calls each.
    assert len(refused) >= 2
    for r in refused:
        assert r.status_code == 429
        assert r.json() == {"errorMessage": "Rate Limit Exceeded", "errorCode": "40000029"}
    assert jasper_sim.simulator.stats()["over_limit_answers"] == len(refused)


def test_one_concurrent_call_per_account(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(latency_ms=200)
    iccid = seed_jasper(sim, 1)[0]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=jasper_sim.base_url + "/", auth=AUTH) as c:
            return await asyncio.gather(*(c.get(f"devices/{iccid}") for _ in range(3)))

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 429, 429]
    assert all(r.json()["errorCode"] == "40000029" for r in answers if r.status_code == 429)
    acct = sim.stats()["accounts"][JASPER_USER]
    assert acct["peak_concurrency"] >= 2 and acct["concurrency_refusals"] == 2


def test_fault_rates_are_roughly_honoured(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(error_rate=0.10, malformed_rate=0.05, burst_rate=0.05, burst_length=1, seed=7)
    iccid = seed_jasper(sim, 1)[0]
    n = 800
    with client(jasper_sim) as c:
        answers = [c.get(f"devices/{iccid}") for _ in range(n)]
    server_errors = sum(r.status_code == 500 for r in answers)
    over_limit = sum(r.status_code == 429 for r in answers)
    malformed = 0
    for r in answers:
        if r.status_code == 200:
            try:
                r.json()
            except ValueError:
                malformed += 1
    assert 0.06 * n <= server_errors <= 0.14 * n
    assert 0.02 * n <= malformed <= 0.08 * n
    assert 0.02 * n <= over_limit <= 0.08 * n
    assert sim.stats()["injected"] == {
        "error_5xx": server_errors,
        "timeout": 0,
        "malformed": malformed,
        "burst_429": over_limit,
    }


def test_timeout_fault_applies_then_answers_late(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(timeout_rate=1.0, timeout_hold_seconds=1.0)
    iccid = seed_jasper(sim, 1)[0]
    with pytest.raises(httpx.ReadTimeout):
        httpx.put(f"{jasper_sim.base_url}/devices/{iccid}", json={"status": "DEACTIVATED"}, auth=AUTH, timeout=0.2)
    assert sim.device(iccid)["status"] == "DEACTIVATED"
    assert sim.applied_counts[iccid] == 1
    assert sim.gate.accounts[JASPER_USER].in_flight == 0  # a retry is not refused as concurrent


def test_transition_table_refuses_illegal_changes(jasper_sim) -> None:
    assert set(JASPER_TRANSITIONS) == STATUSES
    assert not is_legal_transition("RETIRED", "ACTIVATED")
    assert JASPER_TRANSITIONS["PURGED"] == frozenset()
    assert is_legal_transition("RETIRED", "RETIRED")
    sim = jasper_sim.simulator
    retired, active = seed_jasper(sim, 2, status="RETIRED")[0], seed_jasper(sim, 1, start=5)[0]
    with client(jasper_sim) as c:
        r = c.put(f"devices/{retired}", json={"status": "ACTIVATED"})
        assert r.status_code == 400 and r.json()["errorCode"] == "20000019"
        assert "RETIRED" in r.json()["errorMessage"]
        # Setting the current status again is a no-op success, not a state change.
        assert c.put(f"devices/{active}", json={"status": "ACTIVATED"}).status_code == 200
    assert sim.applied_counts[retired] == 0 and sim.applied_counts[active] == 0
    assert sim.device(retired)["status"] == "RETIRED"


def test_effective_date_is_scheduled_once_and_limited_to_180_days(jasper_sim) -> None:
    sim = jasper_sim.simulator
    iccid = seed_jasper(sim, 1)[0]
    now = dt.datetime.now(dt.UTC)
    soon = (now + dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    late = (now + dt.timedelta(days=181)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    with client(jasper_sim) as c:
        r = c.put(f"devices/{iccid}", json={"status": "DEACTIVATED", "effectiveDate": late})
        assert r.status_code == 400 and r.json()["errorCode"] == "10000050"
        for _ in range(2):
            r = c.put(f"devices/{iccid}", json={"status": "DEACTIVATED", "effectiveDate": soon})
            assert r.status_code == 200
    assert sim.device(iccid)["status"] == "ACTIVATED"  # not yet
    assert sim.applied_counts[iccid] == 1 and len(sim.scheduled[iccid]) == 1


def test_search_is_paged_by_50(jasper_sim) -> None:
    seed_jasper(jasper_sim.simulator, 120)
    since = "2000-01-01T00:00:00+00:00"
    with client(jasper_sim) as c:
        pages = [c.get("devices", params={"modifiedSince": since, "pageNumber": p}).json() for p in (1, 2, 3)]
        assert c.get("devices", params={"modifiedSince": since, "pageSize": 51}).status_code == 400
        assert c.get("devices").status_code == 400
    assert [len(p["devices"]) for p in pages] == [50, 50, 20]
    assert [p["lastPage"] for p in pages] == [False, False, True]
    assert len({d["iccid"] for p in pages for d in p["devices"]}) == 120
    assert set(pages[0]["devices"][0]) == {"iccid", "status", "ratePlan", "communicationPlan"}


def test_admin_endpoints_seed_configure_and_count(jasper_sim) -> None:
    root = jasper_sim.root_url
    iccids = make_iccids(2, start=40)
    r = httpx.post(root + "/_sim/devices", json={"devices": [{"iccid": i, "status": "INVENTORY"} for i in iccids]})
    assert r.json()["seeded"] == 2
    assert httpx.post(root + "/_sim/config", json={"rate_per_second": 3, "error_rate": 0.5}).json()["error_rate"] == 0.5
    assert httpx.post(root + "/_sim/config", json={"no_such_knob": 1}).status_code == 400
    httpx.post(root + "/_sim/config", json={"error_rate": 0})
    httpx.put(f"{jasper_sim.base_url}/devices/{iccids[0]}", json={"status": "ACTIVATED"}, auth=AUTH)
    stats = httpx.get(root + "/_sim/stats").json()
    assert stats["devices"] == 2 and stats["applied_total"] == 1 and stats["total_calls"] == 1
    device = httpx.get(f"{root}/_sim/devices/{iccids[0]}").json()
    assert device["device"]["status"] == "ACTIVATED" and device["applied"] == 1


def test_cli_starts_a_simulator() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkchange_pipeline.simulators",
            "jasper",
            "--port",
            str(port),
            "--rate",
            "0",
            "--devices",
            "3",
            "--account",
            "cli:key",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        r = wait_for_server(f"http://127.0.0.1:{port}/_sim/stats", proc, timeout=15)
        assert r.json()["devices"] == 3
        r = httpx.get(f"http://127.0.0.1:{port}/rws/api/v1/devices/{make_iccids(1)[0]}", auth=("cli", "key"))
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_schema_validation_would_catch_a_wrong_field() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate({"ratePlanName": "x"}, strict(operation_schema(DEVICE_PATH, "put")))


# -- issue 17: as strict as the real API, in its shapes ---------------------------------------------

IN_20_DAYS = (dt.datetime.now(dt.UTC) + dt.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.mark.parametrize(
    "body, code",
    [
        ({"ipv4Address": "not-an-ip"}, "10000061"),
        ({"ipv4Address": "2001:db8::1"}, "10000061"),  # v6 in the v4 field
        ({"ipv4Address": "10.0.0.256"}, "10000061"),
        ({"ipv4Address": "010.0.0.1"}, "10000061"),  # leading zeros: ambiguous (octal), refused
        ({"ipv6Address": "not-an-ip"}, "10000061"),
        ({"ipv6Address": "10.0.0.1"}, "10000061"),  # v4 in the v6 field
        ({"ipv6Address": "fe80::1%eth0"}, "10000061"),  # a zone index is no fixed address
        ({"ipv4Address": ""}, "10000061"),
        ({"ipv4Address": 167772161}, "10000024"),  # DeviceEditModel: every field a string
        ({"ratePlan": "RP", "ipv4Address": "bad"}, "10000061"),  # one bad value: nothing stored
        ({"overageLimitOverride": "SOMETIMES"}, "10000024"),
        ({"overageLimitOverride": "default"}, "10000024"),
        ({"status": None}, "10000024"),
        ({"status": "DEACTIVATED", "effectiveDate": "2030-01-01"}, "10000050"),  # a date, no time
        ({"status": "DEACTIVATED", "effectiveDate": IN_20_DAYS}, "10000050"),  # no offset
        ({"status": "DEACTIVATED", "effectiveDate": "2030-02-30T00:00:00Z"}, "10000050"),
        ({"status": "DEACTIVATED", "effectiveDate": 1893456000}, "10000050"),
    ],
)
def test_put_refuses_bad_field_values_and_stores_nothing(jasper_sim, body, code) -> None:
    sim = jasper_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    before = dict(sim.device(iccid))
    with client(jasper_sim) as c:
        r = c.put(f"devices/{iccid}", json=body)
        after = c.get(f"devices/{iccid}").json()
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"errorMessage", "errorCode"} and r.json()["errorCode"] == code
    assert r.json()["errorCode"].isdigit() and r.json()["errorMessage"]
    assert after == before and sim.applied_counts[iccid] == 0 and not sim.scheduled.get(iccid)


@pytest.mark.parametrize(
    "body, field, stored",
    [
        ({"ipv4Address": "10.1.2.3"}, "fixedIPAddress", "10.1.2.3"),
        ({"ipv6Address": "2001:db8::17"}, "fixedIpv6Address", "2001:db8::17"),
        ({"ipv6Address": "::ffff:10.1.2.3"}, "fixedIpv6Address", "::ffff:10.1.2.3"),
        ({"overageLimitOverride": "TEMPORARY_OVERRIDE"}, "_overageLimitOverride", "TEMPORARY_OVERRIDE"),
    ],
)
def test_put_stores_valid_values(jasper_sim, body, field, stored) -> None:
    sim = jasper_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    with client(jasper_sim) as c:
        assert c.put(f"devices/{iccid}", json=body).status_code == 200
        answer = c.get(f"devices/{iccid}").json()
    assert sim.device(iccid)[field] == stored and sim.applied_counts[iccid] == 1
    # GET answers DeviceDetails fields only (overageLimitOverride is not one).
    validate(answer, strict(operation_schema(DEVICE_PATH, "get", "200")))


@pytest.mark.parametrize("offset", ["+00:00", "Z", "+0000", "-05:00"])
def test_effective_date_accepts_rfc3339_offsets(jasper_sim, offset) -> None:
    sim = jasper_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    with client(jasper_sim) as c:
        r = c.put(f"devices/{iccid}", json={"status": "DEACTIVATED", "effectiveDate": IN_20_DAYS + offset})
    assert r.status_code == 200 and len(sim.scheduled[iccid]) == 1


UNSIMULATED = [
    ("GET", "devices/{iccid}/auditTrails?daysOfHistory=30"),
    ("GET", "devices/{iccid}/ctdUsages"),
    ("GET", "devices/{iccid}/locationHistory"),
    ("GET", "devices/{iccid}/sessionInfo"),
    ("GET", "devices/{iccid}/usageInZone"),
    ("POST", "devices/{iccid}/smsMessages"),
    ("GET", "no/such/resource"),
    ("DELETE", "echo/hello"),
    ("PATCH", "devices/{iccid}/x/y"),
    ("GET", "../v2/devices/{iccid}"),
    ("OPTIONS", "../"),
]


@pytest.mark.parametrize("method, path", UNSIMULATED)
def test_unknown_paths_answer_a_jasper_json_404(jasper_sim, method, path) -> None:
    """Documented operations the pipeline does not use, and any unknown path under the API
    root, any method: the real API's JSON error shape, never a plain-text 404."""
    (iccid,) = seed_jasper(jasper_sim.simulator, 1)
    url = jasper_sim.base_url + "/" + path.format(iccid=iccid)
    r = httpx.request(method, url, auth=AUTH, json={"messageText": "hi"} if method == "POST" else None)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"errorMessage": "Resource not found", "errorCode": "10000002"}
    r = httpx.request(method, url)  # authentication comes first, as for every API path
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="Jasper"'


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("DELETE", "devices/{iccid}", "GET, HEAD, PUT"),
        ("POST", "devices", "GET, HEAD"),
        ("PUT", "devices", "GET, HEAD"),
    ],
)
def test_simulated_paths_refuse_other_methods_with_405_json(jasper_sim, method, path, allow) -> None:
    (iccid,) = seed_jasper(jasper_sim.simulator, 1)
    r = httpx.request(method, jasper_sim.base_url + "/" + path.format(iccid=iccid), auth=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert set(r.json()) == {"errorMessage", "errorCode"} and r.json()["errorCode"].isdigit()
    assert jasper_sim.simulator.device(iccid)["status"] == "ACTIVATED"


@pytest.mark.parametrize("status", [400, 403])
def test_rate_limit_status_is_configurable(jasper_sim, status) -> None:
    sim = jasper_sim.simulator
    assert sim.config()["rate_limit_status"] == 429  # the default [I]: no public source states it
    sim.configure(rate_limit_status=status, rate_per_second=1)
    (iccid,) = seed_jasper(sim, 1)
    with client(jasper_sim) as c:
        answers = [c.get(f"devices/{iccid}") for _ in range(3)]
    refused = [r for r in answers if r.status_code != 200]
    assert refused and all(r.status_code == status for r in refused)
    assert all(r.json() == {"errorMessage": "Rate Limit Exceeded", "errorCode": "40000029"} for r in refused)
    assert httpx.post(jasper_sim.root_url + "/_sim/config", json={"rate_limit_status": 200}).status_code == 400


@pytest.mark.parametrize(
    "params, code",
    [
        ({"modifiedSince": "2016-04-18"}, "10000024"),
        ({"modifiedSince": "yesterday"}, "10000024"),
        ({"modifiedSince": "2016-04-18T17:31:34+00:00", "modifiedTill": "later"}, "10000024"),
        ({"modifiedSince": "2016-04-18T17:31:34+00:00", "pageNumber": 0}, "10000024"),
        ({"modifiedSince": "2016-04-18T17:31:34+00:00", "pageSize": "ten"}, "10000024"),
        ({"modifiedSince": "2016-04-18T17:31:34+00:00", "accountId": "acme"}, "10000024"),
        ({"modifiedSince": "2016-04-18T17:31:34+00:00", "status": "SLEEPING"}, "10000017"),
    ],
)
def test_search_refuses_bad_parameters(jasper_sim, params, code) -> None:
    with client(jasper_sim) as c:
        r = c.get("devices", params=params)
    assert r.status_code == 400 and r.json()["errorCode"] == code and r.json()["errorMessage"]


def test_search_filters_by_status_account_and_custom_fields(jasper_sim) -> None:
    sim = jasper_sim.simulator
    a, b = seed_jasper(sim, 2, status="INVENTORY")
    seed_jasper(sim, 3, start=10, accountCustom1="fleet-7")
    since = "2000-01-01T00:00:00+00:00"
    with client(jasper_sim) as c:
        inventory = c.get("devices", params={"modifiedSince": since, "status": "INVENTORY"}).json()
        fleet = c.get("devices", params={"modifiedSince": since, "accountCustom1": "fleet-7"}).json()
        other = c.get("devices", params={"modifiedSince": since, "accountId": 1}).json()
    assert {d["iccid"] for d in inventory["devices"]} == {a, b}
    assert len(fleet["devices"]) == 3 and other["devices"] == [] and other["lastPage"] is True


def test_search_refuses_an_unencoded_plus_in_a_date_time(jasper_sim) -> None:
    """A query's `+` decodes to a space, so "+00:00" sent unencoded arrives as " 00:00": the
    simulator refuses it (10000024) instead of turning the space back into a `+`, a second
    spelling that would hide a client not encoding its query. `%2B` (what httpx's `params` sends)
    is the one spelling served."""
    seed_jasper(jasper_sim.simulator, 3)
    with client(jasper_sim) as c:
        for name in ("modifiedSince", "modifiedTill"):
            since = "modifiedSince=2000-01-01T00:00:00%2B00:00"
            raw = f"devices?{since}&{name}=2999-01-01T00:00:00+00:00"
            r = c.get(raw)
            assert r.status_code == 400 and r.json()["errorCode"] == "10000024", (name, r.text)
            assert set(r.json()) == {"errorMessage", "errorCode"} and "%2B" in r.json()["errorMessage"]
        encoded = c.get("devices", params={"modifiedSince": "2000-01-01T00:00:00+00:00"})
        assert encoded.status_code == 200 and len(encoded.json()["devices"]) == 3
        assert c.get("devices?modifiedSince=2000-01-01T00:00:00Z").status_code == 200
