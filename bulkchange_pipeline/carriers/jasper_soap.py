"""Client for the Jasper family over Control Center's legacy SOAP Terminal service: the same change
types as the REST client (`jasper`), for accounts whose service provider says `protocol = soap`.

How it is built, and why:
- zeep writes every envelope from our WSDL/XSD subset (`jasper_soap_wire.TerminalWire`: element
  order, types, the WS-Security UsernameToken) and reads every reply and fault with it. zeep does
  NOT send them: `create_message` gives the envelope, `CarrierHttp` (httpx) posts it, and zeep's
  `process_reply`/`process_error` read the answer. A zeep transport (even an httpx one) would be a
  second HTTP stack beside `CarrierHttp`, and Jasper counts REST and SOAP calls against one limit:
  pacing, the one-call-at-a-time semaphore, the retry policy, redaction and the per-exchange log
  must be the one implementation every client uses, so SOAP goes through it too.
- `messageId` is unique per logical request (row id, change type and a random part), the same on
  each retry of it: Control Center echoes it as correlationId, so its logs show the tries of one
  edit as one request, while an edit sent again by a later run (after a crash) is a new one.
- One edit maps to the REST client's edit body (`jasper.jasper_edit_body`, one field map), sent
  one field per EditTerminal call in the body's order (rate plan before communication plan,
  username before cost center); the device columns, "already done?" comparison and result text are
  the REST client's (`jasper.applied_result`, `holds_edits`), so both protocols report alike. A
  row whose first field was applied and second refused ends API_FAILED saying which was applied.
- Effective dates: EditTerminal takes a day (xs:date, UTC), so a date later than today is sent as
  that day (the capability matrix says so: `capabilities.JASPER_SOAP_DATES`, whole days); today or
  earlier is sent without one (now).
- Crash safety (DESIGN R1): `already_applied` reads the devices back with GetTerminalDetails (50
  per call). An edit of two fields is two EditTerminal calls, so a crash can fall between them:
  a device holding some fields of its edit is remembered (per device change, on this client, which
  the engine uses for the re-send that follows) and `apply` sends only the fields it lacks. Within
  a call, after an answer whose outcome is unknown (timeout, reset, truncated body, server fault;
  not an over-limit answer, which Jasper refuses before applying) the field is read back before
  the edit is sent again.
- Credentials: the entry's USERNAME (the Control Center user), its SECRET as the UsernameToken
  password, and its LICENSE_KEY. One Jasper account reached over both protocols is one credentials
  entry (so both providers share its run-queue slot): its SECRET is then the REST API key and the
  SOAP password comes from SOAP_PASSWORD, which wins over SECRET here.
- SOAP faults become Jasper's REST error classes (`jasper_soap_wire.classify_soap_response`), the
  fault code kept in the row's reason. Every text taken from an answer (fault, body, zeep's reading
  of it) is masked with the account's secrets before it is cut or stored (`self.secrets`,
  `redaction.redact_detail`): a service that echoes the request must not leak the credentials into
  a row, as `CarrierHttp` already keeps them out of the audit log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from ..domain import CarrierProtocol, ChangeType, DeviceChangeStatus, Integration
from .base import (
    CarrierAccount,
    CarrierAdapter,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    require_writes,
)
from .http import CarrierHttp
from .jasper import (
    DEFAULT_FIELD_MAP,
    SUPPORTED_CHANGE_TYPES,
    applied_result,
    edit_summary,
    holds_edits,
    jasper_columns,
    jasper_edit_body,
)
from .jasper_soap_wire import (
    MAX_DETAILS_ICCIDS,
    SERVICE_PATH,
    TerminalWire,
    classify_soap_response,
    parse_soap_body,
)
from .redaction import basic_token, redact_detail
from .results import device_result, failure_detail, shared_logs

__all__ = ["JasperSoapClient", "JasperSoapConfigError", "soap_effective_date"]


class JasperSoapConfigError(CarrierError, ValueError):
    """The account cannot be used over SOAP as configured (no license key)."""


def soap_effective_date(value: str | None, today: dt.date | None = None) -> dt.date | None:
    """The day to send for an edit body's effectiveDate (ISO date-time, UTC): None (now) unless it
    falls on a day after today."""
    if not value:
        return None
    day = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC).date()
    return day if day > (today or dt.datetime.now(dt.UTC).date()) else None


class JasperSoapClient(CarrierAdapter):
    """CarrierAdapter for a Jasper-family account over SOAP: EditTerminal per field, paced under the
    account's limits by the same `CarrierHttp` as every client."""

    integration = Integration.JASPER
    protocol = CarrierProtocol.SOAP
    required_extras = ("license_key",)

    def __init__(self, account: CarrierAccount, *, field_map: Mapping[str, str] = DEFAULT_FIELD_MAP) -> None:
        license_key = str(account.extra.get("license_key") or "")
        if not license_key:
            raise JasperSoapConfigError(
                "Jasper SOAP needs a license key: set the credentials entry's LICENSE_KEY "
                "(account.extra['license_key']); nothing was sent"
            )
        self.account = account
        self.field_map = dict(field_map)
        # device change id -> (fields already held, the read-back log) from `already_applied`, for
        # the `apply` that re-sends the rest.
        self._held: dict[int, tuple[dict[str, str], list[LogEntry]]] = {}
        # The UsernameToken password: the entry's SECRET, unless the entry also serves the account's
        # REST provider (SECRET then is the REST API key) and gives the password as SOAP_PASSWORD.
        password = str(account.extra.get("soap_password") or account.secret)
        self.wire = TerminalWire(account.username, password, license_key)
        # Everything this client writes outside the audit log (a row's reason, an error's message)
        # is masked with these: the SOAP password, the license key and the entry's SECRET (the REST
        # API key when SOAP_PASSWORD is set), raw and XML-escaped as an echoing service returns them.
        self.secrets = [
            *self.wire.secrets,
            account.secret,
            escape(account.secret),
            basic_token(account.username, account.secret),
        ]
        # base_url is the Control Center instance (https://host); a URL already ending in the
        # service path is accepted too.
        root = account.base_url.rstrip("/")
        root = root[: -len(SERVICE_PATH) - 1] if root.endswith("/" + SERVICE_PATH) else root
        self.http = CarrierHttp(
            dataclasses.replace(account, base_url=root),
            classify=functools.partial(classify_soap_response, secrets=self.secrets),
            redact=self.secrets,
            label="Jasper SOAP",
            parse=parse_soap_body,
            accept="text/xml",
        )

    def supports(self, change_type: ChangeType) -> bool:
        """The REST client's change types: EditTerminal sets status, rate and communication plan,
        customer and the custom fields."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- reads ------------------------------------------------------------------------------------

    async def get_terminals(
        self, iccids: Sequence[str], what: str = ""
    ) -> tuple[dict[str, dict[str, str]], list[LogEntry]]:
        """GetTerminalDetails for up to 50 ICCIDs: ICCID -> terminal in REST names (unknown ones
        absent), and the log; raises CarrierError."""
        result = await self.http.request(
            "POST",
            SERVICE_PATH,
            content=self.wire.details_envelope(_message_id("details"), iccids),
            headers=self.wire.headers("GetTerminalDetails"),
            description=f"Jasper SOAP GetTerminalDetails {', '.join(iccids[:3])}{'...' if len(iccids) > 3 else ''}{what}",
        )
        try:
            return self.wire.details_reply(result.body), result.log
        except ValueError as exc:
            raise TransientCarrierError(redact_detail(str(exc), self.secrets), log=result.log) from exc

    # -- writes -----------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """EditTerminal per field of each change; per-device failures become API_FAILED results."""
        require_writes(self.account, "Jasper")
        return await self.http.map_bounded(changes, self._apply_one)

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Read the devices back (GetTerminalDetails, 50 per call); PROCESSED where a device already
        holds every field of its edit. A future-dated edit cannot be seen yet: None (re-sent).
        A device holding only some fields: None, and `apply` then sends only the others."""
        bodies: dict[int, dict[str, str]] = {}
        for index, change in enumerate(changes):
            body = self._body(change)
            if change.iccid and body is not None and "effectiveDate" not in body:
                bodies[index] = body
        indexes = list(bodies)
        chunks = [indexes[i : i + MAX_DETAILS_ICCIDS] for i in range(0, len(indexes), MAX_DETAILS_ICCIDS)]
        out: list[DeviceResult | None] = [None] * len(changes)

        async def check(chunk: list[int]) -> None:
            iccids = sorted({str(changes[i].iccid) for i in chunk})
            try:
                terminals, log = await self.get_terminals(iccids, " (already applied?)")
            except CarrierError:
                return  # cannot tell; the caller re-sends and records that outcome
            parts = {i: _held_fields(terminals.get(str(changes[i].iccid), {}), bodies[i]) for i in chunk}
            seen = [i for i in chunk if parts[i]]
            logs = shared_logs(log, [changes[i] for i in seen], "Jasper SOAP GetTerminalDetails")
            for i, entries in zip(seen, logs, strict=True):
                if len(parts[i]) < len(bodies[i]):
                    self._held[changes[i].device_change_id] = (parts[i], entries)
                    continue
                out[i] = device_result(
                    changes[i],
                    DeviceChangeStatus.PROCESSED,
                    f"already in effect at Jasper: {edit_summary(bodies[i])}",
                    jasper_columns(bodies[i], self.field_map),
                    log=entries,
                )

        await self.http.map_bounded(chunks, check)
        return out

    def _body(self, change: DeviceChange) -> dict[str, str] | None:
        try:
            return jasper_edit_body(change, self.field_map)
        except ValueError:
            return None

    async def _apply_one(self, change: DeviceChange) -> DeviceResult:
        if not change.iccid:
            return device_result(change, DeviceChangeStatus.API_FAILED, "no ICCID: Jasper edits devices by ICCID")
        try:
            body = jasper_edit_body(change, self.field_map)
            day = soap_effective_date(body.get("effectiveDate"))
        except ValueError as exc:
            return device_result(change, DeviceChangeStatus.API_FAILED, str(exc))
        edits = {k: v for k, v in body.items() if k != "effectiveDate"}
        held, read_back = self._held.pop(change.device_change_id, ({}, []))
        held = {k: v for k, v in held.items() if day is None and edits.get(k) == v}
        log: list[LogEntry] = list(read_back) if held else []
        done: list[str] = list(held)
        for field, value in edits.items():
            if field in held:
                continue  # read back by `already_applied`: in effect since an earlier run
            try:
                await self._edit(change, change.iccid, field, value, day, log)
            except (CarrierError, ValueError) as exc:
                # ValueError: zeep/lxml cannot write the value into an envelope (a character XML
                # does not allow); nothing was sent for this field.
                if isinstance(exc, CarrierError):
                    detail = failure_detail(exc, self.secrets)
                else:
                    detail = redact_detail(f"cannot be sent over SOAP: {exc}", self.secrets)
                if done:
                    detail = f"{edit_summary({k: edits[k] for k in done})} applied; {field} not: {detail}"
                return device_result(change, DeviceChangeStatus.API_FAILED, detail, log=log)
            done.append(field)
        sent = {**edits, "effectiveDate": day.isoformat()} if day else edits
        result = applied_result(change, sent, log, self.field_map)
        if held:
            result.detail += f" ({edit_summary(held)} was already in effect)"
        return result

    async def _edit(
        self, change: DeviceChange, iccid: str, field: str, value: str, day: dt.date | None, log: list[LogEntry]
    ) -> None:
        """One EditTerminal under the account's retry policy; before re-sending after an answer
        whose outcome is unknown, the field is read back and an edit already in effect is not sent
        again. Raises the last CarrierError when the tries run out (its log moved into `log`)."""
        content = self.wire.edit_envelope(_message_id(f"dc{change.device_change_id}"), iccid, field, value, day)
        description = f"Jasper SOAP EditTerminal {iccid} {field}"
        unsure = False
        async for tried in self.http.retrying():
            with tried:
                if unsure and day is None and await self._holds(iccid, {field: value}, log):
                    return
                try:
                    result = await self.http.request(
                        "POST",
                        SERVICE_PATH,
                        content=content,
                        headers=self.wire.headers("EditTerminal"),
                        description=description,
                        attempt=tried.retry_state.attempt_number,
                    )
                except CarrierError as exc:
                    log.extend(exc.log)
                    exc.log = []
                    unsure = unsure or (isinstance(exc, TransientCarrierError) and not exc.over_limit)
                    raise
                log.extend(result.log)
                try:
                    self.wire.edit_reply(result.body)
                except ValueError as exc:
                    unsure = True
                    raise TransientCarrierError(
                        redact_detail(str(exc), self.secrets), status=result.response.status_code
                    ) from exc
                return

    async def _holds(self, iccid: str, edits: Mapping[str, str], log: list[LogEntry]) -> bool:
        """True when the device already holds `edits` (read back; False when it cannot be read)."""
        try:
            terminals, entries = await self.get_terminals([iccid], " (applied before the answer was lost?)")
        except CarrierError as exc:
            log.extend(exc.log)
            return False
        log.extend(entries)
        return holds_edits(terminals.get(iccid, {}), edits)


def _held_fields(terminal: Mapping[str, str], edits: Mapping[str, str]) -> dict[str, str]:
    """The fields of `edits` a terminal read back already holds (`holds_edits` field by field)."""
    return {k: v for k, v in edits.items() if holds_edits(terminal, {k: v})}


def _message_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
