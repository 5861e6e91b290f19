"""One idempotency key raced by a bulk change and a submission, with real concurrent PostgreSQL
transactions (``store.idempotency``): exactly one of them commits, whatever the order.

Both requests run their whole create path (``submit`` / HTTP ``POST /bulk-changes``) in threads.
A third transaction holds a claim of the key (uncommitted), so both create transactions reach their
own claim and wait on it, each with its rows already written; then the holder rolls back and both go
at once. The loser with the same request gets the winner's answer; with another request (a single
bulk change against a split) a 409 / ``IdempotencyConflict`` naming the winner, now and on a retry.
Before the claim table both committed: one key, the same devices in two bulk changes. SQLite
serialises writers and cannot interleave them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.idempotency import IdempotencyConflict
from bulkchange_pipeline.store.schema import bulk_change, idempotency_key, submission
from bulkchange_pipeline.store.seed import DemoSeed

from ..intake.test_api import Api, make_api
from ..waiting import wait_until
from .conftest import edit_body


def _waiting_on_locks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


def _race(engine: sa.Engine, tenant_id: int, key: str, contenders: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run ``contenders`` concurrently while a third transaction holds a claim of ``key``; release
    them together once every one waits on it. Returns each one's answer or exception."""
    results: dict[str, Any] = {}

    def run(name: str, work: Callable[[], Any]) -> None:
        try:
            results[name] = work()
        except Exception as exc:  # noqa: BLE001 - the answer under test
            results[name] = exc

    with engine.connect() as conn:  # a bulk change for the holder's claim to point at
        anchor = conn.execute(sa.select(sa.func.min(bulk_change.c.id))).scalar_one()
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(sa.insert(idempotency_key).values(tenant_id=tenant_id, key=key, bulk_change_id=anchor))
    threads = [threading.Thread(target=run, args=item) for item in contenders.items()]
    try:
        for t in threads:
            t.start()
        wait_until(
            lambda: _waiting_on_locks(engine) >= len(contenders), timeout=30, what="both creates to wait on the key"
        )
    finally:
        tx.rollback()  # both go now
        holder.close()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


def _holders(engine: sa.Engine, key: str) -> tuple[list[int], list[int]]:
    with engine.connect() as conn:
        bcs = list(conn.execute(sa.select(bulk_change.c.id).where(bulk_change.c.idempotency_key == key)).scalars())
        subs = list(conn.execute(sa.select(submission.c.id).where(submission.c.idempotency_key == key)).scalars())
    return bcs, subs


def _seeded(engine: sa.Engine, seed: DemoSeed) -> None:
    s = seed.sample_iccids
    submit(
        engine,
        seed.tenant_id,
        BulkChangeRequest.model_validate(edit_body(s["teal"][:1], serviceProviderId=seed.service_providers["teal"])),
        "anchor",
    )


def test_a_bulk_change_and_a_submission_never_both_hold_one_key(engine: sa.Engine, db_url: str, seed: DemoSeed) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL only")
    _seeded(engine, seed)
    s = seed.sample_iccids
    single = BulkChangeRequest.model_validate(
        edit_body(s["jasper"][:3], serviceProviderId=seed.service_providers["jasper"], idempotencyKey="race-1")
    )
    split = BulkChangeRequest.model_validate(edit_body([*s["jasper"][:3], *s["pond"][:2]], idempotencyKey="race-1"))
    results = _race(
        engine,
        seed.tenant_id,
        "race-1",
        {
            "single": lambda: submit(engine, seed.tenant_id, single, "one"),
            "split": lambda: submit(engine, seed.tenant_id, split, "two"),
        },
    )
    bcs, subs = _holders(engine, "race-1")
    assert len(bcs) + len(subs) == 1, (results, bcs, subs)  # the key is ONE thing
    winner, loser = ("single", "split") if bcs else ("split", "single")
    assert results[winner].created is True
    conflict = results[loser]
    assert isinstance(conflict, IdempotencyConflict), results
    if bcs:
        assert conflict.bulk_change_id == bcs[0] and conflict.submission_id is None
    else:
        assert conflict.submission_id == subs[0] and conflict.bulk_change_id is None
    # the loser's retry, unchanged, is told the same thing (not a 409 against its own request)
    with pytest.raises(IdempotencyConflict) as again:
        submit(engine, seed.tenant_id, single if loser == "single" else split, "retry")
    assert (again.value.bulk_change_id, again.value.submission_id) == (
        conflict.bulk_change_id,
        conflict.submission_id,
    )
    # the winner's retry gets its own answer
    repeat = submit(engine, seed.tenant_id, single if winner == "single" else split, "retry")
    assert repeat.created is False and (repeat.bulk_change_id or repeat.submission_id) == (bcs or subs)[0]


def test_two_identical_splits_with_one_key_make_one_submission(engine: sa.Engine, db_url: str, seed: DemoSeed) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL only")
    _seeded(engine, seed)
    s = seed.sample_iccids
    body = edit_body([*s["jasper"][:2], *s["telegence"][:2]], idempotencyKey="race-2")
    results = _race(
        engine,
        seed.tenant_id,
        "race-2",
        {
            name: (lambda: submit(engine, seed.tenant_id, BulkChangeRequest.model_validate(body), "twin"))
            for name in ("a", "b")
        },
    )
    bcs, subs = _holders(engine, "race-2")
    assert bcs == [] and len(subs) == 1, results
    assert sorted(r.created for r in results.values()) == [False, True]  # the loser gets the winner's answer
    assert {r.submission_id for r in results.values()} == {subs[0]}
    assert [c.bulk_change_id for c in results["a"].children] == [c.bulk_change_id for c in results["b"].children]


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def test_over_http_one_key_is_201_or_202_never_both(api: Api, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL only")
    s = api.seed.sample_iccids
    _seeded(api.engine, api.seed)
    single = edit_body(s["jasper"][:2], serviceProviderId=api.jasper, idempotencyKey="race-3")
    split = edit_body([*s["jasper"][:2], *s["pond"][:1]], idempotencyKey="race-3")
    results = _race(
        api.engine,
        api.seed.tenant_id,
        "race-3",
        {
            "single": lambda: api.client.post("/bulk-changes", json=single, headers=api.demo),
            "split": lambda: api.client.post("/bulk-changes", json=split, headers=api.demo),
        },
    )
    codes = sorted(r.status_code for r in results.values())
    assert codes in ([201, 409], [202, 409]), {k: (r.status_code, r.text[:300]) for k, r in results.items()}
    bcs, subs = _holders(api.engine, "race-3")
    assert len(bcs) + len(subs) == 1
    problem = next(r for r in results.values() if r.status_code == 409).json()
    if subs:
        assert problem["submissionId"] == subs[0]
    else:
        assert problem["bulkChangeId"] == bcs[0]
