"""Rev.io wire format, with no I/O: credentials and URL checks, id, rate and date parsing, error-body
reading and classification, the auth header flow, and the JSON Patch that edits a line's service
(description and cost-center custom field). `revio.RevioClient` does the calls; keeping the wire
details here keeps them in one place to change when Rev.io's shapes are confirmed (reference/
carriers.md section 6; `[I]` marks what is inferred)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Generator, Mapping
from typing import Any

import httpx

from ..domain import ChangeType
from ..domain.identifiers import rev_io_id
from .base import BusinessCarrierError, CarrierError, TransientCarrierError
from .http import MALFORMED, stated_wait_seconds
from .redaction import basic_token

SUPPORTED_CHANGE_TYPES = frozenset({ChangeType.CUSTOMER_ASSIGNMENT, ChangeType.CREATE_REV_SERVICE})
REVIO_MAX_ATTEMPTS = 6  # one call plus 5 retries, as AMOP configured for Rev.io
MAX_PAGE_SIZE = 500
QUOTA_CODE = "QUOTA"
# Labels of the custom field holding a service's cost center, in the order they are trusted [I].
COST_CENTER_LABELS = ("cost center 1", "cost center")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_USER = re.compile(r"^[^@\s:]+@[^@\s:.]+$")


class RevioUpdateError(CarrierError):
    """Rev.io did not take an edit of a line's service; `service_id` is the service concerned (None
    when no service could be found) and the message says why, ready for a person to read."""

    def __init__(self, message: str, *, service_id: int | None = None) -> None:
        super().__init__(message)
        self.service_id = service_id


class RevioConfigError(CarrierError, ValueError):
    """The service provider's Rev.io settings cannot work (raised when the client is built, so
    nothing is claimed or sent)."""


def check_username(username: str) -> None:
    """Rev.io's API user is `user@clientCode`; an e-mail address (the portal login) is refused by
    Rev.io with a bare 401, so it is caught here with a message that says what to change."""
    if _EMAIL.match(username or ""):
        raise RevioConfigError(
            f"Rev.io username {username!r} looks like an e-mail address; the API needs the API "
            "user in the form user@clientCode (e.g. apiuser@ACME)"
        )
    if not _USER.match(username or ""):
        raise RevioConfigError(f"Rev.io username {username!r} is not of the form user@clientCode (e.g. apiuser@ACME)")


def revio_base_url(url: str) -> str:
    """The API base ending in /v1 (accepts the host alone, as the service provider row stores)."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def parse_id_list(value: Any) -> list[int]:
    """Product ids from a list or a comma/space separated text."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,\s]+", str(value).strip())
    return [int(v) for v in items if str(v).strip()]


def parse_rates(value: Any) -> dict[int, float]:
    """`101:4.5,102:9` -> {101: 4.5, 102: 9.0}."""
    out: dict[int, float] = {}
    for item in re.split(r"[,\s]+", str(value or "").strip()):
        if item:
            pid, _, rate = item.partition(":")
            out[int(pid)] = float(rate)
    return out


def rev_id(value: Any) -> int:
    """A Rev.io id as the int32 number Rev.io takes (``domain.rev_io_id``: the one rule); anything
    else raises ValueError: refused here, never sent as text."""
    return rev_io_id(value)


def rev_date_time(value: Any) -> str:
    """Rev date-time text [I] for a target date (ISO text; naive means UTC), or now."""
    when = dt.datetime.now(dt.UTC)
    if value:
        try:
            when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)  # Rev.io refuses it with its own message
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def revio_error_message(response: httpx.Response, body: Any) -> str:
    """The message of any Rev.io / APIM error body: `[{ok, error, message}]`, `{ok, error,
    message}` or `{statusCode, message}`; else the text."""
    items = body if isinstance(body, list) else [body]
    parts = [
        str(i.get("message") or i.get("error"))
        for i in items
        if isinstance(i, dict) and (i.get("message") or i.get("error"))
    ]
    return "; ".join(parts) or response.text.strip()[:300] or response.reason_phrase


def cost_center_field(service: Mapping[str, Any]) -> tuple[int, str] | None:
    """(index in `fields`, label) of the service's cost-center custom field, or None."""
    fields = service.get("fields")
    fields = fields if isinstance(fields, list) else []
    labels = [str(f.get("label") or "") if isinstance(f, dict) else "" for f in fields]
    for wanted in COST_CENTER_LABELS:
        for index, label in enumerate(labels):
            if label.strip().lower() == wanted:
                return index, label
    return None


def service_edit_ops(
    service: Mapping[str, Any], description: str | None, cost_center: str | None
) -> list[dict[str, Any]]:
    """The JSON Patch that gives a service this description and cost center (None: leave as is).
    The cost center is written to `/fields/<index>/value` after a `test` of that field's label, so
    a field list reordered since it was read is refused instead of written into the wrong field.
    Raises ValueError when a cost center is asked for and the service has no such field."""
    ops: list[dict[str, Any]] = []
    if description is not None:
        ops.append({"op": "replace", "path": "/description", "value": description})
    if cost_center is not None:
        found = cost_center_field(service)
        if found is None:
            raise ValueError(
                "it has no cost-center custom field (labelled "
                + " or ".join(repr(label.title()) for label in COST_CENTER_LABELS)
                + ") to hold the cost center"
            )
        index, label = found
        ops += [
            {"op": "test", "path": f"/fields/{index}/label", "value": label},
            {"op": "replace", "path": f"/fields/{index}/value", "value": cost_center},
        ]
    return ops


def service_holds(service: Mapping[str, Any], description: str | None, cost_center: str | None) -> bool:
    """True when the service already shows this description and cost center."""
    if description is not None and service.get("description") != description:
        return False
    if cost_center is None:
        return True
    found = cost_center_field(service)
    return found is not None and service["fields"][found[0]].get("value") == cost_center


def classify_revio_response(response: httpx.Response, body: Any) -> CarrierError | None:
    """429 and 5xx transient (429 with the stated wait, over limit); malformed bodies transient;
    401 a credentials error; 403 with "quota" the daily quota; other 4xx business."""
    status = response.status_code
    if 200 <= status < 300:
        if body is MALFORMED or (body is not None and not isinstance(body, (dict, list))):
            return TransientCarrierError("malformed response body from Rev.io", status=status)
        if isinstance(body, dict) and body.get("ok") is False:
            return BusinessCarrierError(revio_error_message(response, body), status=status)
        return None
    message = revio_error_message(response, body)
    if status == 429:
        return TransientCarrierError(
            f"HTTP 429: {message}", status=status, retry_after=stated_wait_seconds(response, body), over_limit=True
        )
    if status >= 500 or body is MALFORMED:
        return TransientCarrierError(f"HTTP {status}: {message}", status=status)
    if status == 401:
        return BusinessCarrierError(
            f"Rev.io rejected the credentials ({message}); check the user@clientCode username, "
            "password and subscription key",
            status=status,
        )
    if status == 403 and "quota" in message.lower():
        return BusinessCarrierError(f"Rev.io daily call quota exhausted: {message}", code=QUOTA_CODE, status=status)
    return BusinessCarrierError(message, status=status)


class RevioAuth(httpx.Auth):
    """Basic + subscription key on every request, and the JSON Patch media type on PATCH (the
    shared layer sends `application/json`; Rev.io's PATCH needs `application/json-patch+json`)."""

    def __init__(self, username: str, password: str, subscription_key: str) -> None:
        self._basic = "Basic " + basic_token(username, password)
        self._key = subscription_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._basic
        request.headers["Ocp-Apim-Subscription-Key"] = self._key
        if request.method == "PATCH":
            request.headers["Content-Type"] = "application/json-patch+json"
        yield request
