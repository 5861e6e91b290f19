"""Client for Teal (teal.global eSIM / IoT): asynchronous, batched operations keyed by EID.

Wire format (reference/carriers.md section 4): headers `ApiKey` / `ApiSecret`; every operation
carries a unique `requestId` and a `callbackUrl` as query parameters (AMOP style [C]) and only
enqueues work. The synchronous reply is `{success, message, link:{operationResult:{href}}}`; the
outcome is fetched from the operation-result API (HTTP 102 Processing while running), and Teal
calls `callbackUrl` with `requestId=<id>` appended when it is ready.

Choices marked [I] (inferred, not confirmed by a public source):
- The operation result is fetched from `api/v1/operation-result?requestId=<id>` relative to the
  account's base URL rather than from the reply's href, so the requestId alone (stored as
  `carrier_request_id`) is enough to poll, even after a crash. AMOP reads the href and rewrites
  http->https, which suggests the href itself is not always usable as given.
- "Still processing" is recognised as HTTP 102 (if a transport ever surfaces it), HTTP 202, or a
  2xx body without `entries`. A literal 102 is an interim status in HTTP/1.1, so httpx skips it and
  then fails to read the rest; that ends as a transient error, and `poll` answers None (pending).
- Error envelope `{success:false, errorCode, message}`; per-entry results
  `{eid, success, errorCode?, errorMessage}`; GET `api/v1/esims` accepts an `eid` filter (if Teal
  ignored it, `already_applied` would not find the device and answer None, i.e. "re-send").
- A retried POST reuses its requestId (tenacity re-sends the same request), so Teal can
  de-duplicate it; the simulator does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from .base import (
    API_FAILED,
    CARRIER_RATE_PLAN_CHANGE,
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
from .http import MALFORMED, CarrierHttp, stated_wait_seconds

SUPPORTED_CHANGE_TYPES = frozenset({STATUS_UPDATE, CARRIER_RATE_PLAN_CHANGE})
DEFAULT_BATCH_SIZE = 100
TEAL_CALLS_PER_MINUTE = 1000
TEAL_RATE_PER_SECOND = TEAL_CALLS_PER_MINUTE / 60.0  # ~16.6: what the service provider should set
ENABLED_STATUSES = frozenset({"online", "waiting"})
STATUSES = ENABLED_STATUSES | {"stopped"}
TRANSIENT_CODES = frozenset({"GENERIC_ERROR"})
PENDING_STATUSES = frozenset({102, 202})
NO_EID = "Teal needs the device's EID; this device has none"

ENABLE_PATH = "api/v1/esims/enable"
DISABLE_PATH = "api/v1/esims/disable"
ASSIGN_PLAN_PATH = "api/v1/esims/assign-plan"
ESIMS_PATH = "api/v1/esims"
OPERATION_RESULT_PATH = "api/v1/operation-result"  # [I]


def new_request_id() -> str:
    """A fresh Teal requestId: uuid4 hex, 32 alphanumerics as Teal recommends."""
    return uuid.uuid4().hex


def teal_error(response: httpx.Response, body: Any) -> tuple[str | None, str]:
    """(errorCode, message) from Teal's error envelope [I], tolerating other shapes."""
    if isinstance(body, dict):
        code = body.get("errorCode")
        message = body.get("message") or body.get("errorMessage")
        return (str(code) if code else None, str(message or response.reason_phrase))
    return None, (response.text.strip()[:300] or response.reason_phrase)


def classify_teal_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """Teal rules: 429, 5xx, GENERIC_ERROR and malformed bodies are transient; 401/UNAUTHORIZED
    is a configuration error; ESIM_NOT_FOUND, VALIDATION_ERROR, FLOW_RESTRICTED_ERROR and other
    4xx (or a 2xx with `success: false`) are business refusals. 102/202 are "still processing"."""
    status = response.status_code
    if status in PENDING_STATUSES:
        return None
    ok = 200 <= status < 300
    if ok and (body is MALFORMED or (body is not None and not isinstance(body, dict))):
        return TransientCarrierError("malformed response body from Teal", status=status)
    if ok and not (isinstance(body, dict) and body.get("success") is False):
        return None
    code, message = teal_error(response, body)
    text = f"[{code}] {message}" if code else message
    if status == 429:
        return TransientCarrierError(text, status=status, code=code, over_limit=True,
                                     retry_after=stated_wait_seconds(response, body))
    if status >= 500 or body is MALFORMED or code in TRANSIENT_CODES:
        return TransientCarrierError(f"HTTP {status}: {text}", status=status, code=code)
    if status == 401 or code == "UNAUTHORIZED":
        return BusinessCarrierError(
            f"Teal rejected the ApiKey/ApiSecret ({message}); check the service provider's "
            "credentials", code=code or "UNAUTHORIZED", status=status)
    return BusinessCarrierError(message, code=code, status=status)


def operation_of(change: DeviceChange) -> tuple[str, Any, dict]:
    """(path, body entry, new_values) for one change. Raises ValueError with a reason a person can
    act on when the change cannot be sent to Teal."""
    if not change.eid:
        raise ValueError(NO_EID)
    target = change.target or {}
    if change.change_type == STATUS_UPDATE:
        status = str(target.get("status") or "").strip().lower()
        if status not in STATUSES:
            raise ValueError(f"Teal status must be one of online, waiting, stopped (got "
                             f"{target.get('status')!r})")
        path = ENABLE_PATH if status in ENABLED_STATUSES else DISABLE_PATH
        return path, change.eid, {"status": status}
    if change.change_type == CARRIER_RATE_PLAN_CHANGE:
        plan = target.get("carrier_rate_plan")
        if not plan:
            raise ValueError("no carrier_rate_plan (Teal planUuid) to assign")
        return ASSIGN_PLAN_PATH, {"eid": change.eid, "planUuid": str(plan)}, {
            "carrier_rate_plan": str(plan)}
    raise ValueError(f"change type {change.change_type} is not applied through the Teal API")


def parse_teal_callback(payload: dict) -> list[AsyncOutcome]:
    """The requestId a Teal callback announces, as one "fetch now" outcome. Teal's callback only
    says `requestId=<id>` (query parameter, appended to the callbackUrl); it is looked for at the
    top level and under `query`/`query_params`/`params`/`body`/`json`, however the callback
    endpoint stored it. Anything else is noise (empty list)."""
    if not isinstance(payload, dict):
        return []
    places = [payload] + [payload[k] for k in ("query", "query_params", "params", "body", "json")
                          if isinstance(payload.get(k), dict)]
    for place in places:
        rid = place.get("requestId") or place.get("request_id")
        if isinstance(rid, list):
            rid = rid[0] if rid else None
        if isinstance(rid, str) and rid.strip():
            return [AsyncOutcome(rid.strip(), "", PROCESSING, "result ready")]
    return []


class TealClient:
    """AsyncCarrierAdapter for Teal: batched enable/disable/assign-plan, polled or called back."""

    integration = "teal"
    callback_name = "teal"

    def __init__(self, account: CarrierAccount, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.account = account
        self.batch_size = max(1, batch_size)
        headers = {"ApiKey": account.username, "ApiSecret": account.secret}
        self.http = CarrierHttp(account, headers, classify=classify_teal_response, label="Teal")

    @property
    def callback_url(self) -> str | None:
        """Where Teal should call back, or None (then results are only polled)."""
        base = self.account.callback_base_url
        return f"{base.rstrip('/')}/callbacks/{self.callback_name}" if base else None

    def supports(self, change_type: int) -> bool:
        """Teal's API applies status (enable/disable) and carrier plan (assign-plan) changes."""
        return change_type in SUPPORTED_CHANGE_TYPES

    def parse_callback(self, payload: dict) -> list[AsyncOutcome]:
        return parse_teal_callback(payload)

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Send the changes in batches (one request per operation and `batch_size` devices).
        Accepted rows come back PROCESSING with `carrier_request_id` = the request's requestId;
        rows that cannot be sent, or that Teal refuses outright, come back API_FAILED."""
        if not self.account.write_enabled:
            raise WritesDisabledError(
                f"writes are disabled for service provider {self.account.service_provider_id}; "
                "nothing was sent to Teal")
        results: list[DeviceResult | None] = [None] * len(changes)
        groups: dict[str, list[tuple[int, Any]]] = {}
        for index, change in enumerate(changes):
            try:
                path, entry, _ = operation_of(change)
            except ValueError as exc:
                results[index] = _result(change, API_FAILED, str(exc))
                continue
            groups.setdefault(path, []).append((index, entry))
        jobs = [(path, chunk) for path, items in groups.items()
                for chunk in _chunks(items, self.batch_size)]

        async def send(job: tuple[str, list[tuple[int, Any]]]) -> None:
            path, chunk = job
            for index, result in zip((i for i, _ in chunk),
                                     await self._send(path, chunk, changes)):
                results[index] = result

        await self._run_all(jobs, send)
        return [r for r in results if r is not None]

    async def _send(self, path: str, chunk: list[tuple[int, Any]],
                    changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        request_id = new_request_id()
        params = {"requestId": request_id}
        if self.callback_url:
            params["callbackUrl"] = self.callback_url
        members = [changes[i] for i, _ in chunk]
        desc = f"Teal POST {path} requestId={request_id} ({len(members)} eSIMs)"
        try:
            call = await self.http.request("POST", path, json_body={"entries": [e for _, e in chunk]},
                                           params=params, description=desc)
        except CarrierError as exc:
            logs = _shared_logs(exc.log, members, desc)
            if _maybe_accepted(exc):
                # The last answer was lost (timeout) or unreadable: Teal may have enqueued it.
                # Keep the requestId so poll settles it (an unknown request ends API_FAILED).
                detail = f"sent to Teal, answer not confirmed ({exc.message}); requestId {request_id}"
                return [_result(c, PROCESSING, detail, request_id=request_id, log=lg)
                        for c, lg in zip(members, logs)]
            detail = str(exc) if isinstance(exc, BusinessCarrierError) else exc.message
            if isinstance(exc, TransientCarrierError):
                detail = f"retries exhausted: {detail}"
            return [_result(c, API_FAILED, detail, log=lg) for c, lg in zip(members, logs)]
        body = call.body if isinstance(call.body, dict) else {}
        detail = f"accepted by Teal ({path.rsplit('/', 1)[-1]}), requestId {request_id}"
        if body.get("message"):
            detail += f": {body['message']}"
        logs = _shared_logs(call.log, members, desc)
        return [_result(c, PROCESSING, detail, request_id=request_id, log=lg)
                for c, lg in zip(members, logs)]

    # -- poll -------------------------------------------------------------------------------------

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """One operation-result call per requestId. None while Teal is still processing (or the
        answer could not be read: the engine polls again or times the row out); PROCESSED /
        API_FAILED per device once the result lists it."""
        results: list[DeviceResult | None] = [None] * len(changes)
        by_request: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            if change.carrier_request_id:
                by_request.setdefault(change.carrier_request_id, []).append(index)

        async def fetch(item: tuple[str, list[int]]) -> None:
            request_id, indexes = item
            for index, result in zip(indexes, await self._poll_one(
                    request_id, [changes[i] for i in indexes])):
                results[index] = result

        await self._run_all(list(by_request.items()), fetch)
        return results

    async def _poll_one(self, request_id: str, members: list[DeviceChange]
                        ) -> list[DeviceResult | None]:
        desc = f"Teal GET operation result requestId={request_id}"
        try:
            call = await self.http.request("GET", OPERATION_RESULT_PATH,
                                           params={"requestId": request_id}, description=desc)
        except BusinessCarrierError as exc:
            if exc.status == 401 or exc.code == "UNAUTHORIZED":
                return [None] * len(members)  # cannot tell; the change may well be applied
            logs = _shared_logs(exc.log, members, desc)
            return [_result(c, API_FAILED, f"Teal has no result for request {request_id}: {exc}",
                            request_id=request_id, log=lg) for c, lg in zip(members, logs)]
        except CarrierError:
            return [None] * len(members)
        body = call.body if isinstance(call.body, dict) else {}
        entries = body.get("entries")
        if call.response.status_code in PENDING_STATUSES or not isinstance(entries, list):
            return [None] * len(members)
        by_eid = {str(e.get("eid")): e for e in entries if isinstance(e, dict)}
        logs = _shared_logs(call.log, members, desc)
        out: list[DeviceResult | None] = []
        for change, log in zip(members, logs):
            entry = by_eid.get(str(change.eid))
            if entry is None and len(entries) == 1 == len(members) and isinstance(entries[0], dict):
                entry = entries[0]  # a single-entry result that does not echo the EID [I]
            out.append(self._settle(change, request_id, entry, log))
        return out

    def _settle(self, change: DeviceChange, request_id: str, entry: dict | None,
                log: list[LogEntry]) -> DeviceResult:
        if entry is None:
            return _result(change, API_FAILED, f"Teal's result for request {request_id} has no "
                           f"entry for EID {change.eid}", request_id=request_id, log=log)
        if entry.get("success") is True:
            try:
                _, _, new_values = operation_of(change)
            except ValueError:
                new_values = {}
            return _result(change, PROCESSED, f"applied by Teal (requestId {request_id})",
                           new_values, request_id=request_id, log=log)
        code = entry.get("errorCode")
        message = entry.get("errorMessage") or entry.get("message") or "refused by Teal"
        detail = f"[{code}] {message}" if code else str(message)
        return _result(change, API_FAILED, detail, request_id=request_id, log=log)

    # -- already applied --------------------------------------------------------------------------

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Read each eSIM (`GET api/v1/esims?eid=`); PROCESSED when it already holds the target
        (enabled = online or waiting; stopped; or the planUuid), else None so the caller re-sends."""
        results: list[DeviceResult | None] = [None] * len(changes)

        async def check(index: int) -> None:
            results[index] = await self._check_one(changes[index])

        await self._run_all(list(range(len(changes))), check)
        return results

    async def _check_one(self, change: DeviceChange) -> DeviceResult | None:
        try:
            _, _, wanted = operation_of(change)
        except ValueError:
            return None
        params = {"requestId": new_request_id(), "eid": change.eid, "offset": 0, "limit": 1}
        try:
            call = await self.http.request("GET", ESIMS_PATH, params=params,
                                           description=f"Teal GET esim {change.eid} (already applied?)")
        except CarrierError:
            return None
        entries = call.body.get("entries") if isinstance(call.body, dict) else None
        esim = next((e for e in entries or [] if isinstance(e, dict) and e.get("eid") == change.eid),
                    None)
        if esim is None:
            return None
        held: dict | None = None
        if "status" in wanted:
            actual = str(esim.get("deviceStatus") or "").lower()
            same_side = (actual in ENABLED_STATUSES) == (wanted["status"] in ENABLED_STATUSES)
            held = {"status": actual} if actual in STATUSES and same_side else None
        elif str(esim.get("planUuid") or "") == wanted["carrier_rate_plan"]:
            held = wanted
        if held is None:
            return None
        return _result(change, PROCESSED, "already in effect at Teal: "
                       + ", ".join(f"{k}={v}" for k, v in held.items()), held, log=call.log)

    async def _run_all(self, items: Sequence[Any], one: Callable[[Any], Awaitable[None]]) -> None:
        """Run `one` over the items with at most the account's concurrency (64 if unlimited)."""
        if not items:
            return
        conc = self.account.max_concurrency
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await one(item)

        await asyncio.gather(*(worker() for _ in range(min(len(items), conc if conc > 0 else 64))))


def _chunks(items: list[tuple[int, Any]], size: int) -> list[list[tuple[int, Any]]]:
    """Split into requests of at most `size` entries, never repeating an EID inside one request
    (Teal's per-entry result is keyed by EID, so a repeat could not be told apart)."""
    out: list[list[tuple[int, Any]]] = []
    current: list[tuple[int, Any]] = []
    seen: set[str] = set()
    for item in items:
        eid = item[1]["eid"] if isinstance(item[1], dict) else item[1]
        if len(current) >= size or eid in seen:
            out.append(current)
            current, seen = [], set()
        current.append(item)
        seen.add(eid)
    if current:
        out.append(current)
    return out


def _maybe_accepted(exc: CarrierError) -> bool:
    """True when retries ran out on an answer that may hide an accepted request: a timeout, or a
    2xx whose body could not be read. A 429, 5xx or refused connection means it was not taken."""
    if not isinstance(exc, TransientCarrierError) or exc.over_limit:
        return False
    if exc.status is not None:
        return 200 <= exc.status < 300
    return exc.message.startswith("timed out")


def _shared_logs(log: list[LogEntry], members: list[DeviceChange], desc: str
                 ) -> list[list[LogEntry]]:
    """The first device of a batched request keeps the full exchange; the others get one short
    entry pointing at it, so a 100-device request is not stored 100 times."""
    if not members:
        return []
    last = log[-1] if log else None
    note = LogEntry(
        f"{desc}: full exchange logged on device change {members[0].device_change_id}",
        "", "", last.response_status if last else None, last.has_errors if last else True)
    return [list(log)] + [[note] for _ in members[1:]]


def _result(change: DeviceChange, status: str, detail: str, new_values: dict | None = None, *,
            request_id: str | None = None, log: list[LogEntry] | None = None) -> DeviceResult:
    return DeviceResult(change.device_change_id, status, detail, dict(new_values or {}),
                        request_id, list(log or []))
