"""Asynchronous carriers: ``async_results_sensor`` requests a ``reconcile_async_job`` run for a
PENDING bulk change when callbacks arrived or a poll is due. The run applies callbacks, polls,
ends timed-out rows, and finalizes. No run ever waits for a carrier."""

from datetime import datetime, timedelta

import dagster as dg

from ..carriers import sends_callbacks
from ..domain.enums import change_type_name
from ..engine import BulkChangeInfo
from ..engine.reconcile import ReconcileSummary, reconcile
from ..store.callbacks import async_work, latest_receiver_start
from . import clock
from .partitions import bulk_change_config
from .pipeline import finalize_bulk_change, load_bulk_change_op
from .resources import CarrierGatewayResource, DatabaseResource
from .stopping import run_stoppably
from .tags import POLL_SENT_BEFORE_TAG, RECONCILE_JOB, bulk_change_tags, job_tags, reconcile_run_key

__all__ = [
    "ASYNC_SENSOR_INTERVAL_SECONDS",
    "POLL_SENT_BEFORE_TAG",
    "async_results_sensor",
    "reconcile_async_job",
    "reconcile_async_results",
    "restart_poll_after",
]

ASYNC_SENSOR_INTERVAL_SECONDS = 10


def restart_poll_after(tags: dict[str, str], poll_after_seconds: float, now: datetime) -> timedelta:
    """The reconcile run's poll threshold: ``poll_after_seconds``, shortened for a run requested
    after a receiver start (``POLL_SENT_BEFORE_TAG``) so that every row sent before that start is
    overdue now. Only that one run polls early; later runs keep the normal threshold."""
    poll_after = timedelta(seconds=poll_after_seconds)
    before = tags.get(POLL_SENT_BEFORE_TAG)
    if not before:
        return poll_after
    return min(poll_after, max(now - datetime.fromisoformat(before), timedelta(0)))


@dg.op(retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL), pool="carrier_api")
def reconcile_async_results(
    context: dg.OpExecutionContext, database: DatabaseResource, carriers: CarrierGatewayResource, info: BulkChangeInfo
) -> list[ReconcileSummary]:
    """Apply stored callbacks, poll overdue rows, end timed-out rows; returns the pass summary (as
    the one step finalize sums up)."""
    run_clock = clock.current()
    summary = run_stoppably(
        context,
        lambda should_stop: reconcile(
            database.engine(),
            info,
            carriers.account(info.service_provider),
            poll_after=restart_poll_after(context.run.tags, carriers.poll_after_seconds, run_clock.now()),
            timeout=timedelta(seconds=carriers.async_timeout_seconds),
            process_by=f"dagster:{context.run_id[:8]}",
            clock=run_clock,
            should_stop=should_stop,
        ),
    )
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "sample_failures"})
    return [summary]


@dg.job(
    name=RECONCILE_JOB,
    config=bulk_change_config,
    executor_def=dg.in_process_executor,
    tags=job_tags("reconcile"),
    description="Settle a bulk change's rows that wait on an asynchronous carrier (callbacks, polls, timeouts).",
)
def reconcile_async_job():
    info = load_bulk_change_op()
    finalize_bulk_change(info, reconcile_async_results(info))


@dg.sensor(
    job=reconcile_async_job,
    minimum_interval_seconds=ASYNC_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
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
    now = clock.now()
    poll_after = timedelta(seconds=carriers.poll_after_seconds)
    engine = database.engine()
    receiver_start = latest_receiver_start(engine)
    requests = []
    for work in async_work(engine):
        tags = bulk_change_tags(
            work.bulk_change_id,
            work.tenant_id,
            work.credentials_name,
            work.change_type,
            tenant_name=work.tenant_name,
            account_name=work.account_name,
            change_type_name=change_type_name(work.change_type),
        )

        def request(key: str, extra: dict[str, str] | None = None, work=work, tags=tags) -> None:
            requests.append(
                dg.RunRequest(
                    partition_key=str(work.bulk_change_id),
                    run_key=reconcile_run_key(work.bulk_change_id, key),
                    tags={**tags, **(extra or {})},
                )
            )

        if (
            receiver_start is not None
            and sends_callbacks(work.integration)
            and work.oldest_sent_at is not None
            and work.oldest_sent_at < receiver_start.started_at
        ):
            request(f"restart-{receiver_start.id}", {POLL_SENT_BEFORE_TAG: receiver_start.started_at.isoformat()})
        if work.callback_marker is not None:
            request(f"cb-{work.callback_marker}")
        if work.oldest_sent_at is not None and work.oldest_sent_at <= now - poll_after:
            request(f"poll-{int(now.timestamp() // max(poll_after.total_seconds(), 1))}")
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no async results to reconcile"))
    return dg.SensorResult(run_requests=requests)
