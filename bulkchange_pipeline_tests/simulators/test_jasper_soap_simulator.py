"""The Jasper simulator's SOAP Terminal service over real HTTP: auth and license faults, schema
refusals, REST and SOAP on one device state and one rate window, the shared edit rules,
scheduling, no double apply, and the shared fault injection."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from bulkchange_pipeline.simulators.clock import ManualClock
from bulkchange_pipeline.simulators.jasper_soap import SOAP_PATH, XSD_PATH
from bulkchange_pipeline_tests.simulators.fixtures import JASPER_API_KEY, JASPER_USER, seed_jasper
from bulkchange_pipeline_tests.simulators.jasper_soap_fixtures import (
    ACTION,
    LICENSE_KEY,
    SOAP_PASSWORD,
    SOAP_USER,
    details_body,
    edit_body,
    envelope,
    fault_of,
    parse_answer,
    post_soap,
    security_header,
    soap_simulator,
    text_of,
)

pytestmark = pytest.mark.timeout(60)
REST_AUTH = (JASPER_USER, JASPER_API_KEY)
JWS = "http://api.jasperwireless.com/ws/schema"


def rest(handle) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url + "/", auth=REST_AUTH, timeout=5)


def edit(handle, iccid: str, change_type: int, target: str | None, date: str | None = None, **kw) -> httpx.Response:
    return post_soap(handle, "EditTerminal", envelope(edit_body(iccid, change_type, target, date, **kw)))


# -- auth and license ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "",  # no Security header at all
        security_header(SOAP_USER, "wrong-password"),
        security_header("nobody", SOAP_PASSWORD),
        security_header(SOAP_USER, None),  # Username without Password
        security_header(
            SOAP_USER,
            SOAP_PASSWORD,
            password_type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest",
        ),
        security_header(SOAP_USER, JASPER_API_KEY),  # the REST API key is not the SOAP password
    ],
    ids=["no-header", "wrong-password", "unknown-user", "no-password", "digest", "rest-api-key"],
)
def test_bad_credentials_get_the_security_fault_and_change_nothing(jasper_soap_sim, header) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATION_READY")
    r = post_soap(jasper_soap_sim, "EditTerminal", envelope(edit_body(iccid, 3, "ACTIVATED_NAME"), header=header))
    assert fault_of(r)[:2] == ("SOAP-ENV:Client", "400200")
    assert sim.device(iccid)["status"] == "ACTIVATION_READY" and not sim.applied_counts
    assert sim.stats()["auth_failures"] == 1


def test_bad_license_key_gets_400100_and_keys_can_be_per_account(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "alice", license_key="not-our-key"))[1] == "400100"
    assert sim.device(iccid)["accountCustom1"] == "" and not sim.applied_counts
    sim.configure(soap_accounts={SOAP_USER: SOAP_PASSWORD, "other": "pw2"}, license_keys={"other": ["k-other"]})
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "alice"))[1] == "400100"  # LICENSE_KEY is not ours any more
    other = envelope(edit_body(iccid, 17, "alice", license_key="k-other"), header=security_header("other", "pw2"))
    assert post_soap(jasper_soap_sim, "EditTerminal", other).status_code == 200
    config = sim.config()
    assert config["soap_accounts"] == [SOAP_USER, "other"]
    assert "pw2" not in str(config) and "k-other" not in str(config) and SOAP_PASSWORD not in str(config)


# -- envelopes the schema or SOAP refuses ----------------------------------------------------------

ICCID = "89012608000000000005"


@pytest.mark.parametrize(
    "data, headers, faultcode",
    [
        (b"not xml at all", {}, "SOAP-ENV:Client"),
        (b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'>", {}, "SOAP-ENV:Client"),
        (envelope(""), {}, "SOAP-ENV:Client"),  # empty Body
        (envelope(edit_body(ICCID, 3, "ACTIVATED_NAME") * 2), {}, "SOAP-ENV:Client"),  # two operations
        (envelope(edit_body(ICCID, "three", "ACTIVATED_NAME")), {}, "SOAP-ENV:Client"),  # changeType not an int
        (envelope(edit_body(ICCID, 99999999999, "x")), {}, "SOAP-ENV:Client"),  # beyond xs:int
        (envelope(edit_body(ICCID, 3, "x", "2030-13-45")), {}, "SOAP-ENV:Client"),  # not an xs:date
        (envelope(edit_body(ICCID, 3, "x").replace("<jws:changeType>3</jws:changeType>", "")), {}, "SOAP-ENV:Client"),
        (  # elements out of order (changeType before targetValue)
            envelope(
                edit_body(ICCID, 3, "x").replace(
                    "<jws:targetValue>x</jws:targetValue><jws:changeType>3</jws:changeType>",
                    "<jws:changeType>3</jws:changeType><jws:targetValue>x</jws:targetValue>",
                )
            ),
            {},
            "SOAP-ENV:Client",
        ),
        (
            envelope("<jws:DeleteTerminalRequest><jws:messageId>1</jws:messageId></jws:DeleteTerminalRequest>"),
            {"SOAPAction": ACTION + "DeleteTerminal"},
            "SOAP-ENV:Client",
        ),
        (envelope(edit_body(ICCID, 3, "x")), {"SOAPAction": ACTION + "GetTerminalDetails"}, "SOAP-ENV:Client"),
        (envelope(edit_body(ICCID, 3, "x")), {"Content-Type": "application/json"}, "SOAP-ENV:Client"),
        (
            b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body/></env:Envelope>',
            {},
            "SOAP-ENV:VersionMismatch",
        ),
    ],
)
def test_invalid_envelopes_get_a_soap_fault_not_a_5xx_page(jasper_soap_sim, data, headers, faultcode) -> None:
    sim = jasper_soap_sim.simulator
    seed_jasper(sim, 1)
    r = post_soap(jasper_soap_sim, "EditTerminal", data, **headers)
    assert fault_of(r)[:2] == (faultcode, "400000")
    assert not sim.applied_counts


def test_missing_soapaction_and_oversized_envelopes_are_refused(jasper_soap_sim) -> None:
    url = jasper_soap_sim.root_url + SOAP_PATH
    r = httpx.post(url, content=envelope(edit_body(ICCID, 3, "x")), headers={"Content-Type": "text/xml"})
    assert fault_of(r)[1] == "400000" and "SOAPAction" in r.text
    big = envelope(edit_body(ICCID, 17, "x" * (2 << 20)))
    assert fault_of(post_soap(jasper_soap_sim, "EditTerminal", big))[1] == "400000"


def test_wsdl_and_xsd_are_served_and_other_methods_get_a_soap_405(jasper_soap_sim) -> None:
    root = jasper_soap_sim.root_url
    wsdl = httpx.get(root + SOAP_PATH + "?wsdl")
    assert wsdl.status_code == 200 and wsdl.headers["content-type"].startswith("text/xml")
    assert f'location="{root}{SOAP_PATH}"' in wsdl.text and "JasperAPI.xsd" in wsdl.text
    assert httpx.get(root + XSD_PATH).text.count("EditTerminalRequest") >= 1
    for method in ("GET", "PUT", "DELETE"):
        r = httpx.request(method, root + SOAP_PATH)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
        assert r.headers["content-type"].startswith("text/xml") and "<faultstring>400000</faultstring>" in r.text


# -- one device state for REST and SOAP ------------------------------------------------------------


def test_a_soap_edit_reads_back_through_rest(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATION_READY")
    sim.configure(rate_plans=["IOT_1GB"], communication_plans=["CP_Data"], customers=["Acme"])
    for change_type, value in [
        (3, "ACTIVATED_NAME"),
        (4, "IOT_1GB"),
        (124, "CP_Data"),
        (6, "Acme"),
        (17, "alice"),
        (18, "CC-4711"),
        (79, "tenth"),
    ]:
        r = edit(jasper_soap_sim, iccid, change_type, value, message_id=f"m-{change_type}")
        assert r.status_code == 200, r.text
        answer = parse_answer(r)
        assert answer.tag == f"{{{JWS}}}EditTerminalResponse"
        assert (text_of(answer, "correlationId"), text_of(answer, "iccid")) == (f"m-{change_type}", iccid)
        assert text_of(answer, "effectiveDate") == sim.clock.now().date().isoformat()
    with rest(jasper_soap_sim) as c:
        device = c.get(f"devices/{iccid}").json()
    assert (device["status"], device["ratePlan"], device["communicationPlan"], device["customer"]) == (
        "ACTIVATED",
        "IOT_1GB",
        "CP_Data",
        "Acme",
    )
    assert (device["accountCustom1"], device["accountCustom2"], device["accountCustom10"]) == (
        "alice",
        "CC-4711",
        "tenth",
    )
    assert sim.applied_counts[iccid] == 7


def test_a_rest_edit_reads_back_through_soap(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    iccids = seed_jasper(sim, 2, status="ACTIVATED")
    body = {"status": "DEACTIVATED", "ratePlan": "IOT_5GB", "communicationPlan": "CP_X", "customer": "Acme"}
    with rest(jasper_soap_sim) as c:
        assert (
            c.put(f"devices/{iccids[0]}", json={**body, "accountCustom1": "bob", "accountCustom4": "four"}).status_code
            == 200
        )
    r = post_soap(
        jasper_soap_sim, "GetTerminalDetails", envelope(details_body([iccids[0], "89000000000000000000", iccids[1]]))
    )
    assert r.status_code == 200, r.text
    terminals = parse_answer(r).findall(f"{{{JWS}}}terminals/{{{JWS}}}terminal")
    assert [text_of(t, "iccid") for t in terminals] == iccids  # the unknown ICCID is left out
    first = terminals[0]
    assert (text_of(first, "status"), text_of(first, "ratePlan"), text_of(first, "communicationPlan")) == (
        "DEACTIVATED_NAME",
        "IOT_5GB",
        "CP_X",
    )
    assert (text_of(first, "customer"), text_of(first, "custom1"), text_of(first, "custom4")) == ("Acme", "bob", "four")
    assert text_of(first, "dateModified").endswith("Z") and text_of(terminals[1], "status") == "ACTIVATED_NAME"


def test_details_of_only_unknown_iccids_is_an_empty_list_and_over_50_is_refused(jasper_soap_sim) -> None:
    r = post_soap(jasper_soap_sim, "GetTerminalDetails", envelope(details_body(["89000000000000000000"])))
    assert r.status_code == 200 and parse_answer(r).find(f"{{{JWS}}}terminals") is not None
    assert not parse_answer(r).findall(f".//{{{JWS}}}terminal")
    many = [f"8900000000000000{i:04d}" for i in range(51)]
    assert fault_of(post_soap(jasper_soap_sim, "GetTerminalDetails", envelope(details_body(many))))[1] == "400400"


# -- the REST rules, SOAP codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, change_type, target, code, token",
    [
        ("ACTIVATED", 3, "INVENTORY_NAME", "100300", "SIMSTATUS_INVALID_TRANSITION"),
        ("ACTIVATED", 3, "ACTIVATED", "100300", "SIMSTATUS_INVALID"),  # the REST spelling
        ("ACTIVATED", 3, "TRIAL_NAME", "100300", "SIMSTATUS_INVALID"),  # no REST twin
        ("ACTIVATED", 3, "REPLACED_NAME", "100300", "SIMSTATUS_INVALID"),  # not settable
        ("ACTIVATED", 3, None, "100300", "SIMSTATUS_NULL"),
        ("ACTIVATED", 4, "", "100300", "RATEPLAN_NULL"),
        ("ACTIVATED", 4, "NO_SUCH_PLAN", "100520", "RATEPLAN_INVALID"),
        ("ACTIVATED", 124, "NO_SUCH_CP", "1700100", None),
        ("ACTIVATED", 6, "Nobody Inc", "1400101", "CUSTOMERNAME_INVALID"),
        ("ACTIVATED", 6, "Acme, Inc", "100300", "CUSTOMER_NAME_INVALID_FORMAT"),
        ("ACTIVATED", 6, "A" * 101, "100300", "CUSTOMER_NAME_TOO_MANY_CHARS"),
        ("ACTIVATED", 17, "al*ce", "100300", "INVALID_FORMAT"),
        ("ACTIVATED", 5, "x", "100200", None),  # no such change type
        ("ACTIVATED", -1, "x", "100200", None),
        ("ACTIVATED", 2147483647, "x", "100200", None),
    ],
)
def test_edit_refusals_follow_the_rest_rules_with_soap_codes(
    jasper_soap_sim, status, change_type, target, code, token
) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status=status)
    sim.configure(rate_plans=["IOT_1GB"], communication_plans=["CP_Data"], customers=["Acme", "A" * 101])
    before = dict(sim.device(iccid))
    assert fault_of(edit(jasper_soap_sim, iccid, change_type, target)) == ("SOAP-ENV:Client", code, token)
    assert sim.device(iccid) == before and not sim.applied_counts and not sim.scheduled
    assert sim.stats()["business_refusals"] == 1


def test_unknown_iccid_is_device_not_found(jasper_soap_sim) -> None:
    assert fault_of(edit(jasper_soap_sim, "89000000000000000000", 17, "x"))[1:] == ("100100", None)


def test_a_null_target_clears_a_custom_field(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, accountCustom1="alice")
    assert edit(jasper_soap_sim, iccid, 17, None).status_code == 200
    assert sim.device(iccid)["accountCustom1"] == ""


# -- scheduling and applying once ----------------------------------------------------------------------


def test_scheduled_edit_applies_on_its_date_and_counts_once(jasper_soap_sim, sim_clock: ManualClock) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATED")
    today = sim_clock.now().date()
    due = (today + dt.timedelta(days=3)).isoformat()
    for _ in range(2):  # a re-sent scheduled edit is not scheduled twice
        r = edit(jasper_soap_sim, iccid, 3, "DEACTIVATED_NAME", due)
        assert r.status_code == 200 and text_of(parse_answer(r), "effectiveDate") == due
    assert sim.device(iccid)["status"] == "ACTIVATED" and sim.applied_counts[iccid] == 1
    sim_clock.advance(3 * 86400)
    with rest(jasper_soap_sim) as c:
        assert c.get(f"devices/{iccid}").json()["status"] == "DEACTIVATED"
    assert sim.applied_counts[iccid] == 1
    # today's date is immediate; a past date and one beyond 180 days are refused
    assert edit(jasper_soap_sim, iccid, 17, "now", sim_clock.now().date().isoformat()).status_code == 200
    assert sim.device(iccid)["accountCustom1"] == "now"
    past = (sim_clock.now().date() - dt.timedelta(days=1)).isoformat()
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "x", past))[1:] == ("100300", "ACTIVATION_IN_PAST")
    far = (sim_clock.now().date() + dt.timedelta(days=181)).isoformat()
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "x", far))[1:] == ("100300", "INVALID_EFFECTIVE_DATE")
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "x", "0000-01-01"))[1] in ("100300", "400000")


def test_the_same_change_through_soap_then_rest_is_applied_once(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATION_READY")
    for _ in range(3):
        assert edit(jasper_soap_sim, iccid, 3, "ACTIVATED_NAME").status_code == 200
    with rest(jasper_soap_sim) as c:
        assert c.put(f"devices/{iccid}", json={"status": "ACTIVATED"}).status_code == 200
    assert sim.applied_counts[iccid] == 1
    assert sim.stats()["applied_more_than_once"] == 0


# -- one rate window and one concurrency gate per account -----------------------------------------------


def test_rest_and_soap_calls_share_the_accounts_rate_window() -> None:
    clock = ManualClock()
    sim = soap_simulator(clock, rate_per_second=3)
    (iccid,) = seed_jasper(sim, 1)
    with sim.run_in_thread() as handle, rest(handle) as c:
        assert c.get(f"devices/{iccid}").status_code == 200
        assert edit(handle, iccid, 17, "a").status_code == 200
        assert c.get(f"devices/{iccid}").status_code == 200
        # the window's three calls are spent, whichever protocol spent them
        assert fault_of(edit(handle, iccid, 17, "b"))[:2] == ("SOAP-ENV:Client", "400101")
        over = c.get(f"devices/{iccid}")
        assert over.status_code == 429 and over.json()["errorCode"] == "40000029"
        clock.advance(1.0)
        assert edit(handle, iccid, 17, "c").status_code == 200
    assert sim.device(iccid)["accountCustom1"] == "c"
    stats = sim.stats()
    assert stats["over_limit_answers"] == 2 and stats["accounts"][JASPER_USER]["rate_refusals"] == 2
    assert stats["soap_calls"] == {"EditTerminal": 3} and stats["calls_by_method"] == {"GET": 3}
    assert stats["total_calls"] == 6


def test_rest_and_soap_calls_share_the_concurrency_gate() -> None:
    sim = soap_simulator(None, max_concurrency=1, latency_ms=400)
    (iccid,) = seed_jasper(sim, 1)

    async def both(handle) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=5) as c:
            soap = c.post(
                handle.root_url + SOAP_PATH,
                content=envelope(details_body([iccid])),
                headers={"Content-Type": "text/xml", "SOAPAction": ACTION + "GetTerminalDetails"},
            )
            restcall = c.get(f"{handle.base_url}/devices/{iccid}", auth=REST_AUTH)
            return list(await asyncio.gather(soap, restcall))

    with sim.run_in_thread() as handle:
        soap, restcall = asyncio.run(both(handle))
    refused = [r for r in (soap, restcall) if r.status_code != 200]
    assert len(refused) == 1, (soap.text, restcall.text)
    assert sim.stats()["accounts"][JASPER_USER]["concurrency_refusals"] == 1


# -- injected faults (the shared FaultConfig) ---------------------------------------------------------


def test_injected_server_error_is_a_server_fault_and_applies_nothing(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    sim.configure(error_rate=1.0)
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "x")) == ("SOAP-ENV:Server", "400300", None)
    assert not sim.applied_counts and sim.stats()["injected"]["error_5xx"] == 1


def test_injected_burst_answers_the_rate_limit_fault(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    sim.configure(burst_rate=1.0, burst_length=2)
    assert fault_of(edit(jasper_soap_sim, iccid, 17, "x"))[1] == "400101"
    assert not sim.applied_counts and sim.stats()["over_limit_answers"] == 1


def test_injected_malformed_answer_is_truncated_xml_after_applying(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    sim.configure(malformed_rate=1.0)
    r = edit(jasper_soap_sim, iccid, 17, "x")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    with pytest.raises(Exception):
        parse_answer(r)
    assert sim.device(iccid)["accountCustom1"] == "x" and sim.applied_counts[iccid] == 1


def test_injected_timeout_and_reset_apply_but_lose_the_answer(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    iccids = seed_jasper(sim, 2)
    sim.configure(timeout_rate=1.0, timeout_hold_seconds=2.0)
    with pytest.raises(httpx.ReadTimeout):
        post_soap(jasper_soap_sim, "EditTerminal", envelope(edit_body(iccids[0], 17, "t")), timeout=0.3)
    sim.configure(timeout_rate=0.0, reset_rate=1.0)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        edit(jasper_soap_sim, iccids[1], 17, "r")
    assert [sim.device(i)["accountCustom1"] for i in iccids] == ["t", "r"]
    assert sim.applied_counts == {iccids[0]: 1, iccids[1]: 1}


def test_stats_count_soap_calls_by_operation(jasper_soap_sim) -> None:
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1)
    edit(jasper_soap_sim, iccid, 17, "x")
    post_soap(jasper_soap_sim, "GetTerminalDetails", envelope(details_body([iccid])))
    post_soap(jasper_soap_sim, "EditTerminal", b"garbage")
    stats = httpx.get(jasper_soap_sim.root_url + "/_sim/stats").json()
    assert stats["soap_calls"] == {"EditTerminal": 1, "GetTerminalDetails": 1, "invalid": 1}
    assert stats["total_calls"] == 3 and stats["applied_total"] == 1
    assert httpx.post(jasper_soap_sim.root_url + "/_sim/config", json={"license_keys": "one-string"}).status_code == 400
    assert LICENSE_KEY not in httpx.get(jasper_soap_sim.root_url + "/_sim/config").text
