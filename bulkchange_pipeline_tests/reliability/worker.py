"""A run worker process for the crash and concurrency tests.

``python -m bulkchange_pipeline_tests.reliability.worker [ready file]`` imports Dagster and the
definitions, touches the ready file, then reads one JSON line from stdin: ``{"key": partition key,
"job": job name, "env": {...}, "carriers": CarrierGatewayResource fields or null}``. It
takes the environment given (DAGSTER_HOME, BULKCHANGE_DATABASE_URL, BULKCHANGE_CRED_*, ...) and
executes that partition with ``bulkchange_pipeline.defs.local_runner.execute`` (the production
local runner) on the persistent Dagster instance of DAGSTER_HOME, with the test definitions (fast
carrier retries), as a run worker started by the run launcher would. Exit code 0 when the run
succeeded. Importing before the order comes lets tests keep one worker warm (``WarmWorkers``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    import dagster as dg

    from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
    from bulkchange_pipeline_tests.defs.harness import FAST_CARRIERS, execute

    if len(sys.argv) > 1:
        Path(sys.argv[1]).touch()  # ready: imports done
    order = json.loads(sys.stdin.readline())
    os.environ.clear()
    os.environ.update(order["env"])
    carriers = CarrierGatewayResource(**order["carriers"]) if order.get("carriers") else FAST_CARRIERS
    with dg.DagsterInstance.get() as instance:
        result = execute(
            instance,
            build_definitions(carriers=carriers),
            order["key"],
            tags={"bulkchange/worker": "child"},
            raise_on_error=False,
            job_name=order.get("job") or "process_bulk_change_job",
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
