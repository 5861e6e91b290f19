"""Pond IoT's wire format, without I/O: path templates, paging and package/service vocabulary, how
an error body is read and an answer classified, and the packageTypeId to send. Pond publishes no
API documentation (reference/carriers.md section 5), so most of this is inferred [I] from how AMOP
drove it (original-system.md section 8).

Kept apart from the client (`pond.py`: the calls, concurrency and the multi-step package change
with its undo) so that every inferred wire detail sits in one small module, easy to read, test and
change once the real API is known, as `telegence_wire.py` and `revio_wire.py` do for their
carriers:
- auth: HTTP Basic `account.username:account.secret` [I] (AMOP's PondApiService is not public;
  the client builds the header);
- URL: `{base}/{distributorId}/...` [C] with distributorId from `account.extra["distributor_id"]`;
- paths: `PATHS` [I]; lists paged by `offset`/`limit`, answering `{elements, isLastPage}` [C/I];
- errors: `{code, message}` [I] (`pond_error`); 429 (+ Retry-After) and 5xx transient, other 4xx
  refusals (`classify_pond_response`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..domain import ChangeType
from .base import BusinessCarrierError, CarrierError, TransientCarrierError
from .http import MALFORMED, stated_wait_seconds

PATHS: Mapping[str, str] = {  # [I] every path template, relative to the account's base URL
    "device": "{distributor}/devices/{iccid}",
    "packages": "{distributor}/devices/{iccid}/packages",
    "package_status": "{distributor}/devices/{iccid}/packages/{package_id}/status",
    "service_status": "{distributor}/devices/{iccid}/services/status",
    "package_types": "{distributor}/inventories/{inventory_id}/package-types",
}
PAGE_LIMIT = 100
SUPPORTED_CHANGE_TYPES = frozenset({ChangeType.STATUS_UPDATE, ChangeType.CARRIER_RATE_PLAN_CHANGE})
ACTIVE, TERMINATED, PENDING = "ACTIVE", "TERMINATED", "PENDING"
# Our device statuses -> "all services enabled?". AMOP: POND_ACTIVE enables, others disable.
SERVICES_ENABLED_FOR: Mapping[str, bool] = {
    "ACTIVATED": True,
    "ACTIVE": True,
    "POND_ACTIVE": True,
    "DEACTIVATED": False,
    "INACTIVE": False,
    "POND_DEACTIVATED": False,
    "SUSPENDED": False,
}


def pond_error(response: httpx.Response, body: Any) -> tuple[str | None, str]:
    """(code, message) from an error body, tolerating shapes other than `{code, message}`."""
    if isinstance(body, dict):
        inner = body.get("error")
        inner = inner if isinstance(inner, dict) else body
        code = inner.get("code") or inner.get("errorCode")
        message = inner.get("message") or inner.get("errorMessage") or inner.get("detail")
        return (str(code) if code else None, str(message or response.reason_phrase))
    return None, (response.text[:300].strip() or response.reason_phrase)


def classify_pond_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """2xx ok unless the body is unreadable; 429 over-limit (stated wait honoured); 5xx
    transient; 401/403 credential or distributor errors; 404 not found; other 4xx refusals."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED:
            return TransientCarrierError("malformed response body from Pond", status=status)
        return None
    code, message = pond_error(response, body)
    if status == 429:
        return TransientCarrierError(
            f"[{code or status}] {message}",
            status=status,
            code=code,
            retry_after=stated_wait_seconds(response, body),
            over_limit=True,
        )
    if status >= 500 or body is MALFORMED:
        return TransientCarrierError(f"HTTP {status}: {message}", status=status, code=code)
    if status in (401, 403):
        message = (
            f"Pond rejected the credentials or distributor id ({message}); check the "
            "service provider's username, secret and extra.distributor_id"
        )
    return BusinessCarrierError(message, code=code, status=status)


def package_type_id(value: Any) -> int | None:
    """The packageTypeId to send, or None when the plan id cannot be one: AMOP sends the rate
    plan id, a C# `long` (`PondAddPackageRequest.PackageTypeId = RatePlanId` [C]), so only a
    positive integer is a package type id; text is never sent."""
    text = str(value).strip()
    return int(text) if text.isdigit() and int(text) > 0 else None
