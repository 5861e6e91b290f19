"""How a carrier client turns a call's outcome into per-device `DeviceResult`s: the detail a person
reads for a failed call, one result per device, and the audit log of a request that carried many
devices. Every client words a failure and shares a batched request's log the same way, so these
live once here instead of in each client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..domain import DeviceChangeStatus
from .base import BusinessCarrierError, CarrierError, DeviceChange, DeviceResult, LogEntry, TransientCarrierError
from .redaction import redact_detail

__all__ = ["batch_result", "device_result", "failure_detail", "shared_logs"]


def failure_detail(exc: CarrierError, secrets: Iterable[str | None] = ()) -> str:
    """What a device row says when a call failed: the carrier's refusal with its code and HTTP
    status, or that the retries ran out on a transient fault (which then is all a person can act on).

    The message comes from the carrier's answer (a fault text, the first characters of a body), and
    a carrier may echo the request, credentials included: it is masked with the account's
    `secrets` (`redaction.redact_detail`), because a row's reason is stored and shown unredacted."""
    secrets = list(secrets)
    message = redact_detail(exc.message, secrets)  # alone: a cut-off secret is at its end
    if isinstance(exc, TransientCarrierError):
        return f"retries exhausted: {message}"
    if isinstance(exc, BusinessCarrierError):
        code = f"[{redact_detail(exc.code, secrets)}] " if exc.code else ""
        return f"{code}{message} (HTTP {exc.status})"
    return message


def device_result(
    change: DeviceChange,
    status: DeviceChangeStatus,
    detail: str,
    new_values: dict[str, Any] | None = None,
    *,
    request_id: str | None = None,
    log: list[LogEntry] | None = None,
) -> DeviceResult:
    """The result for one change, with copies of the values and log (a batch shares neither)."""
    return DeviceResult(change.device_change_id, status, detail, dict(new_values or {}), request_id, list(log or []))


def shared_logs(log: list[LogEntry], members: list[DeviceChange], desc: str) -> list[list[LogEntry]]:
    """The log of each member of one batched request: the first device keeps the full exchange, the
    others get one short entry pointing at it, so a 200-device request body is not stored 200 times."""
    if not members:
        return []
    last = log[-1] if log else None
    note = LogEntry(
        f"{desc}: full exchange logged on device change {members[0].device_change_id}",
        "",
        "",
        last.response_status if last else None,
        last.has_errors if last else True,
    )
    return [list(log)] + [[note] for _ in members[1:]]


def batch_result(
    members: list[DeviceChange],
    log: list[LogEntry],
    desc: str,
    status: DeviceChangeStatus,
    detail: str,
    *,
    request_id: str | None = None,
) -> list[DeviceResult]:
    """One outcome for every member of one batched request (accepted, refused, or no answer), each
    with its share of the request's log (``shared_logs``)."""
    logs = shared_logs(log, members, desc)
    return [
        device_result(c, status, detail, request_id=request_id, log=lg) for c, lg in zip(members, logs, strict=True)
    ]
