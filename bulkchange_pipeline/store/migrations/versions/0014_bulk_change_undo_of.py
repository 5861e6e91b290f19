"""undo: bulk_change.undo_of links an undo to the bulk change it undoes

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

Nullable, no backfill: no bulk change made before this revision is an undo.
"""

import sqlalchemy as sa
from alembic import op

from bulkchange_pipeline.store.migration_ops import drop_column_in_place

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX, never a batch rebuild: on SQLite a rebuild drops
    # bulk_change, which would cascade its device rows away under foreign_keys=ON.
    # No foreign key: SQLite cannot add one without that rebuild; the link is read, never joined
    # for integrity, and purging the original leaves the undo pointing at a gone id.
    op.add_column("bulk_change", sa.Column("undo_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite")))
    op.create_index(op.f("ix_bulk_change_undo_of"), "bulk_change", ["undo_of"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_bulk_change_undo_of"), table_name="bulk_change")
    drop_column_in_place("bulk_change", "undo_of")  # never a rebuild of bulk_change: it would cascade its rows away
