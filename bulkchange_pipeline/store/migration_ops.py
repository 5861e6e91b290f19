"""Operations the Alembic revisions share (``store/migrations/versions``), written once.

A revision file is history: it is not edited once released, so what two revisions need alike lives
here, where a fix reaches both. Imported by revisions only; nothing at run time uses it.
"""

from __future__ import annotations

import sqlite3

from alembic import op

__all__ = ["drop_column_in_place"]


def drop_column_in_place(table: str, column: str) -> None:
    """Drop ``table.column`` without ever deleting the rows that reference ``table``.

    On SQLite a batch rebuild drops the table, and under foreign_keys=ON (``store.db``) that DROP
    deletes every row referencing it by cascade (bulk_change: every device row). SQLite 3.35+ drops
    the column in place. An older one needs the rebuild with foreign keys off, and
    ``PRAGMA foreign_keys`` does nothing inside a transaction, which a migration always is by then
    (an earlier step's copy or the version row began one): so the rebuild runs in Alembic's
    autocommit block, as its own transaction between turning foreign keys off and on again, and is
    rolled back if ``PRAGMA foreign_key_check`` finds a row it would orphan. The block commits the
    steps before it, so a failure after it leaves those done: downgrade one revision at a time.
    Other backends: a plain DROP COLUMN.
    """
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column(table, column)
        return
    if sqlite3.sqlite_version_info >= (3, 35, 0):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():  # never expected: refuse rather than cascade
                raise RuntimeError(
                    f"cannot drop {table}.{column} on SQLite {sqlite3.sqlite_version}: foreign keys stay on, and "
                    "rebuilding the table would delete the rows that reference it; upgrade SQLite to 3.35 or later"
                )
            bind.exec_driver_sql("BEGIN")
            try:
                with op.batch_alter_table(table) as batch:
                    batch.drop_column(column)
                if orphan := bind.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError(f"dropping {table}.{column} would leave {orphan[0]} rows without their parent")
            except BaseException:
                bind.exec_driver_sql("ROLLBACK")
                raise
            bind.exec_driver_sql("COMMIT")
        finally:
            bind.exec_driver_sql("PRAGMA foreign_keys=ON")
