"""TealClient against a running Teal simulator: apply -> PROCESSING -> poll (102) -> callback ->
poll -> PROCESSED, per-entry refusals, limits, faults and redaction. The simulator's per-EID counts
are the proof of exactly-once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from bulkchange_pipeline.carriers import build_adapter
from bulkchange_pipeline.carriers.base import (
    AsyncOutcome,
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.teal import TealClient
from bulkchange_pipeline.carriers.teal_wire import NO_EID, parse_teal_callback
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.teal_rules import DEFAULT_PLANS
from bulkchange_pipeline_tests.simulators.teal_fixtures import TEAL_API_SECRET, seed_teal, teal_account

pytestmark = pytest.mark.timeout(60)  # a hung server must not hang CI

PLAN_1GB, PLAN_5GB = DEFAULT_PLANS[0]["uuid"], DEFAULT_PLANS[1]["uuid"]


def status(i: int, eid: str | None, target: str) -> DeviceChange:
    return DeviceChange(i, i, ChangeType.STATUS_UPDATE, None, None, None, eid, {"status": target})


def plan(i: int, eid: str | None, plan_uuid: str) -> DeviceChange:
    return DeviceChange(
        i, i, ChangeType.CARRIER_RATE_PLAN_CHANGE, None, None, None, eid, {"carrier_rate_plan": plan_uuid}
    )


def tracked(changes: Sequence[DeviceChange], results: Sequence[DeviceResult]) -> list[DeviceChange]:
    """The changes as the engine would store them after apply: with the carrier's request id."""
    by_id = {r.device_change_id: r.carrier_request_id for r in results}
    return [dataclasses.replace(c, carrier_request_id=by_id[c.device_change_id]) for c in changes]


def run(client: TealClient, step: Callable[[TealClient], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        try:
            return await step(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def settle(client: TealClient, changes: Sequence[DeviceChange], timeout: float = 10.0) -> list[DeviceResult]:
    """Poll until every change has a final result (as the engine's poll loop would)."""
    final: dict[int, DeviceResult] = {}
    deadline = time.monotonic() + timeout
    while len(final) < len(changes) and time.monotonic() < deadline:
        todo = [c for c in changes if c.device_change_id not in final]
        for c, r in zip(todo, run(client, lambda cl, todo=todo: cl.poll(todo))):
            if r is not None:
                final[c.device_change_id] = r
        time.sleep(0.1)
    assert len(final) == len(changes), "some changes never settled"
    return [final[c.device_change_id] for c in changes]


# -- pure parts -----------------------------------------------------------------------------------


def test_registry_protocol_and_supports(teal_sim) -> None:
    adapter = build_adapter(teal_account(teal_sim))
    assert isinstance(adapter, TealClient) and isinstance(adapter, CarrierAdapter)
    assert adapter.callback_name == "teal"
    assert [t for t in range(1, 11) if adapter.supports(t)] == [1, 7]


def test_parse_callback_reads_the_request_id_wherever_it_was_stored() -> None:
    expected = [AsyncOutcome("abc123", "", "PROCESSING", "result ready")]
    assert parse_teal_callback({"requestId": "abc123"}) == expected
    assert parse_teal_callback({"query": {"requestId": "abc123"}, "body": None}) == expected
    assert parse_teal_callback({"body": {"requestId": "abc123"}}) == expected
    assert parse_teal_callback({"query_params": {"requestId": ["abc123"]}}) == expected
    assert parse_teal_callback({"hello": "world"}) == []
    assert parse_teal_callback({"requestId": ""}) == []


# -- end to end -----------------------------------------------------------------------------------


def test_apply_poll_callback_poll_for_every_operation(teal_sim, callbacks) -> None:
    sim = teal_sim.simulator
    stopped = seed_teal(sim, 3, deviceStatus="stopped")
    online = seed_teal(sim, 3, start=10, deviceStatus="online")
    planned = seed_teal(sim, 3, start=20, planUuid=PLAN_1GB)
    changes = (
        [status(i, e, "online") for i, e in enumerate(stopped)]
        + [status(10 + i, e, "stopped") for i, e in enumerate(online)]
        + [plan(20 + i, e, PLAN_5GB) for i, e in enumerate(planned)]
    )
    client = TealClient(teal_account(teal_sim, callback_base_url=callbacks.base_url))

    accepted = run(client, lambda cl: cl.apply(changes))
    assert [r.status for r in accepted] == ["PROCESSING"] * 9
    ids = [r.carrier_request_id for r in accepted]
    assert len(set(ids)) == 3 and all(len(i) == 32 and i.isalnum() for i in ids)
    assert ids[0] == ids[2] and ids[3] == ids[5] and ids[6] == ids[8]
    assert sim.stats()["operations_enqueued"] == 3
    ops = {op.request_id: op for op in sim.operations.values()}
    assert all(op.callback_url == callbacks.base_url + "/callbacks/teal" for op in ops.values())
    assert ops[ids[6]].entries[0] == {"eid": planned[0], "planUuid": PLAN_5GB}

    pending = tracked(changes, accepted)
    assert run(client, lambda cl: cl.poll(pending)) == [None] * 9  # 102 Processing
    polls = sim.calls_by_path["GET /api/v1/operation-result"]
    assert polls == 3  # one call per requestId, not per device

    assert callbacks.wait_for(set(ids)), callbacks.received
    outcomes = [o for cb in callbacks.received for o in client.parse_callback(cb)]
    assert {o.request_id for o in outcomes} == set(ids)
    assert all(o.status == "PROCESSING" and o.device_key == "" for o in outcomes)

    final = run(client, lambda cl: cl.poll(pending))
    assert [r.status for r in final] == ["PROCESSED"] * 9, [r.detail for r in final]
    assert final[0].new_values == {"status": "online"}
    assert final[3].new_values == {"status": "stopped"}
    assert final[6].new_values == {"carrier_rate_plan": PLAN_5GB}
    assert all(r.carrier_request_id == i for r, i in zip(final, ids))
    assert [sim.device(e)["deviceStatus"] for e in stopped + online] == ["ONLINE"] * 3 + ["STOPPED"] * 3
    assert all(sim.device(e)["planUuid"] == PLAN_5GB for e in planned)
    assert all(sim.applied_counts[e] == 1 for e in stopped + online + planned)


def test_without_callback_base_url_no_callback_url_is_sent(teal_sim) -> None:
    sim = teal_sim.simulator
    (eid,) = seed_teal(sim, 1, deviceStatus="online")
    client = TealClient(teal_account(teal_sim))
    (accepted,) = run(client, lambda cl: cl.apply([status(1, eid, "stopped")]))
    assert sim.operations[accepted.carrier_request_id].callback_url is None
    (result,) = settle(client, tracked([status(1, eid, "stopped")], [accepted]))
    assert result.status == "PROCESSED" and sim.stats()["callbacks_sent"] == 0


def test_per_entry_refusals_are_api_failed_with_teals_message(teal_sim) -> None:
    sim = teal_sim.simulator
    ok, noop, restricted = seed_teal(sim, 3, deviceStatus="stopped")
    sim.seed_devices([{"eid": restricted, "flowRestricted": True}])
    missing = seed_teal(sim, 1, start=99)[0]
    sim.esims.pop(missing)
    changes = [
        status(1, ok, "online"),
        status(2, noop, "stopped"),
        status(3, missing, "online"),
        status(4, restricted, "online"),
        plan(5, ok, "no-such-plan"),
    ]
    client = TealClient(teal_account(teal_sim))
    accepted = run(client, lambda cl: cl.apply(changes))
    assert [r.status for r in accepted] == ["PROCESSING"] * 5
    results = settle(client, tracked(changes, accepted))
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED", "API_FAILED", "API_FAILED", "API_FAILED"]
    assert "[ESIM_NOT_FOUND]" in results[2].detail and missing in results[2].detail
    assert "[FLOW_RESTRICTED_ERROR]" in results[3].detail
    assert results[4].detail == "[VALIDATION_ERROR] Invalid planUuid no-such-plan"
    assert sim.applied_counts[ok] == 1 and sim.applied_counts[noop] == 0  # stopped->stopped no-op


def test_unsendable_changes_fail_without_a_call(teal_sim) -> None:
    (eid,) = seed_teal(teal_sim.simulator, 1)
    changes = [
        status(1, None, "stopped"),
        plan(2, "", PLAN_1GB),
        status(3, eid, "ACTIVATED"),
        plan(4, eid, ""),
        DeviceChange(5, 5, 9, None, None, None, eid, {}),
    ]
    client = TealClient(teal_account(teal_sim))
    results = run(client, lambda cl: cl.apply(changes))
    assert [r.status for r in results] == ["API_FAILED"] * 5
    assert results[0].detail == NO_EID and results[1].detail == NO_EID
    assert "online, waiting, stopped" in results[2].detail
    assert "carrier_rate_plan" in results[3].detail and "not applied" in results[4].detail
    assert teal_sim.simulator.total_calls == 0 and client.http.stats.calls == 0


def test_batches_of_batch_size_and_one_full_log_per_request(teal_sim) -> None:
    sim = teal_sim.simulator
    eids = seed_teal(sim, 250, deviceStatus="online")
    changes = [status(i, e, "stopped") for i, e in enumerate(eids)]
    results = run(TealClient(teal_account(teal_sim)), lambda cl: cl.apply(changes))
    assert sim.stats()["operations_enqueued"] == 3
    assert sorted(len(op.entries) for op in sim.operations.values()) == [50, 100, 100]
    assert [r.device_change_id for r in results] == list(range(250))
    full = [r for r in results if "api/v1/esims/disable" in (r.log[0].request_text or "")]
    assert len(full) == 3 and all("full exchange logged" in r.log[0].description for r in results if r not in full)


def test_over_limit_answers_are_retried_after_retry_after(teal_sim) -> None:
    sim = teal_sim.simulator
    sim.configure(calls_per_minute=120)  # 2 per one-second window, Retry-After to its end
    eids = seed_teal(sim, 6, deviceStatus="online")
    client = TealClient(teal_account(teal_sim, max_attempts=5), batch_size=1)
    started = time.monotonic()
    results = run(client, lambda cl: cl.apply([status(i, e, "stopped") for i, e in enumerate(eids)]))
    assert [r.status for r in results] == ["PROCESSING"] * 6, [r.detail for r in results]
    assert sim.stats()["over_limit_answers"] >= 1 and client.http.stats.over_limit >= 1
    assert time.monotonic() - started >= 0.9  # it waited for the window the carrier named
    assert any("429" in e.response_text.splitlines()[0] for r in results for e in r.log)
    assert sim.stats()["operations_enqueued"] == 6


def test_transient_faults_still_process_every_device_exactly_once(teal_sim) -> None:
    sim = teal_sim.simulator
    sim.configure(
        error_rate=0.04,
        timeout_rate=0.02,
        timeout_hold_seconds=0.6,
        malformed_rate=0.02,
        burst_rate=0.02,
        burst_length=2,
        retry_after_seconds=0.05,
        seed=5,
        operation_delay_seconds=0.1,
    )
    eids = seed_teal(sim, 200, deviceStatus="stopped")
    changes = [status(i, e, "online") for i, e in enumerate(eids)]
    client = TealClient(teal_account(teal_sim, timeout_seconds=0.25), batch_size=5)
    client.http.limiter.penalty_seconds = 0.05
    accepted = run(client, lambda cl: cl.apply(changes))
    assert [r.status for r in accepted] == ["PROCESSING"] * 200, [
        r.detail for r in accepted if r.status != "PROCESSING"
    ]
    assert sim.wait_idle()
    results = settle(client, tracked(changes, accepted), timeout=20)
    assert [r.status for r in results] == ["PROCESSED"] * 200, [r.detail for r in results if r.status != "PROCESSED"]
    stats = sim.stats()
    assert sum(stats["injected"].values()) >= 5 and client.http.stats.retries >= 5
    assert all(sim.applied_counts[e] == 1 for e in eids)
    assert stats["applied_more_than_once"] == 0 and stats["applied_total"] == 200


def test_poll_of_an_unknown_request_is_api_failed(teal_sim) -> None:
    (eid,) = seed_teal(teal_sim.simulator, 1)
    change = DeviceChange(
        1, 1, ChangeType.STATUS_UPDATE, None, None, None, eid, {"status": "stopped"}, carrier_request_id="0" * 32
    )
    (result,) = run(TealClient(teal_account(teal_sim)), lambda cl: cl.poll([change]))
    assert result is not None and result.status == "API_FAILED"
    assert "no result for request" in result.detail
    untracked = status(2, eid, "stopped")
    assert run(TealClient(teal_account(teal_sim)), lambda cl: cl.poll([untracked])) == [None]


def test_already_applied_reads_the_esim(teal_sim) -> None:
    sim = teal_sim.simulator
    waiting, online = seed_teal(sim, 2, deviceStatus="waiting", planUuid=PLAN_5GB)
    sim.seed_devices([{"eid": online, "deviceStatus": "online", "planUuid": PLAN_1GB}])
    changes = [
        status(1, waiting, "online"),
        status(2, online, "stopped"),
        plan(3, waiting, PLAN_5GB),
        plan(4, online, PLAN_5GB),
        status(5, None, "online"),
    ]
    results = run(TealClient(teal_account(teal_sim)), lambda cl: cl.already_applied(changes))
    assert results[0] is not None and results[0].new_values == {"status": "waiting"}
    assert results[1] is None and results[3] is None and results[4] is None
    assert results[2] is not None and results[2].new_values == {"carrier_rate_plan": PLAN_5GB}
    assert sum(sim.applied_counts.values()) == 0


def test_a_device_already_changed_is_found_and_not_sent_again(teal_sim) -> None:
    """Issue 17: Teal answers a device read (`esims/info`) only with a request id and gives the
    eSIM from operation-result. The already-applied check must follow that flow, find the device
    already changed and so keep the engine from sending the change a second time."""
    sim = teal_sim.simulator
    stopped, planned, still_online = seed_teal(sim, 3, deviceStatus="STOPPED", planUuid=PLAN_5GB)
    sim.seed_devices([{"eid": still_online, "deviceStatus": "ONLINE"}])
    changes = [status(1, stopped, "stopped"), plan(2, planned, PLAN_5GB), status(3, still_online, "stopped")]
    client = TealClient(teal_account(teal_sim))
    held = run(client, lambda cl: cl.already_applied(changes))
    assert [r is not None for r in held] == [True, True, False]
    assert held[0].status == "PROCESSED" and held[0].new_values == {"status": "stopped"}
    assert held[1].new_values == {"carrier_rate_plan": PLAN_5GB}
    # The engine sends only what is not already in effect.
    to_send = [c for c, r in zip(changes, held, strict=True) if r is None]
    accepted = run(client, lambda cl: cl.apply(to_send))
    assert [r.status for r in settle(client, tracked(to_send, accepted))] == ["PROCESSED"]
    calls = sim.stats()["calls_by_path"]
    assert calls["POST /api/v1/esims/disable"] == 1  # only the device not yet changed
    assert "POST /api/v1/esims/assign-plan" not in calls
    assert calls["GET /api/v1/esims/info"] == 3
    assert dict(sim.applied_counts) == {still_online: 1}


def test_already_applied_waits_through_102_and_gives_up_in_time(teal_sim) -> None:
    """The read's result is read again while Teal says 102 Processing (here the literal interim
    status, which httpx cannot read as an answer), and given up after `read_budget_seconds`:
    then the device is "not known to be applied" and the change is sent."""
    sim = teal_sim.simulator
    (eid,) = seed_teal(sim, 1, deviceStatus="STOPPED")
    sim.configure(pending_http_status=102, read_delay_seconds=0.6)
    change = status(1, eid, "stopped")
    (found,) = run(TealClient(teal_account(teal_sim, max_attempts=1)), lambda cl: cl.already_applied([change]))
    assert found is not None and found.status == "PROCESSED"
    assert sim.stats()["calls_by_path"]["GET /api/v1/operation-result"] >= 2  # read again after a 102
    assert any(e.response_status is None for e in found.log)  # the 102 that could not be read
    sim.configure(read_delay_seconds=60)
    started = time.monotonic()
    slow = TealClient(teal_account(teal_sim, max_attempts=1), read_budget_seconds=0.5)
    assert run(slow, lambda cl: cl.already_applied([change])) == [None]
    assert time.monotonic() - started < 3


def test_writes_disabled_and_bad_credentials(teal_sim) -> None:
    (eid,) = seed_teal(teal_sim.simulator, 1)
    disabled = TealClient(teal_account(teal_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError):
        run(disabled, lambda cl: cl.apply([status(1, eid, "stopped")]))
    assert teal_sim.simulator.total_calls == 0
    bad = TealClient(teal_account(teal_sim, secret="wrong-secret"))
    (result,) = run(bad, lambda cl: cl.apply([status(1, eid, "stopped")]))
    assert result.status == "API_FAILED" and "rejected the ApiKey/ApiSecret" in result.detail
    assert teal_sim.simulator.total_calls == 1  # a configuration error is not retried


def test_no_api_secret_in_any_log_entry(teal_sim) -> None:
    sim = teal_sim.simulator
    sim.configure(
        error_rate=0.2,
        timeout_rate=0.1,
        timeout_hold_seconds=0.5,
        malformed_rate=0.1,
        seed=3,
        operation_delay_seconds=0.05,
    )
    eids = seed_teal(sim, 12, deviceStatus="online")
    good = TealClient(teal_account(teal_sim, timeout_seconds=0.2), batch_size=2)
    changes = [status(i, e, "stopped") for i, e in enumerate(eids)]
    accepted = run(good, lambda cl: cl.apply(changes))
    sim.wait_idle()
    results = list(accepted) + settle(good, tracked(changes, accepted))
    results += run(good, lambda cl: cl.already_applied(changes))
    bad = TealClient(teal_account(teal_sim, secret="wrong-" + TEAL_API_SECRET))
    results += run(bad, lambda cl: cl.apply([status(99, eids[0], "online")]))
    entries = [e for r in results if r is not None for e in r.log]
    assert len(entries) > len(eids)
    for entry in entries:
        for text in (entry.request_text, entry.response_text, entry.description):
            assert TEAL_API_SECRET not in text, text
    assert any("apisecret: ***" in e.request_text.lower() for e in entries)
    assert TEAL_API_SECRET not in repr(teal_account(teal_sim))
