"""four-eyes approval: API key roles, tenants' approval policies, approval requests; a longer status

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

Keys made before this revision get ``submitter,approver``: they could do everything before, and
taking a right away from a working integration on upgrade would break it; the four-eyes rule still
holds for them (nobody approves their own submission). New keys get ``submitter`` unless told.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(sa.Column("roles", sa.String(length=64), server_default="submitter,approver", nullable=False))
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column("bulk_change", "status", type_=sa.String(length=32), existing_nullable=False)
    op.create_table(
        "approval_policy",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("max_devices", sa.Integer(), nullable=True),
        sa.Column("irreversible", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("expires_after_hours", sa.Integer(), server_default="72", nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_approval_policy_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_approval_policy")),
    )
    op.create_table(
        "bulk_change_approval",
        sa.Column("bulk_change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("needed_because", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(length=200), nullable=False),
        sa.Column("submitted_principal", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bulk_change_id"],
            ["bulk_change.id"],
            name=op.f("fk_bulk_change_approval_bulk_change_id_bulk_change"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_bulk_change_approval_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("bulk_change_id", name=op.f("pk_bulk_change_approval")),
    )
    op.create_index(op.f("ix_bulk_change_approval_tenant_id"), "bulk_change_approval", ["tenant_id"])
    op.create_index("ix_bulk_change_approval_due", "bulk_change_approval", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_bulk_change_approval_due", table_name="bulk_change_approval")
    op.drop_index(op.f("ix_bulk_change_approval_tenant_id"), table_name="bulk_change_approval")
    op.drop_table("bulk_change_approval")
    op.drop_table("approval_policy")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("bulk_change", "status", type_=sa.String(length=16), existing_nullable=False)
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("roles")
