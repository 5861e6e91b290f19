"""Client for AT&T Telegence (AT&T business mobility / APEX partner APIs).

Wire format (reference/carriers.md section 3; original-system.md section 8): static headers
`app-id` / `app-secret` (+ `Accept: application/json`); line changes are synchronous PATCHes of
`sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`; new lines are activated
asynchronously: a JSON array of up to 200 lines is POSTed, each answer item carries an activation
status id, and that id is polled until the line is active (or rejected). Telegence sends no
callbacks, so `parse_callback` always answers [] and `poll` is the only way to settle.

Choices marked [I] (inferred, not confirmed by a public source):
- Paths other than lineconfig: activation `POST sp/mobility/activation/api/v1/service`, its status
  `GET sp/mobility/activation/api/v1/service/{id}`, subscriber detail `GET` on the lineconfig path.
- Status body `{"mode": "suspend"|"restore"|"cancel", "reasonCode", "effectiveDate"}` (AMOP names
  the fields; casing and mode words are ours). Reason codes are not public: the default is
  `DEFAULT_REASON_CODE`, overridden by `account.extra["reason_code"]`, then by the row's
  `target["reason_code"]`.
- EditUsernameCostCenter: a PATCH of two service characteristics, `contactName` (the subscriber
  detail already returns it, so the edit can be read back) for the username and `costCenter` for
  the cost center (no public name exists for it).
- Activation answers: one item per submitted line, in order (items echoing `sim` are matched by
  it); a single item for a whole request is taken as a request-level id shared by its lines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from .base import (
    ACTIVATE_NEW_SERVICE,
    API_FAILED,
    CARRIER_RATE_PLAN_CHANGE,
    CHANGE_ICCID_AND_IMEI,
    EDIT_USERNAME_COST_CENTER,
    PROCESSED,
    PROCESSING,
    STATUS_UPDATE,
    AsyncOutcome,
    BusinessCarrierError,
    CarrierAccount,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    WritesDisabledError,
)
from .http import CarrierHttp
from .telegence_errors import classify_telegence_response, message_of

LINE_PATH = "sp/mobility/lineconfig/api/v1/service/{}"
ACTIVATION_PATH = "sp/mobility/activation/api/v1/service"  # [I]
ACTIVATION_STATUS_PATH = "sp/mobility/activation/api/v1/service/{}"  # [I]
ACTIVATION_BATCH_SIZE = 200  # AMOP's batch size per activation call
MAX_PARALLEL_REQUESTS = 10  # AMOP's MAX_PARALLEL_REQUESTS default, when the account sets none
DEFAULT_REASON_CODE = "CR"  # [I] "customer request"; AMOP reads real codes from its database
SWAP_REASON_CODE = "CUST_OWN_EQU"
USERNAME_CHARACTERISTIC = "contactName"
COST_CENTER_CHARACTERISTIC = "costCenter"  # [I]
SUPPORTED_CHANGE_TYPES = frozenset({STATUS_UPDATE, ACTIVATE_NEW_SERVICE, CARRIER_RATE_PLAN_CHANGE,
                                    CHANGE_ICCID_AND_IMEI, EDIT_USERNAME_COST_CENTER})
PENDING_STATUSES = frozenset({"pending", "reserved", "reserve", "inprogress", "in progress",
                              "submitted", "received"})
ACTIVE_STATUSES = frozenset({"active", "complete", "completed", "success", "successful"})
REJECTED_STATUSES = frozenset({"rejected", "reject", "failed", "failure", "error", "cancelled"})
# target status spelling -> (PATCH mode, subscriberStatus it leads to)
_MODES = {
    "a": ("restore", "A"), "active": ("restore", "A"), "restore": ("restore", "A"),
    "s": ("suspend", "S"), "suspend": ("suspend", "S"), "suspended": ("suspend", "S"),
    "c": ("cancel", "C"), "cancel": ("cancel", "C"), "cancelled": ("cancel", "C"),
    "canceled": ("cancel", "C"),
}


def telegence_date(value: Any = None, today: dt.date | None = None) -> str:
    """`yyyy-MM-ddZ` as AMOP sends it: the target's effective date, or today (UTC) when there is
    none or it has passed (a row retried after its date must not be refused as back-dated)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if not value:
        return today.isoformat() + "Z"
    text = str(value).strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        day = (when.astimezone(dt.timezone.utc) if when.tzinfo else when).date()
    except ValueError:
        try:
            day = dt.date.fromisoformat(text[:10])
        except ValueError:
            raise ValueError(f"effective_date {text!r} is not a date") from None
    return max(day, today).isoformat() + "Z"


def _characteristics(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in pairs.items()]


def line_update(change: DeviceChange, default_reason_code: str = DEFAULT_REASON_CODE
                ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(PATCH body, new_values, characteristics the line holds once applied) for a line change.
    Raises ValueError with a reason a person can act on when it cannot be expressed."""
    target = change.target or {}
    ct = change.change_type
    if ct == STATUS_UPDATE:
        wanted = str(target.get("status") or "").strip().lower()
        if wanted not in _MODES:
            raise ValueError(f"Telegence status must be A, S or C (got {target.get('status')!r})")
        mode, letter = _MODES[wanted]
        body = {"mode": mode, "reasonCode": str(target.get("reason_code") or default_reason_code),
                "effectiveDate": telegence_date(target.get("effective_date"))}
        return body, {"status": letter}, {"subscriberStatus": letter}
    if ct == CARRIER_RATE_PLAN_CHANGE:
        plan = target.get("carrier_rate_plan")
        if not plan:
            raise ValueError("no carrier_rate_plan (Telegence singleUserCode) to set")
        body = {"effectiveDate": telegence_date(target.get("effective_date")),
                "serviceCharacteristic": _characteristics({"singleUserCode": plan})}
        return body, {"carrier_rate_plan": str(plan)}, {"singleUserCode": str(plan)}
    if ct == CHANGE_ICCID_AND_IMEI:
        swap: dict[str, str] = {}
        if target.get("new_imei"):
            swap["IMEI"] = str(target["new_imei"])
        if target.get("new_iccid"):
            swap["sim"] = str(target["new_iccid"])
        if not swap:
            raise ValueError("no new_iccid or new_imei to send to Telegence")
        body = {"serviceCharacteristic": _characteristics({"reasonCode": SWAP_REASON_CODE, **swap})}
        values = {"iccid": swap["sim"]} if "sim" in swap else {}
        if "IMEI" in swap:
            values["imei"] = swap["IMEI"]
        held = {("BLIMEI" if k == "IMEI" else k): v for k, v in swap.items()}
        return body, values, held
    if ct == EDIT_USERNAME_COST_CENTER:
        edits: dict[str, str] = {}
        values = {}
        if target.get("username") is not None:
            edits[USERNAME_CHARACTERISTIC] = values["username"] = str(target["username"])
        if target.get("cost_center") is not None:
            edits[COST_CENTER_CHARACTERISTIC] = values["cost_center"] = str(target["cost_center"])
        if not edits:
            raise ValueError("no username or cost_center to send to Telegence")
        return {"serviceCharacteristic": _characteristics(edits)}, values, edits
    raise ValueError(f"change type {ct} is not a Telegence line update")


def activation_line(change: DeviceChange, ban: str, extra: dict[str, Any]) -> dict[str, Any]:
    """One element of the activation array (MobilityController.cs shape). Raises ValueError when a
    field Telegence needs is missing."""
    target = change.target or {}
    plan = target.get("carrier_rate_plan")
    zip_code = target.get("service_zip_code") or extra.get("service_zip_code")
    missing = [name for name, value in (("ICCID", change.iccid), ("IMEI", change.imei),
                                        ("carrier_rate_plan", plan),
                                        ("service_zip_code", zip_code)) if not value]
    if missing:
        raise ValueError("cannot activate on Telegence without " + ", ".join(missing))
    chars = {"singleUserCode": plan, "serviceZipCode": zip_code,
             "equipmentType": extra.get("equipment_type", "G"),
             "deviceTechnologyType": extra.get("device_technology_type", "UMTS"),
             "IMEI": change.imei, "sim": change.iccid}
    for i, code in enumerate(target.get("offering_codes") or [], start=1):
        chars[f"offeringCode{i}"] = code
    service: dict[str, Any] = {"serviceCharacteristic": _characteristics(chars),
                               "serviceSpecification": {"id": "12", "href": "Mobility Services"}}
    if extra.get("service_qualification_id"):
        service["serviceQualification"] = {"id": str(extra["service_qualification_id"])}
    return {"billingAccount": {"id": str(ban)}, "service": service}


def characteristic_map(node: Any) -> dict[str, str]:
    """`serviceCharacteristic` [{name, value}] of a detail/status object as a dict."""
    if not isinstance(node, dict):
        return {}
    chars = node.get("serviceCharacteristic")
    if not isinstance(chars, list):
        return {}
    return {str(c.get("name")): str(c.get("value")) for c in chars
            if isinstance(c, dict) and c.get("name") is not None}


def activation_outcome(change: DeviceChange, item: dict[str, Any]) -> DeviceResult | None:
    """The DeviceResult an activation-status item means for one line; None while pending (or an
    unknown status: the engine polls again and gives up after `max_polls`)."""
    service = item.get("service") if isinstance(item.get("service"), dict) else {}
    status = str(service.get("status") or item.get("interactionStatus") or "").strip().lower()
    request_id = change.carrier_request_id
    if status in ACTIVE_STATUSES:
        number = service.get("subscriberNumber")
        values = {"status": "A"}
        if number:
            values["msisdn"] = str(number)
        plan = (change.target or {}).get("carrier_rate_plan")
        if plan:
            values["carrier_rate_plan"] = str(plan)
        return DeviceResult(change.device_change_id, PROCESSED,
                            f"activated by Telegence as {number or '(number not reported)'} "
                            f"(activation {request_id})", values, request_id)
    if status in REJECTED_STATUSES:
        _, reason = message_of(service.get("error")) if service.get("error") else (None, None)
        reason = reason or str(item.get("interactionStatus") or status)
        return DeviceResult(change.device_change_id, API_FAILED,
                            f"activation rejected by Telegence: {reason} (activation {request_id})",
                            {}, request_id)
    return None


class TelegenceClient:
    """AsyncCarrierAdapter for Telegence: concurrent line PATCHes (sync) and batched, polled
    activations (async)."""

    integration = "telegence"
    callback_name = "telegence"
    max_polls = 6  # the seed's "service activation: 6 retries"; the reconcile engine enforces it
    poll_interval_seconds = 300  # AMOP re-checked activations every 300 s

    def __init__(self, account: CarrierAccount, *, default_reason_code: str | None = None,
                 batch_size: int = ACTIVATION_BATCH_SIZE) -> None:
        self.account = account
        self.extra = {str(k).lower(): v for k, v in (account.extra or {}).items()}
        self.default_reason_code = (default_reason_code or self.extra.get("reason_code")
                                    or DEFAULT_REASON_CODE)
        self.batch_size = max(1, min(batch_size, ACTIVATION_BATCH_SIZE))
        headers = {"app-id": account.username, "app-secret": account.secret}
        self.http = CarrierHttp(account, headers, classify=classify_telegence_response,
                                label="Telegence")

    def supports(self, change_type: int) -> bool:
        """Line status, plan, SIM/IMEI and username/cost-center edits; new-line activation."""
        return change_type in SUPPORTED_CHANGE_TYPES

    def parse_callback(self, payload: dict) -> list[AsyncOutcome]:
        """Telegence sends no callbacks: activations are settled by `poll` only."""
        return []

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Line changes: one PATCH each, concurrently. Activations: arrays of up to 200 lines,
        answered PROCESSING with the activation id. Per-device failures are API_FAILED."""
        if not self.account.write_enabled:
            raise WritesDisabledError(
                f"writes are disabled for service provider {self.account.service_provider_id}; "
                "nothing was sent to Telegence")
        results: list[DeviceResult | None] = [None] * len(changes)
        lines = [i for i, c in enumerate(changes) if c.change_type != ACTIVATE_NEW_SERVICE]
        activations = [i for i, c in enumerate(changes) if c.change_type == ACTIVATE_NEW_SERVICE]

        async def patch(index: int) -> None:
            results[index] = await self._patch_one(changes[index])

        jobs = self._activation_jobs(changes, activations, results)

        async def activate(job: list[tuple[int, dict]]) -> None:
            for index, result in zip([i for i, _ in job], await self._activate(job, changes)):
                results[index] = result

        await asyncio.gather(self._run_all(lines, patch), self._run_all(jobs, activate))
        return [r for r in results if r is not None]

    async def _patch_one(self, change: DeviceChange) -> DeviceResult:
        if not change.msisdn:
            return _result(change, API_FAILED, "no MSISDN: Telegence updates lines by subscriber "
                           "number and this device has none")
        try:
            body, values, _ = line_update(change, self.default_reason_code)
        except ValueError as exc:
            return _result(change, API_FAILED, str(exc))
        desc = f"Telegence PATCH line {change.msisdn}"
        try:
            call = await self.http.request("PATCH", LINE_PATH.format(quote(change.msisdn, safe="")),
                                           json_body=body, description=desc)
        except CarrierError as exc:
            return _result(change, API_FAILED, _failure_detail(exc), log=exc.log)
        summary = ", ".join(f"{k}={v}" for k, v in values.items())
        effective = body.get("effectiveDate")
        if effective and effective > telegence_date():
            return _result(change, PROCESSED, f"scheduled by Telegence for {effective}: {summary}",
                           log=call.log)
        return _result(change, PROCESSED, f"applied: {summary}", values, log=call.log)

    def _activation_jobs(self, changes: Sequence[DeviceChange], indexes: list[int],
                         results: list[DeviceResult | None]) -> list[list[tuple[int, dict]]]:
        """Valid activation lines cut into requests of at most `batch_size`; invalid rows are
        failed in `results` without a call."""
        ban = self.extra.get("ban")
        ready: list[tuple[int, dict]] = []
        for index in indexes:
            if not ban:
                results[index] = _result(changes[index], API_FAILED, "no billing account: set "
                                         "extra['ban'] on the Telegence service provider")
                continue
            try:
                ready.append((index, activation_line(changes[index], str(ban), self.extra)))
            except ValueError as exc:
                results[index] = _result(changes[index], API_FAILED, str(exc))
        return [ready[i:i + self.batch_size] for i in range(0, len(ready), self.batch_size)]

    async def _activate(self, job: list[tuple[int, dict]], changes: Sequence[DeviceChange]
                        ) -> list[DeviceResult]:
        members = [changes[i] for i, _ in job]
        desc = f"Telegence POST activation ({len(members)} lines)"
        try:
            call = await self.http.request("POST", ACTIVATION_PATH,
                                           json_body=[line for _, line in job], description=desc)
        except CarrierError as exc:
            logs = _shared_logs(exc.log, members, desc)
            return [_result(c, API_FAILED, _failure_detail(exc), log=lg)
                    for c, lg in zip(members, logs)]
        items = call.body if isinstance(call.body, list) else [call.body]
        ids = _activation_ids(items, members)
        logs = _shared_logs(call.log, members, desc)
        out = []
        for change, request_id, log in zip(members, ids, logs):
            if request_id:
                out.append(_result(change, PROCESSING, f"activation accepted by Telegence, status "
                                   f"id {request_id}", request_id=request_id, log=log))
            else:
                out.append(_result(change, API_FAILED, "Telegence's activation answer has no "
                                   "status id for this line", log=log))
        return out

    # -- poll -------------------------------------------------------------------------------------

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """One status GET per activation id: PROCESSED (active, with the new subscriber number),
        API_FAILED (rejected, or Telegence does not know the id), None while pending or when the
        answer could not be read."""
        results: list[DeviceResult | None] = [None] * len(changes)
        by_id: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            if change.carrier_request_id:
                by_id.setdefault(change.carrier_request_id, []).append(index)

        async def fetch(item: tuple[str, list[int]]) -> None:
            request_id, indexes = item
            answers = await self._poll_one(request_id, [changes[i] for i in indexes])
            for index, answer in zip(indexes, answers):
                results[index] = answer

        await self._run_all(list(by_id.items()), fetch)
        return results

    async def _poll_one(self, request_id: str, members: list[DeviceChange]
                        ) -> list[DeviceResult | None]:
        desc = f"Telegence GET activation status {request_id}"
        try:
            call = await self.http.request(
                "GET", ACTIVATION_STATUS_PATH.format(quote(request_id, safe="")), description=desc)
        except BusinessCarrierError as exc:
            if exc.status != 404:
                return [None] * len(members)  # e.g. credentials: cannot tell, keep waiting
            logs = _shared_logs(exc.log, members, desc)
            return [_result(c, API_FAILED, f"Telegence has no activation {request_id}: {exc}",
                            request_id=request_id, log=lg) for c, lg in zip(members, logs)]
        except CarrierError:
            return [None] * len(members)
        items = [i for i in (call.body if isinstance(call.body, list) else [call.body])
                 if isinstance(i, dict)]
        out: list[DeviceResult | None] = []
        for change in members:
            item = _item_for(change, items)
            answer = activation_outcome(change, item) if item is not None else None
            if answer is not None:
                answer.log = list(call.log)
            out.append(answer)
        return out

    # -- already applied --------------------------------------------------------------------------

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Line changes: read the subscriber detail and compare subscriberStatus / singleUserCode
        / sim / BLIMEI / contactName / costCenter with the target. Activations with a known
        status id: PROCESSED if that activation is active. Anything else: None (re-send)."""
        results: list[DeviceResult | None] = [None] * len(changes)

        async def check(index: int) -> None:
            change = changes[index]
            if change.change_type == ACTIVATE_NEW_SERVICE:
                if change.carrier_request_id:
                    answer = (await self._poll_one(change.carrier_request_id, [change]))[0]
                    results[index] = answer if answer and answer.status == PROCESSED else None
                return
            results[index] = await self._check_line(change)

        await self._run_all(list(range(len(changes))), check)
        return results

    async def get_subscriber(self, subscriber_number: str) -> dict[str, Any]:
        """Subscriber detail (`GET` on the lineconfig path [I]); raises CarrierError."""
        call = await self.http.request(
            "GET", LINE_PATH.format(quote(subscriber_number, safe="")),
            description=f"Telegence GET line {subscriber_number}")
        return call.body if isinstance(call.body, dict) else {}

    async def _check_line(self, change: DeviceChange) -> DeviceResult | None:
        if not change.msisdn:
            return None
        try:
            body, values, held = line_update(change, self.default_reason_code)
        except ValueError:
            return None
        if body.get("effectiveDate", "") > telegence_date():
            return None  # a future-dated change cannot be seen in the line yet
        desc = f"Telegence GET line {change.msisdn} (already applied?)"
        try:
            call = await self.http.request("GET", LINE_PATH.format(quote(change.msisdn, safe="")),
                                           description=desc)
        except CarrierError:
            return None
        actual = characteristic_map(call.body)
        if all(actual.get(k) == v for k, v in held.items()):
            summary = ", ".join(f"{k}={v}" for k, v in held.items())
            return _result(change, PROCESSED, f"already in effect at Telegence: {summary}",
                           values, log=call.log)
        return None

    async def _run_all(self, items: Sequence[Any], one: Callable[[Any], Awaitable[None]]) -> None:
        """Run `one` over the items with the account's concurrency (AMOP's 10 when unset)."""
        if not items:
            return
        conc = self.account.max_concurrency
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await one(item)

        workers = min(len(items), conc if conc > 0 else MAX_PARALLEL_REQUESTS)
        await asyncio.gather(*(worker() for _ in range(workers)))


def _activation_ids(items: list[Any], members: list[DeviceChange]) -> list[str | None]:
    """The status id of each submitted line: by echoed `sim` where present, else by position,
    else one request-level id shared by all [I]."""
    items = [i for i in items if isinstance(i, dict) and i.get("id") is not None]
    by_sim = {characteristic_map(i.get("service")).get("sim"): str(i["id"]) for i in items}
    by_sim.pop(None, None)
    if by_sim and all(c.iccid in by_sim for c in members):
        return [by_sim[c.iccid] for c in members]
    if len(items) == len(members):
        return [str(i["id"]) for i in items]
    if len(items) == 1:
        return [str(items[0]["id"])] * len(members)
    return [None] * len(members)


def _item_for(change: DeviceChange, items: list[dict]) -> dict | None:
    """The status item about this line: the one echoing its ICCID, else the only one."""
    for item in items:
        if change.iccid and characteristic_map(item.get("service")).get("sim") == change.iccid:
            return item
    return items[0] if len(items) == 1 else None


def _failure_detail(exc: CarrierError) -> str:
    if isinstance(exc, TransientCarrierError):
        return f"retries exhausted: {exc.message}"
    return str(exc) if isinstance(exc, BusinessCarrierError) else exc.message


def _shared_logs(log: list[LogEntry], members: list[DeviceChange], desc: str
                 ) -> list[list[LogEntry]]:
    """The first line of a batched request keeps the full exchange; the others a pointer to it,
    so a 200-line request body is not stored 200 times."""
    if not members:
        return []
    last = log[-1] if log else None
    note = LogEntry(f"{desc}: full exchange logged on device change {members[0].device_change_id}",
                    "", "", last.response_status if last else None,
                    last.has_errors if last else True)
    return [list(log)] + [[note] for _ in members[1:]]


def _result(change: DeviceChange, status: str, detail: str, new_values: dict | None = None, *,
            request_id: str | None = None, log: list[LogEntry] | None = None) -> DeviceResult:
    return DeviceResult(change.device_change_id, status, detail, dict(new_values or {}),
                        request_id, list(log or []))
