"""ThingSpaceClient against a running ThingSpace simulator and a loopback callback receiver: auth
renewal, batching, every action's callback, refusals, limits, poll, and redaction. The
simulator's per-ICCID counts are the proof that nothing was applied twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bulkchange_pipeline.carriers import build_adapter
from bulkchange_pipeline.carriers.base import (
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.redaction import basic_token
from bulkchange_pipeline.carriers.thingspace import ThingSpaceClient
from bulkchange_pipeline.carriers.thingspace_wire import parse_thingspace_callback, strip_service
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.thingspace_rules import make_devices
from bulkchange_pipeline_tests.simulators.fixtures import (
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    thingspace_account,
)

pytestmark = pytest.mark.timeout(60)

SUCCESS = {
    "username": TS_CB_USER,
    "password": TS_CB_PASSWORD,
    "requestId": "r-1",
    "deviceIds": [{"id": "89148000000000000001", "kind": "iccid"}, {"id": "350000000000006", "kind": "imei"}],
    "deviceResponse": {
        "activateResponse": {
            "deviceIds": [{"id": "89148000000000000001", "kind": "iccid"}, {"id": "5551234567", "kind": "mdn"}],
            "ipAddress": "10.1.2.3",
        }
    },
    "status": "Success",
    "callbackCount": 1,
    "maxCallbackThreshold": 4,
}
FAULT = {
    "username": TS_CB_USER,
    "password": TS_CB_PASSWORD,
    "requestId": "r-2",
    "deviceIds": [{"id": "350000000000006", "kind": "imei"}],
    "faultResponse": {
        "faultcode": "UnifiedWebService.REQUEST_FAILED.DeviceStateInvalid",
        "faultstring": "REQUEST_FAILED. Device in state pre-active cannot be suspended",
    },
    "status": "Failed",
    "callbackCount": 1,
    "maxCallbackThreshold": 4,
}


def change(i: int, dev: dict, change_type: int = ChangeType.STATUS_UPDATE, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, dev["iccid"], dev.get("imei"), None, None, target)


def run(client: ThingSpaceClient, coro_fn: Any) -> Any:
    async def go() -> Any:
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def registered(handle, receiver_handle, **overrides: Any) -> ThingSpaceClient:
    """A client whose account has registered the receiver as its CarrierService listener."""
    client = ThingSpaceClient(thingspace_account(handle, callback_base_url=receiver_handle.root_url, **overrides))
    asyncio.run(client.register_callback())
    return client


def settle(sim, receiver, client: ThingSpaceClient, results: Sequence[DeviceResult], n: int) -> dict:
    """Wait for n callbacks and return {device_key: outcome} keyed like the engine would."""
    assert sim.wait_idle(20)
    outcomes = {}
    for body in receiver.wait_for(n):
        for outcome in client.parse_callback(body):
            outcomes[outcome.device_key] = outcome
    rids = {r.carrier_request_id for r in results if r.carrier_request_id}
    assert all(o.request_id in rids for o in outcomes.values())
    return outcomes


# -- pure parts -----------------------------------------------------------------------------------


def test_parse_callback_success_and_fault_shapes() -> None:
    (ok,) = parse_thingspace_callback(SUCCESS)
    assert (ok.request_id, ok.device_key, ok.status) == ("r-1", "89148000000000000001", "PROCESSED")
    assert ok.detail == "ThingSpace confirmed activate"
    assert ok.new_values == {"status": "active", "msisdn": "5551234567"}
    (bad,) = parse_thingspace_callback(FAULT)
    assert (bad.request_id, bad.device_key, bad.status) == ("r-2", "350000000000006", "API_FAILED")
    assert "cannot be suspended" in bad.detail and "REQUEST_FAILED.DeviceStateInvalid" in bad.detail
    already = {
        **FAULT,
        "faultResponse": {"faultcode": "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive", "faultstring": "x"},
    }
    assert parse_thingspace_callback(already)[0].status == "PROCESSED"
    plan = {**SUCCESS, "deviceResponse": {"changeServicePlanResponse": {"servicePlan": "P2"}}}
    assert parse_thingspace_callback(plan)[0].new_values == {"carrier_rate_plan": "P2"}
    ids = {
        **SUCCESS,
        "deviceResponse": {
            "changeDeviceIdResponse": {
                "deviceIds": [
                    {"kind": "iccid", "id": "89148000000000000999"},
                    {"kind": "imei", "id": "350000000000006"},
                ]
            }
        },
    }
    assert parse_thingspace_callback(ids)[0].new_values == {"iccid": "89148000000000000999"}
    for outcome in parse_thingspace_callback(SUCCESS) + parse_thingspace_callback(FAULT):
        assert TS_CB_PASSWORD not in repr(outcome) and TS_CB_USER not in repr(outcome)
    assert parse_thingspace_callback({"noise": 1}) == [] and parse_thingspace_callback([]) == []


def test_strip_service_prefix() -> None:
    assert strip_service("UnifiedWebService.REQUEST_FAILED.AccountNotFound") == "REQUEST_FAILED.AccountNotFound"
    assert strip_service("INPUT_INVALID.Request.InvalidCharacter") == "INPUT_INVALID.Request.InvalidCharacter"


def test_registry_and_protocol(thingspace_sim) -> None:
    adapter = build_adapter(thingspace_account(thingspace_sim))
    assert isinstance(adapter, ThingSpaceClient) and isinstance(adapter, CarrierAdapter)
    assert [t for t in range(1, 11) if adapter.supports(t)] == [1, 7, 9]
    assert adapter.callback_name == "thingspace"


# -- actions end to end ---------------------------------------------------------------------------


def test_each_action_one_callback_per_device(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    act, pre, sus, deact, plan, swap = make_devices(6)
    for dev, state in (
        (act, "active"),
        (pre, "pre-active"),
        (sus, "suspend"),
        (deact, "active"),
        (plan, "active"),
        (swap, "active"),
    ):
        dev["state"] = state
    sim.seed_devices([act, pre, sus, deact, plan, swap])
    client = registered(thingspace_sim, rhandle)
    new_iccid = make_devices(1, start=900)[0]["iccid"]
    changes = [
        change(1, act, status="suspend"),
        change(2, pre, status="ACTIVE"),  # current state unknown: read, then activate
        change(3, sus, status="active"),  # suspended: read, then restore
        change(4, deact, status="deactive", reason_code="FF"),
        change(5, plan, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="M2M-4G-5GB"),
        change(6, swap, ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=new_iccid),
    ]
    results = run(client, lambda c: c.apply(changes))
    assert [r.status for r in results] == ["PROCESSING"] * 6, [r.detail for r in results]
    assert all(r.detail == "accepted by ThingSpace, waiting for callback" for r in results)
    assert all(r.carrier_request_id and r.log and not r.log[-1].has_errors for r in results)
    outcomes = settle(sim, receiver, client, results, 6)
    assert len(receiver.bodies) == 6
    for body in receiver.bodies:
        assert body["username"] == TS_CB_USER and body["password"] == TS_CB_PASSWORD
        assert body["status"] == "Success" and body["maxCallbackThreshold"] == 4
        assert body["callbackCount"] == 1 and body["deviceIds"] and body["requestId"]
    assert outcomes[act["iccid"]].new_values == {"status": "suspend"}
    assert outcomes[pre["iccid"]].new_values["status"] == "active"
    assert outcomes[sus["iccid"]].detail == "ThingSpace confirmed restore"
    assert outcomes[deact["iccid"]].new_values == {"status": "deactive"}
    assert outcomes[plan["iccid"]].new_values == {"carrier_rate_plan": "M2M-4G-5GB"}
    assert outcomes[swap["iccid"]].new_values == {"iccid": new_iccid}
    assert all(o.status == "PROCESSED" for o in outcomes.values())
    assert sim.device(new_iccid)["imei"] == swap["imei"] and sim.device(swap["iccid"]) is None
    assert sim.stats()["applied_more_than_once"] == 0
    assert sim.stats()["calls"]["restore"] == 1 and sim.stats()["calls"]["activate"] == 1


def test_batches_of_at_most_10000_devices(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    devices = make_devices(10_001)
    sim.seed_devices(devices)
    client = ThingSpaceClient(thingspace_account(thingspace_sim))
    results = run(client, lambda c: c.apply([change(i, d, status="suspend") for i, d in enumerate(devices)]))
    assert all(r.status == "PROCESSING" for r in results)
    assert len({r.carrier_request_id for r in results}) == 2
    assert sim.stats()["max_devices_in_request"] == 10_000 and sim.stats()["calls"]["suspend"] == 2
    assert len(results[1].log[-1].request_text) < 300  # the big body is logged once
    assert sim.wait_idle(20) and sim.stats()["applied_total"] == 10_001
    assert sim.stats()["callbacks_unregistered"] == 10_001  # no listener registered: none sent
    too_big = ThingSpaceClient(thingspace_account(thingspace_sim), max_devices_per_request=20_000)
    refused = run(too_big, lambda c: c.apply([change(i, d, status="deactive") for i, d in enumerate(devices)]))
    assert {r.status for r in refused} == {"API_FAILED"}
    assert "Devices.MaxLimitExceeded" in refused[0].detail


def test_refused_transition_and_plan_quota_arrive_as_fault_callbacks(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    pre, busy = make_devices(2)
    pre["state"] = "pre-active"
    sim.seed_devices([pre, busy])
    client = registered(thingspace_sim, rhandle)
    results = run(client, lambda c: c.apply([change(1, pre, status="suspend")]))
    outcomes = settle(sim, receiver, client, results, 1)
    assert outcomes[pre["iccid"]].status == "API_FAILED"
    assert "pre-active" in outcomes[pre["iccid"]].detail
    assert receiver.bodies[0]["faultResponse"]["faultcode"].endswith("DeviceStateInvalid")
    for n in range(5):  # the fifth plan change this month is refused
        client = registered(thingspace_sim, rhandle)
        run(
            client,
            lambda c, n=n: c.apply(
                [change(10 + n, busy, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan=f"PLAN-{n}")]
            ),
        )
    assert sim.wait_idle(20)
    last = [o for b in receiver.wait_for(6) for o in parse_thingspace_callback(b)][-5:]
    assert [o.status for o in last] == ["PROCESSED"] * 4 + ["API_FAILED"]
    assert "ServicePlanChangeLimitExceeded" in last[-1].detail
    assert sim.device(busy["iccid"])["servicePlan"] == "PLAN-3"


# -- auth -----------------------------------------------------------------------------------------


def test_token_refresh_and_session_expiry_mid_run(thingspace_sim, sim_clock, monkeypatch) -> None:
    # The client times its token on the simulator's stepped clock too (its `time.monotonic()`).
    monkeypatch.setattr("bulkchange_pipeline.carriers.thingspace_auth.time", sim_clock)
    sim = thingspace_sim.simulator
    sim.configure(token_ttl_seconds=1.0, session_max_calls=2)  # session dies after 2 calls
    devices = make_devices(8)
    sim.seed_devices(devices)
    client = ThingSpaceClient(thingspace_account(thingspace_sim, max_concurrency=1))
    plans = [
        change(i, d, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan=f"P{i % 4}") for i, d in enumerate(devices)
    ]  # four requests in one run

    async def go(c: ThingSpaceClient) -> list[DeviceResult]:
        first = await c.apply(plans[:4])
        sim_clock.advance(1.1)  # the token has expired: the client refreshes it first
        return first + await c.apply(plans[4:])

    results = run(client, go)
    assert [r.status for r in results] == ["PROCESSING"] * 8, [r.detail for r in results]
    stats = sim.stats()
    assert stats["session_errors"] >= 1 and stats["logins"] >= 2
    assert stats["tokens_issued"] == 2 and stats["auth_failures"] == 0
    relogged = [r for r in results if any("session login" in e.description for e in r.log[1:])]
    assert relogged  # the renewal is in the audit trail of the call that needed it


def test_revoked_token_is_refreshed_once_and_bad_secret_is_a_config_error(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    a, b = make_devices(2)
    sim.seed_devices([a, b])
    client = ThingSpaceClient(thingspace_account(thingspace_sim))

    async def go(c: ThingSpaceClient) -> list[DeviceResult]:
        first = await c.apply([change(1, a, status="suspend")])
        sim.revoke_tokens()
        return first + await c.apply([change(2, b, status="suspend")])

    assert [r.status for r in run(client, go)] == ["PROCESSING"] * 2
    assert sim.stats()["auth_failures"] == 1 and sim.stats()["tokens_issued"] == 2
    bad = ThingSpaceClient(thingspace_account(thingspace_sim, extra={"client_secret": "wrong-" + TS_CLIENT_SECRET}))
    (result,) = run(bad, lambda c: c.apply([change(3, a, status="restore")]))
    assert result.status == "API_FAILED" and "client_id/client_secret" in result.detail


def test_writes_disabled_refuses_before_any_call(thingspace_sim) -> None:
    client = ThingSpaceClient(thingspace_account(thingspace_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError):
        run(client, lambda c: c.apply([change(1, make_devices(1)[0], status="suspend")]))
    assert thingspace_sim.simulator.total_calls == 0


# -- limits and faults ----------------------------------------------------------------------------


def test_over_limit_answer_is_honoured(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    sim.configure(activate_per_minute=2, activate_window_seconds=1.0)
    devices = make_devices(4, state="pre-active")
    sim.seed_devices(devices)
    client = ThingSpaceClient(
        thingspace_account(thingspace_sim, extra={"activate_requests_per_minute": 6000})
    )  # the client paces too fast
    client.http.limiter.penalty_seconds = 0.05
    changes = [
        change(i, d, status="active", current_status="pre-active", carrier_rate_plan=f"P{i}")
        for i, d in enumerate(devices)
    ]
    results = run(client, lambda c: c.apply(changes))
    assert [r.status for r in results] == ["PROCESSING"] * 4, [r.detail for r in results]
    assert sim.stats()["over_limit_answers"] >= 1 and client.http.stats.over_limit >= 1
    assert sim.stats()["calls"]["activate"] == 4 + sim.stats()["over_limit_answers"]
    paced = ThingSpaceClient(thingspace_account(thingspace_sim, extra={"activate_requests_per_minute": 100}))
    sim.configure(activate_per_minute=100, activate_window_seconds=60.0)
    sim.reset_counters()
    more = make_devices(3, start=10, state="deactive")
    sim.seed_devices(more)
    run(
        paced,
        lambda c: c.apply(
            [
                change(i, d, status="active", current_status="deactive", carrier_rate_plan=f"Q{i}")
                for i, d in enumerate(more)
            ]
        ),
    )
    assert sim.stats()["over_limit_answers"] == 0


def test_transient_faults_still_accept_every_device_once(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    client = registered(thingspace_sim, rhandle, timeout_seconds=0.3)
    client.http.limiter.penalty_seconds = 0.02
    sim.configure(
        error_rate=0.15,
        timeout_rate=0.1,
        timeout_hold_seconds=0.6,
        malformed_rate=0.1,
        burst_rate=0.05,
        burst_length=2,
        seed=5,
    )
    devices = make_devices(12)
    sim.seed_devices(devices)
    results = run(
        client,
        lambda c: c.apply(
            [
                change(i, d, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan=f"P{i}")
                for i, d in enumerate(devices)
            ]
        ),
    )
    assert [r.status for r in results] == ["PROCESSING"] * 12, [r.detail for r in results]
    assert sum(sim.stats()["injected"].values()) >= 3
    sim.configure(error_rate=0, timeout_rate=0, malformed_rate=0, burst_rate=0)
    outcomes = settle(sim, receiver, client, results, 12)
    assert all(outcomes[d["iccid"]].status == "PROCESSED" for d in devices)
    assert sim.stats()["applied_more_than_once"] == 0


# -- poll and already_applied ---------------------------------------------------------------------


def test_poll_and_already_applied_when_callbacks_are_lost(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    sim.configure(drop_rate=1.0)
    ok, pre, untouched = make_devices(3)
    pre["state"] = "pre-active"
    sim.seed_devices([ok, pre, untouched])
    client = registered(thingspace_sim, rhandle)
    sent = [change(1, ok, status="suspend"), change(2, pre, status="suspend")]

    async def one_request_each(c: ThingSpaceClient) -> list[DeviceResult]:
        return [(await c.apply([dc]))[0] for dc in sent]

    results = run(client, one_request_each)
    assert sim.wait_idle(10) and receiver.bodies == [] and sim.stats()["callbacks_dropped"] == 2
    for dc, r in zip(sent, results):
        dc.carrier_request_id = r.carrier_request_id
    pending = change(3, untouched, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="NEVER-SENT")
    pending.carrier_request_id = "00000000-0000-0000-0000-000000000000"
    polled = run(client, lambda c: c.poll([*sent, pending]))
    assert polled[0].status == "PROCESSED" and polled[0].new_values == {"status": "suspend"}
    assert polled[1].status == "API_FAILED" and "Failed" in polled[1].detail  # request status
    assert polled[2] is None
    checks = run(
        client, lambda c: c.already_applied([change(4, ok, status="suspend"), change(5, untouched, status="suspend")])
    )
    assert checks[0] is not None and checks[0].status == "PROCESSED" and checks[1] is None


# -- redaction ------------------------------------------------------------------------------------


def test_no_credentials_in_any_log_entry(thingspace_sim, callback_receiver) -> None:
    sim = thingspace_sim.simulator
    _, rhandle = callback_receiver
    sim.configure(session_max_calls=2, error_rate=0.2, seed=2)
    devices = make_devices(6)
    sim.seed_devices(devices)
    client = ThingSpaceClient(thingspace_account(thingspace_sim, callback_base_url=rhandle.root_url))
    sessions: list[str] = []  # taken before aclose() logs out (and the simulator forgets them)

    async def go(c: ThingSpaceClient) -> list:
        entries = list((await c.register_callback()).log)
        results = await c.apply(
            [
                change(i, d, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan=f"P{i}")
                for i, d in enumerate(devices)
            ]
        )
        sessions.extend(sim._sessions)
        return entries + [e for r in results for e in r.log]

    entries = run(client, go)
    bad = ThingSpaceClient(thingspace_account(thingspace_sim, secret="wrong-" + TS_PASSWORD))
    (failed,) = run(bad, lambda c: c.apply([change(9, devices[0], status="suspend")]))
    assert failed.status == "API_FAILED" and "Login.InvalidCredentials" in failed.detail
    entries += failed.log
    assert any("oauth token" in e.description.lower() for e in entries)
    assert any("session login" in e.description for e in entries)
    forbidden = [
        TS_CLIENT_SECRET,
        basic_token(TS_CLIENT_ID, TS_CLIENT_SECRET),
        TS_PASSWORD,
        TS_CB_PASSWORD,
        TS_CB_USER,
        *sim._tokens,
        *sessions,
    ]
    assert sessions
    for entry in entries:
        for text in (entry.request_text, entry.response_text, entry.description):
            leaked = [s for s in forbidden if s in text]
            assert not leaked, (leaked, text[:500])


# -- session end and device list paging (issue 17) -------------------------------------------------


def test_aclose_logs_out_and_a_failed_logout_is_only_logged(thingspace_sim, caplog) -> None:
    sim = thingspace_sim.simulator
    a, b = make_devices(2)
    sim.seed_devices([a, b])
    client = ThingSpaceClient(thingspace_account(thingspace_sim))
    (r,) = run(client, lambda c: c.apply([change(1, a, status="suspend")]))
    assert r.status == "PROCESSING" and client.auth.session is None
    assert sim.stats()["logouts"] == 1 and sim.stats()["sessions_open"] == 0
    never = ThingSpaceClient(thingspace_account(thingspace_sim))
    run(never, lambda c: asyncio.sleep(0))  # no session opened: nothing to end, no call
    assert sim.stats()["logouts"] == 1

    async def expire_then_close(c: ThingSpaceClient) -> list[DeviceResult]:
        done = await c.apply([change(2, b, status="suspend")])
        sim.expire_sessions()  # the logout itself now gets the session error
        return done

    caplog.set_level("WARNING", logger="bulkchange_pipeline.carriers.thingspace_auth")
    late = ThingSpaceClient(thingspace_account(thingspace_sim))
    assert run(late, expire_then_close)[0].status == "PROCESSING"  # aclose() did not raise
    assert late.auth.session is None and sim.stats()["logouts"] == 1
    assert any("logout failed" in m for m in caplog.messages), caplog.messages


def test_list_devices_pages_until_has_more_data_is_false(thingspace_sim) -> None:
    sim = thingspace_sim.simulator
    devices = make_devices(230)
    sim.seed_devices(devices)
    client = ThingSpaceClient(thingspace_account(thingspace_sim))
    listed = run(client, lambda c: c.list_devices())
    iccids = [i["id"] for d in listed for i in d["deviceIds"] if i["kind"] == "iccid"]
    assert sorted(iccids) == sorted(d["iccid"] for d in devices)  # every device, none twice
    assert sim.stats()["calls"]["list"] == 3  # 100 + 100 + 30


def test_iccid_change_sends_no_account_name(thingspace_sim, callback_receiver) -> None:
    """ChangeDeviceIdRequest has no accountName; the simulator refuses one, so this change only
    gets through because the client leaves it out."""
    sim = thingspace_sim.simulator
    receiver, rhandle = callback_receiver
    dev = make_devices(1)[0]
    sim.seed_devices([dev])
    client = registered(thingspace_sim, rhandle)
    new_iccid = make_devices(1, start=70)[0]["iccid"]
    swap = change(1, dev, ChangeType.CHANGE_ICCID_AND_IMEI, new_iccid=new_iccid)
    (r,) = run(client, lambda c: c.apply([swap]))
    assert r.status == "PROCESSING", r.detail
    outcomes = settle(sim, receiver, client, [r], 1)
    assert outcomes[dev["iccid"]].new_values == {"iccid": new_iccid}
