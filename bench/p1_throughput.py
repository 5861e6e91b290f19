"""P1 throughput: an N-device Jasper StatusUpdate through the real job (simulator with no latency and
no rate limit), on SQLite and PostgreSQL, against the HTTP ceiling and the naive baseline measured
in the same run.

    python bench/p1_throughput.py [N] [NAIVE_N]
"""

from __future__ import annotations

import sys

import ceiling
import naive
from harness import database, engine_for, jasper_simulator, record, seed_account, seed_simulator, sim_stats, submit
from pipeline import run_pipeline

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status


def pipeline_rate(n: int, backend: str, latency_ms: float = 0, concurrency: int = 16) -> tuple[float, list[int], dict]:
    with jasper_simulator(latency_ms=latency_ms) as root, database(backend) as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, root + "/rws/api/v1", n, concurrency=concurrency, batch_size=500)
        seed_simulator(root, [d["iccid"] for d in devices])
        bc = submit(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        run = run_pipeline(url)
        counts = count_rows_by_status(engine, bc)
        stats = sim_stats(root)
        engine.dispose()
    assert run.success and counts == {"PROCESSED": n}, counts
    assert stats["applied_more_than_once"] == 0
    return n / run.seconds, run.steps, stats


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    naive_n = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    top = ceiling.measure(n)
    lines = [f"- HTTP ceiling (bare httpx, 16 concurrent): {top:,.0f} calls/s"]
    for backend in ("sqlite", "postgresql"):
        base = naive.measure(naive_n, backend)
        rate, steps, _ = pipeline_rate(n, backend)
        lines.append(
            f"- {backend}: pipeline **{rate:,.0f} devices/s** for {n:,} devices ({steps[0]} steps); naive baseline "
            f"{base:,.0f} devices/s ({naive_n:,} devices); **{rate / top:.0%} of the ceiling**, **{rate / base:.1f}x the naive baseline**"
        )
    # With a carrier that takes time to answer, concurrency is what separates the two designs.
    latency, lat_n = 50.0, 20_000
    base = naive.measure(500, "sqlite", latency_ms=latency)
    rate, _, _ = pipeline_rate(lat_n, "sqlite", latency_ms=latency, concurrency=64)
    lines.append(
        f"- sqlite, simulator answering in {latency:.0f} ms: pipeline (64 concurrent calls) **{rate:,.0f} devices/s** for "
        f"{lat_n:,} devices; naive baseline {base:,.0f} devices/s; **{rate / base:.1f}x the naive baseline**"
    )
    record(f"P1 throughput: {n:,}-device Jasper StatusUpdate (bench/p1_throughput.py)", lines)
