"""P3 rate-limit fidelity: two bulk changes submitted together on one Jasper account limited to
R calls/s (and one concurrent call). The run queue allows one run per carrier account at a time
(`bulkchange/carrier_account` tag limit in dagster.yaml), so the two runs follow each other; the
client's token-bucket limiter paces each run. Reported: achieved calls/s / R and over-limit
answers / calls, measured by the simulator.

    python bench/p3_rate_limit.py [R] [DEVICES_PER_BULK_CHANGE]
"""

from __future__ import annotations

import sys

from harness import database, engine_for, jasper_simulator, record, seed_account, seed_simulator, sim_stats, submit
from pipeline import run_pipeline

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status

if __name__ == "__main__":
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with jasper_simulator(rate=rate, concurrency=1) as root, database("sqlite") as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, root + "/rws/api/v1", 2 * n, rate=rate, concurrency=1, batch_size=100)
        seed_simulator(root, [d["iccid"] for d in devices])
        first = submit(engine, ids, devices[:n], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        second = submit(engine, ids, devices[n:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        run = run_pipeline(url)
        stats = sim_stats(root)
        done = [count_rows_by_status(engine, b) for b in (first, second)]
    assert run.success and done == [{"PROCESSED": n}] * 2, done
    achieved = stats["total_calls"] / run.seconds
    over = stats["over_limit_answers"] / max(stats["total_calls"], 1)
    record(
        f"P3 rate-limit fidelity at R = {rate:g} calls/s (bench/p3_rate_limit.py)",
        [
            f"- two bulk changes of {n} devices on one account: {stats['total_calls']} calls in {run.seconds:.1f} s = "
            f"**{achieved:.2f} calls/s = {achieved / rate:.0%} of R**; over-limit answers **{stats['over_limit_answers']} "
            f"({over:.2%} of calls)**; simulator peak concurrency {stats['peak_concurrency']}",
            "- the figure includes Dagster's step and run start-up time, which the limiter cannot fill",
        ],
    )
