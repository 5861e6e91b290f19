"""Run bulk changes through the real sensor and job (the local runner) on a throw-away Dagster
instance, returning wall time and the runs' step counts."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import dagster as dg

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run


@dataclass
class PipelineRun:
    seconds: float  # from the first run's start to the last run's end
    steps: list[int]  # STEP_START events per run
    success: bool


def run_pipeline(url: str) -> PipelineRun:
    """One sensor tick and every run it requests, executed in request order (as the run queue's
    one-run-per-carrier-account limit would)."""
    os.environ["BULKCHANGE_DATABASE_URL"] = url
    home = tempfile.mkdtemp(prefix="bench-dagster-")
    with open(os.path.join(home, "dagster.yaml"), "w") as fh:
        fh.write("telemetry:\n  enabled: false\n")
    defs = build_definitions(carriers=CarrierGatewayResource(retry_wait_seconds=0.2))
    with dg.instance_for_test(temp_dir=home) as instance:
        started = time.perf_counter()
        _, runs = tick_and_run(instance, defs, run_config=QUIET)
        seconds = time.perf_counter() - started
        steps = [sum(1 for e in r.all_events if e.event_type == dg.DagsterEventType.STEP_START) for r in runs]
        return PipelineRun(seconds, steps, all(r.success for r in runs))
