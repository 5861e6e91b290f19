"""The SOAP wire of Control Center's Terminal service as the simulator reads and writes it: safe
parsing, the envelope, the WS-Security UsernameToken, XSD validation against the repo's subset
(`schemas/jasper_soap/JasperAPI.xsd`), change-type codes, status spellings, faults and the
TerminalType record of a device.

Pure functions and tables, no HTTP, like `jasper_rules`. Codes and their sources:
`schemas/jasper_soap/SOURCES.md` (D documented, C seen in client code, I inferred).

Parsing is hardened because the endpoint takes XML from anyone on the loopback: UTF-8 only
(anything else is refused before parsing, so the DOCTYPE check below reads the text the parser
will read), no DTD (a DOCTYPE is refused before parsing, so no entity, internal or external, is
ever defined), no network, no huge-tree mode (libxml2's depth and size limits stay on), a size
cap, and the parser never resolves entities. A hostile envelope gets a SOAP Fault, never a
traceback.

It is strict where a lenient reader would hide a client's bug: the media type must be exactly
text/xml, the Envelope holds an optional Header then one Body and nothing else (no text, no
processing instruction, SOAP 1.1 section 3), a header marked mustUnderstand="1" that is not the
WS-Security one gets SOAP 1.1's MustUnderstand fault, one UsernameToken only, and a value is
read as the XSD reads it (the element's whole text, comments left out).
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from ..schemas import schema_path

__all__ = [
    "CHANGE_TYPES",
    "EDITABLE_SOAP_STATUS",
    "SOAP_STATUS",
    "SoapFault",
    "body_payload",
    "check_action",
    "check_content_type",
    "envelope_bytes",
    "fault_bytes",
    "parse_envelope",
    "parse_xs_date",
    "response_element",
    "schema_errors",
    "terminal_element",
    "username_token",
    "validate_payload",
    "xml_text",
]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
JWS = "http://api.jasperwireless.com/ws/schema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
ACTION_PREFIX = "http://api.jasperwireless.com/ws/service/terminal/"
OPERATIONS = {"EditTerminalRequest": "EditTerminal", "GetTerminalDetailsRequest": "GetTerminalDetails"}
MAX_ENVELOPE_BYTES = 1 << 20  # [I] far above any Terminal request; refuses a 60 MB upload unread
MAX_DETAIL_ICCIDS = 50  # D: "maximum limit is 50"
BUILD = "jasper_release_sim-1.0"  # ResponseType.build: the server build, in the real one's style

# Control Center SOAP error codes (faultstring), SOURCES.md "Faults".
FAULT_API = "400000"  # [I] for an unreadable / schema-invalid envelope or unknown operation
FAULT_LICENSE = "400100"
FAULT_RATE_LIMIT = "400101"  # D
FAULT_SECURITY = "400200"
FAULT_SYSTEM = "400300"
FAULT_TOO_MANY = "400400"
FAULT_NOT_FOUND = "100100"
FAULT_CHANGE_TYPE = "100200"
FAULT_EDIT = "100300"
FAULT_RATE_PLAN = "100520"
FAULT_COMM_PLAN = "1700100"
FAULT_CUSTOMER = "1400101"

# EditTerminal changeType -> the REST (DeviceDetails) field it changes. 124 is [I].
CHANGE_TYPES: Mapping[int, str] = {
    3: "status",
    4: "ratePlan",
    6: "customer",
    124: "communicationPlan",
    17: "accountCustom1",
    18: "accountCustom2",
    19: "accountCustom3",
    **{73 + i: f"accountCustom{4 + i}" for i in range(7)},
}
# SIM status: REST name <-> SOAP name. The edit list (changeType 3) has no REPLACED_NAME; TRIAL_NAME
# is SOAP-only (no REST status), so the simulator refuses it as an invalid status.
SOAP_STATUS = {
    s: f"{s}_NAME"
    for s in (
        "ACTIVATED",
        "ACTIVATION_READY",
        "DEACTIVATED",
        "INVENTORY",
        "PURGED",
        "RETIRED",
        "TEST_READY",
        "REPLACED",
    )
}
EDITABLE_SOAP_STATUS = {v: k for k, v in SOAP_STATUS.items() if k != "REPLACED"}
# TerminalType element (published order) <- REST DeviceDetails field.
_TERMINAL_FIELDS = (
    ("customer", "customer"),
    ("ratePlan", "ratePlan"),
    ("status", "status"),
    ("dateActivated", "dateActivated"),
    ("dateAdded", "dateAdded"),
    ("dateModified", "dateUpdated"),
    ("dateShipped", "dateShipped"),
    ("custom1", "accountCustom1"),
    ("custom2", "accountCustom2"),
    ("custom3", "accountCustom3"),
    ("accountId", "accountId"),
    *((f"customerCustom{i}", f"customerCustom{i}") for i in range(1, 6)),
    *((f"operatorCustom{i}", f"operatorCustom{i}") for i in range(1, 6)),
    ("imsi", "imsi"),
    ("imei", "imei"),
    ("globalSimType", "globalSimType"),
    ("simNotes", "simNotes"),
    *((f"custom{i}", f"accountCustom{i}") for i in range(4, 11)),
    ("communicationPlan", "communicationPlan"),
)
_DATE_FIELDS = frozenset({"dateActivated", "dateAdded", "dateModified", "dateShipped"})
_JASPER_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(?:Z|[+-]00:?00)?$")
_XS_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:\d{2})?$")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_DECLARATION = re.compile(r"<\?xml\b[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")
_NOT_UTF8_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_MUST_UNDERSTAND = f"{{{SOAP_ENV}}}mustUnderstand"
_UNDERSTOOD_HEADERS = frozenset({f"{{{WSSE}}}Security"})


class SoapFault(Exception):
    """A fault answer: Control Center error code (the faultstring), message, validation token,
    and faultcode (`Client`, or `Server` for a server-side failure; VersionMismatch for SOAP 1.2)."""

    def __init__(self, code: str, message: str, token: str | None = None, faultcode: str = "Client") -> None:
        super().__init__(message)
        self.code, self.message, self.token, self.faultcode = code, message, token, faultcode


def _parser(encoding: str | None = None) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        encoding=encoding,
    )


def check_content_type(header: str | None) -> None:
    """SOAP 1.1 over HTTP is `text/xml`: that media type exactly (`text/xmlfoo` is another one),
    and a charset, when given, UTF-8 (the only encoding this service reads)."""
    media, _, params = (header or "").partition(";")
    if media.strip().lower() != "text/xml":
        raise SoapFault(FAULT_API, "Content-Type must be text/xml (SOAP 1.1)")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise SoapFault(FAULT_API, "Only UTF-8 envelopes are accepted (Content-Type charset)")


def _utf8_text(raw: bytes) -> str:
    """`raw` as text, refusing anything but UTF-8 (a UTF-16/32 byte order mark, bytes that are not
    UTF-8, a NUL, which is how UTF-16 without a mark reads, or another declared encoding)."""
    if raw.startswith(_NOT_UTF8_BOMS):
        raise SoapFault(FAULT_API, "Only UTF-8 envelopes are accepted (byte order mark of another encoding)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SoapFault(FAULT_API, "Only UTF-8 envelopes are accepted (the bytes are not UTF-8)") from None
    if "\x00" in text:
        raise SoapFault(FAULT_API, "Only UTF-8 envelopes are accepted (NUL bytes: UTF-16 or UTF-32?)")
    declared = _XML_DECLARATION.match(text.lstrip("\ufeff"))
    if declared is not None and declared[1].strip().lower() != "utf-8":
        raise SoapFault(FAULT_API, f"Only UTF-8 envelopes are accepted, not {declared[1][:40]!r}")
    return text


_SCHEMA = etree.XMLSchema(etree.parse(str(schema_path("jasper_soap/JasperAPI.xsd")), _parser()))


def parse_envelope(raw: bytes) -> Any:
    """The SOAP 1.1 Envelope element of `raw`; SoapFault if it is too big, has a DTD, is not
    well-formed XML or is not a SOAP 1.1 envelope."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise SoapFault(FAULT_API, f"Envelope larger than {MAX_ENVELOPE_BYTES} bytes")
    text = _utf8_text(raw)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise SoapFault(FAULT_API, "DTDs and entity declarations are not allowed")
    try:
        root = etree.fromstring(raw, _parser("utf-8"))
    except etree.XMLSyntaxError as exc:
        raise SoapFault(FAULT_API, f"Envelope is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None:  # belt and braces: pre-check above
        raise SoapFault(FAULT_API, "DTDs and entity declarations are not allowed")
    if root.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise SoapFault(FAULT_API, "SOAP 1.2 is not supported; send a SOAP 1.1 envelope", faultcode="VersionMismatch")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault(FAULT_API, "Root element is not a SOAP 1.1 Envelope")
    _check_structure(root)
    return root


def _check_structure(root: Any) -> None:
    """SOAP 1.1 section 4: an optional Header, then the Body, nothing else (no element after the
    Body, no second Header, no text), no processing instruction anywhere; a header entry with
    mustUnderstand="1" this service does not process is a MustUnderstand fault (section 4.4)."""
    if any(True for _ in root.itersiblings(etree.PI, preceding=True)) or any(True for _ in root.iter(etree.PI)):
        raise SoapFault(FAULT_API, "Processing instructions are not allowed in a SOAP message")
    children = [c for c in root if isinstance(c.tag, str)]
    header, body = f"{{{SOAP_ENV}}}Header", f"{{{SOAP_ENV}}}Body"
    if [c.tag for c in children] not in ([body], [header, body]):
        names = ", ".join(etree.QName(c).localname for c in children) or "nothing"
        raise SoapFault(FAULT_API, f"Envelope must hold an optional Header then one Body, not: {names}")
    if _has_text(root) or _has_text(children[-1]):
        raise SoapFault(FAULT_API, "Text directly inside the Envelope or the Body is not allowed")
    for entry in children[0] if len(children) == 2 else ():
        if not isinstance(entry.tag, str) or entry.tag in _UNDERSTOOD_HEADERS:
            continue
        if (entry.get(_MUST_UNDERSTAND) or "0").strip() in ("1", "true"):
            raise SoapFault(
                FAULT_API, f"Header {etree.QName(entry).localname} was not understood", faultcode="MustUnderstand"
            )


def _has_text(element: Any) -> bool:
    """Non-whitespace character data directly in `element` (its text or a child's tail)."""
    return bool((element.text or "").strip()) or any((c.tail or "").strip() for c in element)


def body_payload(envelope: Any) -> tuple[Any, str]:
    """The one element in the Body and its operation name (EditTerminal, GetTerminalDetails, or
    the element's local name for anything else, which schema validation then refuses)."""
    bodies = envelope.findall(f"{{{SOAP_ENV}}}Body")
    children = [c for c in bodies[0] if isinstance(c.tag, str)] if len(bodies) == 1 else []
    if len(children) != 1:
        raise SoapFault(FAULT_API, "Envelope must have one Body holding exactly one element")
    payload = children[0]
    qname = etree.QName(payload)
    name = OPERATIONS.get(qname.localname, qname.localname) if qname.namespace == JWS else qname.localname
    return payload, name


def check_action(header: str | None, operation: str) -> None:
    """SOAP 1.1 requires the SOAPAction HTTP header; the service dispatches on it, so it must
    name the body's operation."""
    if header is None:
        raise SoapFault(FAULT_API, "SOAPAction header is required")
    if header.strip().strip('"') != ACTION_PREFIX + operation:
        raise SoapFault(FAULT_API, f"SOAPAction {header!r} does not match the body's operation {operation}")


def username_token(envelope: Any) -> tuple[str, str]:
    """(Username, Password) of the WS-Security UsernameToken; SoapFault 400200 if absent or not
    PasswordText (the service documents no digest)."""
    tokens = envelope.findall(f"{{{SOAP_ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
    if len(tokens) > 1:
        raise SoapFault(FAULT_SECURITY, "Security validation error: more than one UsernameToken")
    users = tokens[0].findall(f"{{{WSSE}}}Username") if tokens else []
    passwords = tokens[0].findall(f"{{{WSSE}}}Password") if tokens else []
    if len(users) != 1 or len(passwords) != 1:
        raise SoapFault(FAULT_SECURITY, "Security validation error: no WS-Security UsernameToken")
    if passwords[0].get("Type", PASSWORD_TEXT) != PASSWORD_TEXT:
        raise SoapFault(FAULT_SECURITY, "Security validation error: only PasswordText is supported")
    return _string(users[0]).strip(), _string(passwords[0])


def _string(element: Any) -> str:
    """An element's value as XSD and XPath read it: all its text, comments and PIs left out
    (`<changeType>1<!-- -->7</changeType>` is 17, not 1)."""
    return str(element.xpath("string()"))


def validate_payload(payload: Any) -> dict[str, Any]:
    """Check the body element against JasperAPI.xsd; its child elements as {local name: text}
    (`iccids` as a list). SoapFault 400000 naming the first schema error."""
    error = schema_errors(payload)
    if error is not None:
        raise SoapFault(FAULT_API, f"Request does not match JasperAPI.xsd: {error}")
    fields: dict[str, Any] = {}
    for child in payload:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        fields[name] = [_string(i) for i in child if isinstance(i.tag, str)] if name == "iccids" else _string(child)
    return fields


def parse_xs_date(value: str) -> dt.date:
    """An xs:date's calendar date (a timezone suffix is accepted and, the service working in
    UTC, ignored); SoapFault INVALID_EFFECTIVE_DATE for what the schema allows but a calendar
    does not (year 0, 2030-02-30, five-digit years)."""
    match = _XS_DATE.match(value.strip())
    try:
        if match is None:
            raise ValueError(value)
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise SoapFault(FAULT_EDIT, f"Invalid effectiveDate {value!r}", "INVALID_EFFECTIVE_DATE") from None


def xml_text(value: Any) -> str:
    """`value` as text XML 1.0 can carry: characters it cannot (C0 controls, lone surrogates,
    U+FFFE/FFFF), which REST lets a client store, become U+FFFD [I]."""
    return _NOT_XML_CHAR.sub("\ufffd", str(value))


def xs_date_time(value: Any) -> str | None:
    """A DeviceDetails time ("2016-06-29 00:21:33.339+0000") as xs:dateTime in UTC, or None."""
    match = _JASPER_TIME.match(str(value)) if value else None
    return None if match is None else f"{match[1]}T{match[2]}Z"


def terminal_element(record: Mapping[str, Any]) -> Any:
    """A device's TerminalType: the REST record's fields under their SOAP names, in the
    published order, omitting the absent (None) ones."""
    terminal = etree.Element(f"{{{JWS}}}terminal")
    if record.get("msisdn"):
        terminal.set("msisdn", xml_text(record["msisdn"]))
    etree.SubElement(terminal, f"{{{JWS}}}iccid").text = xml_text(record["iccid"])
    for name, rest in _TERMINAL_FIELDS:
        value = record.get(rest)
        if name == "status" and value is not None:
            value = SOAP_STATUS.get(value, value)
        elif name in _DATE_FIELDS:
            value = xs_date_time(value)
        elif name == "accountId" and value is not None:
            value = value if str(value).isdigit() and len(str(value)) < 19 else None
        if value is not None:
            etree.SubElement(terminal, f"{{{JWS}}}{name}").text = xml_text(value)
    return terminal


def response_element(operation: str, request: Mapping[str, Any], now: dt.datetime) -> Any:
    """`<operation>Response` with the ResponseType header filled (correlationId = messageId)."""
    element = etree.Element(f"{{{JWS}}}{operation}Response", nsmap={"ns2": JWS})
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    for name, value in (
        ("correlationId", request.get("messageId", "")),
        ("version", request.get("version", "")),
        ("build", BUILD),
        ("timestamp", stamp),
    ):
        etree.SubElement(element, f"{{{JWS}}}{name}").text = xml_text(value)
    return element


def envelope_bytes(payload: Any) -> bytes:
    """A SOAP 1.1 envelope (SOAP-ENV prefix, as the service writes it) around `payload`."""
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV})
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Header")
    etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(payload)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def fault_bytes(fault: SoapFault) -> bytes:
    """The fault's envelope: faultcode, faultstring = the error code, detail/ApiFault [I]."""
    element = etree.Element(f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(element, "faultcode").text = f"SOAP-ENV:{fault.faultcode}"
    etree.SubElement(element, "faultstring").text = fault.code
    detail = etree.SubElement(etree.SubElement(element, "detail"), f"{{{JWS}}}ApiFault", nsmap={"ns2": JWS})
    etree.SubElement(detail, f"{{{JWS}}}errorCode").text = fault.code
    if fault.token:
        etree.SubElement(detail, f"{{{JWS}}}errorToken").text = fault.token
    etree.SubElement(detail, f"{{{JWS}}}errorMessage").text = xml_text(fault.message)
    return envelope_bytes(element)


def schema_errors(element: Any) -> str | None:
    """None if `element` is valid against JasperAPI.xsd, else the first error (for tests that
    check every answer the simulator sends)."""
    if _SCHEMA.validate(element):
        return None
    error = _SCHEMA.error_log.last_error
    return error.message if error else "invalid"
