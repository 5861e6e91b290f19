"""undo: bulk_change.undo_of links an undo to the bulk change it undoes

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

Nullable, no backfill: no bulk change made before this revision is an undo.
"""

import sqlite3

import sqlalchemy as sa
from alembic import op

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
    if op.get_bind().dialect.name == "sqlite":
        _drop_bulk_change_column("undo_of")
    else:
        op.drop_column("bulk_change", "undo_of")


def _drop_bulk_change_column(column: str) -> None:
    """SQLite: drop a column of bulk_change WITHOUT rebuilding the table. A batch rebuild drops
    bulk_change, and under foreign_keys=ON (``store.db``) that DROP deletes every device row by
    cascade. SQLite 3.35+ drops the column in place; an older one rebuilds with foreign keys off
    (restored after), and refuses rather than lose rows when they cannot be turned off (inside a
    transaction: downgrade one revision at a time)."""
    if sqlite3.sqlite_version_info >= (3, 35, 0):
        op.execute(f"ALTER TABLE bulk_change DROP COLUMN {column}")
        return
    bind = op.get_bind()
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError(
                f"cannot drop bulk_change.{column} on SQLite {sqlite3.sqlite_version} without deleting every "
                "device row: downgrade one revision at a time, or upgrade SQLite to 3.35 or later"
            )
        with op.batch_alter_table("bulk_change") as batch:
            batch.drop_column(column)
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
