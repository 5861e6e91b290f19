"""file drops: per-tenant inbox/outbox settings and the files taken from inboxes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_drop_setting",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("inbox_url", sa.String(length=1000), nullable=True),
        sa.Column("outbox_url", sa.String(length=1000), nullable=True),
        sa.Column("credentials_name", sa.String(length=100), nullable=True),
        sa.Column("service_provider_id", sa.Integer(), nullable=True),
        sa.Column("change_type", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_provider_id"],
            ["service_provider.id"],
            name=op.f("fk_file_drop_setting_service_provider_id_service_provider"),
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_file_drop_setting_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_file_drop_setting")),
    )
    op.create_table(
        "file_drop",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("bulk_change_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("moved_at", sa.DateTime(), nullable=True),
        sa.Column("results_name", sa.String(length=300), nullable=True),
        sa.Column("results_written_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bulk_change_id"],
            ["bulk_change.id"],
            name=op.f("fk_file_drop_bulk_change_id_bulk_change"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_file_drop_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_drop")),
        sa.UniqueConstraint("tenant_id", "content_sha256", name="uq_file_drop_tenant_content"),
    )
    op.create_index(op.f("ix_file_drop_tenant_id"), "file_drop", ["tenant_id"])
    op.create_index("ix_file_drop_results_due", "file_drop", ["results_written_at"])


def downgrade() -> None:
    op.drop_index("ix_file_drop_results_due", table_name="file_drop")
    op.drop_index(op.f("ix_file_drop_tenant_id"), table_name="file_drop")
    op.drop_table("file_drop")
    op.drop_table("file_drop_setting")
