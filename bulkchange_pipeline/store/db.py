"""Connection settings: one URL, engines tuned per backend, transient-error retry.

``BULKCHANGE_DATABASE_URL`` names the business database; by default a SQLite file under the
local data folder (``BULKCHANGE_HOME``, default ``./.bulkchange``). PostgreSQL URLs name the
driver: ``postgresql+psycopg2://user@host/db`` (add ``?sslmode=require`` to require TLS).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..domain.clock import SYSTEM_CLOCK

T = TypeVar("T")

DB_RETRY_ATTEMPTS = 4  # DESIGN R8: SQL transient errors, 3 retries with exponential backoff
# The store's own two variables (it imports nothing of ours but the domain); bulkchange_pipeline.settings,
# which holds every other variable the app reads, re-uses these two functions.
HOME_ENV = "BULKCHANGE_HOME"
DATABASE_URL_ENV = "BULKCHANGE_DATABASE_URL"


def data_dir() -> Path:
    """The local data folder of the embedded default (database, Dagster storage, archive)."""
    path = Path(os.environ.get(HOME_ENV, ".bulkchange")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{data_dir() / 'bulkchange.db'}"


def utcnow() -> datetime:
    """Naive UTC now: the one time convention of the schema (the system clock; see domain.clock)."""
    return SYSTEM_CLOCK.now()


def to_naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def make_engine(url: str | None = None) -> sa.Engine:
    """A new engine for ``url`` (default: ``database_url()``).

    SQLite: WAL journal and a busy timeout, so the sensor, the run worker and the CLI can share
    the file; foreign keys on. PostgreSQL: pre-ping, so a dropped connection is replaced.
    """
    url = url or database_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - exercised by every SQLite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        raise ValueError("PostgreSQL URLs must name the driver: postgresql+psycopg2://...")
    # values_plus_batch: psycopg2 sends executemany UPDATEs in pages instead of one round trip per
    # row, so recording a batch's results stays set-based on PostgreSQL too.
    extra = {"executemany_mode": "values_plus_batch"} if parsed.drivername == "postgresql+psycopg2" else {}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **extra)


@lru_cache(maxsize=8)
def shared_engine(url: str) -> sa.Engine:
    """One engine per URL per process (connection pools are per engine)."""
    return make_engine(url)


def is_transient(exc: BaseException) -> bool:
    """Dropped connections, lock timeouts, serialization failures: safe to retry the transaction."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.OperationalError):
        text = str(exc.orig).lower() if exc.orig else str(exc).lower()
        return any(
            s in text
            for s in (
                "database is locked",
                "server closed",
                "connection",
                "terminating",
                "could not serialize",
                "deadlock",
                "timeout",
            )
        )
    return False


def run_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T], *, attempts: int = DB_RETRY_ATTEMPTS) -> T:
    """Run ``work`` in one transaction, retrying the whole transaction on a transient error.

    A failed attempt rolls back completely, so nothing is ever half-written.
    """
    for attempt in Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception(is_transient),
        reraise=True,
    ):
        with attempt, engine.begin() as conn:
            return work(conn)
    raise AssertionError("unreachable")  # pragma: no cover
