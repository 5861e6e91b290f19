"""idempotency_key: one table says who holds a tenant's idempotency key (one bulk change OR one submission)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05

Before this revision a key was unique per table (``bulk_change``, ``submission``), so a bulk change
and a submission sent concurrently with one key could both commit. Both create paths now insert
the key here in their transaction and the primary key (tenant, key) decides (``store.idempotency``).
Backfilled from every bulk change and submission that holds a key (bulk changes first: a key held by
both before this revision stays with the bulk change, which was the only kind before 0015).
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "idempotency_key",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("bulk_change_id", BigId, nullable=True),
        sa.Column("submission_id", BigId, nullable=True),
        sa.CheckConstraint(
            "(bulk_change_id IS NULL) <> (submission_id IS NULL)", name=op.f("ck_idempotency_key_one_holder")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_idempotency_key_tenant_id_tenant")),
        sa.ForeignKeyConstraint(
            ["bulk_change_id"],
            ["bulk_change.id"],
            name=op.f("fk_idempotency_key_bulk_change_id_bulk_change"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submission.id"],
            name=op.f("fk_idempotency_key_submission_id_submission"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "key", name=op.f("pk_idempotency_key")),
    )
    op.create_index(op.f("ix_idempotency_key_bulk_change_id"), "idempotency_key", ["bulk_change_id"])
    op.create_index(op.f("ix_idempotency_key_submission_id"), "idempotency_key", ["submission_id"])
    op.execute(
        "INSERT INTO idempotency_key (tenant_id, key, bulk_change_id) "
        "SELECT tenant_id, idempotency_key, id FROM bulk_change WHERE idempotency_key IS NOT NULL"
    )
    op.execute(
        "INSERT INTO idempotency_key (tenant_id, key, submission_id) "
        "SELECT s.tenant_id, s.idempotency_key, s.id FROM submission s WHERE s.idempotency_key IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM idempotency_key k WHERE k.tenant_id = s.tenant_id AND k.key = s.idempotency_key)"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_key_submission_id"), table_name="idempotency_key")
    op.drop_index(op.f("ix_idempotency_key_bulk_change_id"), table_name="idempotency_key")
    op.drop_table("idempotency_key")
