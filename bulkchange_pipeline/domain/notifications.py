"""Completion notifications: which settled bulk change is which event, what a message says, and
when a failed delivery is tried again.

Pure rules, shared by the store (which enqueues an event in the same transaction as the header it
follows from, ``store.notifications``) and the engine (which sends it, ``engine.notify``).

Events say whether a bulk change ended as it was asked to, from its ``Outcome``:

- ``completed``: every device row reached its end and none failed (``done``);
- ``failed``: it ended, but not everything asked was done: some or all devices failed, nothing
  could be sent, or it was cancelled (``done_with_failures``, ``cancelled``; the payload's
  ``outcome`` says which);
- ``needs_attention``: a run stopped with rows unfinished; an operator must ``resume`` it
  (``unfinished``).

Other outcomes (queued, running, waiting on the carrier, scheduled, held) are not settled: no event.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .enums import change_type_name
from .outcome import Outcome, failed_rows

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "DELIVERY_STATUSES",
    "DEVICE_RESULTS_TYPE",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "Channel",
    "DeliveryStatus",
    "NotificationEvent",
    "device_pages",
    "event_data",
    "event_for",
    "message_type",
    "next_attempt_delay",
    "parse_events",
    "wire_time",
]


class NotificationEvent(str, enum.Enum):
    """What a subscription can ask to be told about (stored and sent by these short names)."""

    COMPLETED = "completed"
    FAILED = "failed"
    NEEDS_ATTENTION = "needs_attention"


class Channel(str, enum.Enum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted)
    DELIVERED = "delivered"  # a 2xx answer (webhook) or the SMTP server took it (email)
    DEAD = "dead"  # the last attempt of the schedule failed, or its subscription was deleted


DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)
DEVICE_RESULTS_TYPE = "bulk_change.device_results"
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 10, 1000

_EVENT_OF: dict[Outcome, NotificationEvent] = {
    Outcome.DONE: NotificationEvent.COMPLETED,
    Outcome.DONE_WITH_FAILURES: NotificationEvent.FAILED,
    Outcome.CANCELLED: NotificationEvent.FAILED,
    Outcome.UNFINISHED: NotificationEvent.NEEDS_ATTENTION,
}

# The waits between attempts: the first attempt goes at once, then one retry after each wait, and
# the delivery is dead when the last retry fails: 9 attempts over 7 h 42 min 35 s. Short first (a
# receiver restarting, a deploy), then hours (an outage over a night shift is still caught).
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400)


def event_for(outcome: Outcome) -> NotificationEvent | None:
    """The event a bulk change with this outcome settled as; None while it is not settled."""
    return _EVENT_OF.get(outcome)


def message_type(event: NotificationEvent | str) -> str:
    """The ``type`` of a message about ``event`` (``bulk_change.completed``...)."""
    return f"bulk_change.{NotificationEvent(event).value}"


def parse_events(values: Sequence[str]) -> list[NotificationEvent]:
    """Event names as a person gives them (``completed`` or ``bulk_change.completed``, any case),
    without duplicates, in the enum's order; raises ValueError naming the valid ones."""
    if not values:
        raise ValueError(f"name at least one event: {', '.join(e.value for e in NotificationEvent)}")
    chosen = set()
    for value in values:
        name = value.strip().lower().removeprefix("bulk_change.") if isinstance(value, str) else value
        try:
            chosen.add(NotificationEvent(name))
        except ValueError:
            valid = ", ".join(e.value for e in NotificationEvent)
            raise ValueError(f"unknown event {str(value)[:40]!r}: the events are {valid}") from None
    return [e for e in NotificationEvent if e in chosen]


def wire_time(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as the messages send it: ISO 8601 ending in Z."""
    if value is None:
        return None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def event_data(head: Mapping[str, Any], counts: Mapping[str, int], outcome: Outcome) -> dict[str, Any]:
    """The ``data`` of an event message, from a bulk change header (``id``, ``tenant_id``,
    ``tenant_name``, ``service_provider_id``, ``change_type``, ``status``, ``attempt``,
    ``created_at``, ``processed_at``) and its row counts. Only facts a tenant already sees through
    the API; links are paths of that API (the sender prefixes its public base URL)."""
    bc_id = int(head["id"])
    return {
        "id": bc_id,
        "tenantId": int(head["tenant_id"]),
        "tenant": str(head.get("tenant_name") or ""),
        "serviceProviderId": int(head["service_provider_id"]),
        "changeType": int(head["change_type"]),
        "changeTypeName": change_type_name(int(head["change_type"])),
        "status": str(head["status"]),
        "outcome": outcome.value,
        "attempt": int(head["attempt"]),
        "devices": sum(counts.values()),
        "failedDevices": failed_rows(counts),
        "counts": dict(sorted(counts.items())),
        "createdAt": wire_time(head.get("created_at")),
        "processedAt": wire_time(head.get("processed_at")),
        "links": {
            "self": f"/bulk-changes/{bc_id}",
            "devices": f"/bulk-changes/{bc_id}/devices",
            "failedDevices": f"/bulk-changes/{bc_id}/devices?status=API_FAILED",
        },
    }


def device_pages(total: int, page_size: int) -> int:
    """How many device-results messages a bulk change of ``total`` rows takes."""
    return math.ceil(total / page_size) if total > 0 else 0


def next_attempt_delay(schedule: Sequence[float], tries_this_round: int) -> timedelta | None:
    """After the ``tries_this_round``-th failed attempt (1-based, counted since the delivery was
    enqueued or last re-sent): the wait before the next one, or None when that was the last."""
    if tries_this_round < 1 or tries_this_round > len(schedule):
        return None
    return timedelta(seconds=float(schedule[tries_this_round - 1]))
