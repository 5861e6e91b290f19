"""P4 scale of cost: steps per run for 1,000 / 10,000 / 100,000 devices (steps grow with batches,
not devices), and the peak memory (max RSS) of a run worker processing a 1,000,000-device bulk
change (database-only change type, so the figure is the pipeline's own, not carrier time).

    python bench/p4_scale.py [MEMORY_N]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import ROOT, database, engine_for, jasper_simulator, record, seed_account, seed_simulator, submit
from pipeline import run_pipeline

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from pipeline import run_pipeline
run = run_pipeline({url!r})
print(json.dumps({{"seconds": run.seconds, "steps": run.steps, "success": run.success,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def steps_for(n: int) -> tuple[int, float]:
    with jasper_simulator() as root, database("sqlite") as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, root + "/rws/api/v1", n, concurrency=16, batch_size=500)
        seed_simulator(root, [d["iccid"] for d in devices])
        submit(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        run = run_pipeline(url)
    assert run.success
    return run.steps[0], run.seconds


def memory_for(n: int) -> dict:
    with database("sqlite") as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, "http://127.0.0.1:9/rws/api/v1", n, batch_size=5_000)
        bc = submit(engine, ids, devices, ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"data_allocation_mb": 2048})
        del devices
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(bench=str(Path(__file__).parent), url=url)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert count_rows_by_status(engine, bc) == {"PROCESSED": n}
    return result


if __name__ == "__main__":
    mem_n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    lines = []
    for n in (1_000, 10_000, 100_000):
        steps, seconds = steps_for(n)
        lines.append(f"- {n:,} devices: **{steps} steps** in one run ({seconds:.1f} s)")
    mem = memory_for(mem_n)
    lines.append(
        f"- {mem_n:,}-device bulk change (CustomerRatePlanChange, database only): run worker peak RSS "
        f"**{mem['max_rss_mb']:,.0f} MB**, {mem['steps'][0]} steps, {mem['seconds']:.0f} s"
    )
    record("P4 scale of cost (bench/p4_scale.py)", lines)
