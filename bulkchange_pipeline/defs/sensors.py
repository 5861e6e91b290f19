"""Sensors: start a run for every submitted bulk change; record run failures on the bulk change."""


import dagster as dg

from ..domain import BulkChangeStatus
from ..store.bulk_changes import QueuedBulkChange, list_due_scheduled, list_requeued, list_submitted_after, set_bulk_status
from ..store.db import utcnow
from ..store.device_changes import add_log
from .partitions import bulk_change_partitions
from .pipeline import process_bulk_change_job
from .reconcile import reconcile_async_job
from .resources import DatabaseResource

SENSOR_PAGE = 500  # bulk changes per evaluation: keeps each tick far inside the 60 s sensor timeout
SENSOR_INTERVAL_SECONDS = 5


def run_tags(bc: QueuedBulkChange) -> dict[str, str]:
    """Tags shown in the UI and used by the run queue: one run at a time per carrier account."""
    return {
        "bulkchange/bulk_change_id": str(bc.id),
        "bulkchange/tenant": str(bc.tenant_id),
        "bulkchange/carrier_account": f"sp-{bc.service_provider_id}",
        "bulkchange/change_type": str(bc.change_type),
    }


@dg.sensor(job=process_bulk_change_job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING)
def bulk_change_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    """Add a partition and request a run for each NEW bulk change after the cursor, for each one put
    back to NEW by retry-failed (run key: id + attempt), and for each SCHEDULED one whose next
    effective date has come (run key: id + that date, so once per due time)."""
    engine = database.engine()
    cursor = int(context.cursor or 0)
    new = list_submitted_after(engine, cursor, SENSOR_PAGE)
    due = list_due_scheduled(engine, utcnow(), SENSOR_PAGE)
    seen = {bc.id for bc in new}
    retried = [bc for bc in list_requeued(engine, SENSOR_PAGE) if bc.id not in seen]
    requests = [
        dg.RunRequest(partition_key=str(bc.id), run_key=f"bc-{bc.id}-a{bc.attempt}", tags=run_tags(bc))
        for bc in [*new, *retried]
    ] + [
        dg.RunRequest(
            partition_key=str(bc.id),
            run_key=f"bc-{bc.id}-due-{bc.effective_at:%Y%m%dT%H%M%S}",
            tags=run_tags(bc),
        )
        for bc in due
    ]
    # A scheduled bulk change got no partition when it was submitted (nothing was due then).
    keys = sorted({str(bc.id) for bc in [*new, *due]}, key=int)
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no bulk change waiting"), cursor=str(cursor))
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(max([cursor, *[bc.id for bc in new]])),
        dynamic_partitions_requests=[bulk_change_partitions.build_add_request(keys)],
    )


@dg.run_failure_sensor(monitored_jobs=[process_bulk_change_job, reconcile_async_job], default_status=dg.DefaultSensorStatus.RUNNING)
def bulk_change_failure_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    """Mark the bulk change ERROR and log why; its unfinished rows stay as they are, re-runnable."""
    run = context.dagster_run
    key = run.tags.get("dagster/partition")
    if not key or not key.isdigit():
        return
    engine = database.engine()
    from ..store.bulk_changes import get_bulk_change

    bc = get_bulk_change(engine, int(key))
    if bc is None:
        return
    set_bulk_status(engine, bc["id"], BulkChangeStatus.ERROR, counts=bc["counts"])
    message = context.failure_event.message or "run failed"
    add_log(
        engine,
        tenant_id=bc["tenant_id"],
        bulk_change_id=bc["id"],
        description=f"Run {run.run_id} failed: {message[:1000]}. Unfinished rows are kept; re-run the partition to finish them.",
        process_by="dagster:bulk_change_failure_sensor",
        has_errors=True,
    )
