"""Alembic upgrade head -> downgrade base -> upgrade head runs clean on both backends."""

import sqlalchemy as sa

from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import metadata


def _tables(url: str) -> set[str]:
    eng = make_engine(url)
    try:
        return set(sa.inspect(eng).get_table_names()) - {"alembic_version"}
    finally:
        eng.dispose()


def test_upgrade_downgrade_roundtrip(db_url):
    expected = {t.name for t in metadata.sorted_tables}
    assert _tables(db_url) == expected
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    migrate.upgrade(db_url)
    assert _tables(db_url) == expected


def test_schema_matches_metadata(db_url):
    """No drift: autogenerate against the migrated database finds nothing to add or drop."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    eng = make_engine(db_url)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    eng.dispose()
    assert diff == []
