"""Client for Teal (teal.global eSIM / IoT): asynchronous, batched operations keyed by EID. This
module holds the calls, their batching (at most `batch_size` entries per request, never one EID
twice in a request), polling of the operation-result API and what each answer means for a device
row. The wire format (headers, paths, error envelope, answer classification, callback parsing and
the [I] choices about it) is in `teal_wire.py`, so it can be read and tested without I/O.

Every operation carries a unique `requestId` and a `callbackUrl` and only enqueues work; rows stay
PROCESSING until `parse_callback` (a "fetch now" for that requestId) or `poll` settles them from
the operation result. A retried POST reuses its requestId, so Teal can de-duplicate it.

Reads are queued too (issue 17). Public integrations read one eSIM with
`GET api/v1/esims/info?requestId=&eid=&limit=1`, whose answer is only
`{success, link:{operationResult:{href}}}`, and take the eSIM from
`GET api/v1/operation-result?requestId=` once it stops answering 102 Processing (SIMETRY KB
154000189151 [D]; AMOP github.com/hemalathapampana/TealLambdas TealAPIService.cs and
AltaworxTealAWSGetDevices.cs [C]; the LiveU batch tools' `get_esim_info` + `get_operation_result`
and a Node SimetryAdapter's `pollOperationResult` [C]; details and the [I] choices in
`teal_wire.py` and `bulkchange_pipeline_tests/contracts/teal.yaml`). `already_applied` follows
that flow: request, read the result until it is ready (bounded by `read_budget_seconds`), judge.
`deviceStatus` is upper case on the wire (`ONLINE`) [C] but lower case in reference/carriers.md
[C], so it is compared case-insensitively; our domain keeps the lower-case names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ..domain import ChangeType, DeviceChangeStatus, Integration
from .base import (
    BusinessCarrierError,
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
from .results import batch_result, device_result, failure_detail, shared_logs
from .teal_wire import (
    DEFAULT_BATCH_SIZE,
    ENABLED_STATUSES,
    ESIM_INFO_PATH,
    OPERATION_RESULT_PATH,
    READ_BUDGET_SECONDS,
    READ_FIRST_WAIT_SECONDS,
    READ_LONGEST_WAIT_SECONDS,
    STATUSES,
    SUPPORTED_CHANGE_TYPES,
    classify_teal_response,
    new_request_id,
    operation_of,
    parse_teal_callback,
    result_entries,
)

__all__ = ["TealClient"]


class TealClient(CarrierAdapter):
    """CarrierAdapter for Teal: batched enable/disable/assign-plan, polled or called back."""

    integration = Integration.TEAL
    callback_name = "teal"
    parse_callback = staticmethod(parse_teal_callback)

    def __init__(
        self,
        account: CarrierAccount,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        read_budget_seconds: float = READ_BUDGET_SECONDS,
    ) -> None:
        self.account = account
        self.batch_size = max(1, batch_size)
        self.read_budget_seconds = read_budget_seconds
        headers = {"ApiKey": account.username, "ApiSecret": account.secret}
        self.http = CarrierHttp(account, headers, classify=classify_teal_response, label="Teal")
        # A row's reason is built from the carrier's answer, which may echo the request: masked with these.
        self._secrets = [account.secret]

    @property
    def callback_url(self) -> str | None:
        """Where Teal should call back, or None (then results are only polled)."""
        base = self.account.callback_base_url
        return f"{base.rstrip('/')}/callbacks/{self.callback_name}" if base else None

    def supports(self, change_type: ChangeType) -> bool:
        """Teal's API applies status (enable/disable) and carrier plan (assign-plan) changes."""
        return change_type in SUPPORTED_CHANGE_TYPES

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- apply ------------------------------------------------------------------------------------

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Send the changes in batches (one request per operation and `batch_size` devices).
        Accepted rows come back PROCESSING with `carrier_request_id` = the request's requestId;
        rows that cannot be sent, or that Teal refuses outright, come back API_FAILED."""
        require_writes(self.account, "Teal")
        results: list[DeviceResult | None] = [None] * len(changes)
        groups: dict[str, list[tuple[int, Any]]] = {}
        for index, change in enumerate(changes):
            try:
                path, entry, _ = operation_of(change)
            except ValueError as exc:
                results[index] = device_result(change, DeviceChangeStatus.API_FAILED, str(exc))
                continue
            groups.setdefault(path, []).append((index, entry))
        jobs = [(path, chunk) for path, items in groups.items() for chunk in _chunks(items, self.batch_size)]

        async def send(job: tuple[str, list[tuple[int, Any]]]) -> None:
            path, chunk = job
            for index, result in zip((i for i, _ in chunk), await self._send(path, chunk, changes), strict=True):
                results[index] = result

        await self.http.map_bounded(jobs, send)
        return [r for r in results if r is not None]

    async def _send(
        self, path: str, chunk: list[tuple[int, Any]], changes: Sequence[DeviceChange]
    ) -> list[DeviceResult]:
        request_id = new_request_id()
        params = {"requestId": request_id}
        if self.callback_url:
            params["callbackUrl"] = self.callback_url
        members = [changes[i] for i, _ in chunk]
        desc = f"Teal POST {path} requestId={request_id} ({len(members)} eSIMs)"
        try:
            call = await self.http.request(
                "POST", path, json_body={"entries": [e for _, e in chunk]}, params=params, description=desc
            )
        except CarrierError as exc:
            if _maybe_accepted(exc):
                # The last answer was lost (timeout) or unreadable: Teal may have enqueued it.
                # Keep the requestId so poll settles it (an unknown request ends API_FAILED).
                detail = f"sent to Teal, answer not confirmed ({exc.message}); requestId {request_id}"
                return batch_result(
                    members, exc.log, desc, DeviceChangeStatus.PROCESSING, detail, request_id=request_id
                )
            return batch_result(
                members, exc.log, desc, DeviceChangeStatus.API_FAILED, failure_detail(exc, self._secrets)
            )
        body = call.body if isinstance(call.body, dict) else {}
        detail = f"accepted by Teal ({path.rsplit('/', 1)[-1]}), requestId {request_id}"
        if body.get("message"):
            detail += f": {body['message']}"
        return batch_result(members, call.log, desc, DeviceChangeStatus.PROCESSING, detail, request_id=request_id)

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
            for index, result in zip(
                indexes, await self._poll_one(request_id, [changes[i] for i in indexes]), strict=True
            ):
                results[index] = result

        await self.http.map_bounded(list(by_request.items()), fetch)
        return results

    async def _poll_one(self, request_id: str, members: list[DeviceChange]) -> list[DeviceResult | None]:
        desc = f"Teal GET operation result requestId={request_id}"
        try:
            call = await self.http.request(
                "GET", OPERATION_RESULT_PATH, params={"requestId": request_id}, description=desc
            )
        except BusinessCarrierError as exc:
            if exc.status == 401 or exc.code == "UNAUTHORIZED":
                return [None] * len(members)  # cannot tell; the change may well be applied
            detail = f"Teal has no result for request {request_id}: {exc}"
            return [*batch_result(members, exc.log, desc, DeviceChangeStatus.API_FAILED, detail, request_id=request_id)]
        except CarrierError:
            return [None] * len(members)
        entries = result_entries(call.response, call.body)
        if entries is None:
            return [None] * len(members)
        by_eid = {str(e.get("eid")): e for e in entries if isinstance(e, dict)}
        logs = shared_logs(call.log, members, desc)
        out: list[DeviceResult | None] = []
        for change, log in zip(members, logs, strict=True):
            entry = by_eid.get(str(change.eid))
            if entry is None and len(entries) == 1 == len(members) and isinstance(entries[0], dict):
                entry = entries[0]  # a single-entry result that does not echo the EID [I]
            out.append(self._settle(change, request_id, entry, log))
        return out

    def _settle(
        self, change: DeviceChange, request_id: str, entry: dict[str, Any] | None, log: list[LogEntry]
    ) -> DeviceResult:
        if entry is None:
            return device_result(
                change,
                DeviceChangeStatus.API_FAILED,
                f"Teal's result for request {request_id} has no entry for EID {change.eid}",
                request_id=request_id,
                log=log,
            )
        if entry.get("success") is True:
            try:
                _, _, new_values = operation_of(change)
            except ValueError:
                new_values = {}
            return device_result(
                change,
                DeviceChangeStatus.PROCESSED,
                f"applied by Teal (requestId {request_id})",
                new_values,
                request_id=request_id,
                log=log,
            )
        code = entry.get("errorCode")
        message = entry.get("errorMessage") or entry.get("message") or "refused by Teal"
        detail = f"[{code}] {message}" if code else str(message)
        return device_result(change, DeviceChangeStatus.API_FAILED, detail, request_id=request_id, log=log)

    # -- already applied --------------------------------------------------------------------------

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Read each eSIM (queued `esims/info`, then its operation result); PROCESSED when it
        already holds the target (enabled = ONLINE or WAITING; STOPPED; or the planUuid), else
        None so the caller sends the change (also when the read fails or is not ready in time)."""
        return await self.http.map_bounded(changes, self._check_one)

    async def _check_one(self, change: DeviceChange) -> DeviceResult | None:
        try:
            _, _, wanted = operation_of(change)
        except ValueError:
            return None
        esim, log = await self._read_esim(str(change.eid))
        if esim is None:
            return None
        held: dict[str, str] | None = None
        if "status" in wanted:
            actual = str(esim.get("deviceStatus") or "").lower()  # ONLINE on the wire, online here
            same_side = (actual in ENABLED_STATUSES) == (wanted["status"] in ENABLED_STATUSES)
            held = {"status": actual} if actual in STATUSES and same_side else None
        elif str(esim.get("planUuid") or "") == wanted["carrier_rate_plan"]:
            held = wanted
        if held is None:
            return None
        return device_result(
            change,
            DeviceChangeStatus.PROCESSED,
            "already in effect at Teal: " + ", ".join(f"{k}={v}" for k, v in held.items()),
            held,
            log=log,
        )

    async def _read_esim(self, eid: str) -> tuple[dict[str, Any] | None, list[LogEntry]]:
        """One eSIM as Teal holds it, or None (unknown to Teal, refused, or not ready within
        `read_budget_seconds`), with the log of every call made. No callbackUrl: see teal_wire."""
        request_id = new_request_id()
        desc = f"Teal GET esim info {eid} requestId={request_id} (already applied?)"
        params = {"requestId": request_id, "eid": eid, "limit": 1}
        try:
            call = await self.http.request("GET", ESIM_INFO_PATH, params=params, description=desc)
        except CarrierError as exc:
            return None, exc.log
        log = list(call.log)
        if not (isinstance(call.body, dict) and call.body.get("success") is True):
            return None, log
        entries = await self._read_result(request_id, f"Teal GET esim info result requestId={request_id}", log)
        esim = next((e for e in entries or [] if isinstance(e, dict) and str(e.get("eid")) == eid), None)
        return esim, log

    async def _read_result(self, request_id: str, desc: str, log: list[LogEntry]) -> list[Any] | None:
        """Read a queued read's operation result until it is ready (HTTP 102/202 or no entries
        yet mean "processing"; so does an answer httpx cannot read, which is what a literal 102
        becomes), waiting a little longer each time, at most `read_budget_seconds` in all. None
        if it never became ready or Teal refused the request id."""
        deadline = time.monotonic() + self.read_budget_seconds
        wait = READ_FIRST_WAIT_SECONDS
        while True:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            try:
                call = await self.http.request(
                    "GET", OPERATION_RESULT_PATH, params={"requestId": request_id}, description=desc
                )
            except BusinessCarrierError as exc:
                log.extend(exc.log)
                return None
            except CarrierError as exc:
                log.extend(exc.log)
            else:
                log.extend(call.log)
                entries = result_entries(call.response, call.body)
                if entries is not None:
                    return entries
            if time.monotonic() >= deadline:
                return None
            wait = min(wait * 2, READ_LONGEST_WAIT_SECONDS)


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
