"""Asynchronous carriers: ``async_results_sensor`` requests a ``reconcile_async_job`` run for a
PENDING bulk change when callbacks arrived or a poll is due. The run applies callbacks, polls,
ends timed-out rows, and finalizes. No run ever waits for a carrier."""

from datetime import datetime, timedelta

import dagster as dg

from ..engine import BulkChangeInfo
from ..engine.reconcile import reconcile
from ..store.callbacks import CALLBACK_INTEGRATIONS, async_work, latest_receiver_start
from ..store.db import utcnow
from .partitions import bulk_change_config
from .pipeline import JOB_TAGS, finalize_bulk_change, load_bulk_change_op
from .stopping import run_stoppably
from .resources import CarrierGatewayResource, DatabaseResource

ASYNC_SENSOR_INTERVAL_SECONDS = 10
POLL_SENT_BEFORE_TAG = "bulkchange/poll_sent_before"
"""Run tag set on the reconcile run requested after a callback receiver start: rows sent before
this time (ISO, naive UTC) are polled by that run whatever ``poll_after_seconds`` says."""


def restart_poll_after(tags: dict[str, str], poll_after_seconds: float, now: datetime | None = None) -> timedelta:
    """The reconcile run's poll threshold: ``poll_after_seconds``, shortened for a run requested
    after a receiver start (``POLL_SENT_BEFORE_TAG``) so that every row sent before that start is
    overdue now. Only that one run polls early; later runs keep the normal threshold."""
    poll_after = timedelta(seconds=poll_after_seconds)
    before = tags.get(POLL_SENT_BEFORE_TAG)
    if not before:
        return poll_after
    return min(poll_after, max((now or utcnow()) - datetime.fromisoformat(before), timedelta(0)))


@dg.op(retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL), pool="carrier_api")
def reconcile_async_results(
    context: dg.OpExecutionContext, database: DatabaseResource, carriers: CarrierGatewayResource, info: BulkChangeInfo
) -> list:
    """Apply stored callbacks, poll overdue rows, end timed-out rows; returns the pass summary."""
    summary = run_stoppably(context, lambda should_stop: reconcile(
        database.engine(),
        info,
        carriers.account(info.service_provider),
        poll_after=restart_poll_after(context.run.tags, carriers.poll_after_seconds),
        timeout=timedelta(seconds=carriers.async_timeout_seconds),
        process_by=f"dagster:{context.run_id[:8]}",
        should_stop=should_stop,
    ))
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "sample_failures"})
    return [{**summary.as_dict(), "carrier_calls": summary.from_polls}]


@dg.job(config=bulk_change_config, executor_def=dg.in_process_executor, tags={"bulkchange/job": "reconcile", **JOB_TAGS},
        description="Settle a bulk change's rows that wait on an asynchronous carrier (callbacks, polls, timeouts).")
def reconcile_async_job():
    info = load_bulk_change_op()
    finalize_bulk_change(info, reconcile_async_results(info))


@dg.sensor(job=reconcile_async_job, minimum_interval_seconds=ASYNC_SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING)
def async_results_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, carriers: CarrierGatewayResource
) -> dg.SensorResult:
    """Reconcile runs for each PENDING bulk change, each run key requested once (the daemon
    skips a key it has seen):

    - ``bc-<id>-cb-<marker>`` when unapplied callbacks arrived: the marker is a digest of the set
      of unapplied callback ids (``AsyncWork.callback_marker``), so any callback that becomes
      visible changes the key, whatever order callbacks commit in (on PostgreSQL a lower id can
      commit after a higher one was seen; keyed on the newest id, it got no run of its own when
      the run requested for the higher id never applied it: cancelled, or its worker killed).
    - ``bc-<id>-restart-<start id>`` when a callback receiver started after some of its rows were
      sent (callback integrations only): callbacks sent to it while it was down are lost, so those
      rows are polled right away, once per start; the run carries ``POLL_SENT_BEFORE_TAG``.
      A receiver that is down and not restarted yet is not detected: its rows wait for the
      normal poll below.
    - ``bc-<id>-poll-<interval number>`` when a row was sent more than ``poll_after_seconds``
      ago: one poll per interval, whether or not callbacks wait. (A callback key whose run was
      cancelled or killed before it applied them stays the same and is not requested again; the
      poll run then applies them, and ends timed-out rows, which only reconcile runs do.)
    """
    now = utcnow()
    poll_after = timedelta(seconds=carriers.poll_after_seconds)
    engine = database.engine()
    receiver_start = latest_receiver_start(engine)
    requests = []
    for work in async_work(engine):
        tags = {
            "bulkchange/bulk_change_id": str(work.bulk_change_id),
            "bulkchange/tenant": str(work.tenant_id),
            "bulkchange/carrier_account": f"sp-{work.service_provider_id}",
            "bulkchange/change_type": str(work.change_type),
        }

        def request(key: str, extra: dict[str, str] | None = None, work=work, tags=tags) -> None:
            requests.append(dg.RunRequest(partition_key=str(work.bulk_change_id), run_key=f"bc-{work.bulk_change_id}-{key}",
                                          tags={**tags, **(extra or {})}))

        if (receiver_start is not None and work.integration in CALLBACK_INTEGRATIONS
                and work.oldest_sent_at is not None and work.oldest_sent_at < receiver_start.started_at):
            request(f"restart-{receiver_start.id}", {POLL_SENT_BEFORE_TAG: receiver_start.started_at.isoformat()})
        if work.callback_marker is not None:
            request(f"cb-{work.callback_marker}")
        if work.oldest_sent_at is not None and work.oldest_sent_at <= now - poll_after:
            request(f"poll-{int(now.timestamp() // max(poll_after.total_seconds(), 1))}")
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no async results to reconcile"))
    return dg.SensorResult(run_requests=requests)
