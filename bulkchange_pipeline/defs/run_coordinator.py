"""The run queue, with every bulk change run tagged before it is queued.

Dagster computes a partition's tags (``partitions.partition_tags``) only where the launching client
asks the code location for them first: the UI launchpad, sensors, backfills, ``dagster job launch``.
A run launched over GraphQL naming only ``dagster/partition`` (``DagsterGraphQLClient``, any API
client) would reach the queue without ``bulkchange/carrier_account`` and escape the limit of one
run per carrier account. This coordinator adds the stored bulk change's tags to such a run before
queueing it, so the queue sees the same tags however the run was launched. Configured in
``dagster.yaml`` and ``deploy/dagster.postgres.yaml`` (``run_coordinator``); it runs in the webserver
and daemon processes, which read the business database from ``BULKCHANGE_DATABASE_URL``.
"""

from __future__ import annotations

import dagster as dg

from .partitions import partition_tags
from .tags import ACCOUNT_TAG, BULK_CHANGE_JOBS, PARTITION_TAG

__all__ = ["BulkChangeRunCoordinator"]


def missing_tags(run: dg.DagsterRun) -> dict[str, str]:
    """The ``bulkchange/*`` tags a bulk change run lacks (empty for any other run)."""
    key = run.tags.get(PARTITION_TAG)
    if run.job_name not in BULK_CHANGE_JOBS or not key or ACCOUNT_TAG in run.tags:
        return {}
    return {k: v for k, v in partition_tags(key).items() if k not in run.tags}


class BulkChangeRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that tags bulk change runs from their partition before queueing."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        tags = missing_tags(context.dagster_run)
        if tags:
            self._instance.add_run_tags(context.dagster_run.run_id, tags)
            run = self._instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
            context = dg.SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
