"""Drive the real Dagster definitions in tests: evaluate the sensor, add its partitions, execute
the runs it requests on a real instance."""

from __future__ import annotations

from typing import Any

import dagster as dg

from bulkchange_pipeline.defs import CarrierGatewayResource, DatabaseResource, build_definitions

FAST_CARRIERS = CarrierGatewayResource(timeout_seconds=2.0, max_attempts=6, retry_wait_seconds=0.02)


def test_definitions() -> dg.Definitions:
    return build_definitions(carriers=FAST_CARRIERS)


def evaluate_sensor(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("bulk_change_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources={"database": DatabaseResource()})
    result = sensor(context)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def execute(instance: dg.DagsterInstance, defs: dg.Definitions, partition_key: str, tags: dict[str, str] | None = None,
            run_config: dict[str, Any] | None = None, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("process_bulk_change_job")
    return job.execute_in_process(instance=instance, partition_key=partition_key, tags=tags, run_config=run_config,
                                  raise_on_error=raise_on_error)


def sensor_then_runs(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
    result = evaluate_sensor(instance, defs, cursor)
    runs = [execute(instance, defs, rr.partition_key, dict(rr.tags)) for rr in result.run_requests or []]
    return result, runs
