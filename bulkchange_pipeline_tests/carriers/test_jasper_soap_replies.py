"""The Jasper clients against answers the simulator would never give: a Control Center (or a proxy
in front of it) that echoes the request, credentials included, into a fault or an error body; a
newer release that adds elements to a terminal; a value that is not of its XSD type. Served by a
real loopback HTTP server (a small Starlette app), so every byte goes through `CarrierHttp`.

Also the per-field read-back of a two-call edit (a crash between the two EditTerminal calls)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulkchange_pipeline.carriers.base import (
    BusinessCarrierError,
    CarrierAccount,
    DeviceResult,
    TransientCarrierError,
)
from bulkchange_pipeline.carriers.jasper import JasperClient
from bulkchange_pipeline.carriers.jasper_soap import JasperSoapClient
from bulkchange_pipeline.carriers.redaction import MASK, redact_detail
from bulkchange_pipeline.carriers.results import failure_detail
from bulkchange_pipeline.domain import CarrierProtocol, ChangeType
from bulkchange_pipeline.simulators.server import ServerHandle, run_app_in_thread
from bulkchange_pipeline_tests.carriers.test_jasper_soap_client import change, run, soap_account, soap_calls
from bulkchange_pipeline_tests.simulators.fixtures import seed_jasper

pytestmark = pytest.mark.timeout(120)

PASSWORD = "Pw-SECRET-9f3c-xyz"
LICENSE = "LK-SECRET-7a1e-abc"
REST_KEY = "REST-KEY-SECRET-55d0"
SECRETS = (PASSWORD, LICENSE, REST_KEY)
SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
JWS = "http://api.jasperwireless.com/ws/schema"
ICCID = "89012608000000000017"

Handler = Callable[[bytes], Response]


def fault(code: str, message: str, faultstring: str | None = None) -> Response:
    """A Control Center fault (HTTP 500, text/xml) whose errorMessage is `message` (escaped)."""
    xml = (
        f'<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAPENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>SOAP-ENV:Client</faultcode><faultstring>{escape(faultstring or code)}</faultstring><detail>"
        f'<ns2:ApiFault xmlns:ns2="{JWS}"><ns2:errorCode>{code}</ns2:errorCode>'
        f"<ns2:errorMessage>{escape(message)}</ns2:errorMessage></ns2:ApiFault></detail>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return Response(xml.encode(), 500, media_type="text/xml")


def details(terminal: str) -> Response:
    """A GetTerminalDetailsResponse holding one terminal (its inner XML)."""
    xml = (
        f'<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAPENV}"><SOAP-ENV:Body>'
        f'<ns2:GetTerminalDetailsResponse xmlns:ns2="{JWS}"><ns2:correlationId>1</ns2:correlationId>'
        "<ns2:version>1</ns2:version><ns2:build>jasper_release_6.29</ns2:build>"
        "<ns2:timestamp>2020-01-01T00:00:00.000Z</ns2:timestamp><ns2:terminals>"
        f'<ns2:terminal msisdn="1">{terminal}</ns2:terminal></ns2:terminals>'
        "</ns2:GetTerminalDetailsResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return Response(xml.encode(), 200, media_type="text/xml")


@pytest.fixture
def fake() -> Iterator[tuple[ServerHandle, list[Handler]]]:
    """A loopback server answering every POST/PUT/GET with `handlers[0](request body)`."""
    handlers: list[Handler] = []

    async def endpoint(request: Request) -> Response:
        return handlers[0](await request.body())

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT"])])
    with run_app_in_thread(app) as handle:
        yield handle, handlers


def account(handle: ServerHandle, **overrides: Any) -> CarrierAccount:
    """A SOAP account whose entry serves REST too: SECRET the REST key, SOAP_PASSWORD the password."""
    values: dict[str, Any] = {
        "secret": REST_KEY,
        "extra": {"license_key": LICENSE, "soap_password": PASSWORD},
        "max_attempts": 2,
    }
    values.update(overrides)
    return soap_account(handle, **values)


def leaks(results: list[DeviceResult | None]) -> list[str]:
    """Every stored text (row detail, log entries) holding a secret or its first 8 characters."""
    texts = [
        t
        for r in results
        if r is not None
        for t in (r.detail, *(x for e in r.log for x in (e.description, e.request_text, e.response_text)))
    ]
    return [t for t in texts for s in SECRETS if s[:8] in t]


def echo_cut(body: bytes) -> Response:
    """An HTTP 400 plain-text answer whose first 300 characters end inside the license key."""
    text = body.decode()
    at = text.index(LICENSE)
    return Response(text[at + 6 - 300 :], 400, media_type="text/plain")


ECHOES: dict[str, Handler] = {
    "400100 echoes the license key": lambda body: fault("400100", f"Invalid license key {LICENSE}"),
    "400200 echoes the password": lambda body: fault("400200", f"bad password {PASSWORD} for ops"),
    "100300 echoes the envelope": lambda body: fault("100300", f"{PASSWORD}/{LICENSE} in " + body.decode()),
    "faultstring is the key": lambda body: fault("100300", "x", faultstring=LICENSE),
    "HTTP 400 echoes the envelope": lambda body: Response(body, 400, media_type="text/plain"),
    "HTTP 400 cut inside the key": echo_cut,
    "HTTP 502 echoes the envelope": lambda body: Response(b"Bad gateway: " + body, 502, media_type="text/html"),
}


@pytest.mark.parametrize("name", list(ECHOES))
@pytest.mark.parametrize("change_type", [ChangeType.STATUS_UPDATE, ChangeType.EDIT_USERNAME_COST_CENTER])
def test_an_echoed_secret_never_reaches_a_row_or_its_log(fake, name, change_type) -> None:
    handle, handlers = fake
    handlers.append(ECHOES[name])
    target = (
        {"status": "DEACTIVATED"} if change_type == ChangeType.STATUS_UPDATE else {"username": "u", "cost_center": "c"}
    )
    (result,) = run(JasperSoapClient(account(handle)), "apply", [change(1, ICCID, change_type, **target)])
    assert result.status == "API_FAILED" and result.log, result
    assert not leaks([result]), result.detail
    assert any(MASK in e.response_text for e in result.log)  # the answer did carry a secret
    # The read-back sees the same echo: no secret in what it leaves either.
    assert run(JasperSoapClient(account(handle)), "already_applied", [change(2, ICCID, status="DEACTIVATED")]) == [None]


def test_the_rest_client_masks_a_key_cut_by_the_300_character_window(fake) -> None:
    """Jasper REST keeps the first 300 characters of a non-JSON error body; one that ends inside
    the API key must not leave its first characters in the row."""
    handle, handlers = fake
    handlers.append(lambda body: Response(("x" * 290 + REST_KEY).encode(), 400, media_type="text/plain"))
    rest = account(handle, protocol=CarrierProtocol.REST, extra={})
    (result,) = run(JasperClient(rest), "apply", [change(1, ICCID, status="DEACTIVATED")])
    assert result.status == "API_FAILED" and result.detail.endswith(MASK), result.detail
    assert not leaks([result])


@settings(max_examples=200, deadline=None)
@given(
    before=st.text(alphabet="xyz <>/=\"'&;:\n", max_size=400),
    after=st.text(alphabet="xyz <>/=\"'&;:\n", max_size=400),
    secret=st.text(alphabet="ABCDEFGHKMNP0123456789-_.", min_size=8, max_size=40),
    limit=st.one_of(st.none(), st.integers(0, 900)),
    cut=st.one_of(st.none(), st.integers(0, 900)),
)
def test_no_four_characters_of_a_secret_survive_in_a_detail(before, after, secret, limit, cut) -> None:
    """A secret echoed anywhere in a carrier's text, the text cut anywhere before it reaches us
    (`cut`, as a classifier keeping the first N characters does) or by us (`limit`): what a row
    keeps holds no run of 4 of its first characters, and is no longer than `limit`."""
    text = (before + secret + after)[:cut]
    shown = redact_detail(text, [secret], limit)
    assert secret[:4] not in shown, (text, shown)
    assert limit is None or len(shown) <= limit + len(MASK)


def test_failure_detail_masks_the_secrets_it_is_given() -> None:
    refused = BusinessCarrierError(f"bad key {LICENSE} in " + "x" * 280 + REST_KEY[:12], code="400100", status=500)
    assert failure_detail(refused, SECRETS) == f"[400100] bad key *** in {'x' * 280}*** (HTTP 500)"
    retried = TransientCarrierError(f"HTTP 502: {PASSWORD}", status=502)
    assert failure_detail(retried, SECRETS) == "retries exhausted: HTTP 502: ***"


def test_redact_detail_masks_before_cutting_and_masks_a_cut_tail() -> None:
    assert redact_detail("key " + LICENSE + " end", [LICENSE], limit=10) == "key *** en"
    assert redact_detail("abc " + LICENSE[:9], [LICENSE]) == "abc " + MASK
    assert redact_detail("abc " + LICENSE[:3], [LICENSE]) == "abc " + LICENSE[:3]  # too short to tell
    assert redact_detail("plain text", [LICENSE]) == "plain text"


def test_unknown_trailing_terminal_elements_still_read_as_already_applied(fake) -> None:
    """A newer Control Center adds elements after custom10 (the published schema's trailing
    xs:any): the read-back still works, so a re-run does not send the edit again."""
    handle, handlers = fake
    handlers.append(
        lambda body: details(
            f"<ns2:iccid>{ICCID}</ns2:iccid><ns2:ratePlan>RP</ns2:ratePlan><ns2:status>DEACTIVATED_NAME</ns2:status>"
            "<ns2:custom10>x</ns2:custom10><ns2:communicationPlan>CP</ns2:communicationPlan>"
            "<ns2:deviceID>d-1</ns2:deviceID><ns2:simProfileId>7</ns2:simProfileId>"
            '<other:extra xmlns:other="urn:x">1</other:extra>'
        )
    )
    client = JasperSoapClient(account(handle))
    changes = [
        change(1, ICCID, status="DEACTIVATED"),
        change(2, ICCID, ChangeType.CARRIER_RATE_PLAN_CHANGE, carrier_rate_plan="RP", communication_plan="CP"),
    ]
    results = run(client, "already_applied", changes)
    assert [r.status if r else None for r in results] == ["PROCESSED", "PROCESSED"]


@pytest.mark.parametrize("element", ["monthToDateUsage", "dateModified", "accountId", "version"])
def test_a_value_not_of_its_type_is_an_unreadable_answer_and_is_not_logged(fake, caplog, element) -> None:
    """zeep reads an invalid xs:dateTime, xs:long or xs:int as None and logs the
    raw value at ERROR; a bad xs:decimal raises instead. Either way the client treats the answer as
    unreadable (transient, so the edit is re-sent, never taken as applied) and no record carries
    the value."""
    handle, handlers = fake
    handlers.append(
        lambda body: details(
            f"<ns2:iccid>{ICCID}</ns2:iccid><ns2:status>DEACTIVATED_NAME</ns2:status>"
            f"<ns2:{element}>{LICENSE}</ns2:{element}>"
        )
    )
    client = JasperSoapClient(account(handle))

    async def read() -> None:
        try:
            await client.get_terminals([ICCID])
        finally:
            await client.aclose()

    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientCarrierError, match="unreadable GetTerminalDetails answer") as raised:
        asyncio.run(read())
    assert LICENSE[:8] not in str(raised.value)
    assert run(JasperSoapClient(account(handle)), "already_applied", [change(1, ICCID, status="DEACTIVATED")]) == [None]
    assert not [r for r in caplog.records if r.name.startswith("zeep")]
    assert LICENSE[:8] not in caplog.text


@pytest.mark.parametrize(
    "change_type,target,first,second",
    [
        (
            ChangeType.CARRIER_RATE_PLAN_CHANGE,
            {"carrier_rate_plan": "IOT_5GB", "communication_plan": "CP_LTE"},
            {"ratePlan": "IOT_5GB"},
            "communicationPlan",
        ),
        (
            ChangeType.EDIT_USERNAME_COST_CENTER,
            {"username": "truck-17", "cost_center": "CC-100"},
            {"accountCustom1": "truck-17"},
            "accountCustom2",
        ),
    ],
)
def test_a_crash_between_the_two_edit_calls_resends_only_the_second(
    jasper_soap_sim, change_type, target, first, second
) -> None:
    """The first field is already in effect (its EditTerminal went through before the crash): the
    re-run reads the device back, sends only the second field, and the row reports both."""
    sim = jasper_soap_sim.simulator
    (iccid,) = seed_jasper(sim, 1, status="ACTIVATED", **first)
    client = JasperSoapClient(soap_account(jasper_soap_sim))
    pending = change(1, iccid, change_type, **target)

    async def rerun() -> tuple[list[DeviceResult | None], list[DeviceResult]]:
        try:
            return await client.already_applied([pending]), await client.apply([pending])
        finally:
            await client.aclose()

    checked, (result,) = asyncio.run(rerun())
    assert checked == [None]
    assert soap_calls(jasper_soap_sim) == {"GetTerminalDetails": 1, "EditTerminal": 1}
    assert sim.applied_counts[iccid] == 1
    assert result.status == "PROCESSED" and result.new_values == target, result
    assert result.detail.endswith("was already in effect)") and next(iter(first)) in result.detail
    assert [("GetTerminalDetails" in e.description, second in e.description) for e in result.log] == [
        (True, False),
        (False, True),
    ]
