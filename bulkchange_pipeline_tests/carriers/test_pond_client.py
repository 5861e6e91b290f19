"""PondClient against the (provisional) Pond simulator: the package flow with its compensating
undo, service statuses, faults, refusals, crash recovery and redaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import httpx
import pytest

from bulkchange_pipeline.carriers import build_adapter
from bulkchange_pipeline.carriers.base import (
    CarrierAdapter,
    DeviceChange,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.pond import PondClient
from bulkchange_pipeline.carriers.pond_wire import classify_pond_response
from bulkchange_pipeline.carriers.redaction import basic_token
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline_tests.simulators.pond_fixtures import (
    NEW_PLAN,
    OLD_PLAN,
    POND_SECRET,
    POND_USER,
    pond_account,
    seed_pond,
)

pytestmark = pytest.mark.timeout(60)


def plan(i: int, iccid: str | None, rate_plan=str(NEW_PLAN)) -> DeviceChange:
    return DeviceChange(
        i, i, ChangeType.CARRIER_RATE_PLAN_CHANGE, iccid, None, None, None, {"carrier_rate_plan": rate_plan}
    )


def status(i: int, iccid: str | None, value: str) -> DeviceChange:
    return DeviceChange(
        i, i, ChangeType.STATUS_UPDATE, iccid, None, None, None, {"status": value, "current_status": "ACTIVATED"}
    )


def run(client: PondClient, changes: Sequence[DeviceChange], method: str = "apply") -> list:
    async def go() -> list:
        try:
            return await getattr(client, method)(changes)
        finally:
            await client.aclose()

    return asyncio.run(go())


def types_of(sim, iccid: str, status_: str = "ACTIVE") -> list:
    return [p["packageTypeId"] for p in sim.device(iccid)["packages"] if p["status"] == status_]


def test_registry_supports_and_config(pond_sim) -> None:
    adapter = build_adapter(pond_account(pond_sim))
    assert isinstance(adapter, PondClient) and isinstance(adapter, CarrierAdapter)
    assert [t for t in range(1, 11) if adapter.supports(t)] == [1, 7]
    with pytest.raises(ValueError, match="distributor_id"):
        PondClient(pond_account(pond_sim, extra={"distributor_id": ""}))


def test_plan_change_leaves_exactly_the_new_package_active(pond_sim) -> None:
    sim = pond_sim.simulator
    (one_old,) = seed_pond(sim, 1)
    (two_old,) = seed_pond(
        sim,
        1,
        start=1,
        packages=[
            {"packageTypeId": OLD_PLAN, "status": "ACTIVE"},
            {"packageTypeId": 2003, "status": "ACTIVE"},
            {"packageTypeId": OLD_PLAN, "status": "TERMINATED"},
        ],
    )
    results = run(PondClient(pond_account(pond_sim)), [plan(1, one_old), plan(2, two_old)])
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED"], [r.detail for r in results]
    for r, iccid, olds in zip(results, (one_old, two_old), (1, 2)):
        assert types_of(sim, iccid) == [NEW_PLAN]
        assert r.new_values == {"carrier_rate_plan": str(NEW_PLAN)}
        assert sim.applied_counts[iccid] == 2 + olds  # add, activate, terminate each old
        moves = [m[2] for m in sim.history[iccid]]
        assert moves == ["PENDING", "ACTIVE"] + ["TERMINATED"] * olds  # new one active first
        descs = [e.description for e in r.log]
        assert descs[0].startswith("Pond read packages") and "step 1/3" in descs[1]
        assert "step 2/3" in descs[2] and all("step 3/3" in d for d in descs[3:])
        assert len(descs) == 3 + olds and not any(e.has_errors for e in r.log)
    # again: already on the plan, nothing is sent beyond the read
    (again,) = run(PondClient(pond_account(pond_sim)), [plan(3, one_old)])
    assert again.status == "PROCESSED" and "already on package type" in again.detail
    assert sim.applied_counts[one_old] == 3


def test_terminate_failure_is_undone_and_reported(pond_sim) -> None:
    sim = pond_sim.simulator
    iccid, activate_fails = seed_pond(sim, 2)
    sim.configure(fail_terminate=[iccid], fail_activate=[activate_fails])
    old_ids = {i: [p["packageId"] for p in sim.device(i)["packages"]] for i in (iccid, activate_fails)}
    results = run(PondClient(pond_account(pond_sim)), [plan(1, iccid), plan(2, activate_fails)])
    assert [r.status for r in results] == ["API_FAILED", "API_FAILED"]
    for r, i, step in zip(results, (iccid, activate_fails), ("step 3", "step 2")):
        active = sim.active_packages(i)
        assert [p["packageId"] for p in active] == old_ids[i]  # old package only
        assert types_of(sim, i, "TERMINATED") == [NEW_PLAN]  # the new one was undone
        assert r.new_values == {}
        assert f"failed at {step}" in r.detail and "OPERATION_FAILED" in r.detail
        assert f"left on its old package(s) {old_ids[i][0]}" in r.detail
        descs = [e.description for e in r.log]
        assert "undo: terminate new package" in descs[-1] and not r.log[-1].has_errors
        assert r.log[-2].has_errors and r.log[-2].response_status == 409
    assert [d for d in (e.description for e in results[0].log)][1:4] == [
        f"Pond step 1/3: add package type {NEW_PLAN} to {iccid}",
        f"Pond step 2/3: activate new package {sim.history[iccid][0][0]} (type {NEW_PLAN}) on {iccid}",
        f"Pond step 3/3: terminate old package {old_ids[iccid][0]} on {iccid}",
    ]


def test_undo_failure_is_reported_loudly(pond_sim, caplog) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    sim.configure(fail_terminate=[iccid], fail_undo=[iccid])
    with caplog.at_level(logging.ERROR, logger="bulkchange_pipeline.carriers.pond"):
        (r,) = run(PondClient(pond_account(pond_sim)), [plan(1, iccid)])
    assert r.status == "API_FAILED"
    assert r.detail.startswith("UNDO FAILED - OPERATOR ACTION NEEDED")
    new_id = sim.history[iccid][0][0]
    assert f"terminate package {new_id} at Pond by hand" in r.detail
    assert sorted(types_of(sim, iccid)) == [OLD_PLAN, NEW_PLAN]  # what the message warns of
    assert r.log[-1].has_errors and "undo" in r.log[-1].description
    assert any("UNDO FAILED" in rec.getMessage() for rec in caplog.records)


def test_status_update_both_ways(pond_sim) -> None:
    sim = pond_sim.simulator
    on, off = seed_pond(sim, 2)
    sim.seed_devices([{"iccid": on, "servicesEnabled": False}])
    results = run(
        PondClient(pond_account(pond_sim)),
        [status(1, on, "ACTIVATED"), status(2, off, "DEACTIVATED"), status(3, off, "SLEEPING")],
    )
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED", "API_FAILED"]
    assert results[0].new_values == {"status": "ACTIVATED"}
    assert results[1].new_values == {"status": "DEACTIVATED"}
    assert all(s["enabled"] for s in sim.device(on)["services"])
    assert not any(s["enabled"] for s in sim.device(off)["services"])
    assert sim.applied_counts[on] == sim.applied_counts[off] == 1
    assert "SLEEPING" in results[2].detail and not results[2].log


def test_transient_faults_still_processed_exactly_once(pond_sim) -> None:
    sim = pond_sim.simulator
    sim.configure(
        error_rate=0.04,
        timeout_rate=0.02,
        timeout_hold_seconds=0.5,
        malformed_rate=0.02,
        burst_rate=0.02,
        burst_length=2,
        seed=5,
    )
    plans = seed_pond(sim, 30)
    statuses = seed_pond(sim, 30, start=100)
    client = PondClient(pond_account(pond_sim, timeout_seconds=0.2, max_attempts=6, max_concurrency=4))
    changes = [plan(i, x) for i, x in enumerate(plans)]
    changes += [status(100 + i, x, "DEACTIVATED") for i, x in enumerate(statuses)]
    results = run(client, changes)
    assert [r.status for r in results] == ["PROCESSED"] * 60, [r.detail for r in results if r.status != "PROCESSED"]
    assert sum(sim.stats()["injected"].values()) >= 10 and client.http.stats.retries >= 10
    for iccid in plans:
        assert types_of(sim, iccid) == [NEW_PLAN]
        assert types_of(sim, iccid, "PENDING") == []  # duplicates from lost answers cleaned up
        activations = [m for m in sim.history[iccid] if m[2] == "ACTIVE"]
        assert len(activations) == 1
    assert all(sim.applied_counts[i] == 1 for i in statuses)


def test_lost_add_answers_leave_no_duplicate_package(pond_sim) -> None:
    """Adding a package is not idempotent: an add applied but answered unreadably is re-sent,
    and the duplicate PENDING package it made must be terminated, never activated."""
    sim = pond_sim.simulator
    sim.configure(malformed_rate=0.4, seed=2)
    iccids = seed_pond(sim, 12)
    results = run(PondClient(pond_account(pond_sim, max_attempts=8)), [plan(i, x) for i, x in enumerate(iccids)])
    assert [r.status for r in results] == ["PROCESSED"] * len(iccids)
    assert sim.stats()["packages_added"] > len(iccids)  # duplicates really were created
    for iccid in iccids:
        assert types_of(sim, iccid) == [NEW_PLAN] and types_of(sim, iccid, "PENDING") == []
    assert any("terminate duplicate PENDING" in e.description for r in results for e in r.log)


def test_refusals_fail_without_retry(pond_sim) -> None:
    sim = pond_sim.simulator
    (iccid,) = seed_pond(sim, 1)
    before = sim.total_calls
    results = run(
        PondClient(pond_account(pond_sim)),
        [
            plan(1, iccid, "7777"),
            plan(2, "89440001999999999999"),
            plan(3, None),
            DeviceChange(4, 4, 10, iccid, None, None, None, {"username": "x"}),
        ],
    )
    assert [r.status for r in results] == ["API_FAILED"] * 4
    assert "failed at step 1" in results[0].detail and "UNKNOWN_PACKAGE_TYPE" in results[0].detail
    assert "left on its old package(s)" in results[0].detail
    assert "nothing was changed" in results[1].detail and "DEVICE_NOT_FOUND" in results[1].detail
    assert "ICCID" in results[2].detail and "not applied through" in results[3].detail
    assert sim.total_calls - before == 3  # read + refused add, one refused read
    assert types_of(sim, iccid) == [OLD_PLAN] and sim.applied_counts[iccid] == 0


def test_writes_disabled_and_bad_credentials(pond_sim) -> None:
    (iccid,) = seed_pond(pond_sim.simulator, 1)
    with pytest.raises(WritesDisabledError):
        run(PondClient(pond_account(pond_sim, write_enabled=False)), [plan(1, iccid)])
    assert pond_sim.simulator.total_calls == 0
    (r,) = run(PondClient(pond_account(pond_sim, secret="nope")), [status(1, iccid, "DEACTIVATED")])
    assert r.status == "API_FAILED" and "rejected the credentials" in r.detail


def test_already_applied_and_resume_after_crash(pond_sim) -> None:
    sim = pond_sim.simulator
    done, half, pending, untouched = seed_pond(sim, 4)
    sim.seed_devices(
        [
            {"iccid": done, "packages": [{"packageTypeId": NEW_PLAN, "status": "ACTIVE"}], "servicesEnabled": False},
            {
                "iccid": half,
                "packages": [
                    {"packageTypeId": OLD_PLAN, "status": "ACTIVE"},
                    {"packageTypeId": NEW_PLAN, "status": "ACTIVE"},
                ],
            },
            {
                "iccid": pending,
                "packages": [
                    {"packageTypeId": OLD_PLAN, "status": "ACTIVE"},
                    {"packageTypeId": NEW_PLAN, "status": "PENDING"},
                ],
            },
        ]
    )
    checks = run(
        PondClient(pond_account(pond_sim)),
        [
            plan(1, done),
            plan(2, half),
            plan(3, untouched),
            status(4, done, "DEACTIVATED"),
            status(5, untouched, "DEACTIVATED"),
        ],
        method="already_applied",
    )
    assert [c is not None for c in checks] == [True, False, False, True, False]
    assert checks[0].new_values == {"carrier_rate_plan": str(NEW_PLAN)}
    assert checks[3].new_values == {"status": "DEACTIVATED"}
    # re-sending rows a crash left half done finishes them without adding another package
    results = run(PondClient(pond_account(pond_sim)), [plan(1, half), plan(2, pending)])
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED"]
    assert "reused PENDING package" in results[1].detail
    for iccid in (half, pending):
        assert types_of(sim, iccid) == [NEW_PLAN] and sim.stats()["packages_added"] == 0


def test_classifier_reads_error_shapes() -> None:
    req = httpx.Request("GET", "http://x")
    r429 = httpx.Response(429, headers={"Retry-After": "3"}, request=req)
    err = classify_pond_response(r429, {"code": "TOO_MANY_REQUESTS", "message": "slow down"})
    assert err.over_limit and err.retry_after == 3.0
    nested = classify_pond_response(httpx.Response(400, request=req), {"error": {"code": "X1", "message": "bad plan"}})
    assert str(nested) == "[X1] bad plan (HTTP 400)"


def test_no_secret_in_any_log_entry(pond_sim) -> None:
    sim = pond_sim.simulator
    sim.configure(error_rate=0.2, malformed_rate=0.1, seed=3)
    iccids = seed_pond(sim, 10)
    sim.configure(fail_terminate=iccids[:2], fail_undo=iccids[:1])
    results = run(PondClient(pond_account(pond_sim)), [plan(i, x) for i, x in enumerate(iccids)])
    results += run(
        PondClient(pond_account(pond_sim, secret="wrong-" + POND_SECRET)), [status(99, iccids[0], "DEACTIVATED")]
    )
    entries = [e for r in results for e in r.log]
    assert len(entries) > 4 * len(iccids)
    forbidden = [POND_SECRET, basic_token(POND_USER, POND_SECRET), basic_token(POND_USER, "wrong-" + POND_SECRET)]
    for entry in entries:
        for text in (entry.request_text, entry.response_text, entry.description):
            assert not any(s in text for s in forbidden), text
    assert not any(s in r.detail for r in results for s in forbidden)
    assert any("authorization: ***" in e.request_text.lower() for e in entries)
    assert POND_SECRET not in repr(pond_account(pond_sim))
