"""Reading AT&T Telegence's error answers, which are inconsistent (reference/carriers.md section 3).

The same API answers refusals as `{"responseMessage": ...}`, `{"errorDescription": ...}`,
`{"Description": ...}`, plain text, or (eSIM lines refusing a SIM/IMEI swap) a bare
`{"id": "<uuid>", "description": "/service/"}` with status NotFound. Keeping the parsing apart from
the client means one tested function decides what a person reads in a failed row, and one decides
what is retried.

Classification: 2xx with a readable body is success; 429, 5xx, timeouts and an unreadable 2xx body
are transient; any answer that says "A Resource Required By Service Is Not Available" is transient
whatever its status (AMOP retries it); other 4xx are business refusals, never retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from .base import BusinessCarrierError, CarrierError, TransientCarrierError
from .http import MALFORMED, stated_wait_seconds

RESOURCE_UNAVAILABLE = "a resource required by service is not available"
ESIM_REQUIRED_CODE = "ESIM_REQUIRED"
ESIM_REQUIRED_MESSAGE = (
    "Device requires an eSIM profile: Telegence refused the SIM/IMEI change with NotFound "
    "'/service/' (this line cannot take a physical SIM swap through the API)"
)
# Message fields in the order they are trusted; compared case-insensitively.
_MESSAGE_KEYS = (
    "responsemessage",
    "errordescription",
    "description",
    "message",
    "errormessage",
    "error_description",
    "detail",
    "title",
)
_CODE_KEYS = ("errorcode", "responsecode", "code", "reasoncode")


def _lower_keys(body: dict[Any, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in body.items()}


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def message_of(node: Any, depth: int = 0) -> tuple[str | None, str | None]:
    """(code, message) found in a JSON value: known keys first, then nested `error`/`errors`/
    `fault` objects, then the first element of a list."""
    if depth > 3:
        return None, None
    if isinstance(node, list):
        for item in node:
            code, message = message_of(item, depth + 1)
            if message:
                return code, message
        return None, None
    if not isinstance(node, dict):
        return None, _text(node)
    lowered = _lower_keys(node)
    code = next((_text(lowered[k]) for k in _CODE_KEYS if _text(lowered.get(k))), None)
    for key in _MESSAGE_KEYS:
        message = _text(lowered.get(key))
        if message:
            return code, message
    for key in ("error", "errors", "fault", "service"):
        if key in lowered:
            inner_code, message = message_of(lowered[key], depth + 1)
            if message:
                return inner_code or code, message
    return code, None


def is_esim_refusal(response: httpx.Response, body: Any) -> bool:
    """The eSIM-only answer to a SIM/IMEI swap: NotFound with `description` "/service/"."""
    if response.status_code != 404 or not isinstance(body, dict):
        return False
    description = _lower_keys(body).get("description")
    return isinstance(description, str) and description.strip().rstrip("/") == "/service"


def telegence_error(response: httpx.Response, body: Any) -> tuple[str | None, str]:
    """(code, message a person can act on) from any of Telegence's error shapes."""
    if is_esim_refusal(response, body):
        return ESIM_REQUIRED_CODE, ESIM_REQUIRED_MESSAGE
    code, message = (None, None) if body is MALFORMED or body is None else message_of(body)
    if not message:
        text = response.text.strip()
        if text.startswith("<"):  # an HTML error page from a gateway: keep it short
            text = ""
        message = text[:300] or response.reason_phrase or f"HTTP {response.status_code}"
    return code, message


def classify_telegence_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """None for success; TransientCarrierError for what a retry can fix; BusinessCarrierError for
    a refusal that would be repeated (recorded per device)."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED:
            return TransientCarrierError("malformed response body from Telegence", status=status)
        return None
    code, message = telegence_error(response, body)
    if status == 429:
        return TransientCarrierError(
            f"HTTP 429: {message}",
            status=status,
            code=code,
            retry_after=stated_wait_seconds(response, body),
            over_limit=True,
        )
    if status >= 500 or RESOURCE_UNAVAILABLE in message.lower():
        return TransientCarrierError(
            f"HTTP {status}: {message}", status=status, code=code, retry_after=stated_wait_seconds(response, body)
        )
    if status in (401, 403):
        return BusinessCarrierError(
            f"Telegence rejected the app-id/app-secret ({message}); check the service provider's credentials",
            code=code,
            status=status,
        )
    return BusinessCarrierError(message, code=code, status=status)
