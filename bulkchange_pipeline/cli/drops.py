"""``bulkchange drops``: a tenant's file drop settings (inbox and outbox URLs, the SFTP credentials
entry, what a dropped CSV asks for) and where its folders are.

The SFTP password is never given here or stored: ``--credentials NAME`` names the
``BULKCHANGE_CRED_<NAME>_USERNAME`` / ``_SECRET`` / ``_KNOWN_HOSTS`` variables the sensor reads.
"""

from __future__ import annotations

import click

from ..domain import ChangeType
from ..intake.drops import DropConfigError, check_drop_url, default_root
from ..intake.parsing import IntakeError, change_type_option
from ..store import reference as ref
from ..store.file_drops import DropSettings, drop_settings, set_drop_settings
from ._common import (
    TEXT,
    UserError,
    database_option,
    friendly_errors,
    open_engine,
    resolve_service_provider,
    resolve_tenant,
    tenant_option,
)

__all__ = ["COMMANDS", "drops_group"]


@click.group("drops")
def drops_group() -> None:
    """File drops: the tenant's inbox and outbox (local folder or SFTP)."""


def _describe(drop: DropSettings) -> list[str]:
    root = default_root(drop.tenant_id)
    change = ChangeType(drop.change_type).label if drop.change_type is not None else "from the file"
    return [
        f"inbox:      {drop.inbox_url or root / 'inbox'} (processed/ and rejected/ inside it)",
        f"outbox:     {drop.outbox_url or root / 'outbox'}",
        f"credentials: {drop.credentials_name or '-'}",
        f"CSV files:  service provider {drop.service_provider_id or 'from the file'}, change type {change}",
        f"enabled:    {'yes' if drop.enabled else 'no'}",
    ]


@drops_group.command("set")
@click.option(
    "--inbox-url", type=TEXT, default=None, help="file:///path, /path or sftp://host[:port]/path (default: local)."
)
@click.option("--outbox-url", type=TEXT, default=None, help="As --inbox-url, on the same server (default: local).")
@click.option("--credentials", type=TEXT, default=None, help="SFTP: the BULKCHANGE_CRED_<NAME>_* entry.")
@click.option("--service-provider", type=TEXT, default=None, help="For CSV files without the column: id or name.")
@click.option("--change-type", type=TEXT, default=None, help="For CSV files without the column: name or number.")
@click.option("--disable", is_flag=True, help="Stop watching the inbox.")
@tenant_option
@database_option
@friendly_errors
def set_command(
    inbox_url: str | None,
    outbox_url: str | None,
    credentials: str | None,
    service_provider: str | None,
    change_type: str | None,
    disable: bool,
    tenant: str,
    database_url: str | None,
) -> None:
    """Set (replace) the tenant's drop settings."""
    try:
        for url in (inbox_url, outbox_url):
            if url is not None:
                check_drop_url(url)
        change = change_type_option(change_type)
    except (DropConfigError, IntakeError) as exc:
        raise UserError(str(exc)) from None
    if any(u and u.startswith("sftp:") for u in (inbox_url, outbox_url)) and not credentials:
        raise UserError("an SFTP inbox or outbox needs --credentials NAME")
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        sp_id = resolve_service_provider(engine, tenant_id, service_provider)
        if sp_id is not None and sp_id not in {sp.id for sp in ref.list_service_providers(engine, tenant_id)}:
            raise UserError(f"no service provider {sp_id} in tenant {tenant!r}")
        drop = set_drop_settings(
            engine,
            tenant_id,
            inbox_url=inbox_url,
            outbox_url=outbox_url,
            credentials_name=credentials,
            service_provider_id=sp_id,
            change_type=int(change) if change is not None else None,
            enabled=not disable,
        )
    for line in _describe(drop):
        click.echo(line)


@drops_group.command("show")
@tenant_option
@database_option
@friendly_errors
def show_command(tenant: str, database_url: str | None) -> None:
    """Show the tenant's drop settings and folders."""
    with open_engine(database_url) as engine:
        drop = drop_settings(engine, resolve_tenant(engine, tenant))
    if drop is None:
        raise UserError(f"tenant {tenant!r} has no file drops: `bulkchange drops set --tenant {tenant}` turns them on")
    for line in _describe(drop):
        click.echo(line)


COMMANDS = [drops_group]
