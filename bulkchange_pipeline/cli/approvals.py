"""Four-eyes approval from the command line: ``bulkchange approve``, ``reject`` and ``approval-policy``.

Who the CLI is: an operator with database access, named by ``--as NAME`` (default: the OS user),
recorded as ``cli:NAME`` in the bulk change's log and approval. The four-eyes rule holds for it as
for API keys: ``approve`` is refused when NAME submitted the bulk change (``bulkchange submit
--created-by``, default the OS user too). The CLI has no roles to check (database access is already
every right); ``--as`` is who it says it is, recorded for the audit trail.
"""

from __future__ import annotations

import getpass

import click

from ..domain.approval import DEFAULT_EXPIRES_AFTER_HOURS, ApprovalPolicy
from ..store.approvals import (
    SelfApprovalRefused,
    approve_bulk_change,
    cli_actor,
    get_policy,
    reject_bulk_change,
    set_policy,
)
from ..store.operations import BulkChangeNotFound, OperationRefused
from ._common import ID, TEXT, UserError, database_option, friendly_errors, open_engine, resolve_tenant, tenant_option

__all__ = ["COMMANDS", "approval_policy_group", "approve_command", "reject_command"]

AS_OPTION = click.option(
    "--as",
    "actor",
    default=None,
    type=TEXT,
    help="Who acts, recorded as cli:NAME (default: the OS user). Never the one who submitted it.",
)


@click.command("approve")
@click.argument("bulk_change_id", type=ID)
@AS_OPTION
@tenant_option
@database_option
@friendly_errors
def approve_command(bulk_change_id: int, actor: str | None, tenant: str, database_url: str | None) -> None:
    """Approve a bulk change awaiting approval (submitted by someone else); the sensor then starts it."""
    who = cli_actor(actor or getpass.getuser())
    with open_engine(database_url) as engine:
        try:
            r = approve_bulk_change(engine, resolve_tenant(engine, tenant), bulk_change_id, by=who)
        except (BulkChangeNotFound, OperationRefused, SelfApprovalRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(
        f"bulk change {bulk_change_id}: approved by {r.decided_by}; it is {r.status}. "
        f"Follow it with: bulkchange status {bulk_change_id} --watch"
    )


@click.command("reject")
@click.argument("bulk_change_id", type=ID)
@click.option("--reason", required=True, type=TEXT, help="Why (stored with the bulk change and shown).")
@AS_OPTION
@tenant_option
@database_option
@friendly_errors
def reject_command(bulk_change_id: int, reason: str, actor: str | None, tenant: str, database_url: str | None) -> None:
    """Reject a bulk change awaiting approval: every row ends CANCELLED with the reason; nothing is sent."""
    if not reason.strip():
        raise UserError("--reason must not be blank: say why it is rejected")
    who = cli_actor(actor or getpass.getuser())
    with open_engine(database_url) as engine:
        try:
            r = reject_bulk_change(engine, resolve_tenant(engine, tenant), bulk_change_id, by=who, reason=reason)
        except (BulkChangeNotFound, OperationRefused) as exc:
            raise UserError(str(exc)) from None
    click.echo(f"bulk change {bulk_change_id}: rejected by {r.decided_by}; it is {r.status}")


@click.group("approval-policy")
def approval_policy_group() -> None:
    """A tenant's four-eyes policy: which bulk changes wait for a second person's approval."""


def _describe(policy: ApprovalPolicy) -> str:
    rules = []
    if policy.max_devices is not None:
        rules.append(f"more than {policy.max_devices} devices")
    if policy.irreversible:
        rules.append("changes the carrier cannot reverse (deactivation, retirement, ICCID swap)")
    needs = " or ".join(rules) if rules else "nothing (no policy)"
    return f"needs approval: {needs}; expires after {policy.expires_after_hours} hours"


@approval_policy_group.command("set")
@click.option("--max-devices", type=click.IntRange(0), default=None, help="More devices than this need approval.")
@click.option("--irreversible/--no-irreversible", default=False, help="Irreversible changes need approval.")
@click.option(
    "--expires-after-hours",
    type=click.IntRange(1, 8760),
    default=DEFAULT_EXPIRES_AFTER_HOURS,
    show_default=True,
    help="A waiting bulk change ends CANCELLED when nobody acts within this time.",
)
@tenant_option
@database_option
@friendly_errors
def policy_set(
    max_devices: int | None, irreversible: bool, expires_after_hours: int, tenant: str, database_url: str | None
) -> None:
    """Set the tenant's policy (replaces the previous one; neither rule given: nothing needs approval)."""
    policy = ApprovalPolicy(max_devices, irreversible, expires_after_hours)
    with open_engine(database_url) as engine:
        set_policy(engine, resolve_tenant(engine, tenant), policy)
    click.echo(f"tenant {tenant!r}: {_describe(policy)}")


@approval_policy_group.command("show")
@tenant_option
@database_option
@friendly_errors
def policy_show(tenant: str, database_url: str | None) -> None:
    """The tenant's policy."""
    with open_engine(database_url) as engine:
        policy = get_policy(engine, resolve_tenant(engine, tenant))
    click.echo(f"tenant {tenant!r}: {_describe(policy)}")


COMMANDS = [approve_command, reject_command, approval_policy_group]
