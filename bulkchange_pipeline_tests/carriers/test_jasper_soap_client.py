"""JasperSoapClient against the running Jasper simulator's SOAP endpoint (the same process state
as its REST API): every change type, faults mapped to the REST error classes, retries, the
read-back before a re-send, redaction, and changes that read back through the other protocol.
The simulator's per-ICCID counts are the proof of exactly-once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from bulkchange_pipeline.carriers import UnknownIntegrationError, build_adapter
from bulkchange_pipeline.carriers.base import CarrierAccount, DeviceChange, DeviceResult, WritesDisabledError
from bulkchange_pipeline.carriers.jasper import JasperClient
from bulkchange_pipeline.carriers.jasper_soap import JasperSoapClient, JasperSoapConfigError, soap_effective_date
from bulkchange_pipeline.carriers.jasper_soap_wire import TerminalWire
from bulkchange_pipeline.domain import CarrierProtocol, ChangeType
from bulkchange_pipeline.schemas import schema_path
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.simulators.fixtures import jasper_account, seed_jasper
from bulkchange_pipeline_tests.simulators.jasper_soap_fixtures import LICENSE_KEY, SOAP_PASSWORD, SOAP_USER

pytestmark = pytest.mark.timeout(120)  # a hung server must not hang CI

JWS = "{http://api.jasperwireless.com/ws/schema}"
SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"


def soap_account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """The simulator's SOAP account (Control Center user, password, license key), test-sized waits."""
    values: dict[str, Any] = {
        "base_url": handle.root_url,
        "username": SOAP_USER,
        "secret": SOAP_PASSWORD,
        "protocol": CarrierProtocol.SOAP,
        "extra": {"license_key": LICENSE_KEY},
    }
    values.update(overrides)
    return jasper_account(handle, **values)


def change(i: int, iccid: str | None, change_type: int = ChangeType.STATUS_UPDATE, **target: Any) -> DeviceChange:
    return DeviceChange(i, i, change_type, iccid, None, None, None, target)


def run(client: Any, method: str, changes: Sequence[DeviceChange]) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return await getattr(client, method)(changes)
        finally:
            await client.aclose()

    return asyncio.run(go())


def soap_calls(handle: ServerHandle) -> dict[str, int]:
    return dict(handle.simulator.stats()["soap_calls"])


# -- without a simulator ----------------------------------------------------------------------------


def test_the_registry_picks_the_client_by_integration_and_protocol(jasper_soap_sim) -> None:
    assert isinstance(build_adapter(soap_account(jasper_soap_sim)), JasperSoapClient)
    assert isinstance(build_adapter(soap_account(jasper_soap_sim, integration="rogers")), JasperSoapClient)
    assert isinstance(build_adapter(jasper_account(jasper_soap_sim)), JasperClient)
    with pytest.raises(UnknownIntegrationError, match="no carrier client for integration 'pond' over soap"):
        build_adapter(soap_account(jasper_soap_sim, integration="pond"))
    client = build_adapter(soap_account(jasper_soap_sim))
    assert [t for t in range(1, 11) if client.supports(t)] == [1, 5, 7, 10]  # as REST Jasper


def test_no_license_key_is_refused_before_anything_is_sent(jasper_soap_sim) -> None:
    with pytest.raises(JasperSoapConfigError, match="LICENSE_KEY"):
        JasperSoapClient(soap_account(jasper_soap_sim, extra={}))
    assert jasper_soap_sim.simulator.stats()["total_calls"] == 0


def test_envelopes_are_valid_against_our_xsd_with_the_header_fields_first() -> None:
    schema = etree.XMLSchema(etree.parse(str(schema_path("jasper_soap/JasperAPI.xsd"))))
    wire = TerminalWire("ops", "p&w<d", "LK-1")
    tomorrow = dt.date(2031, 5, 6)
    for envelope in (
        wire.edit_envelope("m-1", "8901", "status", "DEACTIVATED", None),
        wire.edit_envelope("m-2", "8901", "accountCustom2", "CC, 9", tomorrow),
        wire.details_envelope("m-3", ["8901", "8902"]),
    ):
        root = etree.fromstring(envelope)
        body = root.find(f"{SOAP_ENV}Body")[0]
        schema.assertValid(body)
        assert [etree.QName(e).localname for e in body][:3] == ["messageId", "version", "licenseKey"]
        password = root.find(
            f".//{{{'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd'}}}Password"
        )
        assert password is not None and password.text == "p&w<d" and password.get("Type").endswith("#PasswordText")
    edit = etree.fromstring(wire.edit_envelope("m-2", "8901", "accountCustom2", "CC-9", tomorrow))
    assert edit.findtext(f".//{JWS}changeType") == "18" and edit.findtext(f".//{JWS}effectiveDate") == "2031-05-06"
    status = etree.fromstring(wire.edit_envelope("m", "8901", "status", "DEACTIVATED", None))
    assert (
        status.findtext(f".//{JWS}targetValue") == "DEACTIVATED_NAME" and status.find(f".//{JWS}effectiveDate") is None
    )


def test_effective_dates_are_whole_days_after_today() -> None:
    today = dt.date(2030, 1, 10)
    assert soap_effective_date(None, today) is None
    assert soap_effective_date("2030-01-10T23:00:00+00:00", today) is None  # later today: now
    assert soap_effective_date("2030-01-09T00:00:00Z", today) is None
    assert soap_effective_date("2030-01-11T01:00:00+02:00", today) is None  # 2030-01-10 23:00 UTC
    assert soap_effective_date("2030-02-01T10:00:00+00:00", today) == dt.date(2030, 2, 1)


# -- against the simulator --------------------------------------------------------------------------


def test_applies_each_change_type_and_the_rest_api_reads_it_back(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    a, b, c, d = seed_jasper(sim, 4, status="ACTIVATED")
    changes = [
        change(1, a, ChangeType.STATUS_UPDATE, status="DEACTIVATED"),
        change(2, b, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOT_5GB", communication_plan="CP_LTE"),
        change(3, c, ChangeType.CUSTOMER_ASSIGNMENT, customer_name="Acme Fleet"),
        change(4, d, ChangeType.EDIT_USERNAME_COST_CENTER, username="truck-17", cost_center="CC-100"),
    ]
    results = run(JasperSoapClient(soap_account(jasper_soap_sim)), "apply", changes)
    assert [r.status for r in results] == ["PROCESSED"] * 4, [r.detail for r in results]
    assert results[0].new_values == {"status": "DEACTIVATED"}
    assert results[1].new_values == {"carrier_rate_plan": "IOT_5GB", "communication_plan": "CP_LTE"}
    assert results[2].new_values == {"customer_name": "Acme Fleet"}
    assert results[3].new_values == {"username": "truck-17", "cost_center": "CC-100"}
    assert results[0].detail == "applied: status=DEACTIVATED"
    # One EditTerminal per field: two for the plan change and for the edit.
    assert [len(r.log) for r in results] == [1, 2, 1, 2] and not any(e.has_errors for r in results for e in r.log)
    assert soap_calls(jasper_soap_sim)["EditTerminal"] == 6
    assert [sim.applied_counts[i] for i in (a, b, c, d)] == [1, 2, 1, 2]  # one count per EditTerminal

    rest = JasperClient(jasper_account(jasper_soap_sim))

    async def read() -> list[dict[str, Any]]:
        try:
            return [(await rest.get_device(i)).body for i in (a, b, c, d)]
        finally:
            await rest.aclose()

    ra, rb, rc, rd = asyncio.run(read())
    assert ra["status"] == "DEACTIVATED"
    assert (rb["ratePlan"], rb["communicationPlan"]) == ("IOT_5GB", "CP_LTE")
    assert rc["customer"] == "Acme Fleet"
    assert (rd["accountCustom1"], rd["accountCustom2"]) == ("truck-17", "CC-100")


def test_a_rest_change_reads_back_through_soap(jasper_soap_sim) -> None:
    (iccid,) = seed_jasper(jasper_soap_sim.simulator, 1, status="ACTIVATED")
    rest = run(
        JasperClient(jasper_account(jasper_soap_sim)),
        "apply",
        [change(1, iccid, ChangeType.EDIT_USERNAME_COST_CENTER, username="u-9", cost_center="cc-9")],
    )
    assert rest[0].status == "PROCESSED"
    soap = JasperSoapClient(soap_account(jasper_soap_sim))

    async def read() -> dict[str, dict[str, str]]:
        try:
            return (await soap.get_terminals([iccid, "89012608999999999990"]))[0]
        finally:
            await soap.aclose()

    terminals = asyncio.run(read())
    assert list(terminals) == [iccid]  # the unknown ICCID is left out, not a fault
    assert terminals[iccid]["status"] == "ACTIVATED"  # "_NAME" read off
    assert (terminals[iccid]["accountCustom1"], terminals[iccid]["accountCustom2"]) == ("u-9", "cc-9")


def test_a_future_effective_date_is_handed_to_jasper_as_a_day(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    later, now = seed_jasper(sim, 2, status="ACTIVATED")
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    results = run(
        JasperSoapClient(soap_account(jasper_soap_sim)),
        "apply",
        [
            change(1, later, status="DEACTIVATED", effective_date=f"{day.isoformat()}T10:00:00+00:00"),
            change(2, now, status="DEACTIVATED", effective_date=past),
        ],
    )
    assert results[0].status == "PROCESSED" and results[0].new_values == {}
    assert results[0].detail == f"scheduled by Jasper for {day.isoformat()}: status=DEACTIVATED"
    assert f"<ns0:effectiveDate>{day.isoformat()}</ns0:effectiveDate>" in results[0].log[0].request_text
    assert sim.device(later)["status"] == "ACTIVATED"  # not yet
    assert results[1].new_values == {"status": "DEACTIVATED"} and sim.device(now)["status"] == "DEACTIVATED"
    assert "effectiveDate" not in results[1].log[0].request_text


def test_faults_are_refusals_with_their_code_and_are_not_retried(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    sim.configure(rate_plans=["IOT_1GB"], communication_plans=["CP_1"], customers=["Acme"])
    (retired,) = seed_jasper(sim, 1, status="RETIRED")
    (active,) = seed_jasper(sim, 1, start=10, status="ACTIVATED")
    missing = "89012608999999999990"
    changes = [
        change(1, retired, status="ACTIVATED"),
        change(2, missing, status="DEACTIVATED"),
        change(3, active, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="NO_SUCH_PLAN"),
        change(4, active, ChangeType.CUSTOMER_ASSIGNMENT, customer_name="Nobody Inc"),
        change(5, active, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="IOT_1GB", communication_plan="CP_X"),
        change(6, active, ChangeType.EDIT_USERNAME_COST_CENTER, username="a,b"),
        change(7, active, ChangeType.STATUS_UPDATE),  # nothing to send
        change(8, None, status="ACTIVATED"),
    ]
    results = run(JasperSoapClient(soap_account(jasper_soap_sim)), "apply", changes)
    assert [r.status for r in results] == ["API_FAILED"] * 8
    detail = [r.detail for r in results]
    assert detail[0].startswith("[100300] SIMSTATUS_INVALID_TRANSITION") and "(HTTP 500)" in detail[0]
    assert detail[1].startswith("[100100] device not found at the carrier")
    assert detail[2].startswith("[100520]") and detail[3].startswith("[1400101]")
    # The rate plan was applied before the communication plan was refused: the row says so.
    assert detail[4].startswith("ratePlan=IOT_1GB applied; communicationPlan not: [1700100]"), detail[4]
    assert detail[5].startswith("[100300]")
    assert "no target value" in detail[6] and "ICCID" in detail[7]
    assert soap_calls(jasper_soap_sim) == {"EditTerminal": 7}  # one try each, no read-back
    assert sim.device(active)["ratePlan"] == "IOT_1GB" and sum(sim.applied_counts.values()) == 1


@pytest.mark.parametrize(
    "overrides,code,fix",
    [
        ({"secret": "not-the-password"}, "400200", "USERNAME and SECRET"),
        ({"extra": {"license_key": "lk-wrong"}}, "400100", "LICENSE_KEY"),
    ],
)
def test_credential_faults_name_what_to_fix(jasper_soap_sim, overrides, code, fix) -> None:
    (iccid,) = seed_jasper(jasper_soap_sim.simulator, 1, status="ACTIVATED")
    (result,) = run(
        JasperSoapClient(soap_account(jasper_soap_sim, **overrides)), "apply", [change(1, iccid, status="DEACTIVATED")]
    )
    assert result.status == "API_FAILED"
    assert result.detail.startswith(f"[{code}] Jasper SOAP rejected the account's credentials") and fix in result.detail
    assert soap_calls(jasper_soap_sim) == {"EditTerminal": 1}


def test_writes_disabled_refuses_before_any_call(jasper_soap_sim) -> None:
    (iccid,) = seed_jasper(jasper_soap_sim.simulator, 1)
    client = JasperSoapClient(soap_account(jasper_soap_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError, match="writes are disabled"):
        run(client, "apply", [change(1, iccid, status="DEACTIVATED")])
    assert client.http.stats.calls == 0 and jasper_soap_sim.simulator.stats()["total_calls"] == 0


def test_the_rate_limit_fault_is_waited_out_and_retried(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    sim.configure(burst_rate=0.3, burst_length=1, seed=5)
    iccids = seed_jasper(sim, 12, status="ACTIVATED")
    client = JasperSoapClient(soap_account(jasper_soap_sim, max_attempts=6))
    client.http.limiter.penalty_seconds = 0.01
    results = run(client, "apply", [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    assert [r.status for r in results] == ["PROCESSED"] * len(iccids), [r.detail for r in results]
    refused = [e for r in results for e in r.log if e.has_errors]
    assert refused and all("<faultstring>400101</faultstring>" in e.response_text for e in refused)
    assert client.http.stats.over_limit == len(refused) == sim.stats()["injected"]["burst_429"]
    # Jasper refuses an over-limit call before applying it: re-sent without a read-back.
    assert "GetTerminalDetails" not in soap_calls(jasper_soap_sim)
    assert all(sim.applied_counts[i] == 1 for i in iccids)


def test_unknown_outcomes_are_read_back_before_a_resend(jasper_soap_sim) -> None:
    """Timeouts, resets and truncated answers come after the simulator applied the edit: the client
    reads the device back and does not send that edit again; 5xx faults applied nothing: re-sent."""
    sim = jasper_soap_sim.simulator
    sim.configure(
        error_rate=0.08,
        timeout_rate=0.05,
        timeout_hold_seconds=0.5,
        malformed_rate=0.05,
        reset_rate=0.05,
        seed=11,
    )
    iccids = seed_jasper(sim, 60, status="ACTIVATED")
    client = JasperSoapClient(soap_account(jasper_soap_sim, timeout_seconds=0.25, max_attempts=6))
    client.http.limiter.penalty_seconds = 0.02
    results = run(client, "apply", [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    assert [r.status for r in results] == ["PROCESSED"] * len(iccids), [
        r.detail for r in results if r.status != "PROCESSED"
    ]
    injected = sim.stats()["injected"]
    assert sum(injected.values()) >= 6, injected
    assert all(sim.applied_counts[i] == 1 for i in iccids) and sim.stats()["applied_more_than_once"] == 0
    assert all(sim.device(i)["status"] == "DEACTIVATED" for i in iccids)
    read_back = 0
    for r in results:
        kinds = ["read" if "GetTerminalDetails" in e.description else "edit" for e in r.log]
        for k, entry in enumerate(r.log):
            unknown = entry.has_errors and "EditTerminal" in entry.description and entry.response_status != 500
            if unknown:  # timed out, reset or truncated: the next call reads, and no edit follows a read that saw it
                assert kinds[k + 1] == "read", [e.description for e in r.log]
                read_back += 1
        if kinds[-1] == "read":
            assert "DEACTIVATED_NAME" in r.log[-1].response_text
    assert read_back >= 3 and soap_calls(jasper_soap_sim).get("GetTerminalDetails", 0) >= read_back


def test_already_applied_reads_terminals_fifty_at_a_time(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    done = seed_jasper(sim, 110, status="DEACTIVATED", ratePlan="RP_A")
    (pending,) = seed_jasper(sim, 1, start=500, status="ACTIVATED")
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    changes = [change(i, x, status="DEACTIVATED") for i, x in enumerate(done)]
    changes += [
        change(200, pending, status="DEACTIVATED"),
        change(201, done[0], ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="RP_A"),
        change(202, done[1], status="DEACTIVATED", effective_date=future),
        change(203, "89012608999999999990", status="DEACTIVATED"),
    ]
    results: list[DeviceResult | None] = run(
        JasperSoapClient(soap_account(jasper_soap_sim)), "already_applied", changes
    )
    assert all(r is not None and r.status == "PROCESSED" for r in results[:110])
    assert results[0] is not None and results[0].new_values == {"status": "DEACTIVATED"}
    assert results[0].detail == "already in effect at Jasper: status=DEACTIVATED"
    assert results[110] is None and results[112] is None and results[113] is None
    assert results[111] is not None and results[111].new_values == {"carrier_rate_plan": "RP_A"}
    assert soap_calls(jasper_soap_sim) == {"GetTerminalDetails": 3}  # 113 ICCIDs checked: 50 + 50 + 13
    assert sum(sim.applied_counts.values()) == 0


def test_no_password_or_license_key_in_any_log_entry(jasper_soap_sim) -> None:
    """Secrets with XML's special characters: neither the raw nor the escaped form may be stored."""
    sim = jasper_soap_sim.simulator
    password, key = "p&ss<w>rd'\"-Z9", "lk&<key>-77"
    sim.configure(soap_accounts={SOAP_USER: password}, license_keys=[key])
    sim.configure(error_rate=0.2, timeout_rate=0.1, timeout_hold_seconds=0.4, malformed_rate=0.1, seed=3)
    iccids = seed_jasper(sim, 16, status="ACTIVATED")
    good = JasperSoapClient(
        soap_account(jasper_soap_sim, secret=password, extra={"license_key": key}, timeout_seconds=0.2)
    )
    results = run(good, "apply", [change(i, x, status="DEACTIVATED") for i, x in enumerate(iccids)])
    results += run(good, "already_applied", [change(50, iccids[0], status="DEACTIVATED")])
    bad = JasperSoapClient(soap_account(jasper_soap_sim, secret="wrong-" + password, extra={"license_key": key}))
    results += run(bad, "apply", [change(99, iccids[1], status="ACTIVATED")])
    entries = [e for r in results if r is not None for e in r.log]
    assert len(entries) > len(iccids)
    forbidden = {password, escape(password), escape(password, {'"': "&quot;"}), key, escape(key), "wrong-"}
    for entry in entries:
        for text in (entry.request_text, entry.response_text, entry.description):
            assert not any(s in text for s in forbidden), text
    sent = [e.request_text for e in entries if "EditTerminal" in e.description]
    assert sent and all("<ns0:licenseKey>***</ns0:licenseKey>" in t and ">***</wsse:Password>" in t for t in sent)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
@example("a\rb <&> é")
@example("CC, 9*")
@example("nul\x00")
def test_any_username_is_applied_and_read_back_exactly_or_refused_with_a_reason(jasper_soap_sim, username) -> None:
    """Whatever text a row carries: PROCESSED and the same text read back over REST, or API_FAILED
    with the carrier's code or a reason; never an exception out of the client."""
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATED", accountCustom1="before")
    (result,) = run(
        JasperSoapClient(soap_account(jasper_soap_sim)),
        "apply",
        [change(1, iccid, ChangeType.EDIT_USERNAME_COST_CENTER, username=username)],
    )
    if result.status == "PROCESSED":
        assert sim.device(iccid)["accountCustom1"] == username
        assert result.new_values == {"username": username}
    else:
        assert result.status == "API_FAILED"
        assert result.detail.startswith(("[100300]", "[400000]", "cannot be sent over SOAP")), result.detail
        assert sim.device(iccid)["accountCustom1"] == "before"
