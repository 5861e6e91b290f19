"""X12 through the file drops: trading-partner settings, interchanges taken, our control numbers

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_drop_setting") as batch:
        batch.add_column(sa.Column("partner_settings", sa.JSON(), nullable=True))
    op.create_table(
        "x12_interchange",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=40), nullable=False),
        sa.Column("control", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("requests", sa.JSON(), nullable=False),
        sa.Column("serial_qualifiers", sa.JSON(), nullable=False),
        sa.Column("bulk_change_ids", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("advice_name", sa.String(length=300), nullable=True),
        sa.Column("advice_written_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_x12_interchange_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_x12_interchange")),
        sa.UniqueConstraint("tenant_id", "sender", "control", name="uq_x12_interchange_tenant_sender_control"),
    )
    op.create_index(op.f("ix_x12_interchange_tenant_id"), "x12_interchange", ["tenant_id"])
    op.create_index("ix_x12_interchange_advice_due", "x12_interchange", ["advice_written_at"])
    op.create_table(
        "x12_control_number",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_x12_control_number_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_x12_control_number")),
    )


def downgrade() -> None:
    op.drop_table("x12_control_number")
    op.drop_index("ix_x12_interchange_advice_due", table_name="x12_interchange")
    op.drop_index(op.f("ix_x12_interchange_tenant_id"), table_name="x12_interchange")
    op.drop_table("x12_interchange")
    with op.batch_alter_table("file_drop_setting") as batch:
        batch.drop_column("partner_settings")
