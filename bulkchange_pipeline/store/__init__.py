"""Business database: schema, migrations, repository functions (SQLite and PostgreSQL)."""

from .db import database_url, make_engine, run_transaction, shared_engine, utcnow
from .schema import metadata

__all__ = ["database_url", "make_engine", "run_transaction", "shared_engine", "utcnow", "metadata"]
