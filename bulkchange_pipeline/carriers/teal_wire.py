"""Teal's wire format (teal.global eSIM / IoT), without I/O: paths, limits and statuses, how an
answer is classified, the operation (path, body entry) a change becomes, and how a callback is read.

Kept apart from the client (`teal.py`: the calls, batching, polling and what each answer means for
a device row) so that what Teal sends and answers can be read and tested on its own, as
`telegence_wire.py` and `revio_wire.py` do for their carriers.

Wire format (reference/carriers.md section 4; the same claims, machine-readable, are in
`bulkchange_pipeline_tests/contracts/teal.yaml`). Tags: [D] vendor documentation, [C] public client
code, [I] our inference.

- Headers `ApiKey` / `ApiSecret` [C: AMOP TealHelper.cs, Simetry adapter, LiveU scripts below].
- Every call, reads included, carries a unique `requestId` (32 alphanumerics recommended) and only
  enqueues work; the result is fetched from the operation-result API with that id, which answers
  "HTTP 102 Processing" while the work runs; when it is ready Teal calls `callbackUrl` with
  `requestId=<id>` appended [D: SIMETRY KB
  https://simetry.freshdesk.com/support/solutions/articles/154000189151-api-access-to-connectivity-marketplace].
- The synchronous answer is `{success, message, link:{operationResult:{href}}}`; AMOP GETs the
  href (rewritten http->https) and reads `entries` from that answer, for writes and for the eSIM
  list alike [C: github.com/hemalathapampana/TealLambdas TealAPIService.cs ProcessTealUpdateAsync /
  GetTealOperationResultAsync, AltaworxTealAWSGetDevices.cs ProcessDeviceList].
- The operation result is `GET api/v1/operation-result?requestId=<id>`; 102 means "not yet", 200
  carries `{success, entries:[...]}` [C: two public LiveU batch tools calling
  integrationapi.teal.global (a Python script and a Deno/TypeScript function, `get_operation_result`
  / `getOperationResult`); a Node "SimetryAdapter" (`pollOperationResult`, which also keeps polling
  a 200 that has no `entries` yet); all three found with the code search, repository names not
  shown by the index].
- One eSIM is read with `GET api/v1/esims/info?requestId=&eid=&limit=1` (the public tools also send
  `callbackUrl`); its answer is the queued reply only, and `operation-result` then gives
  `entries[0]` with `deviceStatus`, `planChangeStatus`, `active`, `iccid` and
  `connectionProfileEntries[{planUuid, active, fallbackProfile}]` [C: the LiveU tools,
  `get_esim_info` / `getEsimInfo` then `get_operation_result`].
- `deviceStatus` values are upper case: the LiveU tools compare `== "ONLINE"`, and the Simetry
  adapter maps `ONLINE`/`WAITING`/`STOPPED` after upper-casing [C]. reference/carriers.md lists
  `online, waiting, stopped` [C, AMOP model]; because the two disagree on case, the client compares
  case-insensitively and keeps the lower-case names as our domain values.
- The eSIM list `GET api/v1/esims?requestId&offset&limit` (limit at most 100 per Teal's Swagger, as
  AMOP's comment says) and `GET api/v1/plans` are queued the same way [C: AMOP; D: "collecting a
  list of items" is an operation].

Choices marked [I] (inferred, not confirmed by a public source):
- The operation result is fetched from `api/v1/operation-result?requestId=<id>` relative to the
  account's base URL rather than from the reply's href, so the requestId alone (stored as
  `carrier_request_id`) is enough to poll, even after a crash. The public tools do the same.
- "Still processing" is recognised as HTTP 102 (if a transport ever surfaces it), HTTP 202, or a
  2xx body without `entries`. A literal 102 is an interim status in HTTP/1.1, so httpx skips it and
  then fails to read the rest; that ends as a transient error, read as "not ready yet".
- Reads are sent without `callbackUrl`: AMOP's list calls omit it [C], and a callback for a read
  would reach our endpoint with a request id the engine never recorded (answered 503, so Teal
  would keep re-delivering it). The SIMETRY KB says every operation takes one [D]; if Teal ever
  insisted, the read would fail and the check would answer "not applied" (the change is sent).
- Error envelope `{success:false, errorCode, message}` (the codes are [D], the shape is not
  public); per-entry results `{eid, success, errorCode?, errorMessage}` (`success` and
  `errorMessage` are [C]); an EID Teal does not know gives no entry in `esims/info`'s result.
- A retried POST reuses its requestId (tenacity re-sends the same request), so Teal can
  de-duplicate it; the simulator does.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from ..domain import ChangeType, DeviceChangeStatus
from .base import (
    AsyncOutcome,
    BusinessCarrierError,
    CarrierError,
    DeviceChange,
    TransientCarrierError,
)
from .http import MALFORMED, stated_wait_seconds

__all__ = [
    "ASSIGN_PLAN_PATH",
    "DEFAULT_BATCH_SIZE",
    "DISABLE_PATH",
    "ENABLED_STATUSES",
    "ENABLE_PATH",
    "ESIMS_PATH",
    "ESIM_INFO_PATH",
    "NO_EID",
    "OPERATION_RESULT_PATH",
    "PENDING_STATUSES",
    "READ_BUDGET_SECONDS",
    "READ_FIRST_WAIT_SECONDS",
    "READ_LONGEST_WAIT_SECONDS",
    "STATUSES",
    "SUPPORTED_CHANGE_TYPES",
    "TEAL_CALLS_PER_MINUTE",
    "TEAL_RATE_PER_SECOND",
    "TRANSIENT_CODES",
    "classify_teal_response",
    "new_request_id",
    "operation_of",
    "parse_teal_callback",
    "result_entries",
    "teal_error",
]

SUPPORTED_CHANGE_TYPES = frozenset({ChangeType.STATUS_UPDATE, ChangeType.CARRIER_RATE_PLAN_CHANGE})
DEFAULT_BATCH_SIZE = 100
TEAL_CALLS_PER_MINUTE = 1000
TEAL_RATE_PER_SECOND = TEAL_CALLS_PER_MINUTE / 60.0  # ~16.6: what the service provider should set
ENABLED_STATUSES = frozenset({"online", "waiting"})
STATUSES = ENABLED_STATUSES | {"stopped"}
TRANSIENT_CODES = frozenset({"GENERIC_ERROR"})
PENDING_STATUSES = frozenset({102, 202})
# Reading one eSIM: waits between operation-result reads (doubling from the first to the longest)
# and how long to wait in all before giving up (then "not known to be applied": the change is sent).
READ_FIRST_WAIT_SECONDS = 0.1
READ_LONGEST_WAIT_SECONDS = 2.0
READ_BUDGET_SECONDS = 30.0
NO_EID = "Teal needs the device's EID; this device has none"

ENABLE_PATH = "api/v1/esims/enable"
DISABLE_PATH = "api/v1/esims/disable"
ASSIGN_PLAN_PATH = "api/v1/esims/assign-plan"
ESIMS_PATH = "api/v1/esims"
ESIM_INFO_PATH = "api/v1/esims/info"
OPERATION_RESULT_PATH = "api/v1/operation-result"


def new_request_id() -> str:
    """A fresh Teal requestId: uuid4 hex, 32 alphanumerics as Teal recommends."""
    return uuid.uuid4().hex


def result_entries(response: httpx.Response, body: Any) -> list[Any] | None:
    """The `entries` of an operation result, or None while Teal is still processing it (102/202,
    or a 2xx answer that has no `entries` list yet)."""
    if response.status_code in PENDING_STATUSES or not isinstance(body, dict):
        return None
    entries = body.get("entries")
    return entries if isinstance(entries, list) else None


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
        return TransientCarrierError(
            text, status=status, code=code, over_limit=True, retry_after=stated_wait_seconds(response, body)
        )
    if status >= 500 or body is MALFORMED or code in TRANSIENT_CODES:
        return TransientCarrierError(f"HTTP {status}: {text}", status=status, code=code)
    if status == 401 or code == "UNAUTHORIZED":
        return BusinessCarrierError(
            f"Teal rejected the ApiKey/ApiSecret ({message}); check the service provider's credentials",
            code=code or "UNAUTHORIZED",
            status=status,
        )
    return BusinessCarrierError(message, code=code, status=status)


def operation_of(change: DeviceChange) -> tuple[str, Any, dict[str, str]]:
    """(path, body entry, new_values) for one change. Raises ValueError with a reason a person can
    act on when the change cannot be sent to Teal."""
    if not change.eid:
        raise ValueError(NO_EID)
    target = change.target or {}
    if change.change_type == ChangeType.STATUS_UPDATE:
        status = str(target.get("status") or "").strip().lower()
        if status not in STATUSES:
            raise ValueError(f"Teal status must be one of online, waiting, stopped (got {target.get('status')!r})")
        path = ENABLE_PATH if status in ENABLED_STATUSES else DISABLE_PATH
        return path, change.eid, {"status": status}
    if change.change_type == ChangeType.CARRIER_RATE_PLAN_CHANGE:
        plan = target.get("carrier_rate_plan")
        if not plan:
            raise ValueError("no carrier_rate_plan (Teal planUuid) to assign")
        return ASSIGN_PLAN_PATH, {"eid": change.eid, "planUuid": str(plan)}, {"carrier_rate_plan": str(plan)}
    raise ValueError(f"change type {change.change_type} is not applied through the Teal API")


def parse_teal_callback(payload: dict[str, Any]) -> list[AsyncOutcome]:
    """The requestId a Teal callback announces, as one "fetch now" outcome. Teal's callback only
    says `requestId=<id>` (query parameter, appended to the callbackUrl); it is looked for at the
    top level and under `query`/`query_params`/`params`/`body`/`json`, however the callback
    endpoint stored it. Anything else is noise (empty list)."""
    if not isinstance(payload, dict):
        return []
    places = [payload] + [
        payload[k] for k in ("query", "query_params", "params", "body", "json") if isinstance(payload.get(k), dict)
    ]
    for place in places:
        rid = place.get("requestId") or place.get("request_id")
        if isinstance(rid, list):
            rid = rid[0] if rid else None
        if isinstance(rid, str) and rid.strip():
            return [AsyncOutcome(rid.strip(), "", DeviceChangeStatus.PROCESSING, "result ready")]
    return []
