"""``retention_schedule``: every night at 02:00 UTC, archive, purge and yesterday's metrics in one run.
``metrics_today_schedule``: every hour, today's metrics so far (the nightly run then writes the whole day).

Archive runs before purge (purge depends on it), so a tenant whose purge age equals its archive age
is archived and purged the same night; the checks of the three assets run in the same run.
"""

from datetime import timedelta

import dagster as dg

from .assets import bulk_change_archive, bulk_change_metrics, retention_purge
from .tags import JOB_TAG

RETENTION_CRON = "0 2 * * *"

retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(bulk_change_archive, retention_purge, bulk_change_metrics),
    description="Archive completed bulk changes, purge archived ones past the purge age, compute a day's metrics.",
    tags={JOB_TAG: "retention"},
)


@dg.schedule(
    job=retention_job,
    cron_schedule=RETENTION_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def retention_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """One run per night; the metrics partition is the day that just ended (run key: that day)."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"retention-{yesterday}", partition_key=yesterday)


METRICS_TODAY_CRON = "5 * * * *"

metrics_today_job = dg.define_asset_job(
    "metrics_today_job",
    selection=dg.AssetSelection.assets(bulk_change_metrics),
    description="Today's metrics so far (UTC day), refreshed every hour.",
    tags={JOB_TAG: "metrics"},
)


@dg.schedule(
    job=metrics_today_job,
    cron_schedule=METRICS_TODAY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def metrics_today_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Today's partition, once an hour (run key: the day and hour), so an operator sees the day so
    far rather than waiting for the nightly run."""
    now = context.scheduled_execution_time
    return dg.RunRequest(run_key=f"metrics-{now:%Y-%m-%dT%H}", partition_key=now.strftime("%Y-%m-%d"))
