"""Jasper SOAP fixtures: the Jasper simulator with a SOAP account and license key configured, and
hand-built Terminal service envelopes for tests that need exact control of the bytes (a client
library would refuse to send most of what those tests send).

The `jasper_soap_sim` fixture is registered for every test by the root conftest's `pytest_plugins`.

The SOAP user is the REST user (`JASPER_USER`): one Control Center user, one per-account rate
window, whichever protocol it calls through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from lxml import etree

from bulkchange_pipeline.simulators.clock import Clock
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.jasper_soap import SOAP_PATH
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.simulators.fixtures import JASPER_API_KEY, JASPER_USER, requested_clock

SOAP_USER = JASPER_USER
SOAP_PASSWORD = "ops-bot-PASSWORD-2b7e"
LICENSE_KEY = "lk-4c1d-9e7a-PROD"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
JWS = "http://api.jasperwireless.com/ws/schema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
ACTION = "http://api.jasperwireless.com/ws/service/terminal/"


def soap_simulator(clock: Clock | None = None, **config: Any) -> JasperSimulator:
    """A Jasper simulator (no limits, no faults) with the test REST and SOAP accounts."""
    sim = JasperSimulator({JASPER_USER: JASPER_API_KEY}, rate_per_second=0, max_concurrency=1, clock=clock)
    sim.configure(soap_accounts={SOAP_USER: SOAP_PASSWORD}, license_keys=[LICENSE_KEY], **config)
    return sim


@pytest.fixture
def jasper_soap_sim(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """A fresh simulator serving REST and SOAP; on the test's `sim_clock` if it asks for one."""
    with soap_simulator(requested_clock(request)).run_in_thread() as handle:
        yield handle


def security_header(
    user: str | None = SOAP_USER, password: str | None = SOAP_PASSWORD, password_type: str = PASSWORD_TEXT
) -> str:
    """The WS-Security header XML (empty string when `user` is None)."""
    if user is None:
        return ""
    pw = "" if password is None else f'<wsse:Password Type="{password_type}">{escape(password)}</wsse:Password>'
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" soapenv:mustUnderstand="1"><wsse:UsernameToken>'
        f"<wsse:Username>{escape(user)}</wsse:Username>{pw}</wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str | None = None, errors: str = "strict") -> bytes:
    """A SOAP 1.1 envelope around `body` (XML text), with the test user's security header unless
    `header` is given; UTF-8 encoded with `errors` ("surrogatepass" writes a lone surrogate as
    the bytes no valid UTF-8 has, as a broken client would)."""
    head = security_header() if header is None else header
    return (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:jws="{JWS}">'
        f"<soapenv:Header>{head}</soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode("utf-8", errors)


def _common(message_id: str, license_key: str) -> str:
    return (
        f"<jws:messageId>{escape(message_id)}</jws:messageId><jws:version>1.0</jws:version>"
        f"<jws:licenseKey>{escape(license_key)}</jws:licenseKey>"
    )


def edit_body(
    iccid: str,
    change_type: int | str,
    target: str | None,
    effective_date: str | None = None,
    *,
    message_id: str = "msg-1",
    license_key: str = LICENSE_KEY,
) -> str:
    """An EditTerminalRequest element (XML text) in the schema's element order."""
    date = "" if effective_date is None else f"<jws:effectiveDate>{effective_date}</jws:effectiveDate>"
    value = "" if target is None else f"<jws:targetValue>{escape(target)}</jws:targetValue>"
    return (
        f"<jws:EditTerminalRequest>{_common(message_id, license_key)}<jws:iccid>{escape(iccid)}</jws:iccid>"
        f"{date}{value}<jws:changeType>{change_type}</jws:changeType></jws:EditTerminalRequest>"
    )


def details_body(iccids: list[str], *, message_id: str = "msg-2", license_key: str = LICENSE_KEY) -> str:
    """A GetTerminalDetailsRequest element (XML text)."""
    items = "".join(f"<jws:iccid>{escape(i)}</jws:iccid>" for i in iccids)
    return f"<jws:GetTerminalDetailsRequest>{_common(message_id, license_key)}<jws:iccids>{items}</jws:iccids></jws:GetTerminalDetailsRequest>"


def post_soap(
    handle: ServerHandle, operation: str, data: bytes, *, timeout: float = 5.0, **headers: str
) -> httpx.Response:
    """POST an envelope to the simulator's Terminal endpoint with the operation's SOAPAction."""
    sent = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{ACTION}{operation}"', **headers}
    return httpx.post(handle.root_url + SOAP_PATH, content=data, headers=sent, timeout=timeout)


def parse_answer(response: httpx.Response) -> Any:
    """The answer's Body child (the XML is parsed with no DTD and no network)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(response.content, parser)
    return root.find(f"{{{SOAP_ENV}}}Body")[0]


def fault_of(response: httpx.Response) -> tuple[str, str, str | None]:
    """(faultcode, faultstring, detail errorToken) of a fault answer, after checking its HTTP
    status (500) and media type (text/xml): SOAP 1.1 over HTTP, whatever went wrong."""
    assert response.status_code == 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/xml"), response.headers
    fault = parse_answer(response)
    assert fault.tag == f"{{{SOAP_ENV}}}Fault", response.text
    token = fault.find(f"detail/{{{JWS}}}ApiFault/{{{JWS}}}errorToken")
    return fault.findtext("faultcode"), fault.findtext("faultstring"), None if token is None else token.text


def text_of(element: Any, name: str) -> str | None:
    """Text of the first `name` (Jasper namespace) under `element`, None if absent."""
    return element.findtext(f".//{{{JWS}}}{name}")
