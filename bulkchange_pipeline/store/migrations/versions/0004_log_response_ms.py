"""carrier response time on each log row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bulk_change_log") as batch:
        batch.add_column(sa.Column("response_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bulk_change_log") as batch:
        batch.drop_column("response_ms")
