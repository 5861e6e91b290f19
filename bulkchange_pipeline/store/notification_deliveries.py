"""Notification deliveries for people (API, CLI): each delivery with its attempts, in pages, and
re-sending a delivered or dead one. Claiming and recording attempts (the sending side) is
``notification_sending``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..domain.notifications import Channel, DeliveryStatus
from .db import run_transaction
from .schema import (
    notification_attempt,
    notification_delivery,
    notification_email,
    notification_event,
    webhook_subscription,
)

__all__ = [
    "MAX_DELIVERY_PAGE",
    "AttemptOut",
    "DeliveryNotFound",
    "DeliveryOut",
    "DeliveryPage",
    "ResendRefused",
    "get_delivery",
    "list_deliveries",
    "resend_delivery",
]

MAX_DELIVERY_PAGE = 200


class DeliveryNotFound(LookupError):
    """No such delivery for this tenant."""


class ResendRefused(ValueError):
    """The delivery cannot be re-sent now; the message says why."""


# --- reading and re-sending (API, CLI) ------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOut:
    attempt: int
    started_at: datetime
    duration_ms: float
    ok: bool
    response_code: int | None
    error: str | None


@dataclass(frozen=True)
class DeliveryOut:
    id: int
    channel: str
    subscription_id: int | None
    bulk_change_id: int
    event: str
    page: int | None
    message_id: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut] = field(default_factory=list)


@dataclass(frozen=True)
class DeliveryPage:
    items: list[DeliveryOut]
    page: int
    page_size: int
    total: int


def _deliveries_query() -> sa.Select[Any]:
    d, e = notification_delivery.c, notification_event.c
    return sa.select(
        d.id,
        d.tenant_id,
        d.channel,
        d.subscription_id,
        e.bulk_change_id,
        e.event,
        d.page,
        d.message_id,
        d.status,
        d.attempt_count,
        d.next_attempt_at,
        d.last_error,
        d.created_at,
        d.finished_at,
    ).join(notification_event, e.id == d.event_id)


def _with_attempts(conn: sa.Connection, rows: Sequence[Any]) -> list[DeliveryOut]:
    a = notification_attempt.c
    attempts: dict[int, list[AttemptOut]] = {r.id: [] for r in rows}
    if attempts:
        for x in conn.execute(
            sa.select(notification_attempt).where(a.delivery_id.in_(list(attempts))).order_by(a.delivery_id, a.attempt)
        ):
            attempts[x.delivery_id].append(
                AttemptOut(x.attempt, x.started_at, x.duration_ms, x.ok, x.response_code, x.error)
            )
    return [
        DeliveryOut(
            id=r.id,
            channel=r.channel,
            subscription_id=r.subscription_id,
            bulk_change_id=r.bulk_change_id,
            event=r.event,
            page=r.page,
            message_id=r.message_id,
            status=r.status,
            attempt_count=r.attempt_count,
            next_attempt_at=r.next_attempt_at,
            last_error=r.last_error,
            created_at=r.created_at,
            finished_at=r.finished_at,
            attempts=attempts[r.id],
        )
        for r in rows
    ]


def list_deliveries(
    engine: sa.Engine,
    tenant_id: int,
    *,
    status: DeliveryStatus | None = None,
    bulk_change_id: int | None = None,
    page: int = 1,
    page_size: int = 50,
) -> DeliveryPage:
    """The tenant's deliveries, newest first, each with its attempts."""
    d, e = notification_delivery.c, notification_event.c
    where = [d.tenant_id == tenant_id]
    if status is not None:
        where.append(d.status == status.value)
    if bulk_change_id is not None:
        where.append(e.bulk_change_id == bulk_change_id)
    size = max(1, min(page_size, MAX_DELIVERY_PAGE))
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.count()).select_from(notification_delivery.join(notification_event)).where(*where)
        ).scalar_one()
        rows = conn.execute(
            _deliveries_query().where(*where).order_by(d.id.desc()).limit(size).offset((page - 1) * size)
        ).all()
        items = _with_attempts(conn, rows)
    return DeliveryPage(items, page, size, total)


def get_delivery(engine: sa.Engine, tenant_id: int, delivery_id: int) -> DeliveryOut:
    """One of the tenant's deliveries with its attempts; DeliveryNotFound for any other."""
    d = notification_delivery.c
    with engine.connect() as conn:
        rows = conn.execute(_deliveries_query().where(d.id == delivery_id, d.tenant_id == tenant_id)).all()
        if not rows:
            raise DeliveryNotFound(f"no notification delivery {delivery_id} for this tenant")
        return _with_attempts(conn, rows)[0]


def resend_delivery(engine: sa.Engine, tenant_id: int, delivery_id: int, now: datetime) -> DeliveryOut:
    """Send a delivered or dead delivery again, with the same webhook-id (a receiver that has it
    already can tell) and a fresh retry schedule; its earlier attempts stay recorded."""
    d, s = notification_delivery.c, webhook_subscription.c

    def work(conn: sa.Connection) -> None:
        row = conn.execute(
            sa.select(d.status, d.channel, d.attempt_count, s.deleted_at)
            .outerjoin(webhook_subscription, s.id == d.subscription_id)
            .where(d.id == delivery_id, d.tenant_id == tenant_id)
        ).first()
        if row is None:
            raise DeliveryNotFound(f"no notification delivery {delivery_id} for this tenant")
        if row.status == DeliveryStatus.PENDING.value:
            raise ResendRefused(f"delivery {delivery_id} is pending: its next attempt is already scheduled")
        if row.channel == Channel.WEBHOOK.value and row.deleted_at is not None:
            raise ResendRefused(f"delivery {delivery_id}'s subscription was deleted: subscribe again to receive events")
        if (
            row.channel == Channel.EMAIL.value
            and not conn.execute(
                sa.select(notification_email.c.tenant_id).where(notification_email.c.tenant_id == tenant_id)
            ).first()
        ):
            raise ResendRefused(f"delivery {delivery_id} is an e-mail and this tenant has no e-mail settings now")
        conn.execute(
            sa.update(notification_delivery)
            .where(d.id == delivery_id)
            .values(
                status=DeliveryStatus.PENDING.value,
                schedule_base=row.attempt_count,
                next_attempt_at=now,
                claimed_until=None,
                finished_at=None,
            )
        )

    run_transaction(engine, work)
    return get_delivery(engine, tenant_id, delivery_id)
