"""``bulkchange submission release`` and what ``submission show`` says about a held split and about
a child whose run crashed (the outcome and what to do), through click's CliRunner on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import BulkChangeStatus
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import bulk_change
from bulkchange_pipeline.store.seed import demo_iccid


@pytest.fixture
def run(db_url: str):
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    assert invoke("seed-demo", "--devices-per-carrier", "5").exit_code == 0
    return invoke


def _file(tmp_path: Path, **extra: object) -> Path:
    body = {
        "changeType": 10,
        "devices": [demo_iccid(1, 0, 1), demo_iccid(5, 0, 1)],
        "usernameCostCenterUpdate": {"costCenter": "CC-7"},
        **extra,
    }
    path = tmp_path / "split.json"
    path.write_text(json.dumps(body))
    return path


def _children(db_url: str) -> list[tuple[int, str, bool]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                (r.id, r.status, r.process_changes)
                for r in conn.execute(
                    sa.select(bulk_change.c.id, bulk_change.c.status, bulk_change.c.process_changes).order_by(
                        bulk_change.c.id
                    )
                )
            ]
    finally:
        engine.dispose()


def test_a_held_split_is_shown_held_and_released_as_one(run, db_url: str, tmp_path: Path) -> None:
    assert run("submit", str(_file(tmp_path, processChanges=False))).exit_code == 0
    shown = run("submission", "show", "1")
    assert shown.exit_code == 0 and "outcome held" in shown.output and "submission release 1" in shown.output
    released = run("submission", "release", "1")
    assert released.exit_code == 0, released.output
    assert "release reached 2 of 2 bulk changes" in released.output
    assert [held for _, _, held in _children(db_url)] == [True, True]
    again = run("submission", "release", "1")
    assert again.exit_code == 1 and "not held" in again.output


def test_a_crashed_child_shows_unfinished_and_watch_ends(run, db_url: str, tmp_path: Path) -> None:
    assert run("submit", str(_file(tmp_path))).exit_code == 0
    engine = make_engine(db_url)
    try:
        first, second = (i for i, _, _ in _children(db_url))
        set_bulk_status(engine, first, BulkChangeStatus.ERROR)  # its run stopped, rows NEW left
        set_bulk_status(engine, second, BulkChangeStatus.PROCESSED)
    finally:
        engine.dispose()
    watched = run("submission", "show", "1", "--watch", "--interval", "0.01", "--timeout", "5")
    assert watched.exit_code == 0, watched.output  # final: the watch ends, not "in progress" forever
    assert "status ERROR" in watched.output and "outcome unfinished" in watched.output
    assert "bulkchange resume" in watched.output
