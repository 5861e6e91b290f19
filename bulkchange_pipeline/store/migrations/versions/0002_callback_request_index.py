"""index carrier callbacks by request id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_carrier_callback_request_applied", "carrier_callback", ["request_id", "applied_at"])


def downgrade() -> None:
    op.drop_index("ix_carrier_callback_request_applied", table_name="carrier_callback")
