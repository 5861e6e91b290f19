"""bulk change request fingerprint (an idempotency key reused for a different request is refused)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: bulk changes stored before this revision have none, and a key repeated for one of
    # them is answered with it as before (nothing to compare with).
    with op.batch_alter_table("bulk_change") as batch:
        batch.add_column(sa.Column("request_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bulk_change") as batch:
        batch.drop_column("request_fingerprint")
