"""Lifecycle and observability assets: ``bulk_change_archive``, ``retention_purge`` and the daily
``bulk_change_metrics``. Thin: the work is in ``store.archive``, ``store.maintenance`` and
``store.metrics``; these add the Dagster parts (resources, run and partition deletion, metadata)."""

from datetime import date, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from .. import settings
from ..store.db import to_naive_utc
from ..store.metrics import compute_daily_metrics, metric_values, metrics_markdown
from . import clock
from .partitions import bulk_change_partitions
from .resources import DatabaseResource
from .tags import BULK_CHANGE_JOBS, PARTITION_TAG

# ``store.archive`` (and ``store.maintenance``, which uses it) import pandas and pyarrow, about
# 100 MB and 1 s per process. Every run worker loads this module with the code location, and only
# the nightly archive/purge runs need them: imported where they are used (issue 22, P6: 24 run
# workers at once).

METRICS_START_DATE = "2026-01-01"
metrics_partitions = dg.DailyPartitionsDefinition(start_date=METRICS_START_DATE, timezone="UTC", end_offset=1)
"""One partition per UTC day, today's included (``end_offset=1``): today's is refreshed hourly with
the day so far (``metrics_today_schedule``), and the nightly run computes it whole after midnight."""
RUN_PAGE = 200


class ArchiveResource(dg.ConfigurableResource):
    """Where archived bulk changes are written as Parquet (a local or mounted folder)."""

    path: str = Field("", description="Archive folder; empty: BULKCHANGE_ARCHIVE_DIR, else <BULKCHANGE_HOME>/archive")

    def root(self) -> Path:
        root = Path(self.path) if self.path else settings.current().archive_root
        root.mkdir(parents=True, exist_ok=True)
        return root


class LifecycleConfig(dg.Config):
    """Launchpad options of the archive and purge assets."""

    now: str | None = Field(
        None, description="ISO timestamp (UTC if naive) to use as the current time; for tests and catch-up"
    )
    limit: int = Field(10_000, ge=1, description="At most this many bulk changes per materialization")


class MetricsConfig(dg.Config):
    now: str | None = Field(None, description="ISO timestamp (UTC if naive) as of which queue depth is measured")


def parse_now(value: str | None) -> datetime:
    """The clock of a materialization: the config override, else ``clock.now()`` (naive UTC, as stored)."""
    if not value:
        return clock.now()
    try:
        return to_naive_utc(datetime.fromisoformat(value))  # type: ignore[return-value]
    except ValueError as exc:
        raise dg.Failure(f"config now={value!r} is not an ISO timestamp, e.g. 2026-03-01T02:00:00") from exc


@dg.asset(
    group_name="lifecycle",
    description="Completed bulk changes older than their tenant's archive age, with their device rows, logs and "
    "history, as Parquet (tenant=<id>/month=<YYYY-MM>/<table>-*.parquet); archived ones are soft-deleted.",
)
def bulk_change_archive(
    context: dg.AssetExecutionContext, config: LifecycleConfig, database: DatabaseResource, archive: ArchiveResource
) -> dg.MaterializeResult:
    from ..store.archive import archive_bulk_changes

    result = archive_bulk_changes(database.engine(), archive.root(), parse_now(config.now), limit=config.limit)
    if result.skipped:
        context.log.warning(f"{len(result.skipped)} bulk changes changed while being archived; next pass retries them")
    return dg.MaterializeResult(
        metadata={
            "archived_bulk_changes": dg.MetadataValue.int(result.bulk_changes),
            **{f"archived_rows/{table}": dg.MetadataValue.int(n) for table, n in result.rows.items()},
            "skipped_bulk_changes": dg.MetadataValue.int(len(result.skipped)),
            "recovered_files": dg.MetadataValue.int(result.recovered_files),
            "archive_root": dg.MetadataValue.path(result.root),
            "partitions": dg.MetadataValue.json(result.partitions),
            "files": dg.MetadataValue.json(result.files),
        }
    )


def delete_bulk_change_runs(instance: dg.DagsterInstance, keys: list[str]) -> tuple[int, int, list[str]]:
    """Delete the finished runs of our bulk-change jobs for these partition keys, then the keys'
    dynamic partitions. Returns (runs deleted, partitions deleted, run ids left because not finished)."""
    runs_deleted, unfinished = 0, []
    for start in range(0, len(keys), RUN_PAGE):
        chunk = keys[start : start + RUN_PAGE]
        for job_name in BULK_CHANGE_JOBS:
            for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: chunk})):
                if run.is_finished:
                    instance.delete_run(run.run_id)
                    runs_deleted += 1
                else:
                    unfinished.append(run.run_id)
    existing = set(instance.get_dynamic_partitions(bulk_change_partitions.name))
    partitions_deleted = 0
    for key in keys:
        if key in existing:
            instance.delete_dynamic_partition(bulk_change_partitions.name, key)
            partitions_deleted += 1
    return runs_deleted, partitions_deleted, unfinished


@dg.asset(
    group_name="lifecycle",
    deps=[bulk_change_archive],
    description="Archived bulk changes past their tenant's purge age removed for good, with their stored carrier "
    "callbacks, Dagster runs and bulk_change partitions. One whose archive does not hold all its rows is kept.",
)
def retention_purge(
    context: dg.AssetExecutionContext, config: LifecycleConfig, database: DatabaseResource, archive: ArchiveResource
) -> dg.MaterializeResult:
    from ..store.archive import archive_mismatches
    from ..store.maintenance import purge_bulk_changes, purgeable

    engine = database.engine()
    candidates = purgeable(engine, parse_now(config.now), limit=config.limit)
    unsafe = sorted({m.bulk_change_id for m in archive_mismatches(engine, archive.root(), candidates)})
    if unsafe:
        context.log.warning(f"not purged, archive incomplete: bulk changes {unsafe[:50]}")
    ids = [i for i in candidates if i not in set(unsafe)]
    # Dagster records first: if the database delete then fails, the next night finds the rows again.
    runs, partitions, unfinished = delete_bulk_change_runs(context.instance, [str(i) for i in ids])
    if unfinished:
        context.log.warning(f"runs still in progress were kept: {unfinished[:20]}")
    deleted = purge_bulk_changes(engine, ids)
    return dg.MaterializeResult(
        metadata={
            "purged_bulk_changes": dg.MetadataValue.int(deleted["bulk_change"]),
            **{f"purged_rows/{table}": dg.MetadataValue.int(n) for table, n in deleted.items()},
            "deleted_runs": dg.MetadataValue.int(runs),
            "deleted_partitions": dg.MetadataValue.int(partitions),
            "kept_archive_incomplete": dg.MetadataValue.int(len(unsafe)),
        }
    )


@dg.asset(
    group_name="observability",
    partitions_def=metrics_partitions,
    description="Per UTC day: processing time p50/p95 per change type and carrier, error rates per carrier and "
    "error class, carrier call errors, queue depth; numeric metadata plotted over the partitions.",
)
def bulk_change_metrics(
    context: dg.AssetExecutionContext, config: MetricsConfig, database: DatabaseResource
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    m = compute_daily_metrics(database.engine(), day, parse_now(config.now))
    metadata: dict[str, dg.MetadataValue] = {
        key: dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v))
        for key, v in metric_values(m).items()
    }
    metadata["summary"] = dg.MetadataValue.md(metrics_markdown(m))
    return dg.MaterializeResult(metadata=metadata)
