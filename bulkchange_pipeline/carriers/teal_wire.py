"""Teal's wire format (teal.global eSIM / IoT), without I/O: paths, limits and statuses, how an
answer is classified, the operation (path, body entry) a change becomes, and how a callback is read.

Kept apart from the client (`teal.py`: the calls, batching, polling and what each answer means for
a device row) so that what Teal sends and answers can be read and tested on its own, as
`telegence_wire.py` and `revio_wire.py` do for their carriers.

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

SUPPORTED_CHANGE_TYPES = frozenset({ChangeType.STATUS_UPDATE, ChangeType.CARRIER_RATE_PLAN_CHANGE})
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
