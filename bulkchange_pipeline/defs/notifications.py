"""Completion notifications, delivered by Dagster: ``notification_sensor`` requests a
``deliver_notifications_job`` run when a delivery is due; the run's one op makes a delivery pass
(``engine.notify.deliver_due``: claim, send concurrently, record every attempt).

Events are not enqueued here: the store writes them in the transaction that settles a bulk change
(``store.notifications.enqueue_settled``), whichever way it settled (a run's finalize, the failure
and stopped sensors, cancel), so none is missed and none is doubled.

Run keys: ``notify-<oldest due delivery id>-<its claims>``. A pass bumps ``claims`` of what it
takes, so the next due delivery (or one a dead pass left behind, once its lease has passed) makes
a new key; while the requested run waits in the queue the key stays, and nothing more is asked.
At most ``MAX_ACTIVE_RUNS`` passes are queued or running at once, so a flood of slow receivers
cannot take the run queue from bulk change runs.
"""

import dagster as dg
from pydantic import Field

from ..domain.notifications import DEFAULT_RETRY_SCHEDULE
from ..engine.notify import DeliveryPolicy, deliver_due
from ..store.notification_sending import next_due
from . import clock
from .resources import DatabaseResource
from .tags import JOB_TAG

__all__ = [
    "DELIVER_JOB",
    "MAX_ACTIVE_RUNS",
    "NOTIFY_SENSOR_INTERVAL_SECONDS",
    "NotificationsResource",
    "deliver_notifications_job",
    "notification_sensor",
]

DELIVER_JOB = "deliver_notifications_job"
NOTIFY_SENSOR_INTERVAL_SECONDS = 5
MAX_ACTIVE_RUNS = 2
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class NotificationsResource(dg.ConfigurableResource):
    """How deliveries are attempted. No secret here: the signing key and SMTP passwords come from
    the environment when a message is sent. Every field is bounded, since the launchpad can set it."""

    retry_schedule_seconds: list[float] = Field(
        list(DEFAULT_RETRY_SCHEDULE),
        min_length=1,
        max_length=20,
        description="Waits between attempts (the first attempt goes at once; dead after the last retry)",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="Deadline of one attempt, all included (0-60 s)")
    claim_limit: int = Field(64, ge=1, le=500, description="Deliveries one pass attempts at once (1-500)")
    per_target: int = Field(4, ge=1, le=100, description="Of which at most this many per receiver (1-100)")

    def policy(self) -> DeliveryPolicy:
        if any(not 0 <= s <= 7 * 86_400 for s in self.retry_schedule_seconds):
            raise dg.Failure("retry_schedule_seconds: each wait must be 0 to 604800 s")
        return DeliveryPolicy(
            schedule=tuple(self.retry_schedule_seconds),
            timeout_seconds=self.timeout_seconds,
            claim_limit=self.claim_limit,
            per_target=self.per_target,
        )


@dg.op(description="Attempt every due notification delivery (webhooks and e-mail) and record each attempt.")
def deliver_notifications(
    context: dg.OpExecutionContext, database: DatabaseResource, notifications: NotificationsResource
) -> None:
    summary = deliver_due(database.engine(), notifications.policy(), clock=clock.current())
    context.log.info(
        f"{summary.claimed} deliveries attempted: {summary.delivered} delivered, "
        f"{summary.retrying} to retry, {summary.dead} dead"
    )
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "errors"})
    if summary.errors:
        context.log.info(f"failed attempts by error: {summary.errors}")


@dg.job(
    name=DELIVER_JOB,
    executor_def=dg.in_process_executor,
    tags={JOB_TAG: "notify"},
    description="Deliver due completion notifications (signed webhooks, e-mail). Started by notification_sensor.",
)
def deliver_notifications_job() -> None:
    deliver_notifications()


@dg.sensor(
    job=deliver_notifications_job,
    minimum_interval_seconds=NOTIFY_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def notification_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    """A delivery pass when a delivery is due and nobody holds it (module docstring)."""
    due = next_due(database.engine(), clock.now())
    if due is None:
        return dg.SensorResult(skip_reason=dg.SkipReason("no notification due"))
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name=DELIVER_JOB, statuses=_ACTIVE), limit=MAX_ACTIVE_RUNS
    )
    if len(active) >= MAX_ACTIVE_RUNS:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{len(active)} delivery runs are queued or running"))
    delivery_id, claims = due
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"notify-{delivery_id}-{claims}")])
