"""Administration: ``bulkchange init-db``, ``seed-demo``, ``api-key create|list|revoke``,
``tenant retention`` and ``rebuild-status`` (state reconstruction after a restore, issue 7)."""

from __future__ import annotations

import click
import sqlalchemy as sa
from rich.table import Table
from rich.text import Text as RichText

from .. import settings
from ..domain.approval import Role, parse_roles
from ..store import migrate
from ..store import reference as ref
from ..store.api_keys import create_api_key, list_api_keys, revoke_api_key, roles_text
from ..store.maintenance import get_retention, set_retention
from ..store.rebuild import plan_rebuild, rebuild_status
from ..store.seed import seed_demo
from ._common import (
    ID,
    TEXT,
    UserError,
    console,
    database_option,
    friendly_errors,
    open_engine,
    resolve_tenant,
    tenant_option,
)


@click.command("init-db")
@database_option
@friendly_errors
def init_db(database_url: str | None) -> None:
    """Create or upgrade the business database schema (Alembic migrations)."""
    url = database_url or settings.database_url()
    migrate.upgrade(url)
    click.echo(f"database ready: {sa.engine.make_url(url).render_as_string(hide_password=True)}")


@click.command("seed-demo")
@database_option
@click.option("--devices-per-carrier", default=1000, show_default=True, type=click.IntRange(0, 2_000_000))
@click.option("--reset", is_flag=True, help="Delete the demo and other tenants first.")
@click.option(
    "--base-url",
    "base_urls",
    multiple=True,
    metavar="INTEGRATION=URL",
    help="Override a carrier's base URL (default: BULKCHANGE_DEMO_<INTEGRATION>_BASE_URL, else the seed's).",
)
@friendly_errors
def seed_demo_command(
    database_url: str | None, devices_per_carrier: int, reset: bool, base_urls: tuple[str, ...]
) -> None:
    """Create the demo tenant (one service provider per carrier, devices, plans, customers)."""
    overrides = settings.demo_base_urls()
    for item in base_urls:
        key, sep, url = item.partition("=")
        if not sep or not url:
            raise UserError(
                f"--base-url {item!r}: expected INTEGRATION=URL, e.g. jasper=http://127.0.0.1:8910/rws/api/v1"
            )
        overrides[key] = url
    with open_engine(database_url) as engine:
        seed = seed_demo(engine, devices_per_carrier, overrides, reset=reset)
        sps = ref.list_service_providers(engine, seed.tenant_id)
    out = console()
    out.print(
        "seeded the demo tenant" if seed.created else "the demo tenant exists already; nothing changed (use --reset)"
    )
    table = Table()
    for col in ("id", "service provider", "integration", "protocol", "base URL", "credentials"):
        table.add_column(col, overflow="fold")
    for sp in sps:
        table.add_row(
            str(sp.id),
            sp.name,
            sp.integration.value,
            sp.protocol.value,
            sp.base_url,
            f"{settings.credential_env_key(sp.credentials_name)}_*",
        )
    out.print(table)


# --- API keys --------------------------------------------------------------------------------------


@click.group("api-key")
def api_key_group() -> None:
    """Per-tenant API keys for the intake HTTP API (stored hashed; shown once)."""


@api_key_group.command("create")
@click.option("--name", required=True, type=TEXT, help="Who or what uses the key, e.g. ops or portal.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice([r.value for r in Role]),
    help="viewer (read only), submitter (submit and operate; the default) or approver (approve or reject "
    "others' bulk changes awaiting approval). Repeat for several.",
)
@tenant_option
@database_option
@friendly_errors
def api_key_create(name: str, roles: tuple[str, ...], tenant: str, database_url: str | None) -> None:
    """Create a key for the tenant and print it once: only its hash is stored."""
    if not name.strip():
        raise UserError("--name must not be blank: say who or what uses the key")
    chosen = parse_roles(roles or [Role.SUBMITTER.value])
    with open_engine(database_url) as engine:
        key = create_api_key(engine, resolve_tenant(engine, tenant), name, chosen)
    click.echo(key)
    click.echo(
        f"API key {name!r} ({roles_text(chosen)}) for tenant {tenant!r}: store it now, it cannot be shown again. "
        "Send it as 'Authorization: Bearer <key>'.",
        err=True,
    )


@api_key_group.command("list")
@tenant_option
@database_option
@friendly_errors
def api_key_list(tenant: str, database_url: str | None) -> None:
    """The tenant's keys (ids, names, dates; never the keys)."""
    with open_engine(database_url) as engine:
        keys = list_api_keys(engine, resolve_tenant(engine, tenant))
    table = Table()
    for col in ("id", "name", "roles", "created", "revoked"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            str(k.id),
            RichText(k.name),
            k.roles,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
    console().print(table)


@api_key_group.command("revoke")
@click.argument("key_id", type=ID)
@tenant_option
@database_option
@friendly_errors
def api_key_revoke(key_id: int, tenant: str, database_url: str | None) -> None:
    """Revoke a key by its id (see `api-key list`); requests with it get 401 from now on."""
    with open_engine(database_url) as engine:
        if not revoke_api_key(engine, resolve_tenant(engine, tenant), key_id):
            raise UserError(f"no live API key {key_id} in tenant {tenant!r}")
    click.echo(f"revoked API key {key_id}")


# --- data lifecycle: state reconstruction and retention settings (issue 7) ----------------------


@click.command("rebuild-status")
@click.argument("bulk_change_id", type=ID, required=False)
@click.option("--all", "all_", is_flag=True, help="Every bulk change of the tenant (not archived).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@tenant_option
@database_option
@friendly_errors
def rebuild_status_command(
    bulk_change_id: int | None, all_: bool, dry_run: bool, tenant: str, database_url: str | None
) -> None:
    """Rebuild bulk change status and counts from their device rows and logs (after a restore).

    Run it with no runs in flight: a bulk change mid-run legitimately differs from its rows.
    """
    if (bulk_change_id is None) == (not all_):
        raise UserError("give one BULK_CHANGE_ID or --all")
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        ids = None if all_ else [bulk_change_id]
        plan = (plan_rebuild if dry_run else rebuild_status)(engine, tenant_id=tenant_id, ids=ids)
    if bulk_change_id is not None and not plan:
        raise UserError(f"no bulk change {bulk_change_id} in this tenant (or it was archived)")
    changed = [r for r in plan if r.changed]
    table = Table()
    for col in ("bulk change", "status", "counts"):
        table.add_column(col, overflow="fold")
    for r in changed:
        status = r.status if r.old_status == r.status else f"{r.old_status} -> {r.status}"
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items()) or "no rows"
        table.add_row(
            str(r.bulk_change_id), status, counts if r.old_counts == r.counts else f"{counts} (was: {r.old_counts})"
        )
    out = console()
    if changed:
        out.print(table)
    verb = "would rebuild" if dry_run else "rebuilt"
    out.print(
        f"examined {len(plan)} bulk changes; {verb} {len(changed)}; {len(plan) - len(changed)} already matched their rows"
    )


@click.group("tenant")
def tenant_group() -> None:
    """Tenant settings."""


@tenant_group.command("retention")
@click.option(
    "--archive-days",
    type=click.IntRange(1),
    default=None,
    help="Days after completion before a bulk change is archived.",
)
@click.option(
    "--purge-days",
    type=click.IntRange(1),
    default=None,
    help="Days after completion before an archived bulk change is deleted.",
)
@tenant_option
@database_option
@friendly_errors
def tenant_retention_command(
    archive_days: int | None, purge_days: int | None, tenant: str, database_url: str | None
) -> None:
    """Show or change how long the tenant's bulk changes stay in the database (archive) and at all (purge)."""
    with open_engine(database_url) as engine:
        tenant_id = resolve_tenant(engine, tenant)
        if archive_days is None and purge_days is None:
            r = get_retention(engine, tenant_id)
        else:
            try:
                r = set_retention(engine, tenant_id, archive_after_days=archive_days, purge_after_days=purge_days)
            except ValueError as exc:
                raise UserError(str(exc)) from None
    click.echo(
        f"tenant {r.name!r}: archive {r.archive_after_days} days after completion, purge {r.purge_after_days} days after completion"
    )


COMMANDS = [init_db, seed_demo_command, api_key_group, rebuild_status_command, tenant_group]

__all__ = [
    "COMMANDS",
    "api_key_group",
    "init_db",
    "rebuild_status_command",
    "seed_demo_command",
    "tenant_group",
    "tenant_retention_command",
]
