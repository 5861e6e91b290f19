"""callback receiver starts (a restart makes rows sent before it due for a poll)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_receiver_start",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("process", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_receiver_start")),
    )
    op.create_index("ix_callback_receiver_start_started_at", "callback_receiver_start", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_callback_receiver_start_started_at", table_name="callback_receiver_start")
    op.drop_table("callback_receiver_start")
