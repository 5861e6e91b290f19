"""Completion notifications in the database: a tenant's webhook subscriptions and e-mail settings,
and the events and deliveries enqueued when a bulk change settles.

``enqueue_settled`` is called by ``headers.write_header``, in the transaction that writes the
header: every writer that settles a bulk change (a run's finalize, cancel, the settle after a
failed or stopped run) goes through it, so an event is never missed, and the unique key on
(bulk change, attempt, event) means settling the same attempt twice (finalize, then the stopped
sensor) enqueues nothing more. Deliveries are fanned out at once, to the subscriptions and
e-mail settings that exist at that moment. Sending them is ``notification_deliveries``' part.

Every function is scoped by tenant: another tenant's subscription is "not found".
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..domain import BulkChangeStatus, outcome_of
from ..domain.notifications import (
    Channel,
    DeliveryStatus,
    NotificationEvent,
    device_pages,
    event_data,
    event_for,
)
from .db import run_transaction, utcnow
from .schema import (
    bulk_change,
    notification_delivery,
    notification_email,
    notification_event,
    tenant,
    webhook_subscription,
)

__all__ = [
    "EmailSettings",
    "Subscription",
    "clear_email_settings",
    "create_subscription",
    "delete_subscription",
    "enqueue_settled",
    "get_email_settings",
    "get_subscription",
    "list_subscriptions",
    "new_message_id",
    "set_email_settings",
]


@dataclass(frozen=True)
class Subscription:
    """A webhook subscription as stored (``secret_nonce`` is public; the secret is derived from it)."""

    id: int
    tenant_id: int
    url: str
    events: list[str]
    device_results: bool
    page_size: int
    description: str
    secret_nonce: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class EmailSettings:
    """A tenant's notification e-mail: who gets it, for which events, through which SMTP server."""

    tenant_id: int
    recipients: list[str]
    events: list[str]
    sender: str
    smtp_host: str
    smtp_port: int
    smtp_security: str  # none | starttls | tls
    smtp_credentials_name: str | None  # BULKCHANGE_CRED_<NAME>_USERNAME / _SECRET; None: no AUTH


def new_message_id() -> str:
    """A webhook-id: unique per message, the same on every attempt (receivers dedupe on it)."""
    return "msg_" + secrets.token_hex(16)


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        events=list(row.events),
        device_results=bool(row.device_results),
        page_size=row.page_size,
        description=row.description,
        secret_nonce=row.secret_nonce,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def create_subscription(
    engine: sa.Engine,
    tenant_id: int,
    *,
    url: str,
    events: Sequence[NotificationEvent],
    secret_nonce: str,
    created_by: str,
    device_results: bool = False,
    page_size: int = 500,
    description: str = "",
) -> Subscription:
    """Store a subscription (the URL already checked by the caller: ``engine.notify.addresses``)."""
    values = {
        "tenant_id": tenant_id,
        "url": url,
        "events": [NotificationEvent(e).value for e in events],
        "device_results": device_results,
        "page_size": page_size,
        "description": description,
        "secret_nonce": secret_nonce,
        "created_by": created_by,
        "created_at": utcnow(),
    }
    sub_id = run_transaction(
        engine,
        lambda conn: conn.execute(
            sa.insert(webhook_subscription).values(**values).returning(webhook_subscription.c.id)
        ).scalar_one(),
    )
    found = get_subscription(engine, tenant_id, sub_id)
    assert found is not None
    return found


def list_subscriptions(engine: sa.Engine, tenant_id: int) -> list[Subscription]:
    """The tenant's live subscriptions, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(webhook_subscription)
            .where(webhook_subscription.c.tenant_id == tenant_id, webhook_subscription.c.deleted_at.is_(None))
            .order_by(webhook_subscription.c.id)
        ).all()
    return [_subscription(r) for r in rows]


def get_subscription(engine: sa.Engine, tenant_id: int, subscription_id: int) -> Subscription | None:
    """One live subscription of the tenant, or None (another tenant's, deleted, or unknown)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(webhook_subscription).where(
                webhook_subscription.c.id == subscription_id,
                webhook_subscription.c.tenant_id == tenant_id,
                webhook_subscription.c.deleted_at.is_(None),
            )
        ).first()
    return None if row is None else _subscription(row)


def delete_subscription(engine: sa.Engine, tenant_id: int, subscription_id: int) -> bool:
    """Delete a subscription (kept for its deliveries' history); its pending deliveries end dead.
    False when the tenant has no such live subscription."""

    def work(conn: sa.Connection) -> bool:
        now = utcnow()
        done = conn.execute(
            sa.update(webhook_subscription)
            .where(
                webhook_subscription.c.id == subscription_id,
                webhook_subscription.c.tenant_id == tenant_id,
                webhook_subscription.c.deleted_at.is_(None),
            )
            .values(deleted_at=now)
        ).rowcount
        if not done:
            return False
        conn.execute(
            sa.update(notification_delivery)
            .where(
                notification_delivery.c.subscription_id == subscription_id,
                notification_delivery.c.status == DeliveryStatus.PENDING.value,
            )
            .values(
                status=DeliveryStatus.DEAD.value,
                last_error="subscription deleted",
                next_attempt_at=None,
                claimed_until=None,
                finished_at=now,
            )
        )
        return True

    return run_transaction(engine, work)


# --- e-mail settings ----------------------------------------------------------------------------


def set_email_settings(engine: sa.Engine, settings: EmailSettings) -> None:
    """Store (or replace) the tenant's notification e-mail settings."""
    values = {
        "recipients": list(settings.recipients),
        "events": [NotificationEvent(e).value for e in settings.events],
        "sender": settings.sender,
        "smtp_host": settings.smtp_host,
        "smtp_port": settings.smtp_port,
        "smtp_security": settings.smtp_security,
        "smtp_credentials_name": settings.smtp_credentials_name,
        "updated_at": utcnow(),
    }

    def work(conn: sa.Connection) -> None:
        changed = conn.execute(
            sa.update(notification_email).where(notification_email.c.tenant_id == settings.tenant_id).values(**values)
        ).rowcount
        if not changed:
            conn.execute(sa.insert(notification_email).values(tenant_id=settings.tenant_id, **values))

    run_transaction(engine, work)


def get_email_settings(engine: sa.Engine, tenant_id: int) -> EmailSettings | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(notification_email).where(notification_email.c.tenant_id == tenant_id)).first()
    return None if row is None else _email(row)


def clear_email_settings(engine: sa.Engine, tenant_id: int) -> bool:
    """Stop e-mail notifications for the tenant; False when none were set."""
    return bool(
        run_transaction(
            engine,
            lambda conn: (
                conn.execute(sa.delete(notification_email).where(notification_email.c.tenant_id == tenant_id)).rowcount
            ),
        )
    )


def _email(row: Any) -> EmailSettings:
    return EmailSettings(
        tenant_id=row.tenant_id,
        recipients=list(row.recipients),
        events=list(row.events),
        sender=row.sender,
        smtp_host=row.smtp_host,
        smtp_port=row.smtp_port,
        smtp_security=row.smtp_security,
        smtp_credentials_name=row.smtp_credentials_name,
    )


# --- enqueue: in the header's transaction ----------------------------------------------------------


def enqueue_settled(
    conn: sa.Connection, bulk_change_id: int, status: BulkChangeStatus, counts: dict[str, int]
) -> int | None:
    """After ``write_header`` stored ``status``: when that settles the bulk change (module
    docstring of ``domain.notifications``) and the tenant has a subscription or e-mail settings
    for the event, store the event and one delivery per target (plus one per device-results page
    for subscriptions that asked for them). Returns the event id, or None (not settled, nobody to
    tell, or this attempt's event was enqueued before)."""
    head = conn.execute(
        sa.select(
            bulk_change.c.id,
            bulk_change.c.tenant_id,
            tenant.c.name.label("tenant_name"),
            bulk_change.c.service_provider_id,
            bulk_change.c.change_type,
            bulk_change.c.process_changes,
            bulk_change.c.attempt,
            bulk_change.c.created_at,
            bulk_change.c.processed_at,
        )
        .join(tenant, tenant.c.id == bulk_change.c.tenant_id)
        .where(bulk_change.c.id == bulk_change_id)
    ).first()
    if head is None:
        return None
    outcome = outcome_of(status.value, counts, held=not head.process_changes)
    event = event_for(outcome)
    if event is None:
        return None
    subscriptions = [
        s
        for s in conn.execute(
            sa.select(
                webhook_subscription.c.id,
                webhook_subscription.c.events,
                webhook_subscription.c.device_results,
                webhook_subscription.c.page_size,
            )
            .where(webhook_subscription.c.tenant_id == head.tenant_id, webhook_subscription.c.deleted_at.is_(None))
            .order_by(webhook_subscription.c.id)
        ).all()
        if event.value in s.events
    ]
    email = conn.execute(
        sa.select(notification_email.c.events, notification_email.c.recipients).where(
            notification_email.c.tenant_id == head.tenant_id
        )
    ).first()
    to_email = email is not None and event.value in email.events and bool(email.recipients)
    if not subscriptions and not to_email:
        return None
    now = utcnow()
    data = event_data({**head._mapping, "status": status.value}, counts, outcome)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    event_id = conn.execute(
        dialect.insert(notification_event)
        .values(
            tenant_id=head.tenant_id,
            bulk_change_id=bulk_change_id,
            attempt=head.attempt,
            event=event.value,
            payload=data,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["bulk_change_id", "attempt", "event"])
        .returning(notification_event.c.id)
    ).scalar()
    if event_id is None:
        return None  # this attempt's event was enqueued by an earlier settle
    pending = {"status": DeliveryStatus.PENDING.value, "next_attempt_at": now, "created_at": now}
    rows: list[dict[str, Any]] = []
    for s in subscriptions:
        pages = device_pages(data["devices"], s.page_size) if s.device_results else 0
        for page in [None, *range(1, pages + 1)]:
            rows.append({"subscription_id": s.id, "channel": Channel.WEBHOOK.value, "page": page})
    if to_email:
        rows.append({"subscription_id": None, "channel": Channel.EMAIL.value, "page": None})
    conn.execute(
        sa.insert(notification_delivery),
        [
            {**row, **pending, "tenant_id": head.tenant_id, "event_id": event_id, "message_id": new_message_id()}
            for row in rows
        ],
    )
    return int(event_id)
