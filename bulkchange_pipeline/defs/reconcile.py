"""Asynchronous carriers: ``async_results_sensor`` requests a ``reconcile_async_job`` run for a
PENDING bulk change when callbacks arrived or a poll is due. The run applies callbacks, polls,
ends timed-out rows, and finalizes. No run ever waits for a carrier."""

from datetime import timedelta

import dagster as dg

from ..engine import BulkChangeInfo
from ..engine.reconcile import reconcile
from ..store.callbacks import async_work
from ..store.db import utcnow
from .partitions import bulk_change_partitions
from .pipeline import finalize_bulk_change, load_bulk_change_op
from .resources import CarrierGatewayResource, DatabaseResource

ASYNC_SENSOR_INTERVAL_SECONDS = 10


@dg.op(retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL), pool="carrier_api")
def reconcile_async_results(
    context: dg.OpExecutionContext, database: DatabaseResource, carriers: CarrierGatewayResource, info: BulkChangeInfo
) -> list:
    """Apply stored callbacks, poll overdue rows, end timed-out rows; returns the pass summary."""
    summary = reconcile(
        database.engine(),
        info,
        carriers.account(info.service_provider),
        poll_after=timedelta(seconds=carriers.poll_after_seconds),
        timeout=timedelta(seconds=carriers.async_timeout_seconds),
        process_by=f"dagster:{context.run_id[:8]}",
    )
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "sample_failures"})
    return [{**summary.as_dict(), "carrier_calls": summary.from_polls}]


@dg.job(partitions_def=bulk_change_partitions, executor_def=dg.in_process_executor, tags={"bulkchange/job": "reconcile"},
        description="Settle a bulk change's rows that wait on an asynchronous carrier (callbacks, polls, timeouts).")
def reconcile_async_job():
    info = load_bulk_change_op()
    finalize_bulk_change(info, reconcile_async_results(info))


@dg.sensor(job=reconcile_async_job, minimum_interval_seconds=ASYNC_SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING)
def async_results_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, carriers: CarrierGatewayResource
) -> dg.SensorResult:
    """One reconcile run per PENDING bulk change per new callback batch (run key: newest callback
    id) or per poll interval (run key: the interval's number), so nothing is requested twice."""
    now = utcnow()
    poll_after = timedelta(seconds=carriers.poll_after_seconds)
    requests = []
    for work in async_work(database.engine()):
        tags = {
            "bulkchange/bulk_change_id": str(work.bulk_change_id),
            "bulkchange/tenant": str(work.tenant_id),
            "bulkchange/carrier_account": f"sp-{work.service_provider_id}",
            "bulkchange/change_type": str(work.change_type),
        }
        if work.newest_callback_id is not None:
            key = f"bc-{work.bulk_change_id}-cb-{work.newest_callback_id}"
        elif work.oldest_sent_at is not None and work.oldest_sent_at <= now - poll_after:
            key = f"bc-{work.bulk_change_id}-poll-{int(now.timestamp() // max(poll_after.total_seconds(), 1))}"
        else:
            continue
        requests.append(dg.RunRequest(partition_key=str(work.bulk_change_id), run_key=key, tags=tags))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no async results to reconcile"))
    return dg.SensorResult(run_requests=requests)
