"""Control Center's SOAP Terminal service on the wire: envelopes built and replies read by zeep from
our WSDL/XSD subset (`schemas/jasper_soap/`, sources in its SOURCES.md), the REST field names the
rest of the pipeline speaks mapped to EditTerminal change types and back, and SOAP faults mapped to
the same error classes as Jasper's REST errors.

The service (SOAP 1.1, document/literal, namespace http://api.jasperwireless.com/ws/schema):
- POST `<Control Center>/ws/service/terminal`, `Content-Type: text/xml; charset=utf-8` and the
  operation's SOAPAction; a WS-Security UsernameToken (PasswordText: the Control Center user's
  password, not the REST API key) in the header, `messageId`, `version` and `licenseKey` first in
  every body (Cisco's own sample, cfalcken/cisco-iot-control-center SOAP/get_device_details.py,
  calls it the same way with zeep).
- `EditTerminal` changes ONE attribute: `changeType` names it (3 status, 4 rate plan, 6 customer,
  17/18/19 custom 1-3, 73..79 custom 4-10; 124 communication plan is inferred [I]), `targetValue`
  the value, `effectiveDate` an xs:date (a day, UTC; absent or today = now, at most 180 days ahead).
- `GetTerminalDetails` reads up to 50 ICCIDs at once; unknown ones are left out of the answer.
- Status values carry a `_NAME` suffix (`DEACTIVATED_NAME` for REST's `DEACTIVATED`); the custom
  fields REST calls `accountCustomN` are `customN` in a terminal.
- A fault is HTTP 500 with `faultstring` = the numeric error code (what Cisco's sample keys on) and
  `detail/ApiFault` (errorCode, errorToken, errorMessage) [I].

Replies are parsed with zeep's own hardened loader (no DTD, no entities, no network), so a hostile
or broken answer is a malformed body (retried), never an expansion or a fetch.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

import httpx
import zeep
from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault
from zeep.helpers import serialize_object
from zeep.loader import parse_xml
from zeep.wsdl import Document
from zeep.wsse.username import UsernameToken

from ..schemas import schema_path
from .base import BusinessCarrierError, CarrierError, TransientCarrierError
from .http import MALFORMED, stated_wait_seconds
from .redaction import redact_detail

__all__ = [
    "API_VERSION",
    "MAX_DETAILS_ICCIDS",
    "SERVICE_PATH",
    "SOAP_CHANGE_TYPES",
    "TerminalWire",
    "classify_soap_response",
    "parse_soap_body",
    "soap_fault",
    "terminal_document",
]

NS = "http://api.jasperwireless.com/ws/schema"
BINDING = f"{{{NS}}}TerminalBinding"
SERVICE_PATH = "ws/service/terminal"
API_VERSION = "1.0"  # any string is accepted; Cisco's sample sends "1"
MAX_DETAILS_ICCIDS = 50
STATUS_SUFFIX = "_NAME"

# REST edit field (`jasper.jasper_edit_body` names) -> EditTerminal changeType.
SOAP_CHANGE_TYPES: Mapping[str, int] = {
    "status": 3,
    "ratePlan": 4,
    "customer": 6,
    "communicationPlan": 124,  # [I]: no public source lists it (SOURCES.md)
    **{f"accountCustom{n}": 16 + n for n in (1, 2, 3)},
    **{f"accountCustom{n}": 69 + n for n in range(4, 11)},
}

RATE_LIMIT_CODE = "400101"
AUTH_CODES = {"400200": "USERNAME and SECRET (the Control Center user's password, not the REST API key)"}
LICENSE_KEY_CODES = {"400100": "LICENSE_KEY"}
NOT_FOUND_CODES = frozenset({"100100"})
TRANSIENT_CODES = frozenset({"400300"})


@cache
def terminal_document() -> Document:
    """The Terminal service's WSDL (and the XSD it imports), parsed once per process (~0.2 s);
    every account's client shares it."""
    transport = zeep.Transport()  # type: ignore[no-untyped-call]  # zeep is untyped; files only, no fetch
    return Document(str(schema_path("jasper_soap/Terminal.wsdl")), transport, settings=_settings())  # type: ignore[arg-type]


@cache
def _settings() -> zeep.Settings:
    return zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def _binding() -> Any:
    return terminal_document().bindings[BINDING]


def soap_value(field: str, value: str) -> str:
    """A REST field value as EditTerminal's targetValue (`DEACTIVATED` -> `DEACTIVATED_NAME`)."""
    if field == "status" and not value.endswith(STATUS_SUFFIX):
        return value + STATUS_SUFFIX
    return value


def rest_device(terminal: Mapping[str, Any]) -> dict[str, str]:
    """A terminal read back, in REST DeviceDetails names (`customN` -> `accountCustomN`, statuses
    without `_NAME`), so `jasper.holds_edits` compares it with an edit body as for REST."""
    out: dict[str, str] = {}
    for key, value in terminal.items():
        if value is None or isinstance(value, dict | list):
            continue
        name = f"accountCustom{key[6:]}" if key.startswith("custom") and key[6:].isdigit() else key
        text = str(value)
        if name == "status" and text.endswith(STATUS_SUFFIX):
            text = text[: -len(STATUS_SUFFIX)]
        out[name] = text
    return out


@dataclass(frozen=True)
class EditReply:
    iccid: str
    effective_date: dt.date | None


class TerminalWire:
    """One account's envelopes: zeep writes each body from the XSD (element order, types) and the
    UsernameToken header. The password and license key go into every envelope, and `secrets`
    hands them (raw and XML-escaped) to the client, only so it can mask them in what it logs and
    stores."""

    def __init__(self, username: str, password: str, license_key: str) -> None:
        token = UsernameToken(username, password)  # type: ignore[no-untyped-call]
        self._client = zeep.Client(terminal_document(), wsse=token, settings=_settings())  # type: ignore[no-untyped-call]
        self._service = self._client.create_service(BINDING, "http://unused.invalid/")  # type: ignore[no-untyped-call]
        self._license_key = license_key
        self._password = password

    @property
    def secrets(self) -> list[str]:
        """The forms the license key and password travel in (raw and XML-escaped), for the redactor."""
        return [self._license_key, escape(self._license_key), self._password, escape(self._password)]

    @staticmethod
    def headers(operation: str) -> dict[str, str]:
        """Content-Type and SOAPAction of an operation, as the binding declares it."""
        action = _binding().get(operation).soapaction
        return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}

    def _envelope(self, operation: str, message_id: str, **body: Any) -> bytes:
        envelope = self._client.create_message(  # type: ignore[no-untyped-call]
            self._service, operation, messageId=message_id, version=API_VERSION, licenseKey=self._license_key, **body
        )
        return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))

    def edit_envelope(
        self, message_id: str, iccid: str, field: str, value: str, effective_date: dt.date | None
    ) -> bytes:
        """EditTerminal setting REST field `field` to `value` (now, or on `effective_date`)."""
        return self._envelope(
            "EditTerminal",
            message_id,
            iccid=iccid,
            effectiveDate=effective_date,
            targetValue=soap_value(field, value),
            changeType=SOAP_CHANGE_TYPES[field],
        )

    def details_envelope(self, message_id: str, iccids: Sequence[str]) -> bytes:
        """GetTerminalDetails for at most `MAX_DETAILS_ICCIDS` ICCIDs."""
        if not 1 <= len(iccids) <= MAX_DETAILS_ICCIDS:
            raise ValueError(f"GetTerminalDetails takes 1 to {MAX_DETAILS_ICCIDS} ICCIDs, not {len(iccids)}")
        return self._envelope("GetTerminalDetails", message_id, iccids={"iccid": list(iccids)})

    @staticmethod
    def edit_reply(root: Any) -> EditReply:
        """The EditTerminalResponse of a parsed answer; raises ValueError when it is not one."""
        reply = _reply("EditTerminal", root)
        return EditReply(str(reply.iccid), reply.effectiveDate)

    @staticmethod
    def details_reply(root: Any) -> dict[str, dict[str, str]]:
        """ICCID -> terminal in REST names, of a parsed GetTerminalDetailsResponse."""
        reply = _reply("GetTerminalDetails", root)
        terminals = (reply.terminals.terminal if reply.terminals is not None else None) or []
        out: dict[str, dict[str, str]] = {}
        for terminal in terminals:
            if terminal.iccid is not None:
                out[str(terminal.iccid)] = rest_device(serialize_object(terminal, dict))  # type: ignore[no-untyped-call]
        return out


# zeep reads a typed value it cannot convert (an xs:dateTime, xs:decimal, xs:int ... that is not
# one) as None and logs the error, raw value included, at ERROR with a traceback
# (`zeep.xsd.types.simple`). A value from the answer may be anything the service echoed,
# credentials included, and None would read as "field absent": the filter below keeps those records
# out of every log and tells `_reply` that one happened, which makes the answer unreadable.
_BAD_VALUES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_BAD_VALUES", default=None)


class _BadValueFilter(logging.Filter):
    """Drops zeep's "Error during xml -> python translation" records, counting them for `_reply`."""

    def filter(self, record: logging.LogRecord) -> bool:
        seen = _BAD_VALUES.get()
        if seen is not None:
            seen.append(type(record.exc_info[1]).__name__ if record.exc_info else "error")
        return False


_ZEEP_VALUE_LOGGER = logging.getLogger("zeep.xsd.types.simple")
if not any(isinstance(f, _BadValueFilter) for f in _ZEEP_VALUE_LOGGER.filters):
    _ZEEP_VALUE_LOGGER.addFilter(_BadValueFilter())


def _reply(operation: str, root: Any) -> Any:
    if root is None or root is MALFORMED:
        raise ValueError(f"no {operation} answer in the body")
    seen: list[str] = []
    token = _BAD_VALUES.set(seen)
    try:
        reply = _binding().get(operation).process_reply(root)
    except (ZeepError, ValueError, TypeError, AttributeError, ArithmeticError) as exc:
        # ArithmeticError: decimal.InvalidOperation, which zeep lets through for a bad xs:decimal.
        raise ValueError(f"unreadable {operation} answer: {exc}") from exc
    finally:
        _BAD_VALUES.reset(token)
    if seen:
        raise ValueError(f"unreadable {operation} answer: {len(seen)} value(s) not of their XSD type")
    if reply is None:
        raise ValueError(f"empty {operation} answer")
    return reply


def parse_soap_body(response: httpx.Response) -> Any:
    """`CarrierHttp`'s body parser for this service: the envelope as an lxml element (zeep's
    hardened loader), None when empty, MALFORMED when it is not XML."""
    if not response.content.strip():
        return None
    try:
        return parse_xml(response.content, terminal_document().transport, settings=_settings())  # type: ignore[arg-type]
    except (ZeepError, etree.LxmlError, ValueError):
        return MALFORMED


@dataclass(frozen=True)
class SoapFault:
    """A fault's parts: `code` the numeric error code (faultstring), `kind` Client or Server
    (faultcode without prefix), `token` the validation token and `message` the text, when sent."""

    code: str
    kind: str
    token: str | None
    message: str


def soap_fault(root: Any) -> SoapFault | None:
    """The fault in a parsed envelope, read by zeep (`process_error`); None when there is none."""
    if root is None or root is MALFORMED or root.find(f"{{{_SOAP_ENV}}}Body/{{{_SOAP_ENV}}}Fault") is None:
        return None
    try:
        _binding().process_error(root, None)
    except Fault as fault:
        detail = fault.detail
        api = detail.find(f"{{{NS}}}ApiFault") if detail is not None else None

        def text(name: str) -> str | None:
            node = api.find(f"{{{NS}}}{name}") if api is not None else None
            return node.text.strip() if node is not None and node.text else None

        code = (fault.message or "").strip() or text("errorCode") or "?"
        kind = (fault.code or "").rpartition(":")[2] or "Client"
        return SoapFault(code, kind, text("errorToken"), text("errorMessage") or code)
    return None  # pragma: no cover - process_error always raises


_SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def classify_soap_response(
    response: httpx.Response, root: Any, secrets: Iterable[str | None] = ()
) -> CarrierError | None:
    """The Terminal service's answers in Jasper's error classes: fault 400101 over the limit
    (transient, whatever the HTTP status); 400300 and Server faults transient; 400200/400100 a
    configuration error naming the credential to fix; 100100 device not found; other Client faults
    a refusal (kept with their code, e.g. 100300 SIMSTATUS_INVALID_TRANSITION); no fault: 2xx with a
    readable envelope is success, a malformed body, 429 and 5xx transient, other 4xx refusals.

    Every text taken from the answer (fault code, token and message, the start of a body) is masked
    with the account's `secrets` before it is cut or used: a service or proxy that echoes the
    request (licenseKey, the UsernameToken) must not put a credential into a row's reason."""
    status = response.status_code
    fault = soap_fault(root)
    if fault is not None:
        code = redact_detail(fault.code, secrets, 40)
        message = redact_detail(fault.message, secrets, 300)
        token = redact_detail(fault.token, secrets, 100) if fault.token else None
        what = f"{token}: {message}" if token and token not in message else message
        if code == RATE_LIMIT_CODE:
            return TransientCarrierError(
                f"[{code}] {what}",
                status=status,
                code=code,
                retry_after=stated_wait_seconds(response, None),
                over_limit=True,
            )
        if code in TRANSIENT_CODES or (fault.kind == "Server" and code not in _CLIENT_CODES):
            return TransientCarrierError(f"[{code}] {what}", status=status, code=code)
        if code in AUTH_CODES or code in LICENSE_KEY_CODES:
            fix = AUTH_CODES.get(code) or LICENSE_KEY_CODES[code]
            return BusinessCarrierError(
                f"Jasper SOAP rejected the account's credentials ({what}); check the credentials entry's {fix}",
                code=code,
                status=status,
            )
        if code in NOT_FOUND_CODES:
            return BusinessCarrierError(f"device not found at the carrier ({what})", code=code, status=status)
        return BusinessCarrierError(what, code=code, status=status)
    if 200 <= status < 300:
        if root is MALFORMED or root is None:
            return TransientCarrierError("malformed response body from Jasper SOAP", status=status)
        return None
    message = redact_detail(response.text.strip(), secrets, 300) or response.reason_phrase
    if status == 429:
        return TransientCarrierError(
            message, status=status, retry_after=stated_wait_seconds(response, None), over_limit=True
        )
    if status >= 500 or root is MALFORMED:
        return TransientCarrierError(f"HTTP {status}: {message}", status=status)
    if status in (401, 403):
        return BusinessCarrierError(
            f"Jasper SOAP refused the call (HTTP {status}); check the service provider's base URL and credentials",
            status=status,
        )
    return BusinessCarrierError(message, status=status)


# Codes that are the caller's fault even when sent as a Server fault.
_CLIENT_CODES = frozenset({*AUTH_CODES, *LICENSE_KEY_CODES, *NOT_FOUND_CODES, "100200", "100300", "400000", "400400"})
