"""Cancel of a submission racing a child's run on PostgreSQL, with real concurrent transactions.

A run claims its rows (``device_changes.claim``: NEW -> PROCESSING, attempt counted) right before
sending them; ``cancel_submission`` cancels every child's unsent rows. Both are made to wait on the
same device rows (a third transaction holds their row locks), queued claim first, then released
together: whatever order PostgreSQL lets them in, every row ends exactly one way, claimed (so sent,
PROCESSING) or CANCELLED (never sent), the claim's answer names exactly the PROCESSING rows, and the
other children are cancelled whole. SQLite serialises writers and cannot interleave them."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.device_changes import claim
from bulkchange_pipeline.store.schema import device_change
from bulkchange_pipeline.store.seed import DemoSeed
from bulkchange_pipeline.store.submission_ops import cancel_submission
from bulkchange_pipeline.store.submissions import get_submission

from ..waiting import wait_until
from .conftest import edit_body


def _waiting_on_locks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


def test_cancel_and_a_childs_claim_never_both_take_a_row(engine: sa.Engine, db_url: str, seed: DemoSeed) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks and concurrent writers: PostgreSQL only")
    s = seed.sample_iccids
    devices = [*s["jasper"][:4], *s["telegence"][:2], *s["pond"][:2]]
    out = submit(engine, seed.tenant_id, BulkChangeRequest.model_validate(edit_body(devices)), "race")
    assert out.submission_id is not None
    jasper = out.children[0].bulk_change_id
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == jasper)
                .order_by(device_change.c.id)
            ).scalars()
        )

    results: dict[str, Any] = {}
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(sa.select(device_change.c.id).where(device_change.c.id.in_(rows)).with_for_update())
    try:
        run = threading.Thread(target=lambda: results.__setitem__("claimed", claim(engine, rows)))
        run.start()
        wait_until(lambda: _waiting_on_locks(engine) >= 1, timeout=20, what="the claim to wait on the rows")
        operator = threading.Thread(
            target=lambda: results.__setitem__(
                "cancel", cancel_submission(engine, seed.tenant_id, out.submission_id, by="race-test")
            )
        )
        operator.start()
        wait_until(lambda: _waiting_on_locks(engine) >= 2, timeout=20, what="the cancel to wait on the rows")
    finally:
        tx.rollback()  # both go now
        holder.close()
    run.join(30)
    operator.join(30)
    assert not run.is_alive() and not operator.is_alive()

    claimed = results["claimed"]
    with engine.connect() as conn:
        final = dict(
            conn.execute(
                sa.select(device_change.c.id, device_change.c.status).where(device_change.c.id.in_(rows))
            ).all()
        )
        attempts = dict(
            conn.execute(
                sa.select(device_change.c.id, device_change.c.attempt_count).where(device_change.c.id.in_(rows))
            ).all()
        )
    assert {i for i, st in final.items() if st == "PROCESSING"} == claimed
    assert {i for i, st in final.items() if st == "CANCELLED"} == set(rows) - claimed
    assert all(attempts[i] == (1 if i in claimed else 0) for i in rows)  # a cancelled row was never claimed

    result = results["cancel"]
    others = [c for c in result.children if c.bulk_change_id != jasper]
    assert others and all(c.done for c in others)  # the other children are cancelled whole
    view = get_submission(engine, out.submission_id, seed.tenant_id)
    assert view is not None
    assert [c.counts for c in view.children[1:]] == [{"CANCELLED": 2}, {"CANCELLED": 2}]
    assert view.counts.get("PROCESSING", 0) == len(claimed) and view.total == len(devices)
