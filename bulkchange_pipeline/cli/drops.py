"""``bulkchange drops``: a tenant's file drop settings (inbox and outbox URLs, the SFTP credentials
entry, what a dropped CSV asks for) and where its folders are.

The SFTP password is never given here or stored: ``--credentials NAME`` names the
``BULKCHANGE_CRED_<NAME>_USERNAME`` / ``_SECRET`` / ``_KNOWN_HOSTS`` variables the sensor reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..domain import ChangeType
from ..intake.drops import DropConfigError, check_drop_url, default_root
from ..intake.parsing import IntakeError, change_type_option
from ..intake.x12 import load_partner_settings
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
        f"X12 partners: {', '.join(sorted(drop.partner_settings or {})) or '-'}",
        f"enabled:    {'yes' if drop.enabled else 'no'}",
    ]


def _partners(path: Path | None) -> dict[str, Any] | None:
    """The ``--x12-partners`` file: {"<ISA05>:<ISA06>" or "*": settings}, each checked now."""
    if path is None:
        return None
    try:
        partners = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--x12-partners: cannot read {str(path)[:200]!r} as JSON: {exc}") from None
    if not isinstance(partners, dict) or not partners:
        raise UserError('--x12-partners: the file must be a JSON object {"<ISA05>:<ISA06>" or "*": settings}')
    for sender, settings in partners.items():
        if not isinstance(sender, str) or not 1 <= len(sender) <= 40:
            raise UserError(f"--x12-partners: {str(sender)[:60]!r} is not a sender (ISA05:ISA06, or *)")
        try:
            load_partner_settings(settings)
        except IntakeError as exc:
            raise UserError(f"--x12-partners: {sender}: {exc}") from None
    return partners


@drops_group.command("set")
@click.option(
    "--inbox-url", type=TEXT, default=None, help="file:///path, /path or sftp://host[:port]/path (default: local)."
)
@click.option("--outbox-url", type=TEXT, default=None, help="As --inbox-url, on the same server (default: local).")
@click.option("--credentials", type=TEXT, default=None, help="SFTP: the BULKCHANGE_CRED_<NAME>_* entry.")
@click.option("--service-provider", type=TEXT, default=None, help="For CSV files without the column: id or name.")
@click.option("--change-type", type=TEXT, default=None, help="For CSV files without the column: name or number.")
@click.option(
    "--x12-partners",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='X12: a JSON file {"<ISA05>:<ISA06>" or "*": trading-partner settings} (docs/x12-guide.md).',
)
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
    x12_partners: Path | None,
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
        partners = _partners(x12_partners)
    except (DropConfigError, IntakeError) as exc:
        raise UserError(str(exc)) from None
    if any(u and u.startswith("sftp:") for u in (inbox_url, outbox_url)) and not credentials:
        raise UserError("an SFTP inbox or outbox needs --credentials NAME")
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        sp_id = resolve_service_provider(engine, tenant_id, service_provider)
        known = {sp.id for sp in ref.list_service_providers(engine, tenant_id)}
        if sp_id is not None and sp_id not in known:
            raise UserError(f"no service provider {sp_id} in tenant {tenant!r}")
        for sender, settings in (partners or {}).items():
            if load_partner_settings(settings).service_provider_id not in known:
                raise UserError(f"--x12-partners: {sender}: no such service provider in tenant {tenant!r}")
        drop = set_drop_settings(
            engine,
            tenant_id,
            inbox_url=inbox_url,
            outbox_url=outbox_url,
            credentials_name=credentials,
            service_provider_id=sp_id,
            change_type=int(change) if change is not None else None,
            enabled=not disable,
            partner_settings=partners,
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
