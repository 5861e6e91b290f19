"""``bulkchange notifications``: a tenant's webhook subscriptions and e-mail settings, its deliveries
with their attempts, and re-sending one.

The same store functions and URL guard as the API (``intake.api_notifications``); the e-mail
settings (SMTP server, recipients) are set here only, by an operator: the SMTP password is never
given on the command line or stored, ``--smtp-credentials NAME`` names the
``BULKCHANGE_CRED_<NAME>_USERNAME`` / ``_SECRET`` variables the delivery run reads.
"""

from __future__ import annotations

import getpass
import re

import click

from .. import settings
from ..domain.notifications import DELIVERY_STATUSES, MAX_PAGE_SIZE, MIN_PAGE_SIZE, DeliveryStatus, parse_events
from ..engine.notify import (
    AddressRefused,
    check_webhook_url,
    derive_secret,
    masked_url,
    new_nonce,
    plain_auth_refusal,
)
from ..store import notification_deliveries as deliveries
from ..store import notifications as store
from ..store.db import utcnow
from ._common import ID, TEXT, UserError, database_option, friendly_errors, open_engine, resolve_tenant, tenant_option

__all__ = ["COMMANDS", "notifications_group"]

EVENTS = click.Choice(["completed", "failed", "needs_attention"])
_ADDRESS = re.compile(r"^[^@\s<>,;\"']{1,64}@[A-Za-z0-9.-]{1,253}$")


@click.group("notifications")
def notifications_group() -> None:
    """Completion notifications: webhooks (signed, Standard Webhooks) and e-mail."""


@notifications_group.command("subscribe")
@click.argument("url", type=TEXT)
@click.option("--event", "events", multiple=True, type=EVENTS, help="Repeatable; default: all three.")
@click.option("--device-results", is_flag=True, help="Also send per-device results in pages.")
@click.option("--page-size", type=click.IntRange(MIN_PAGE_SIZE, MAX_PAGE_SIZE), default=500, show_default=True)
@click.option("--description", type=TEXT, default="", help="A note for people.")
@tenant_option
@database_option
@friendly_errors
def subscribe_command(
    url: str,
    events: tuple[str, ...],
    device_results: bool,
    page_size: int,
    description: str,
    tenant: str,
    database_url: str | None,
) -> None:
    """Subscribe URL to the tenant's bulk change events; prints the signing secret once."""
    if len(description) > 200:
        raise UserError("--description is longer than 200 characters")
    try:
        target = check_webhook_url(url, allow_private=settings.webhook_allow_private())
    except AddressRefused as exc:
        raise UserError(f"webhook URL refused: {exc}") from None
    nonce = new_nonce()
    with open_engine(database_url) as engine:
        sub = store.create_subscription(
            engine,
            resolve_tenant(engine, tenant),
            url=target.url,
            events=parse_events(list(events or EVENTS.choices)),
            secret_nonce=nonce,
            created_by=f"cli:{getpass.getuser()}",
            device_results=device_results,
            page_size=page_size,
            description=description,
        )
    secret = derive_secret(settings.webhook_signing_key(), nonce).get_secret_value()
    click.echo(f"subscription {sub.id}: {masked_url(sub.url)} ({', '.join(sub.events)})")
    click.echo(f"signing secret (shown once): {secret}")


@notifications_group.command("subscriptions")
@tenant_option
@database_option
@friendly_errors
def subscriptions_command(tenant: str, database_url: str | None) -> None:
    """List the tenant's webhook subscriptions."""
    with open_engine(database_url) as engine:
        subs = store.list_subscriptions(engine, resolve_tenant(engine, tenant))
    if not subs:
        click.echo("no subscriptions")
    for s in subs:
        pages = f", device results in pages of {s.page_size}" if s.device_results else ""
        click.echo(f"{s.id}  {masked_url(s.url)}  events: {', '.join(s.events)}{pages}  {s.description}".rstrip())


@notifications_group.command("unsubscribe")
@click.argument("subscription_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def unsubscribe_command(subscription_id: int, tenant: str, database_url: str | None) -> None:
    """Delete a subscription; its pending deliveries end dead."""
    with open_engine(database_url) as engine:
        if not store.delete_subscription(engine, resolve_tenant(engine, tenant), subscription_id):
            raise UserError(f"no subscription {subscription_id} in tenant {tenant!r}")
    click.echo(f"subscription {subscription_id} deleted")


@notifications_group.command("deliveries")
@click.option("--status", type=click.Choice(DELIVERY_STATUSES), default=None)
@click.option("--bulk-change", "bulk_change_id", type=ID, default=None)
@click.option("--limit", type=click.IntRange(1, deliveries.MAX_DELIVERY_PAGE), default=20, show_default=True)
@tenant_option
@database_option
@friendly_errors
def deliveries_command(
    status: str | None, bulk_change_id: int | None, limit: int, tenant: str, database_url: str | None
) -> None:
    """The newest deliveries with every attempt (time, answer code or error)."""
    with open_engine(database_url) as engine:
        found = deliveries.list_deliveries(
            engine,
            resolve_tenant(engine, tenant),
            status=DeliveryStatus(status) if status else None,
            bulk_change_id=bulk_change_id,
            page_size=limit,
        )
    if not found.items:
        click.echo("no deliveries")
    for d in found.items:
        what = f"page {d.page}" if d.page is not None else d.event
        target = f"subscription {d.subscription_id}" if d.subscription_id else d.channel
        nxt = f", next attempt {d.next_attempt_at:%Y-%m-%d %H:%M:%S}Z" if d.next_attempt_at else ""
        click.echo(f"{d.id}  bulk change {d.bulk_change_id} {what} -> {target}: {d.status}{nxt}")
        for a in d.attempts:
            answer = a.response_code if a.response_code is not None else "-"
            click.echo(
                f"    #{a.attempt} {a.started_at:%Y-%m-%d %H:%M:%S}Z {answer} {a.duration_ms:.0f} ms"
                + (f" {a.error}" if a.error else "")
            )
    if found.total > len(found.items):
        click.echo(f"({found.total - len(found.items)} older not shown: --limit)")


@notifications_group.command("resend")
@click.argument("delivery_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def resend_command(delivery_id: int, tenant: str, database_url: str | None) -> None:
    """Send a delivered or dead delivery again (same webhook-id, fresh retry schedule)."""
    with open_engine(database_url) as engine:
        try:
            d = deliveries.resend_delivery(engine, resolve_tenant(engine, tenant), delivery_id, utcnow())
        except (deliveries.DeliveryNotFound, deliveries.ResendRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(f"delivery {d.id}: pending again; the next delivery pass sends it (notification_sensor)")


@notifications_group.group("email")
def email_group() -> None:
    """The tenant's notification e-mail (SMTP server, recipients)."""


@email_group.command("set")
@click.option("--to", "recipients", multiple=True, required=True, type=TEXT, help="Recipient; repeatable.")
@click.option("--from", "sender", required=True, type=TEXT, help="Sender address.")
@click.option("--smtp-host", required=True, type=TEXT)
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=587, show_default=True)
@click.option("--smtp-security", type=click.Choice(["starttls", "tls", "none"]), default="starttls", show_default=True)
@click.option(
    "--smtp-credentials",
    type=TEXT,
    default=None,
    help="Credentials entry NAME: BULKCHANGE_CRED_<NAME>_USERNAME and _SECRET hold the SMTP login (never stored).",
)
@click.option("--event", "events", multiple=True, type=EVENTS, help="Repeatable; default: all three.")
@tenant_option
@database_option
@friendly_errors
def email_set_command(
    recipients: tuple[str, ...],
    sender: str,
    smtp_host: str,
    smtp_port: int,
    smtp_security: str,
    smtp_credentials: str | None,
    events: tuple[str, ...],
    tenant: str,
    database_url: str | None,
) -> None:
    """Send the tenant's bulk change events by e-mail."""
    for address in (*recipients, sender):
        if not _ADDRESS.match(address):
            raise UserError(f"{address[:80]!r} is not an e-mail address")
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", smtp_host):
        raise UserError(f"--smtp-host {smtp_host[:80]!r} is not a host name or address")
    if refusal := plain_auth_refusal(smtp_host, smtp_security, smtp_credentials is not None):
        raise UserError(refusal)
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        store.set_email_settings(
            engine,
            store.EmailSettings(
                tenant_id=tenant_id,
                recipients=list(dict.fromkeys(recipients)),
                events=[e.value for e in parse_events(list(events or EVENTS.choices))],
                sender=sender,
                smtp_host=smtp_host,
                smtp_port=smtp_port,
                smtp_security=smtp_security,
                smtp_credentials_name=smtp_credentials,
            ),
        )
    click.echo(f"tenant {tenant!r}: events e-mailed to {', '.join(recipients)} through {smtp_host}:{smtp_port}")


@email_group.command("show")
@tenant_option
@database_option
@friendly_errors
def email_show_command(tenant: str, database_url: str | None) -> None:
    with open_engine(database_url) as engine:
        found = store.get_email_settings(engine, resolve_tenant(engine, tenant))
    if found is None:
        click.echo("no e-mail notifications")
        return
    login = (
        f", login from BULKCHANGE_CRED_* entry {found.smtp_credentials_name!r}" if found.smtp_credentials_name else ""
    )
    click.echo(
        f"to {', '.join(found.recipients)} from {found.sender} via {found.smtp_host}:{found.smtp_port} "
        f"({found.smtp_security}{login}); events: {', '.join(found.events)}"
    )


@email_group.command("clear")
@tenant_option
@database_option
@friendly_errors
def email_clear_command(tenant: str, database_url: str | None) -> None:
    with open_engine(database_url) as engine:
        cleared = store.clear_email_settings(engine, resolve_tenant(engine, tenant))
    click.echo("e-mail notifications stopped" if cleared else "no e-mail notifications were set")


COMMANDS = [notifications_group]
