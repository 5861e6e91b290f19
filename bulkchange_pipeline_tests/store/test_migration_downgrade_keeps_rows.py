"""Downgrading revisions 0016-0014 keeps every bulk change and device row, on both backends, and
upgrading again backfills who holds each idempotency key (revision 0016).

On SQLite, dropping a column of bulk_change by rebuilding the table (a batch ``DROP TABLE``) under
``foreign_keys=ON`` deletes every device row by cascade; the downgrades drop the column in place."""

from __future__ import annotations

from types import SimpleNamespace

import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store import migrate, migration_ops
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.seed import seed_demo


def _counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return (
                conn.execute(sa.text("SELECT count(*) FROM bulk_change")).scalar_one(),
                conn.execute(sa.text("SELECT count(*) FROM device_change")).scalar_one(),
            )
    finally:
        engine.dispose()


def _claims(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, bulk_change_id, submission_id FROM idempotency_key")).all()
    finally:
        engine.dispose()
    return {k: "bulk_change" if bc is not None else "submission" for k, bc, _ in rows}


def test_downgrading_the_bulk_change_columns_keeps_every_row(db_url: str) -> None:
    engine = make_engine(db_url)
    seed = seed_demo(engine, devices_per_carrier=5)
    s = seed.sample_iccids
    body = {"changeType": 10, "usernameCostCenterUpdate": {"costCenter": "x"}}
    submit(
        engine,
        seed.tenant_id,
        BulkChangeRequest.model_validate(
            {
                **body,
                "devices": s["jasper"][:3],
                "serviceProviderId": seed.service_providers["jasper"],
                "idempotencyKey": "k1",
            }
        ),
        "t",
    )
    submit(
        engine,
        seed.tenant_id,
        BulkChangeRequest.model_validate(
            {**body, "devices": [*s["jasper"][3:5], *s["pond"][:2]], "idempotencyKey": "k2"}
        ),
        "t",
    )
    engine.dispose()
    before = _counts(db_url)
    assert before == (3, 7)
    migrate.downgrade(db_url, "0015")
    migrate.upgrade(db_url)
    assert _claims(db_url) == {"k1": "bulk_change", "k2": "submission"}  # 0016 backfills who holds each key
    for revision in ("0015", "0014", "0013"):  # one step at a time, then all at once below
        migrate.downgrade(db_url, revision)
        assert _counts(db_url) == before, revision
    migrate.upgrade(db_url)
    assert _counts(db_url) == before
    migrate.downgrade(db_url, "0013")
    assert _counts(db_url) == before
    migrate.upgrade(db_url)


def test_the_fallback_for_sqlite_before_3_35_keeps_every_row_too(db_url: str, monkeypatch) -> None:
    """``migration_ops.drop_column_in_place`` on an SQLite without DROP COLUMN (before 3.35, faked
    here): a rebuild with foreign keys off, one revision at a time, keeps every device row. On
    PostgreSQL the fake changes nothing (a plain DROP COLUMN)."""
    engine = make_engine(db_url)
    seed = seed_demo(engine, devices_per_carrier=5)
    request = {
        "changeType": 10,
        "usernameCostCenterUpdate": {"costCenter": "x"},
        "devices": seed.sample_iccids["jasper"][:3],
        "serviceProviderId": seed.service_providers["jasper"],
    }
    submit(engine, seed.tenant_id, BulkChangeRequest.model_validate(request), "t")
    engine.dispose()
    before = _counts(db_url)
    monkeypatch.setattr(
        migration_ops, "sqlite3", SimpleNamespace(sqlite_version_info=(3, 34, 1), sqlite_version="3.34.1")
    )
    for revision in ("0015", "0014", "0013"):
        migrate.downgrade(db_url, revision)
        assert _counts(db_url) == before, revision
    monkeypatch.undo()
    migrate.upgrade(db_url)
    assert _counts(db_url) == before
