"""Run the Alembic migrations programmatically (used by ``bulkchange init-db`` and the tests).

From a shell: ``alembic -c bulkchange_pipeline/store/alembic.ini upgrade head`` does the same,
taking the URL from ``BULKCHANGE_DATABASE_URL``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from .db import database_url

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    # '%' must be escaped for configparser (URLs may hold percent-encoded characters).
    cfg.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
