"""A baseline that works like the replaced system: pages of 100 unprocessed rows, one synchronous
carrier call and one commit per device, re-reading the page each time.

    python bench/naive.py [N] [sqlite|postgresql]
"""

from __future__ import annotations

import base64
import sys
import time

import httpx
import sqlalchemy as sa
from harness import KEY, USER, database, engine_for, jasper_simulator, record, seed_account, seed_simulator, submit

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.schema import device_change


def naive(url: str, base: str, bulk_change_id: int) -> int:
    engine = engine_for(url)
    auth = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    done = 0
    with httpx.Client(base_url=base, headers={"Authorization": auth}, timeout=30) as client:
        while True:
            with engine.connect() as conn:  # re-read the page of unprocessed rows, like the original Lambda
                page = conn.execute(
                    sa.select(device_change.c.id, device_change.c.iccid, device_change.c.change_request)
                    .where(device_change.c.bulk_change_id == bulk_change_id, device_change.c.status == "NEW")
                    .order_by(device_change.c.id)
                    .limit(100)
                ).all()
            if not page:
                return done
            for row in page:
                r = client.put(f"/devices/{row.iccid}", json={"status": row.change_request["status"]})
                status = "PROCESSED" if r.status_code == 200 else "API_FAILED"
                with engine.begin() as conn:  # one commit per device
                    conn.execute(
                        sa.update(device_change)
                        .where(device_change.c.id == row.id)
                        .values(status=status, status_details=r.text[:200])
                    )
                done += 1


def measure(n: int, backend: str, latency_ms: float = 0) -> float:
    with jasper_simulator(latency_ms=latency_ms) as root, database(backend) as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, root + "/rws/api/v1", n)
        seed_simulator(root, [d["iccid"] for d in devices])
        bc = submit(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        started = time.perf_counter()
        done = naive(url, root + "/rws/api/v1", bc)
        seconds = time.perf_counter() - started
        engine.dispose()
    assert done == n
    return n / seconds


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    backend = sys.argv[2] if len(sys.argv) > 2 else "sqlite"
    rate = measure(n, backend)
    record(
        f"Naive baseline (bench/naive.py) on {backend}",
        [f"- {n} devices, pages of 100, one call + one commit each: **{rate:,.0f} devices/s**"],
    )
