"""Sending notifications, as the database sees it: due deliveries are claimed under a lease, each
attempt is recorded with its answer, and failures are scheduled again or end dead
(``notification_deliveries`` reads them and re-sends one).

Leases, not locks: a delivery run takes due deliveries by setting ``claimed_until`` (an UPDATE
... RETURNING that only takes rows nobody holds), sends them, and records each attempt, which
clears the lease. A run that dies leaves its deliveries to the next run once the lease has passed
(the receiver may then see a message twice: it dedupes on the webhook-id, as Standard Webhooks
says). A claim takes at most ``per_target`` deliveries of one subscription (or one tenant's
e-mail), so a receiver with a backlog cannot fill a run that other receivers wait for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..domain.notifications import Channel, DeliveryStatus, next_attempt_delay
from .db import run_transaction
from .schema import (
    notification_attempt,
    notification_delivery,
    notification_email,
    notification_event,
    webhook_subscription,
)

__all__ = ["AttemptRecord", "DueDelivery", "claim_due", "next_due", "record_attempt"]


@dataclass(frozen=True)
class DueDelivery:
    """One claimed delivery with what sending it needs (never a secret: the subscription's nonce
    is public, the SMTP password is named by its credentials entry)."""

    id: int
    tenant_id: int
    channel: Channel
    message_id: str
    bulk_change_id: int
    event: str
    event_payload: dict[str, Any]
    event_created_at: datetime
    page: int | None
    subscription_id: int | None
    url: str | None
    secret_nonce: str | None
    page_size: int | None
    email: dict[str, Any] | None  # notification_email's columns

    @property
    def target(self) -> str:
        """What the per-target cap counts by: a subscription, or a tenant's e-mail."""
        return f"sub-{self.subscription_id}" if self.channel is Channel.WEBHOOK else f"email-{self.tenant_id}"


def _due(now: datetime) -> sa.ColumnElement[bool]:
    d = notification_delivery.c
    return sa.and_(
        d.status == DeliveryStatus.PENDING.value,
        d.next_attempt_at <= now,
        sa.or_(d.claimed_until.is_(None), d.claimed_until < now),
    )


def next_due(engine: sa.Engine, now: datetime) -> tuple[int, int] | None:
    """The oldest due delivery nobody holds, as (id, claims): what the sensor keys a run on (a
    run that takes it bumps ``claims``, so a delivery left by a dead run gets a new key)."""
    d = notification_delivery.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(d.id, d.claims).where(_due(now)).order_by(d.next_attempt_at, d.id).limit(1)
        ).first()
    return None if row is None else (row.id, row.claims)


def claim_due(engine: sa.Engine, now: datetime, *, lease: timedelta, limit: int, per_target: int) -> list[DueDelivery]:
    """Take up to ``limit`` due deliveries (at most ``per_target`` per target), oldest first,
    leased until ``now + lease``."""
    d = notification_delivery.c

    def work(conn: sa.Connection) -> list[int]:
        candidates = conn.execute(
            sa.select(d.id, d.channel, d.subscription_id, d.tenant_id)
            .where(_due(now))
            .order_by(d.next_attempt_at, d.id)
            .limit(limit * 4)
        ).all()
        taken: dict[str, int] = {}
        chosen: list[int] = []
        for c in candidates:
            target = f"sub-{c.subscription_id}" if c.channel == Channel.WEBHOOK.value else f"email-{c.tenant_id}"
            if taken.get(target, 0) >= per_target or len(chosen) >= limit:
                continue
            taken[target] = taken.get(target, 0) + 1
            chosen.append(c.id)
        if not chosen:
            return []
        return list(
            conn.execute(
                sa.update(notification_delivery)
                .where(d.id.in_(chosen), _due(now))
                .values(claimed_until=now + lease, claims=d.claims + 1)
                .returning(d.id)
            ).scalars()
        )

    ids = run_transaction(engine, work)
    return _load(engine, ids)


def _load(engine: sa.Engine, ids: Sequence[int]) -> list[DueDelivery]:
    if not ids:
        return []
    d, e, s, m = notification_delivery.c, notification_event.c, webhook_subscription.c, notification_email
    query = (
        sa.select(
            d.id,
            d.tenant_id,
            d.channel,
            d.message_id,
            d.page,
            d.subscription_id,
            e.bulk_change_id,
            e.event,
            e.payload,
            e.created_at.label("event_created_at"),
            s.url,
            s.secret_nonce,
            s.page_size,
            *[c.label(f"email_{c.name}") for c in m.c],
        )
        .join(notification_event, e.id == d.event_id)
        .outerjoin(webhook_subscription, s.id == d.subscription_id)
        .outerjoin(m, sa.and_(d.channel == Channel.EMAIL.value, m.c.tenant_id == d.tenant_id))
        .where(d.id.in_(list(ids)))
        .order_by(d.next_attempt_at, d.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        email = {c.name: getattr(r, f"email_{c.name}") for c in m.c}
        out.append(
            DueDelivery(
                id=r.id,
                tenant_id=r.tenant_id,
                channel=Channel(r.channel),
                message_id=r.message_id,
                bulk_change_id=r.bulk_change_id,
                event=r.event,
                event_payload=dict(r.payload),
                event_created_at=r.event_created_at,
                page=r.page,
                subscription_id=r.subscription_id,
                url=r.url,
                secret_nonce=r.secret_nonce,
                page_size=r.page_size,
                email=email if email["tenant_id"] is not None else None,
            )
        )
    return out


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt found: ``ok`` (2xx, or the SMTP server took the message), the answer's
    code (HTTP or SMTP) and a short error a person can act on (never a header or a body)."""

    started_at: datetime
    duration_ms: float
    ok: bool
    response_code: int | None = None
    error: str | None = None


def record_attempt(
    engine: sa.Engine, delivery_id: int, attempt: AttemptRecord, *, schedule: Sequence[float], now: datetime
) -> DeliveryStatus:
    """Record an attempt and what follows: delivered; pending again after the schedule's next wait;
    or dead when that was the schedule's last attempt. The attempt's number is counted here, in
    the transaction, so two runs that both sent after a lease ran out record two attempts."""
    d = notification_delivery.c

    def work(conn: sa.Connection) -> DeliveryStatus:
        query = sa.select(d.tenant_id, d.attempt_count, d.schedule_base, d.status).where(d.id == delivery_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            return DeliveryStatus.DEAD  # purged with its bulk change while it was being sent
        number = row.attempt_count + 1
        conn.execute(
            sa.insert(notification_attempt).values(
                tenant_id=row.tenant_id,
                delivery_id=delivery_id,
                attempt=number,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                response_code=attempt.response_code,
                ok=attempt.ok,
                error=(attempt.error or None) and attempt.error[:500],
            )
        )
        values: dict[str, Any] = {"attempt_count": number, "claimed_until": None}
        if row.status != DeliveryStatus.PENDING.value:
            status = DeliveryStatus(row.status)  # delivered by another run, or dead (deleted) meanwhile
        elif attempt.ok:
            status = DeliveryStatus.DELIVERED
            values.update(next_attempt_at=None, finished_at=now, last_error=None)
        else:
            wait = next_attempt_delay(schedule, number - row.schedule_base)
            status = DeliveryStatus.PENDING if wait is not None else DeliveryStatus.DEAD
            values["last_error"] = (attempt.error or f"answered {attempt.response_code}")[:500]
            if wait is not None:
                values["next_attempt_at"] = now + wait
            else:
                values.update(next_attempt_at=None, finished_at=now)
        values["status"] = status.value
        conn.execute(sa.update(notification_delivery).where(d.id == delivery_id).values(**values))
        return status

    return run_transaction(engine, work)
