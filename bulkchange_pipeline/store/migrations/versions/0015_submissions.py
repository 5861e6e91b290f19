"""submissions: one request split across service providers (issue 21)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

A request without a service provider becomes one ``submission`` with one child bulk change per
service provider (``bulk_change.submission_id``) and the devices it could not place
(``submission_refused``). ``file_drop.submission_id`` links a dropped file to the submission it
became; such a drop has no single bulk change, so ``file_drop.bulk_change_id`` may now be null.
Nullable columns, no backfill: nothing before this revision was split.
"""

import sqlalchemy as sa
from alembic import op

from bulkchange_pipeline.store.migration_ops import drop_column_in_place

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "submission",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("change_type", sa.Integer(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_submission_tenant_id_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submission")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_submission_tenant_idempotency"),
    )
    op.create_index(op.f("ix_submission_tenant_id"), "submission", ["tenant_id"])
    op.create_table(
        "submission_refused",
        sa.Column("submission_id", BigId, nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submission.id"],
            name=op.f("fk_submission_refused_submission_id_submission"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("submission_id", "row_number", name=op.f("pk_submission_refused")),
    )
    # Plain ADD COLUMN on bulk_change, never a batch rebuild: on SQLite a rebuild drops bulk_change,
    # which would cascade its device rows away under foreign_keys=ON. SQLite takes a REFERENCES
    # clause in ADD COLUMN (a nullable column), so both backends get the foreign key.
    _add_reference("bulk_change", "submission_id")
    op.create_index(op.f("ix_bulk_change_submission_id"), "bulk_change", ["submission_id"], unique=False)
    _add_reference("file_drop", "submission_id")
    op.create_index(op.f("ix_file_drop_submission_id"), "file_drop", ["submission_id"], unique=False)
    with op.batch_alter_table("file_drop") as batch:  # nothing references file_drop: a rebuild is safe
        batch.alter_column("bulk_change_id", existing_type=BigId, nullable=True)


def _add_reference(table: str, column: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER REFERENCES submission (id)")
        return
    op.add_column(table, sa.Column(column, BigId, nullable=True))
    op.create_foreign_key(op.f(f"fk_{table}_{column}_submission"), table, "submission", [column], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("file_drop") as batch:
        batch.alter_column("bulk_change_id", existing_type=BigId, nullable=False)
    op.drop_index(op.f("ix_file_drop_submission_id"), table_name="file_drop")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("file_drop") as batch:
            batch.drop_column("submission_id")
    else:
        op.drop_constraint(op.f("fk_file_drop_submission_id_submission"), "file_drop", type_="foreignkey")
        op.drop_column("file_drop", "submission_id")
    op.drop_index(op.f("ix_bulk_change_submission_id"), table_name="bulk_change")
    if op.get_bind().dialect.name != "sqlite":  # SQLite's column drops with its REFERENCES clause
        op.drop_constraint(op.f("fk_bulk_change_submission_id_submission"), "bulk_change", type_="foreignkey")
    drop_column_in_place(
        "bulk_change", "submission_id"
    )  # never a rebuild of bulk_change: it would cascade its rows away
    op.drop_table("submission_refused")
    op.drop_index(op.f("ix_submission_tenant_id"), table_name="submission")
    op.drop_table("submission")
