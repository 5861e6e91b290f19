"""service provider protocol: a Jasper-family account is reached through REST (default) or SOAP

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server_default 'rest': every provider stored before this revision speaks REST, as it did. The
    # CHECK keeps a typo out of the table (the client registry would refuse it only at run time);
    # which integrations may use soap is the application's rule (store.reference), not the table's.
    with op.batch_alter_table("service_provider") as batch:
        batch.add_column(sa.Column("protocol", sa.String(length=8), server_default="rest", nullable=False))
        batch.create_check_constraint(op.f("ck_service_provider_protocol"), "protocol IN ('rest', 'soap')")


def downgrade() -> None:
    with op.batch_alter_table("service_provider") as batch:
        batch.drop_constraint(op.f("ck_service_provider_protocol"), type_="check")
        batch.drop_column("protocol")
