"""engine/batch: a chunk's results are written while the next chunk is at the carrier, and never
more than two chunks are claimed and unwritten (SQLite and PostgreSQL, real Jasper simulator)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.engine import batch, load_bulk_change, process_batch
from bulkchange_pipeline.engine.batch import BatchSummary
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.device_changes import IdRange
from bulkchange_pipeline_tests.factories import make_account, make_bulk_change, make_devices
from bulkchange_pipeline_tests.simulators.fixtures import jasper_account
from bulkchange_pipeline_tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def test_the_carrier_does_not_wait_for_the_write_of_the_chunk_before(engine, jasper_sim, monkeypatch):
    """One call in flight: chunks of four rounds, 4 rows. The first chunk's write is held: the
    second chunk is claimed and sent meanwhile (was: the carrier waited for every write), the third
    is not claimed until the first is written, and every row ends PROCESSED, applied once."""
    sim = jasper_sim.simulator
    ids = make_account(engine, jasper_sim.base_url, max_concurrency=1)
    devices = make_devices(engine, ids, 12)
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    info = load_bulk_change(engine, bc_id)
    account = jasper_account(jasper_sim, service_provider_id=ids["service_provider_id"], max_concurrency=1)

    release, writes = threading.Event(), []
    record_results = batch.record_results

    def held_first_write(*args: Any, **kwargs: Any) -> None:
        writes.append(len(kwargs["results"]))
        if len(writes) == 1:
            assert release.wait(60)
        record_results(*args, **kwargs)

    monkeypatch.setattr(batch, "record_results", held_first_write)
    ids_range = IdRange(0, 2**31, 12)
    done: dict[str, BatchSummary] = {}
    worker = threading.Thread(
        target=lambda: done.setdefault("s", process_batch(engine, info, ids_range, account, process_by="test"))
    )
    worker.start()
    try:
        wait_until(lambda: len(sim.applied_counts) == 8, what="the second chunk applied while the first is unwritten")
        assert count_rows_by_status(engine, bc_id) == {"PROCESSING": 8, "NEW": 4}
        assert writes == [4]
    finally:
        release.set()
        worker.join(60)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 12}
    assert writes == [4, 4, 4] and done["s"].processed == 12 and done["s"].chunks == 3
    assert sim.stats()["applied_more_than_once"] == 0 and len(sim.applied_counts) == 12
