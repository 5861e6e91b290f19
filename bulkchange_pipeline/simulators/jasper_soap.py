"""The SOAP Terminal service (`POST /ws/service/terminal`) beside the Jasper REST simulator, in its
Starlette app and on its state.

Control Center serves the same account through REST and SOAP, so the simulator does too:
- One device table: a SIM edited by EditTerminal reads back changed through REST
  `GET /devices/{iccid}`, and the other way round.
- One per-account rate window and concurrency gate, keyed by username. Control Center counts
  REST and SOAP calls together against an account's limit ("API Policies and Best Practices").
- One FaultConfig.
- One set of edit rules (`jasper_rules.validate_edit`: transitions, known plans, 180-day
  effective dates).
- One `applied_counts`, so a test can prove a change went in once, whichever protocol sent it.

Only the wire differs (`jasper_soap_wire`): WS-Security UsernameToken and licenseKey instead of
Basic auth, changeType codes, `_NAME` statuses, xs:date effective dates, and SOAP Faults carrying
Control Center's error codes (400101 over the limit, 400200 bad credentials, 400100 bad license
key...). Every answer, however bad the request, is a SOAP envelope in `text/xml`; faults are
HTTP 500, as SOAP 1.1 over HTTP requires.

`GET /ws/service/terminal?wsdl` serves our Terminal.wsdl (its address pointing here) and
`GET /ws/service/JasperAPI.xsd` the schema it imports, so a SOAP client can build itself from the
simulator as from the real service.

SOAP accounts are their own ({username: password}, `configure(soap_accounts=...)`), as are
license keys (`configure(license_keys=[...])` for every account, or {username: [keys]}).
Neither is ever echoed by `config()`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..schemas import schema_path
from . import jasper_rules as rules
from . import jasper_soap_wire as wire
from .faults import Fault, drawn_fault

if TYPE_CHECKING:
    from .jasper import JasperSimulator

__all__ = ["CONFIG_KEYS", "SOAP_PATH", "TerminalService"]

SOAP_PATH = "/ws/service/terminal"
XSD_PATH = "/ws/service/JasperAPI.xsd"
XML_MEDIA = "text/xml; charset=utf-8"
CONFIG_KEYS = frozenset({"soap_accounts", "license_keys"})
DEFAULT_SOAP_ACCOUNTS = {"demo": "demo-password"}
DEFAULT_LICENSE_KEYS = ("demo-license-key",)

# jasper_rules refusal code -> (Control Center SOAP code, documented validation token).
_REFUSALS: Mapping[str, tuple[str, str | None]] = {
    rules.ERR_INVALID_STATUS: (wire.FAULT_EDIT, "SIMSTATUS_INVALID"),
    rules.ERR_ILLEGAL_TRANSITION: (wire.FAULT_EDIT, "SIMSTATUS_INVALID_TRANSITION"),
    rules.ERR_EFFECTIVE_DATE: (wire.FAULT_EDIT, "INVALID_EFFECTIVE_DATE"),
    rules.ERR_UNKNOWN_RATE_PLAN: (wire.FAULT_RATE_PLAN, "RATEPLAN_INVALID"),
    rules.ERR_UNKNOWN_COMM_PLAN: (wire.FAULT_COMM_PLAN, None),
    rules.ERR_UNKNOWN_CUSTOMER: (wire.FAULT_CUSTOMER, "CUSTOMERNAME_INVALID"),
}
# Token for an absent / empty target value, per field (D tokens; the comm plan one is [I]).
_NULL_TOKENS = {
    "status": "SIMSTATUS_NULL",
    "ratePlan": "RATEPLAN_NULL",
    "customer": "CUSTOMER_NAME_NULL",
    "communicationPlan": "COMMPLAN_NULL",
}
MAX_CUSTOMER_CHARS = 100  # D: CUSTOMER_NAME_TOO_MANY_CHARS


def _xml(status: int, content: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return Response(content, status, headers, XML_MEDIA)


def _fault(fault: wire.SoapFault, status: int = 500, headers: Mapping[str, str] | None = None) -> Response:
    return _xml(status, wire.fault_bytes(fault), headers)


async def _read_capped(request: Request) -> bytes:
    """The request body, up to `MAX_ENVELOPE_BYTES`. A bigger one is drained unread (so the
    client finishes sending and reads the fault) and refused."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > wire.MAX_ENVELOPE_BYTES:
        async for _ in request.stream():
            pass
        raise wire.SoapFault(wire.FAULT_API, f"Envelope larger than {wire.MAX_ENVELOPE_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= wire.MAX_ENVELOPE_BYTES:
            chunks.append(chunk)
    if size > wire.MAX_ENVELOPE_BYTES:
        raise wire.SoapFault(wire.FAULT_API, f"Envelope larger than {wire.MAX_ENVELOPE_BYTES} bytes")
    return b"".join(chunks)


class TerminalService:
    """The Terminal service of one JasperSimulator (`sim`): its routes, SOAP accounts and keys."""

    def __init__(self, sim: JasperSimulator) -> None:
        self.sim = sim
        self.accounts: dict[str, str] = dict(DEFAULT_SOAP_ACCOUNTS)
        self.license_keys: frozenset[str] | dict[str, frozenset[str]] = frozenset(DEFAULT_LICENSE_KEYS)

    # -- configuration ----------------------------------------------------------------------------

    def configure(self, key: str, value: Any) -> None:
        """`soap_accounts` ({username: password}) or `license_keys` (a list valid for every
        account, or {username: [keys]})."""
        if key == "soap_accounts":
            if not isinstance(value, Mapping):
                raise TypeError("soap_accounts must be {username: password}")
            self.accounts = {str(k): str(v) for k, v in value.items()}
        elif key == "license_keys":
            if isinstance(value, Mapping):
                self.license_keys = {str(k): frozenset(map(str, v)) for k, v in value.items()}
            elif isinstance(value, str):
                raise TypeError("license_keys must be a list of keys or {username: [keys]}")
            else:
                self.license_keys = frozenset(map(str, value))
        else:
            raise KeyError(key)

    def config(self) -> dict[str, Any]:
        """What is configured, never the passwords or keys themselves."""
        per_account = isinstance(self.license_keys, dict)
        return {"soap_accounts": sorted(self.accounts), "license_keys_per_account": per_account}

    def _authentic(self, username: str, password: str) -> bool:
        expected = self.accounts.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def _licensed(self, username: str, key: str) -> bool:
        keys = (
            self.license_keys.get(username, frozenset()) if isinstance(self.license_keys, dict) else self.license_keys
        )
        return any(hmac.compare_digest(k.encode(), key.encode()) for k in keys)

    # -- request plumbing -------------------------------------------------------------------------

    async def _post(self, request: Request) -> Response:
        """Parse, authenticate and gate one call, then run it under the shared fault injection."""
        sim = self.sim
        sim.total_calls += 1
        label = "invalid"  # soap_calls key: the operation, "other" for any other body, "invalid"
        try:
            wire.check_content_type(request.headers.get("content-type"))
            envelope = wire.parse_envelope(await _read_capped(request))
            payload, operation = wire.body_payload(envelope)
            label = operation if operation in wire.OPERATIONS.values() else "other"
            wire.check_action(request.headers.get("soapaction"), operation)
            username, password = wire.username_token(envelope)
        except wire.SoapFault as fault:
            if fault.code == wire.FAULT_SECURITY:
                sim.auth_failures += 1
            return _fault(fault)
        finally:
            sim.soap_calls[label] += 1
        if not self._authentic(username, password):
            sim.auth_failures += 1
            return _fault(
                wire.SoapFault(wire.FAULT_SECURITY, "Security validation error: username or password incorrect")
            )
        state, refused = sim.gate.enter(username)
        if refused:
            sim.gate.leave(state)
            return self._over_limit()
        response = await sim._faulted(
            username,
            state,
            lambda: self._call(operation, payload, username),
            over_limit=self._over_limit,
            server_error=lambda: _fault(wire.SoapFault(wire.FAULT_SYSTEM, "System internal error", faultcode="Server")),
            refusals=(wire.SoapFault,),
            refused=self._refused,
        )
        if drawn_fault() is Fault.MALFORMED:
            response.headers["content-type"] = XML_MEDIA  # truncated XML, as the real one would be
        return response

    def _over_limit(self) -> Response:
        self.sim.over_limit_answers += 1
        return _fault(wire.SoapFault(wire.FAULT_RATE_LIMIT, "License has exceeded the rate limit for API calls"))

    def _refused(self, fault: wire.SoapFault) -> Response:
        if fault.code == wire.FAULT_LICENSE:
            self.sim.auth_failures += 1
        else:
            self.sim.business_refusals += 1
        return _fault(fault)

    async def _call(self, operation: str, payload: Any, username: str) -> Response:
        if operation not in wire.OPERATIONS.values():
            # Another element of the schema (ApiFault, a ...Response) validates but is no request.
            raise wire.SoapFault(wire.FAULT_API, f"Operation {operation} is not served")
        request = wire.validate_payload(payload)
        if not self._licensed(username, request["licenseKey"]):
            raise wire.SoapFault(wire.FAULT_LICENSE, "Invalid license key")
        if operation == "EditTerminal":
            return _xml(200, wire.envelope_bytes(self._edit_terminal(request)))
        if operation == "GetTerminalDetails":
            return _xml(200, wire.envelope_bytes(self._terminal_details(request)))
        raise AssertionError(operation)  # pragma: no cover - checked above

    # -- operations -------------------------------------------------------------------------------

    def _edit_terminal(self, request: Mapping[str, Any]) -> Any:
        sim = self.sim
        field = wire.CHANGE_TYPES.get(int(request["changeType"]))
        if field is None:
            raise wire.SoapFault(wire.FAULT_CHANGE_TYPE, f"Invalid device change type {request['changeType'].strip()}")
        iccid = request["iccid"]
        record = sim.device(iccid)
        if record is None:
            raise wire.SoapFault(wire.FAULT_NOT_FOUND, f"Device not found: {iccid}")
        now = sim.clock.now()
        body: dict[str, str] = {field: self._target_value(field, request.get("targetValue"))}
        if "effectiveDate" in request:
            date = wire.parse_xs_date(request["effectiveDate"])
            if date < now.date():
                raise wire.SoapFault(wire.FAULT_EDIT, f"effectiveDate {date} is in the past", "ACTIVATION_IN_PAST")
            if date > now.date():
                body["effectiveDate"] = f"{date.isoformat()}T00:00:00Z"
        try:
            edits, when = rules.validate_edit(
                body,
                record,
                now=now,
                rate_plans=sim.rate_plans,
                communication_plans=sim.communication_plans,
                customers=sim.customers,
            )
        except rules.Refusal as refusal:
            code, token = _REFUSALS.get(refusal.code, (wire.FAULT_EDIT, None))
            raise wire.SoapFault(code, refusal.message, token) from None
        sim.apply_edit(iccid, edits, when)
        response = wire.response_element("EditTerminal", request, now)
        etree.SubElement(response, f"{{{wire.JWS}}}iccid").text = wire.xml_text(iccid)
        effective = (when or now).date().isoformat()
        etree.SubElement(response, f"{{{wire.JWS}}}effectiveDate").text = effective
        return response

    @staticmethod
    def _target_value(field: str, value: str | None) -> str:
        """The REST value for a SOAP targetValue, with the documented refusals: no NULL for a
        status, plan or customer (a custom field's NULL clears it), no `,` or `*` in a literal,
        customer names up to 100 characters, statuses spelled `..._NAME`."""
        if not value:
            if field in _NULL_TOKENS:
                raise wire.SoapFault(wire.FAULT_EDIT, f"No {field} value specified", _NULL_TOKENS[field])
            return ""
        if field == "status":
            status = wire.EDITABLE_SOAP_STATUS.get(value)
            if status is None:
                raise wire.SoapFault(wire.FAULT_EDIT, f"Invalid SIM status value {value}", "SIMSTATUS_INVALID")
            return status
        if "," in value or "*" in value:
            token = "CUSTOMER_NAME_INVALID_FORMAT" if field == "customer" else "INVALID_FORMAT"
            raise wire.SoapFault(wire.FAULT_EDIT, f"{field} cannot contain commas (,) or asterisks (*)", token)
        if field == "customer" and len(value) > MAX_CUSTOMER_CHARS:
            raise wire.SoapFault(wire.FAULT_EDIT, "Customer limited to 100 characters", "CUSTOMER_NAME_TOO_MANY_CHARS")
        return value

    def _terminal_details(self, request: Mapping[str, Any]) -> Any:
        iccids: list[str] = request["iccids"]
        if len(iccids) > wire.MAX_DETAIL_ICCIDS:
            raise wire.SoapFault(wire.FAULT_TOO_MANY, f"Too many entries: at most {wire.MAX_DETAIL_ICCIDS} ICCIDs")
        response = wire.response_element("GetTerminalDetails", request, self.sim.clock.now())
        terminals = etree.SubElement(response, f"{{{wire.JWS}}}terminals")
        for iccid in dict.fromkeys(iccids):  # unknown ICCIDs are left out (D); each one once
            record = self.sim.device(iccid)
            if record is not None:
                terminals.append(wire.terminal_element(record))
        return response

    # -- WSDL and routes --------------------------------------------------------------------------

    async def _get(self, request: Request) -> Response:
        if "wsdl" not in (k.lower() for k in request.query_params):
            return await self._not_allowed(request)
        wsdl = schema_path("jasper_soap/Terminal.wsdl").read_text(encoding="utf-8")
        here = str(request.base_url).rstrip("/") + SOAP_PATH
        wsdl = wsdl.replace("https://api.jasperwireless.com/ws/service/terminal", here)
        return _xml(200, wsdl.encode())

    async def _xsd(self, request: Request) -> Response:
        return _xml(200, schema_path("jasper_soap/JasperAPI.xsd").read_bytes())

    async def _not_allowed(self, request: Request) -> Response:
        fault = wire.SoapFault(wire.FAULT_API, f"{request.method} is not supported: POST a SOAP envelope (GET ?wsdl)")
        return _fault(fault, 405, {"Allow": "GET, HEAD, POST"})

    def routes(self) -> list[Route]:
        others = ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
        return [
            Route(SOAP_PATH, self._post, methods=["POST"]),
            Route(SOAP_PATH, self._get, methods=["GET"]),
            Route(SOAP_PATH, self._not_allowed, methods=others),
            Route(XSD_PATH, self._xsd, methods=["GET"]),
        ]
