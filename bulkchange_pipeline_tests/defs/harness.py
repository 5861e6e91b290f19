"""Test definitions with fast carrier retries, driven through the production local runner."""

import dagster as dg

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import evaluate_sensor, execute, tick_and_run

FAST_CARRIERS = CarrierGatewayResource(timeout_seconds=2.0, max_attempts=6, retry_wait_seconds=0.02)


def fast_definitions() -> dg.Definitions:
    return build_definitions(carriers=FAST_CARRIERS)


sensor_then_runs = tick_and_run

__all__ = ["fast_definitions", "evaluate_sensor", "execute", "sensor_then_runs"]
