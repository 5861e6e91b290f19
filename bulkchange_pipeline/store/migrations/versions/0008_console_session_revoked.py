"""console sessions revoked by sign-out (a replayed cookie is refused on every replica)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_session_revoked",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_console_session_revoked")),
    )


def downgrade() -> None:
    op.drop_table("console_session_revoked")
