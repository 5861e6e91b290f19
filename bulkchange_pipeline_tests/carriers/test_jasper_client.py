"""JasperClient against a running Jasper simulator: every change type, faults, refusals,
limits and redaction. The simulator's per-ICCID counts are the proof of exactly-once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest

from bulkchange_pipeline.carriers import UnknownIntegrationError, build_adapter
from bulkchange_pipeline.carriers.base import (
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.jasper import JasperClient, jasper_edit_body
from bulkchange_pipeline.carriers.redaction import basic_token
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline_tests.simulators.fixtures import (
    JASPER_API_KEY,
    JASPER_USER,
    jasper_account,
    operation_schema,
    seed_jasper,
    strict,
    validate,
)

EDIT_SCHEMA = strict(operation_schema("/v{apiVersion}/devices/{iccid}", "put"))

pytestmark = pytest.mark.timeout(60)  # a hung server must not hang CI


def change(i: int, iccid: str | None, change_type: int = ChangeType.STATUS_UPDATE, **target) -> DeviceChange:
    return DeviceChange(i, i, change_type, iccid, None, None, None, target)


def run_apply(client: JasperClient, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
    async def go() -> list[DeviceResult]:
        try:
            return await client.apply(changes)
        finally:
            await client.aclose()

    return asyncio.run(go())


# -- the pure body builder ------------------------------------------------------------------------


def test_edit_body_per_change_type_matches_edit_model() -> None:
    cases = [
        (change(1, "x", ChangeType.STATUS_UPDATE, status="deactivated"), {"status": "DEACTIVATED"}),
        (
            change(2, "x", ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="RP", communication_plan="CP"),
            {"ratePlan": "RP", "communicationPlan": "CP"},
        ),
        (change(3, "x", ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="RP"), {"ratePlan": "RP"}),
        (change(4, "x", ChangeType.CUSTOMER_ASSIGNMENT, customer_name="Acme"), {"customer": "Acme"}),
        (
            change(5, "x", ChangeType.EDIT_USERNAME_COST_CENTER, username="alice", cost_center="CC-9"),
            {"accountCustom1": "alice", "accountCustom2": "CC-9"},
        ),
    ]
    for dc, expected in cases:
        body = jasper_edit_body(dc)
        assert body == expected
        validate(body, EDIT_SCHEMA)


def test_edit_body_effective_date_only_when_future() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    future = jasper_edit_body(change(1, "x", status="ACTIVATED", effective_date="2030-02-01T10:00:00"), now=now)
    assert future == {"status": "ACTIVATED", "effectiveDate": "2030-02-01T10:00:00+00:00"}
    validate(future, EDIT_SCHEMA)
    past = jasper_edit_body(change(1, "x", status="ACTIVATED", effective_date="2029-12-01T00:00:00Z"), now=now)
    assert past == {"status": "ACTIVATED"}


def test_edit_body_refuses_what_jasper_cannot_do() -> None:
    with pytest.raises(ValueError, match="not applied through the Jasper API"):
        jasper_edit_body(change(1, "x", 9, iccid_new="1"))
    with pytest.raises(ValueError, match="no target value"):
        jasper_edit_body(change(1, "x", ChangeType.STATUS_UPDATE))


def test_registry_and_supports(jasper_sim) -> None:
    adapter = build_adapter(jasper_account(jasper_sim))
    assert isinstance(adapter, JasperClient) and isinstance(adapter, CarrierAdapter)
    assert [t for t in range(1, 11) if adapter.supports(t)] == [1, 5, 7, 10]
    with pytest.raises(UnknownIntegrationError, match="bandwidth"):
        build_adapter(jasper_account(jasper_sim, integration="bandwidth"))


# -- against the simulator ------------------------------------------------------------------------


def test_applies_each_change_type(jasper_sim) -> None:
    sim = jasper_sim.simulator
    a, b, c, d = seed_jasper(sim, 4, status="ACTIVATED")
    changes = [
        change(1, a, ChangeType.STATUS_UPDATE, status="DEACTIVATED"),
        change(2, b, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOT_5GB", communication_plan="CP_LTE"),
        change(3, c, ChangeType.CUSTOMER_ASSIGNMENT, customer_name="Acme Fleet"),
        change(4, d, ChangeType.EDIT_USERNAME_COST_CENTER, username="truck-17", cost_center="CC-100"),
    ]
    results = run_apply(JasperClient(jasper_account(jasper_sim)), changes)
    assert [r.status for r in results] == ["PROCESSED"] * 4
    assert [r.device_change_id for r in results] == [1, 2, 3, 4]
    assert results[0].new_values == {"status": "DEACTIVATED"}
    assert results[1].new_values == {"carrier_rate_plan": "IOT_5GB", "communication_plan": "CP_LTE"}
    assert results[2].new_values == {"customer_name": "Acme Fleet"}
    assert results[3].new_values == {"username": "truck-17", "cost_center": "CC-100"}
    assert sim.device(a)["status"] == "DEACTIVATED"
    assert (sim.device(b)["ratePlan"], sim.device(b)["communicationPlan"]) == ("IOT_5GB", "CP_LTE")
    assert sim.device(c)["customer"] == "Acme Fleet"
    assert (sim.device(d)["accountCustom1"], sim.device(d)["accountCustom2"]) == ("truck-17", "CC-100")
    assert all(sim.applied_counts[i] == 1 for i in (a, b, c, d))
    assert all(len(r.log) == 1 and not r.log[0].has_errors for r in results)


def test_transient_faults_still_apply_every_device_exactly_once(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(
        error_rate=0.04,
        timeout_rate=0.02,
        timeout_hold_seconds=0.6,
        malformed_rate=0.02,
        burst_rate=0.02,
        burst_length=2,
        seed=11,
    )
    iccids = seed_jasper(sim, 80, status="ACTIVATED")
    client = JasperClient(jasper_account(jasper_sim, timeout_seconds=0.25))
    client.http.limiter.penalty_seconds = 0.05  # the simulator has no rate window here
    results = run_apply(client, [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    assert [r.status for r in results] == ["PROCESSED"] * len(iccids), [
        r.detail for r in results if r.status != "PROCESSED"
    ]
    injected = sim.stats()["injected"]
    assert sum(injected.values()) >= 5  # the faults really happened
    assert all(sim.applied_counts[i] == 1 for i in iccids)
    assert sim.stats()["applied_more_than_once"] == 0
    assert client.http.stats.retries >= 5
    assert all(sim.device(i)["status"] == "DEACTIVATED" for i in iccids)
    retried = [r for r in results if len(r.log) > 1]
    assert retried and all(r.log[0].has_errors for r in retried)


def test_business_refusals_fail_without_retry(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(rate_plans=["IOT_1GB"])
    retired = seed_jasper(sim, 1, status="RETIRED")[0]
    active = seed_jasper(sim, 1, start=10)[0]
    missing = "89012608999999999990"
    changes = [
        change(1, retired, status="ACTIVATED"),
        change(2, missing, status="ACTIVATED"),
        change(3, active, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="NO_SUCH_PLAN"),
        change(4, active, ChangeType.STATUS_UPDATE),  # nothing to send
        change(5, None, status="ACTIVATED"),
    ]
    before = sim.total_calls
    results = run_apply(JasperClient(jasper_account(jasper_sim)), changes)
    assert [r.status for r in results] == ["API_FAILED"] * 5
    assert "from RETIRED to ACTIVATED is not allowed" in results[0].detail
    assert "20000019" in results[0].detail
    assert "not found" in results[1].detail
    assert "Invalid ratePlan: NO_SUCH_PLAN" in results[2].detail
    assert "no target value" in results[3].detail and "ICCID" in results[4].detail
    assert sim.total_calls - before == 3  # one call each for the three sent, no retries
    assert sum(sim.applied_counts.values()) == 0
    assert [len(r.log) for r in results] == [1, 1, 1, 0, 0]


def test_bad_credentials_are_a_clear_business_failure(jasper_sim) -> None:
    iccid = seed_jasper(jasper_sim.simulator, 1)[0]
    client = JasperClient(jasper_account(jasper_sim, secret="not-the-key"))
    (result,) = run_apply(client, [change(1, iccid, status="DEACTIVATED")])
    assert result.status == "API_FAILED"
    assert "rejected the credentials" in result.detail and "10000001" in result.detail
    assert jasper_sim.simulator.total_calls == 1


def test_writes_disabled_refuses_before_any_call(jasper_sim) -> None:
    iccid = seed_jasper(jasper_sim.simulator, 1)[0]
    client = JasperClient(jasper_account(jasper_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError, match="writes are disabled"):
        run_apply(client, [change(1, iccid, status="DEACTIVATED")])
    assert jasper_sim.simulator.total_calls == 0 and client.http.stats.calls == 0


def test_limiter_keeps_to_the_account_rate_and_concurrency(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(rate_per_second=10, max_concurrency=1)
    iccids = seed_jasper(sim, 25)
    client = JasperClient(jasper_account(jasper_sim, rate_per_second=10, max_concurrency=1))
    results = run_apply(client, [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    assert all(r.status == "PROCESSED" for r in results)
    stats = sim.stats()
    assert stats["over_limit_answers"] <= 1  # rare, not timing-dependent
    assert stats["peak_concurrency"] == 1
    assert client.http.stats.calls == len(iccids) + client.http.stats.retries


def test_concurrent_batches_share_one_accounts_limits(jasper_sim) -> None:
    """Two batches on one adapter (as two runs in one process would) still make one call at a
    time."""
    sim = jasper_sim.simulator
    sim.configure(max_concurrency=1, latency_ms=5)
    iccids = seed_jasper(sim, 20)
    client = JasperClient(jasper_account(jasper_sim, max_concurrency=1))

    async def go() -> list[list[DeviceResult]]:
        first = [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids[:10])]
        second = [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids[10:])]
        out = await asyncio.gather(client.apply(first), client.apply(second))
        await client.aclose()
        return list(out)

    batches = asyncio.run(go())
    assert all(r.status == "PROCESSED" for b in batches for r in b)
    assert sim.stats()["peak_concurrency"] == 1 and sim.stats()["over_limit_answers"] == 0


def test_already_applied_reads_carrier_state(jasper_sim) -> None:
    sim = jasper_sim.simulator
    done, pending = seed_jasper(sim, 2, status="DEACTIVATED", ratePlan="RP_A")
    sim.seed_devices([{"iccid": pending, "status": "ACTIVATED"}])
    client = JasperClient(jasper_account(jasper_sim))
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    changes = [
        change(1, done, status="DEACTIVATED"),
        change(2, pending, status="DEACTIVATED"),
        change(3, done, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="RP_A"),
        change(4, done, status="DEACTIVATED", effective_date=future),
    ]

    async def go() -> list[DeviceResult | None]:
        out = await client.already_applied(changes)
        await client.aclose()
        return out

    results = asyncio.run(go())
    assert results[0] is not None and results[0].status == "PROCESSED"
    assert results[0].new_values == {"status": "DEACTIVATED"}
    assert results[1] is None and results[3] is None
    assert results[2] is not None and results[2].new_values == {"carrier_rate_plan": "RP_A"}
    assert sum(sim.applied_counts.values()) == 0


def test_adapter_survives_a_new_event_loop(jasper_sim) -> None:
    """The engine may call asyncio.run per batch with one adapter."""
    a, b = seed_jasper(jasper_sim.simulator, 2)
    client = JasperClient(jasper_account(jasper_sim))
    assert asyncio.run(client.apply([change(1, a, status="DEACTIVATED")]))[0].status == "PROCESSED"
    assert run_apply(client, [change(2, b, status="DEACTIVATED")])[0].status == "PROCESSED"


def test_no_secret_in_any_log_entry(jasper_sim) -> None:
    sim = jasper_sim.simulator
    sim.configure(error_rate=0.2, timeout_rate=0.1, timeout_hold_seconds=0.5, malformed_rate=0.1, seed=3)
    iccids = seed_jasper(sim, 20)
    good = JasperClient(jasper_account(jasper_sim, timeout_seconds=0.2))
    bad = JasperClient(jasper_account(jasper_sim, secret="wrong-" + JASPER_API_KEY))
    results = run_apply(good, [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    results += run_apply(bad, [change(99, iccids[0], status="ACTIVATED")])
    entries = [e for r in results for e in r.log]
    assert len(entries) > len(iccids)
    forbidden = [
        JASPER_API_KEY,
        basic_token(JASPER_USER, JASPER_API_KEY),
        basic_token(JASPER_USER, "wrong-" + JASPER_API_KEY),
    ]
    for entry in entries:
        for text in (entry.request_text, entry.response_text, entry.description):
            assert not any(s in text for s in forbidden), text
    assert any("authorization: ***" in e.request_text.lower() for e in entries)
    assert JASPER_API_KEY not in repr(jasper_account(jasper_sim))


@pytest.mark.parametrize("status", [429, 400, 403])
def test_rate_limit_code_is_retried_whatever_http_status_carries_it(jasper_sim, status) -> None:
    """No public source says which HTTP status carries errorCode 40000029 (see the client's
    docstring): whatever it is, the answer is an over-limit to wait out and retry, never a
    business refusal of the device."""
    sim = jasper_sim.simulator
    sim.configure(rate_limit_status=status, burst_rate=0.3, burst_length=1, seed=5)
    iccids = seed_jasper(sim, 12, status="ACTIVATED")
    client = JasperClient(jasper_account(jasper_sim, max_attempts=6))
    client.http.limiter.penalty_seconds = 0.01
    results = run_apply(client, [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    assert [r.status for r in results] == ["PROCESSED"] * len(iccids), [r.detail for r in results]
    refused = [e for r in results for e in r.log if e.has_errors]
    assert refused and {e.response_status for e in refused} == {status}
    assert all("40000029" in e.response_text for e in refused)
    assert sim.stats()["injected"]["burst_429"] == len(refused)
    assert all(sim.applied_counts[i] == 1 for i in iccids)
