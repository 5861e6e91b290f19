"""The simulator's Terminal endpoint is as strict as SOAP 1.1 and our XSD: an envelope a lenient
reader would take (a Body before its Header, a foreign mustUnderstand header, UTF-16, a near-miss
media type, a schema element that is no request) gets a SOAP fault and changes nothing, so a
client bug shows here and not first against the real service. A value is read as the XSD reads
it (comments inside it left out)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline_tests.simulators.jasper_soap_fixtures import (
    ACTION,
    JWS,
    LICENSE_KEY,
    SOAP_ENV,
    edit_body,
    envelope,
    fault_of,
    post_soap,
    security_header,
)

pytestmark = pytest.mark.timeout(60)

ICCID = "89012608000000000051"
EDIT = edit_body(ICCID, 17, "alice")
VALID = envelope(EDIT)
TEXT_XML = "text/xml; charset=utf-8"
RESPONSE = (
    "<jws:EditTerminalResponse><jws:correlationId>1</jws:correlationId><jws:version>1</jws:version>"
    "<jws:build>b</jws:build><jws:timestamp>2020-01-01T00:00:00Z</jws:timestamp><jws:iccid>1</jws:iccid>"
    "<jws:effectiveDate>2020-01-01</jws:effectiveDate></jws:EditTerminalResponse>"
)
API_FAULT = "<jws:ApiFault><jws:errorCode>1</jws:errorCode><jws:errorMessage>x</jws:errorMessage></jws:ApiFault>"


def seed(sim: JasperSimulator) -> None:
    sim.seed_devices([{"iccid": ICCID, "status": "ACTIVATED", "accountCustom1": "before"}])
    assert sim.device(ICCID) is not None


def _raw(children: str) -> bytes:
    return f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:jws="{JWS}">{children}</soapenv:Envelope>'.encode()


HEADER = f"<soapenv:Header>{security_header()}</soapenv:Header>"
BODY = f"<soapenv:Body>{EDIT}</soapenv:Body>"

# name -> (bytes, operation for the SOAPAction, Content-Type, expected (faultcode, faultstring), text in message)
CASES: dict[str, tuple[bytes, str, str, tuple[str, str], str]] = {
    "Body before Header": (
        _raw(BODY + HEADER),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Header then one Body",
    ),
    "two Headers": (
        _raw("<soapenv:Header/>" + HEADER + BODY),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Header then one Body",
    ),
    "element after Body": (
        _raw(HEADER + BODY + "<soapenv:Junk/>"),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Header then one Body",
    ),
    "unknown Envelope child": (
        _raw(HEADER + '<x:Extra xmlns:x="urn:x"/>' + BODY),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Header then one Body",
    ),
    "text in Body": (envelope("junk" + EDIT), "EditTerminal", TEXT_XML, ("SOAP-ENV:Client", "400000"), "Text directly"),
    "text in Envelope": (
        _raw(HEADER + "junk" + BODY),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Text directly",
    ),
    "processing instruction": (
        envelope("<?pi x?>" + EDIT),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "Processing instructions",
    ),
    "mustUnderstand header not understood": (
        envelope(EDIT, header=security_header() + '<foo:X xmlns:foo="urn:foo" soapenv:mustUnderstand="1"/>'),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:MustUnderstand", "400000"),
        "not understood",
    ),
    "two UsernameTokens": (
        envelope(EDIT, header=security_header() + security_header().replace("ops", "x")),
        "EditTerminal",
        TEXT_XML,
        ("SOAP-ENV:Client", "400200"),
        "more than one UsernameToken",
    ),
    "media type text/xmlfoo": (VALID, "EditTerminal", "text/xmlfoo", ("SOAP-ENV:Client", "400000"), "Content-Type"),
    "charset utf-16": (VALID, "EditTerminal", "text/xml; charset=utf-16", ("SOAP-ENV:Client", "400000"), "UTF-8"),
    "UTF-16 with a byte order mark": (
        ('<?xml version="1.0" encoding="UTF-16"?>' + VALID.decode()).encode("utf-16"),
        "EditTerminal",
        "text/xml",
        ("SOAP-ENV:Client", "400000"),
        "UTF-8",
    ),
    "UTF-16 without a byte order mark": (
        VALID.decode().encode("utf-16-le"),
        "EditTerminal",
        "text/xml",
        ("SOAP-ENV:Client", "400000"),
        "UTF-8",
    ),
    "declared ISO-8859-1": (
        b'<?xml version="1.0" encoding="ISO-8859-1"?>' + VALID,
        "EditTerminal",
        "text/xml",
        ("SOAP-ENV:Client", "400000"),
        "UTF-8",
    ),
    "ApiFault as the body": (envelope(API_FAULT), "ApiFault", TEXT_XML, ("SOAP-ENV:Client", "400000"), "not served"),
    "a response as the body": (
        envelope(RESPONSE),
        "EditTerminalResponse",
        TEXT_XML,
        ("SOAP-ENV:Client", "400000"),
        "not served",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_lenient_readers_envelope_gets_a_fault_and_changes_nothing(jasper_soap_sim, name) -> None:
    data, operation, content_type, expected, says = CASES[name]
    sim = jasper_soap_sim.simulator
    seed(sim)
    r = post_soap(jasper_soap_sim, operation, data, **{"Content-Type": content_type})
    faultcode, code, _ = fault_of(r)  # 500, text/xml, a SOAP fault: never a traceback page
    assert (faultcode, code) == expected, r.text
    assert says in r.text, r.text
    assert not sim.applied_counts and sim.device(ICCID)["accountCustom1"] == "before"


def test_the_control_envelope_is_accepted(jasper_soap_sim) -> None:
    """The cases above differ from this one only in what they test."""
    sim = jasper_soap_sim.simulator
    seed(sim)
    r = post_soap(jasper_soap_sim, "EditTerminal", VALID)
    assert r.status_code == 200, r.text
    assert sim.device(ICCID)["accountCustom1"] == "alice"


@pytest.mark.parametrize(
    "name,body",
    [
        ("comment inside changeType", EDIT.replace(">17<", ">1<!-- -->7<")),
        (
            "comment inside licenseKey",
            EDIT.replace(f">{LICENSE_KEY}<", f">{LICENSE_KEY[:4]}<!-- x -->{LICENSE_KEY[4:]}<"),
        ),
        ("CDATA inside targetValue", EDIT.replace(">alice<", "><![CDATA[ali]]>ce<")),
    ],
)
def test_values_are_read_as_the_xsd_reads_them(jasper_soap_sim, name, body) -> None:
    """The XSD validated `1<!-- -->7` as 17: the simulator must act on 17 too (changeType 17 is
    custom field 1), not on the text before the comment."""
    sim = jasper_soap_sim.simulator
    seed(sim)
    r = post_soap(jasper_soap_sim, "EditTerminal", envelope(body))
    assert r.status_code == 200, r.text
    assert sim.device(ICCID)["accountCustom1"] == "alice"


def test_soapaction_of_a_response_element_is_not_an_operation(jasper_soap_sim) -> None:
    """The label the stats keep for a body that is no request: "other", not a served operation."""
    post_soap(jasper_soap_sim, "EditTerminalResponse", envelope(RESPONSE))
    assert dict(jasper_soap_sim.simulator.stats()["soap_calls"]) == {"other": 1}
    assert ACTION.endswith("/")


# Envelope parts for the property below: H the security Header, E an empty Header, B the Body,
# J an unknown element, T text, P a processing instruction; C a comment and W whitespace are
# allowed anywhere.
_PARTS = {
    "H": HEADER,
    "E": "<soapenv:Header/>",
    "B": BODY,
    "J": '<x:Junk xmlns:x="urn:x"/>',
    "T": "junk",
    "P": "<?pi x?>",
    "C": "<!-- c -->",
    "W": "\n  ",
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(_PARTS)), max_size=5))
def test_any_envelope_layout_is_applied_only_when_it_is_header_then_body(jasper_soap_sim, parts) -> None:
    """Property: an Envelope whose children are anything but (comments and whitespace aside) the
    Header then the Body gets a SOAP fault and changes nothing; that one layout is applied."""
    sim = jasper_soap_sim.simulator
    seed(sim)
    before = sim.applied_counts.get(ICCID, 0)
    r = post_soap(jasper_soap_sim, "EditTerminal", _raw("".join(_PARTS[p] for p in parts)))
    if [p for p in parts if p not in "CW"] == ["H", "B"]:
        assert r.status_code == 200, r.text
        assert sim.device(ICCID)["accountCustom1"] == "alice" and sim.applied_counts[ICCID] == before + 1
    else:
        faultcode, code, _ = fault_of(r)
        assert faultcode == "SOAP-ENV:Client" and code in ("400000", "400200"), r.text
        assert sim.device(ICCID)["accountCustom1"] == "before" and sim.applied_counts.get(ICCID, 0) == before
