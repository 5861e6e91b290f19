"""The Teal simulator against the wire format: auth, async operations (102 while running, then
entries), queued reads (esims, esims/info, plans: a request id at once, the records only from
operation-result), upper-case deviceStatus, callbacks (retries, drops, duplicates), replays,
validation, limits, admin and CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from bulkchange_pipeline.carriers.base import DeviceChange
from bulkchange_pipeline.carriers.teal import TealClient
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.teal_rules import DEFAULT_PLANS, make_eids
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.teal_fixtures import (
    OPERATION_DELAY,
    TEAL_API_KEY,
    TEAL_API_SECRET,
    seed_teal,
    teal_account,
)
from bulkchange_pipeline_tests.waiting import wait_for_server, wait_until

pytestmark = pytest.mark.timeout(60)  # a hung server must not hang CI

HEADERS = {"ApiKey": TEAL_API_KEY, "ApiSecret": TEAL_API_SECRET}


def client(handle) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url + "/", headers=HEADERS, timeout=5)


def wait_result(c: httpx.Client, request_id: str, timeout: float = 5.0) -> httpx.Response:
    """The operation's result once the completion thread has it (its delay has passed)."""

    def result() -> httpx.Response | None:
        r = c.get("api/v1/operation-result", params={"requestId": request_id})
        return r if r.status_code == 200 else None

    return wait_until(result, timeout, interval=0.01, what=f"the result of operation {request_id}")


def test_make_eids_are_32_digits_with_mod97_check() -> None:
    eids = make_eids(5, start=7)
    assert len(set(eids)) == 5
    assert all(len(e) == 32 and e.isdigit() and int(e) % 97 == 1 for e in eids)


def test_auth_is_required_with_teals_envelope(teal_sim) -> None:
    url = teal_sim.base_url + "/api/v1/plans"
    for headers in ({}, {"ApiKey": TEAL_API_KEY}, {**HEADERS, "ApiSecret": "nope"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"success": False, "errorCode": "UNAUTHORIZED", "message": "Invalid ApiKey or ApiSecret"}
    assert teal_sim.simulator.stats()["auth_failures"] == 3


def test_operation_lifecycle_102_then_entries_then_callback(teal_sim, callbacks, sim_clock) -> None:
    sim = teal_sim.simulator
    a, b = seed_teal(sim, 2, deviceStatus="stopped")  # seeds may use any case
    cb_url = callbacks.base_url + "/callbacks/teal?tenant=7"
    with client(teal_sim) as c:
        r = c.post(
            "api/v1/esims/enable",
            params={"requestId": "r" * 32, "callbackUrl": cb_url},
            json={"entries": [a, b, "89049032000000000000000000000000"]},
        )
        assert r.status_code == 200
        reply = r.json()
        assert reply["success"] is True and set(reply) == {"success", "message", "link"}
        href = reply["link"]["operationResult"]["href"]
        assert href == f"{teal_sim.base_url}/api/v1/operation-result?requestId={'r' * 32}"
        pending = c.get(href)
        assert pending.status_code == 202 and pending.json()["status"] == 102
        assert pending.json()["message"] == "Processing"
        assert sim.device(a)["deviceStatus"] == "STOPPED"  # nothing applied yet
        sim_clock.advance(OPERATION_DELAY)
        done = wait_result(c, "r" * 32)
    assert done.status_code == 200
    entries = done.json()["entries"]
    assert [(e["eid"], e["success"]) for e in entries][:2] == [(a, True), (b, True)]
    assert entries[2]["success"] is False and entries[2]["errorCode"] == "ESIM_NOT_FOUND"
    assert sim.device(a)["deviceStatus"] == "ONLINE" and sim.applied_counts[a] == 1
    assert sim.wait_idle()  # the callback delivered, and counted as sent
    (cb,) = callbacks.received
    assert cb["path"] == "/callbacks/teal" and cb["query"] == {"tenant": "7", "requestId": "r" * 32}
    assert sim.stats()["callbacks_sent"] == 1


def test_state_rules_noops_and_plan_validation(teal_sim, sim_clock) -> None:
    sim = teal_sim.simulator
    online, waiting, stopped = seed_teal(sim, 3)
    sim.seed_devices([{"eid": waiting, "deviceStatus": "waiting"}, {"eid": stopped, "deviceStatus": "stopped"}])
    plan = DEFAULT_PLANS[1]
    with client(teal_sim) as c:
        c.post("api/v1/esims/enable", params={"requestId": "e1"}, json={"entries": [online, waiting]})
        c.post("api/v1/esims/disable", params={"requestId": "d1"}, json={"entries": [stopped]})
        c.post(
            "api/v1/esims/assign-plan",
            params={"requestId": "p1"},
            json={"entries": [{"eid": online, "planUuid": plan["uuid"]}, {"eid": waiting, "planUuid": "bogus"}]},
        )
        sim_clock.advance(OPERATION_DELAY)
        results = {rid: wait_result(c, rid).json()["entries"] for rid in ("e1", "d1", "p1")}
    assert all(e["success"] for e in results["e1"] + results["d1"])
    assert results["p1"][1]["errorCode"] == "VALIDATION_ERROR"
    assert sim.device(online)["planName"] == plan["name"]
    assert dict(sim.applied_counts) == {online: 1}  # no-ops are not counted


def test_resent_request_id_is_replayed_not_reapplied(teal_sim, sim_clock) -> None:
    sim = teal_sim.simulator
    (eid,) = seed_teal(sim, 1)
    with client(teal_sim) as c:
        body = {"entries": [eid]}
        first = c.post("api/v1/esims/disable", params={"requestId": "same"}, json=body)
        again = c.post("api/v1/esims/disable", params={"requestId": "same"}, json=body)
        other = c.post("api/v1/esims/enable", params={"requestId": "same"}, json=body)
        sim_clock.advance(OPERATION_DELAY)
        wait_result(c, "same")
    assert first.json() == again.json()
    assert other.status_code == 400 and other.json()["errorCode"] == "VALIDATION_ERROR"
    stats = sim.stats()
    assert stats["operations_enqueued"] == 1 and stats["operations_replayed"] == 1
    assert sim.applied_counts[eid] == 1


@pytest.mark.parametrize(
    "params,body,needle",
    [
        ({}, {"entries": ["1"]}, "requestId is required"),
        ({"requestId": "x"}, {"entries": []}, "at least one entry"),
        ({"requestId": "x"}, {"eids": ["1"]}, "at least one entry"),
        ({"requestId": "x"}, {"entries": [str(i) for i in range(101)]}, "at most 100"),
        ({"requestId": "x"}, {"entries": [{"eid": "1"}]}, "EID strings"),
    ],
)
def test_malformed_requests_are_validation_errors(teal_sim, params, body, needle) -> None:
    with client(teal_sim) as c:
        r = c.post("api/v1/esims/enable", params=params, json=body)
        bad_plan = c.post("api/v1/esims/assign-plan", params={"requestId": "y"}, json={"entries": ["1"]})
    assert r.status_code == 400 and r.json()["errorCode"] == "VALIDATION_ERROR"
    assert needle in r.json()["message"]
    assert bad_plan.status_code == 400
    assert teal_sim.simulator.stats()["operations_enqueued"] == 0


def test_reads_are_queued_and_their_records_come_from_operation_result(teal_sim, sim_clock) -> None:
    """Issue 17: `esims`, `esims/info` and `plans` answer only the queued reply; the records, with
    deviceStatus upper case, come from operation-result once the read is done."""
    sim = teal_sim.simulator
    eids = seed_teal(sim, 130, iccid="8901000000000000000")
    sim.seed_devices([{"eid": eids[42], "deviceStatus": "waiting"}])
    reads = {
        "l1": ("api/v1/esims", {"offset": 0, "limit": 100}),
        "l2": ("api/v1/esims", {"offset": 100, "limit": 100}),
        "i1": ("api/v1/esims/info", {"eid": eids[42], "limit": 1}),
        "i2": ("api/v1/esims/info", {"eid": "89049032000000000000000000000000", "limit": 1}),
        "pl": ("api/v1/plans", {}),
    }
    with client(teal_sim) as c:
        replies = {rid: c.get(path, params={"requestId": rid, **q}) for rid, (path, q) in reads.items()}
        pending = c.get("api/v1/operation-result", params={"requestId": "i1"})
        sim_clock.advance(sim.read_delay_seconds)
        results = {rid: wait_result(c, rid).json()["entries"] for rid in reads}
        too_big = c.get("api/v1/esims", params={"requestId": "x1", "limit": 101})
        no_eid = c.get("api/v1/esims/info", params={"requestId": "x2", "limit": 1})
        no_id = c.get("api/v1/esims/info", params={"eid": eids[0], "limit": 1})
    for reply in replies.values():
        assert reply.status_code == 200 and set(reply.json()) == {"success", "message", "link"}
        assert "entries" not in reply.json()
    assert pending.status_code == 202 and pending.json()["status"] == 102
    assert len(results["l1"]) == 100 and len(results["l2"]) == 30
    (info,) = results["i1"]
    assert info["eid"] == eids[42] and info["deviceStatus"] == "WAITING"
    assert set(info) >= {"eid", "iccid", "imei", "msisdn", "deviceStatus", "planUuid", "planName", "active"}
    assert "flowRestricted" not in info
    assert results["i2"] == []  # an EID Teal does not know [I]
    assert {e["deviceStatus"] for e in results["l1"]} == {"ONLINE", "WAITING"}
    assert [p["uuid"] for p in results["pl"]] == [p["uuid"] for p in DEFAULT_PLANS]
    assert all(r.status_code == 400 and r.json()["errorCode"] == "VALIDATION_ERROR" for r in (too_big, no_eid, no_id))
    assert sim.stats()["reads_enqueued"] == 5 and sim.stats()["reads_completed"] == 5


def test_activate_sets_active(teal_sim, sim_clock) -> None:
    sim = teal_sim.simulator
    (eid,) = seed_teal(sim, 1, active=False)
    with client(teal_sim) as c:
        r = c.post("api/v1/esims/activate", params={"requestId": "act"}, json={"entries": [eid]})
        assert r.status_code == 200 and r.json()["success"] is True
        sim_clock.advance(OPERATION_DELAY)
        (entry,) = wait_result(c, "act").json()["entries"]
    assert entry["success"] is True and sim.device(eid)["active"] is True


def test_rate_limit_answers_429_with_retry_after(teal_sim) -> None:
    sim = teal_sim.simulator
    sim.configure(calls_per_minute=180)  # 3 per one-second window
    with client(teal_sim) as c:
        answers = [c.get("api/v1/plans", params={"requestId": f"rl{i}"}) for i in range(8)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused and len(refused) <= 5
    assert all(1 <= int(r.headers["retry-after"]) <= 1 for r in refused)
    assert refused[0].json()["success"] is False
    assert sim.stats()["over_limit_answers"] == len(refused)


def test_dropped_duplicated_and_undeliverable_callbacks(teal_sim, callbacks) -> None:
    sim = teal_sim.simulator
    sim.configure(operation_delay_seconds=0.01, callback_retry_seconds=0.01)
    (eid,) = seed_teal(sim, 1)
    dead = f"http://127.0.0.1:{free_port()}/callbacks/teal"  # nothing listens there
    good = callbacks.base_url + "/callbacks/teal"
    with client(teal_sim) as c:
        sim.configure(drop_callback_rate=1.0)
        c.post("api/v1/esims/disable", params={"requestId": "drop", "callbackUrl": good}, json={"entries": [eid]})
        assert sim.wait_idle()
        sim.configure(drop_callback_rate=0.0, duplicate_callback_rate=1.0)
        c.post("api/v1/esims/enable", params={"requestId": "dup", "callbackUrl": good}, json={"entries": [eid]})
        c.post("api/v1/esims/enable", params={"requestId": "dead", "callbackUrl": dead}, json={"entries": [eid]})
        assert sim.wait_idle()
    # Every send settled: both "dup" copies delivered, the dead URL given up twice (sent twice,
    # duplicates on, each retried).
    stats = wait_until(
        lambda: (s := sim.stats())["callbacks_sent"] == 2 and s["callbacks_failed"] == 2 and s,
        timeout=5,
        what="two callbacks delivered and two given up",
    )
    assert stats["callbacks_dropped"] == 1 and stats["callbacks_duplicated"] == 2
    assert sorted(callbacks.request_ids()) == ["dup", "dup"]


def test_literal_102_is_read_as_still_pending_by_the_client(teal_sim) -> None:
    """A real 102 is an interim status in HTTP/1.1: httpx cannot read it as an answer, and the
    client's poll then says 'not yet' instead of failing the device."""
    sim = teal_sim.simulator
    sim.configure(pending_http_status=102, operation_delay_seconds=30)
    (eid,) = seed_teal(sim, 1)
    with client(teal_sim) as c:
        c.post("api/v1/esims/disable", params={"requestId": "slow"}, json={"entries": [eid]})
        with pytest.raises(httpx.HTTPError):
            c.get("api/v1/operation-result", params={"requestId": "slow"})
    change = DeviceChange(
        1, 1, ChangeType.STATUS_UPDATE, None, None, None, eid, {"status": "stopped"}, carrier_request_id="slow"
    )
    tc = TealClient(teal_account(teal_sim, max_attempts=2))

    async def go():
        try:
            return await tc.poll([change])
        finally:
            await tc.aclose()

    assert asyncio.run(go()) == [None]


def test_admin_endpoints_seed_configure_and_count(teal_sim) -> None:
    root = teal_sim.root_url
    eids = make_eids(2, start=500)
    r = httpx.post(root + "/_sim/devices", json={"devices": [{"eid": e, "deviceStatus": "stopped"} for e in eids]})
    assert r.json() == {"seeded": 2, "devices": 2}
    cfg = httpx.post(
        root + "/_sim/config", json={"calls_per_minute": 600, "error_rate": 0.5, "operation_delay_seconds": 0.01}
    ).json()
    assert cfg["calls_per_minute"] == 600 and cfg["error_rate"] == 0.5
    assert httpx.post(root + "/_sim/config", json={"no_such_knob": 1}).status_code == 400
    httpx.post(root + "/_sim/config", json={"error_rate": 0})
    with client(teal_sim) as c:
        c.post("api/v1/esims/enable", params={"requestId": "adm"}, json={"entries": [eids[0]]})
        assert wait_result(c, "adm").status_code == 200
    stats = httpx.get(root + "/_sim/stats").json()
    assert stats["applied_total"] == 1 and stats["operations_completed"] == 1
    device = httpx.get(f"{root}/_sim/devices/{eids[0]}").json()
    assert device["device"]["deviceStatus"] == "ONLINE" and device["applied"] == 1
    assert httpx.post(root + "/_sim/reset").json()["total_calls"] == 0


def test_cli_starts_a_simulator() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkchange_pipeline.simulators",
            "teal",
            "--port",
            str(port),
            "--devices",
            "3",
            "--account",
            "cli-key:cli-secret",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        r = wait_for_server(f"http://127.0.0.1:{port}/_sim/stats", proc, timeout=15)
        assert r.json()["devices"] == 3
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/", headers={"ApiKey": "cli-key", "ApiSecret": "cli-secret"}
        ) as c:
            r = c.get("api/v1/esims", params={"requestId": "cli"})
            assert r.status_code == 200 and r.json()["success"] is True
            assert wait_result(c, "cli").json()["entries"][0]["eid"] == make_eids(1)[0]
    finally:
        proc.terminate()
        proc.wait(10)
