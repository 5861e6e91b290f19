"""`bulkchange status ID --follow` (alias `--watch`): progress until the bulk change is final.

The CLI test follows a real bulk change (SQLite and PostgreSQL) that a background thread works
through row by row, the way a run would, and finalizes; the follower must exit 0 once it is final
and have printed the counts. The live bar itself is checked on a forced terminal with a fake clock.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from rich.console import Console

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.cli.render import SETTLE_SECONDS, follow_bulk_change
from bulkchange_pipeline.domain import BulkChangeRequest, BulkChangeStatus, ChangeType
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, set_bulk_status
from bulkchange_pipeline.store.db import make_engine, utcnow
from bulkchange_pipeline.store.schema import device_change
from bulkchange_pipeline.store.seed import DemoSeed

N = 10


def _work_through(db_url: str, bc_id: int, started: threading.Event) -> None:
    """What a run does to the rows, slowly: PROCESSING, then final one by one (2 refused), then finalize."""
    engine = make_engine(db_url)
    try:
        started.wait(10)
        time.sleep(0.3)
        with engine.begin() as conn:
            ids = (
                conn.execute(
                    sa.select(device_change.c.id)
                    .where(device_change.c.bulk_change_id == bc_id)
                    .order_by(device_change.c.id)
                )
                .scalars()
                .all()
            )
            conn.execute(
                sa.update(device_change).where(device_change.c.bulk_change_id == bc_id).values(status="PROCESSING")
            )
        set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSING)
        for k, row_id in enumerate(ids):
            time.sleep(0.08)
            status = "API_FAILED" if k in (3, 7) else "PROCESSED"
            with engine.begin() as conn:
                conn.execute(
                    sa.update(device_change)
                    .where(device_change.c.id == row_id)
                    .values(status=status, status_details="test", processed_at=utcnow())
                )
        time.sleep(0.2)  # every row final, header not yet: the follower keeps following
        set_bulk_status(
            engine, bc_id, BulkChangeStatus.PROCESSED, counts=count_rows_by_status(engine, bc_id), processed=True
        )
    finally:
        engine.dispose()


@pytest.mark.parametrize("flag", ["--follow", "--watch"])
def test_follow_exits_0_when_final_and_prints_the_counts(
    db_url: str, engine: sa.Engine, seed: DemoSeed, flag: str
) -> None:
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": int(ChangeType.ARCHIVAL),
            "devices": seed.sample_iccids["jasper"][:N],
            "archival": {"overrideUsageCheck": True},
        }
    )
    bc_id = submit(engine, seed.tenant_id, request, "test").bulk_change_id
    started = threading.Event()
    worker = threading.Thread(target=_work_through, args=(db_url, bc_id, started), daemon=True)
    worker.start()
    started.set()
    t0 = time.monotonic()
    result = CliRunner().invoke(
        main, ["status", str(bc_id), flag, "--interval", "0.05", "--timeout", "30", "--database-url", db_url]
    )
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 < 20
    out = result.output
    lines = [line for line in out.splitlines() if line.startswith(f"bulk change {bc_id} ")]
    # Progress lines: rows done / total, failures and rate, from the first poll to the end.
    assert lines[0].startswith(f"bulk change {bc_id} NEW: 0/{N} rows done, 0 failed, ")
    assert any(f"PROCESSING: 5/{N} rows done, 1 failed" in line for line in lines), lines
    assert f"bulk change {bc_id} PROCESSED: {N}/{N} rows done, 2 failed" in lines[-1]
    assert all(line.endswith(" rows/s") for line in lines)
    # Then the counts table of the final bulk change.
    assert f"status PROCESSED, {N} devices" in " ".join(out.split())
    table = {parts[1]: parts[3] for line in out.splitlines() if len(parts := line.split()) == 5 and parts[0] == "│"}
    assert table == {"PROCESSED": "8", "API_FAILED": "2"}, out


def test_follow_gives_up_after_timeout_with_exit_1(db_url: str, engine: sa.Engine, seed: DemoSeed) -> None:
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": int(ChangeType.ARCHIVAL),
            "devices": seed.sample_iccids["jasper"][:2],
            "archival": {"overrideUsageCheck": True},
        }
    )
    bc_id = submit(engine, seed.tenant_id, request, "test").bulk_change_id
    result = CliRunner().invoke(
        main, ["status", str(bc_id), "--follow", "--interval", "0.05", "--timeout", "0.3", "--database-url", db_url]
    )
    assert result.exit_code == 1
    assert f"bulk change {bc_id} is still NEW: gave up after 0.3 s" in result.output
    assert f"bulk change {bc_id} NEW: 0/2 rows done, 0 failed" in result.output


def test_follow_stops_at_once_on_a_held_bulk_change_and_says_how_to_release_it(
    db_url: str, engine: sa.Engine, seed: DemoSeed
) -> None:
    """Held (processChanges=false): nothing will move, so following says so instead of waiting."""
    request = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": int(ChangeType.ARCHIVAL),
            "devices": seed.sample_iccids["jasper"][:2],
            "archival": {"overrideUsageCheck": True},
            "processChanges": False,
        }
    )
    bc_id = submit(engine, seed.tenant_id, request, "test").bulk_change_id
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["status", str(bc_id), "--follow", "--interval", "0.05", "--database-url", db_url]
    )
    assert time.monotonic() - started < 10  # no timeout given: it did not wait for one
    assert result.exit_code == 1
    assert f"bulk change {bc_id} is held (processChanges=false)" in result.output
    assert f"bulkchange release {bc_id}" in result.output
    assert "outcome held" in result.output


class _Fake:
    """A clock that moves only when the follower sleeps, and a bulk change that advances per poll."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.now = 100.0
        self.states = states
        self.polls = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def fetch(self) -> dict[str, Any]:
        self.polls += 1
        return self.states[min(self.polls, len(self.states) - 1)]


def _bc(status: str, **counts: int) -> dict[str, Any]:
    return {"id": 7, "status": status, "counts": counts, "total": 10}


def test_live_bar_on_a_terminal_shows_done_total_rate_and_failures() -> None:
    fake = _Fake(
        [
            _bc("NEW", NEW=10),
            _bc("PROCESSING", NEW=6, PROCESSED=4),
            _bc("PROCESSING", PROCESSED=7, API_FAILED=1, NEW=2),
            _bc("PROCESSED", PROCESSED=8, API_FAILED=2),
        ]
    )
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    result = follow_bulk_change(console, fake.fetch, fake.states[0], interval=2.0, clock=fake.clock, sleep=fake.sleep)
    assert result.final and result.bc["status"] == "PROCESSED" and fake.polls == 3
    final_frame = buf.getvalue().rsplit("\r", 1)[-1]
    assert "bulk change 7 PROCESSED" in final_frame and "10/10" in final_frame
    assert "1.7 rows/s" in final_frame and "2 failed" in final_frame  # 10 rows in 6 s


def test_rows_all_final_without_a_final_header_stop_after_settling() -> None:
    fake = _Fake([_bc("PROCESSING", PROCESSED=10)])
    console = Console(file=io.StringIO(), width=120)
    result = follow_bulk_change(console, fake.fetch, fake.states[0], interval=1.0, clock=fake.clock, sleep=fake.sleep)
    assert result.final and fake.now - 100.0 == pytest.approx(SETTLE_SECONDS)
    stuck = _Fake([_bc("PROCESSING", NEW=4, PROCESSED=6)])
    timed_out = follow_bulk_change(
        console, stuck.fetch, stuck.states[0], interval=1.0, timeout=3.0, clock=stuck.clock, sleep=stuck.sleep
    )
    assert not timed_out.final and stuck.now - 100.0 == pytest.approx(3.0)
