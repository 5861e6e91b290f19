"""Do in this process what the Dagster daemon does for the pipeline: evaluate a sensor, add the
partitions it asks for, and execute the runs it requests, on a real instance.

Used by ``bulkchange demo`` (no daemon needed on the embedded default) and by the tests, so
both exercise the very sensors and jobs that ``dagster dev`` schedules.
"""

from typing import Any

import dagster as dg

from .tags import PROCESS_JOB, RUN_KEY_TAG

__all__ = [
    "ASYNC_SENSOR_NAME",
    "JOB_NAME",
    "QUIET",
    "SENSOR_NAME",
    "evaluate_sensor",
    "execute",
    "resolved_tags",
    "tick_and_run",
]

JOB_NAME = PROCESS_JOB
SENSOR_NAME = "bulk_change_sensor"
ASYNC_SENSOR_NAME = "async_results_sensor"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def evaluate_sensor(
    instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None, sensor_name: str = SENSOR_NAME
) -> dg.SensorResult:
    """One sensor tick with the definitions' resources; applies its dynamic partition requests and
    records its asset events, as the sensor daemon does."""
    sensor = defs.resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=dict(defs.resources or {})
    )
    result = sensor(context)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def resolved_tags(defs: dg.Definitions, request: dg.RunRequest, job_name: str = JOB_NAME) -> dict[str, str]:
    """A run request's tags as the daemon gives them to the run: the partition's tags (from the
    stored bulk change), the request's own, and its run key."""
    job = defs.resolve_job_def(job_name)
    partition = (
        job.partitioned_config.get_tags_for_partition_key(request.partition_key, job.name)
        if request.partition_key and job.partitioned_config
        else {}
    )
    tags = {**partition, **request.tags}
    if request.run_key:
        tags[RUN_KEY_TAG] = request.run_key
    return tags


def execute(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    partition_key: str,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    job_name: str = JOB_NAME,
) -> dg.ExecuteInProcessResult:
    """Execute a job (default: the processing job) for one bulk change partition."""
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance, partition_key=partition_key, tags=tags, run_config=run_config, raise_on_error=raise_on_error
    )


def tick_and_run(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    cursor: str | None = None,
    raise_on_error: bool = True,
    run_config: dict[str, Any] | None = None,
    sensor_name: str = SENSOR_NAME,
) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
    """A sensor tick, then every run it requested, in request order."""
    result = evaluate_sensor(instance, defs, cursor, sensor_name)
    job_name = defs.resolve_sensor_def(sensor_name).job_name
    runs = [
        # The run key as a tag, as the daemon sets it: the sensor asks run storage which keys have run.
        execute(
            instance,
            defs,
            rr.partition_key,
            resolved_tags(defs, rr, job_name),
            run_config=run_config,
            raise_on_error=raise_on_error,
            job_name=job_name,
        )
        for rr in result.run_requests or []
    ]
    return result, runs
