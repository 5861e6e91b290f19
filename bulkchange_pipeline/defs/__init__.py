"""Dagster definitions, loaded by ``dagster dev`` through workspace.yaml (module bulkchange_pipeline.defs)."""

import dagster as dg

from .partitions import bulk_change_partitions
from .pipeline import ProcessConfig, process_bulk_change_job
from .reconcile import async_results_sensor, reconcile_async_job
from .resources import CarrierGatewayResource, DatabaseResource
from .sensors import bulk_change_failure_sensor, bulk_change_sensor


def build_definitions(
    database: DatabaseResource | None = None, carriers: CarrierGatewayResource | None = None
) -> dg.Definitions:
    """The code location's definitions; tests pass resources with small retry waits."""
    return dg.Definitions(
        jobs=[process_bulk_change_job, reconcile_async_job],
        sensors=[bulk_change_sensor, bulk_change_failure_sensor, async_results_sensor],
        resources={"database": database or DatabaseResource(), "carriers": carriers or CarrierGatewayResource()},
    )


defs = build_definitions()

__all__ = [
    "defs", "build_definitions", "bulk_change_partitions", "process_bulk_change_job", "ProcessConfig",
    "bulk_change_sensor", "bulk_change_failure_sensor", "async_results_sensor", "reconcile_async_job", "DatabaseResource", "CarrierGatewayResource",
]
