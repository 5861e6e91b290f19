"""The (provisional) Pond simulator: auth and distributor scoping, paging, package rules, the
step-failure switches, limits, faults and counters."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from bulkchange_pipeline.simulators.pond_rules import PACKAGE_TRANSITIONS
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.pond_fixtures import (
    NEW_PLAN,
    OLD_PLAN,
    POND_DISTRIBUTOR,
    POND_SECRET,
    POND_USER,
    seed_pond,
)
from bulkchange_pipeline_tests.waiting import wait_for_server

pytestmark = pytest.mark.timeout(60)


def client(handle, auth=(POND_USER, POND_SECRET)) -> httpx.Client:
    return httpx.Client(base_url=f"{handle.base_url}/{POND_DISTRIBUTOR}/", auth=auth, timeout=5)


def packages(c: httpx.Client, iccid: str) -> list[dict]:
    r = c.get(f"devices/{iccid}/packages")
    assert r.status_code == 200
    return r.json()["elements"]


def test_auth_and_distributor_scoping(pond_sim) -> None:
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    with client(pond_sim, auth=(POND_USER, "wrong")) as c:
        r = c.get(f"devices/{iccid}")
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    with httpx.Client(base_url=f"{pond_sim.base_url}/9999/", auth=(POND_USER, POND_SECRET)) as c:
        assert c.get(f"devices/{iccid}").status_code == 403
    with client(pond_sim) as c:
        body = c.get(f"devices/{iccid}").json()
        assert body["iccid"] == iccid and all(s["enabled"] for s in body["services"])
        assert c.get("devices/89440001999999999999").status_code == 404


def test_add_activate_terminate_and_counters(pond_sim) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    with client(pond_sim) as c:
        (old,) = packages(c, iccid)
        assert (old["packageTypeId"], old["status"]) == (OLD_PLAN, "ACTIVE")
        r = c.post(f"devices/{iccid}/packages", json={"packageTypeId": NEW_PLAN})
        assert r.status_code == 201 and r.json()["status"] == "PENDING"
        new_id = r.json()["packageId"]
        base = f"devices/{iccid}/packages"
        assert c.put(f"{base}/{new_id}/status", json={"status": "ACTIVE"}).status_code == 200
        assert c.put(f"{base}/{new_id}/status", json={"status": "ACTIVE"}).status_code == 200
        assert c.put(f"{base}/{old['packageId']}/status", json={"status": "TERMINATED"}).status_code == 200
        refused = c.put(f"{base}/{old['packageId']}/status", json={"status": "ACTIVE"})
        assert refused.status_code == 409 and refused.json()["code"] == "INVALID_STATUS_TRANSITION"
        assert c.put(f"{base}/424242/status", json={"status": "ACTIVE"}).status_code == 404
    assert [p["packageId"] for p in sim.active_packages(iccid)] == [new_id]
    assert sim.applied_counts[iccid] == 3  # add, activate, terminate; the repeat is a no-op
    assert sim.history[iccid] == [
        (new_id, None, "PENDING"),
        (new_id, "PENDING", "ACTIVE"),
        (old["packageId"], "ACTIVE", "TERMINATED"),
    ]
    assert PACKAGE_TRANSITIONS["TERMINATED"] == frozenset()


@pytest.mark.parametrize(
    "path, body, code",
    [
        ("packages", {"packageTypeId": 7777}, "UNKNOWN_PACKAGE_TYPE"),
        ("packages", {"packageTypeId": 2999}, "UNKNOWN_PACKAGE_TYPE"),  # type not ACTIVE
        ("packages", {"packageType": 2002}, "INVALID_REQUEST"),
        ("services/status", {"enabled": "yes"}, "INVALID_REQUEST"),
    ],
)
def test_refuses_invalid_bodies(pond_sim, path, body, code) -> None:
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    with client(pond_sim) as c:
        method = c.post if path == "packages" else c.put
        r = method(f"devices/{iccid}/{path}", json=body)
    assert r.status_code == 400 and r.json()["code"] == code
    assert pond_sim.simulator.applied_counts[iccid] == 0


def test_paging_of_packages_and_package_types(pond_sim) -> None:
    seeds = [{"packageTypeId": 2001, "status": "TERMINATED"}] * 5
    (iccid,) = seed_pond(pond_sim.simulator, 1, packages=seeds)
    with client(pond_sim) as c:
        first = c.get(f"devices/{iccid}/packages", params={"offset": 0, "limit": 3}).json()
        rest = c.get(f"devices/{iccid}/packages", params={"offset": 3, "limit": 3}).json()
        assert (len(first["elements"]), first["isLastPage"]) == (3, False)
        assert (len(rest["elements"]), rest["isLastPage"]) == (2, True)
        assert c.get(f"devices/{iccid}/packages", params={"limit": 1000}).status_code == 400
        types = c.get("inventories/1/package-types", params={"limit": 2}).json()
        assert types["isLastPage"] is False and types["elements"][0]["packageTypeId"] == 2001
        assert set(types["elements"][0]) >= {"packageTypeId", "name", "status", "dataUsageAllowanceInBytes"}
        assert c.get("inventories/99/package-types").status_code == 404


def test_service_status_switches_all_services_once(pond_sim) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    with client(pond_sim) as c:
        for _ in range(2):
            r = c.put(f"devices/{iccid}/services/status", json={"enabled": False})
            assert r.status_code == 200
        assert not any(s["enabled"] for s in c.get(f"devices/{iccid}").json()["services"])
    assert sim.applied_counts[iccid] == 1


def test_step_failure_switches(pond_sim) -> None:
    sim = pond_sim.simulator
    a, b = seed_pond(sim, 2)
    sim.configure(fail_activate=[a], fail_terminate=[b], fail_undo=[b])
    with client(pond_sim) as c:
        new_a = c.post(f"devices/{a}/packages", json={"packageTypeId": NEW_PLAN}).json()["packageId"]
        r = c.put(f"devices/{a}/packages/{new_a}/status", json={"status": "ACTIVE"})
        assert r.status_code == 409 and r.json()["code"] == "OPERATION_FAILED"
        old_b = packages(c, b)[0]["packageId"]
        new_b = c.post(f"devices/{b}/packages", json={"packageTypeId": NEW_PLAN}).json()["packageId"]
        assert c.put(f"devices/{b}/packages/{new_b}/status", json={"status": "ACTIVE"}).status_code == 200
        for pid in (old_b, new_b):  # old: fail_terminate; newest: fail_undo
            assert c.put(f"devices/{b}/packages/{pid}/status", json={"status": "TERMINATED"}).status_code == 409
    assert sim.stats()["switched_failures"] == 3


def test_rate_limit_answers_429_with_retry_after(pond_sim) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    sim.configure(rate_per_second=2, retry_after_seconds=1)
    with client(pond_sim) as c:
        codes = [c.get(f"devices/{iccid}") for _ in range(6)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and limited[0].headers["retry-after"] == "1"
    assert limited[0].json()["code"] == "TOO_MANY_REQUESTS"
    assert sim.stats()["over_limit_answers"] == len(limited)


def test_injected_faults_and_reset(pond_sim) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    sim.configure(error_rate=0.5, malformed_rate=0.5, seed=1)
    with client(pond_sim) as c:
        answers = [c.get(f"devices/{iccid}") for _ in range(20)]
    assert {r.status_code for r in answers} == {200, 503}
    injected = sim.stats()["injected"]
    assert injected["error_5xx"] + injected["malformed"] == 20 and injected["malformed"] > 0
    with pytest.raises(KeyError):
        sim.configure(error_rat=0.1)
    sim.reset_counters()
    assert sim.stats()["total_calls"] == 0 and sim.device(iccid) is not None


def test_admin_endpoints_seed_and_inspect(pond_sim) -> None:
    with httpx.Client(base_url=pond_sim.root_url) as c:
        r = c.post("/_sim/devices", json={"devices": [{"iccid": "89440001000000000017", "servicesEnabled": False}]})
        assert r.json()["seeded"] == 1
        body = c.get("/_sim/devices/89440001000000000017").json()
        assert body["device"]["packages"][0]["status"] == "ACTIVE" and body["applied"] == 0
        assert c.post("/_sim/config", json={"fail_undo": ["x"]}).json()["fail_undo"] == ["x"]


def test_cli_starts_a_seeded_simulator() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkchange_pipeline.simulators",
            "pond",
            "--port",
            str(port),
            "--devices",
            "3",
            "--account",
            "u:s:77",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        stats = wait_for_server(f"http://127.0.0.1:{port}/_sim/stats", proc, timeout=15).json()
        assert stats["devices"] == 3
        r = httpx.get(f"http://127.0.0.1:{port}/api/77/inventories/1/package-types", auth=("u", "s"))
        assert r.status_code == 200 and r.json()["elements"]
    finally:
        proc.terminate()
        proc.wait(10)
