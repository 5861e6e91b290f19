"""``process_bulk_change_job``: load -> check capability -> plan batches -> apply (mapped) -> finalize.

The ops are thin: each calls one function of ``engine/`` or ``store/``. Batches are carrier-sized
id ranges, so a run has tens of mapped steps, not thousands; inside a step the per-device calls run
concurrently under the carrier account's limits.
"""

import dataclasses

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from ..domain import BulkChangeStatus, Handling
from ..engine import BatchSummary, BulkChangeInfo, StepSummary, finalize, load_bulk_change, plan_batches, process_batch
from ..engine.bulk_change import mark_processing
from ..store.bulk_changes import count_rows_by_status, get_bulk_change
from ..store.db import run_transaction
from ..store.device_changes import IdRange, add_log
from ..store.operations import release_bulk_change, requeue_failed_rows
from ..store.run_settle import settle_after_run
from .outcome import record_outcome
from .partitions import bulk_change_config
from .progress import BatchProgress
from .resources import CarrierGatewayResource, DatabaseResource
from .stopping import raise_if_stopping, run_is_stopping, run_stoppably
from .tags import ACCOUNT_TAG, PROCESS_JOB, account_tag_value, job_tags

__all__ = [
    "ProcessConfig",
    "apply_batch",
    "check_capability",
    "finalize_bulk_change",
    "load_bulk_change_op",
    "plan_batches_op",
    "process_bulk_change_job",
]


class ProcessConfig(dg.Config):
    """Launchpad options of a bulk change run (all optional: the sensor launches with none)."""

    retry_failed_only: bool = Field(
        False,
        description="First put this bulk change's retryable failed rows (API_FAILED, or ERROR while processing) "
        "back to NEW, then process them. Rows refused at validation are never retried.",
    )
    dry_run: bool = Field(
        False, description="Plan the batches and report what would be sent; call no carrier and change nothing."
    )
    batch_size: int | None = Field(
        None, ge=1, le=10_000, description="Devices per apply_batch step; default: the service provider's setting"
    )
    release_held: bool = Field(
        False,
        description="The bulk change is held (submitted with processChanges=false): release it and process it. "
        "Without this a run of a held bulk change sends nothing (so a backfill never releases held ones).",
    )


def _bulk_change_id(context: dg.OpExecutionContext) -> int:
    try:
        return int(context.partition_key)
    except ValueError as exc:  # pragma: no cover - partition keys are written by the sensor
        raise dg.Failure(f"partition key {context.partition_key!r} is not a bulk change id") from exc


@dg.op(description="Read the bulk change of this partition, its service provider and its row counts.")
def load_bulk_change_op(context: dg.OpExecutionContext, database: DatabaseResource) -> BulkChangeInfo:
    info = load_bulk_change(database.engine(), _bulk_change_id(context))
    account = account_tag_value(info.service_provider.credentials_name)
    if context.run.tags.get(ACCOUNT_TAG) != account:
        # Without its account tag the run was not held to one run per carrier account (a client
        # launched it around the run coordinator): refuse it before any carrier call.
        raise dg.Failure(
            f"run has {ACCOUNT_TAG}={context.run.tags.get(ACCOUNT_TAG)!r}, bulk change {info.id} belongs to "
            f"{account}: launch it from the launchpad (which adds the partition's tags) or through the sensor",
            allow_retries=False,
        )
    context.add_output_metadata({"counts": dict(info.counts), "carrier": info.service_provider.name})
    return info


@dg.op(description="Check the change can run on this carrier (capability matrix, writes enabled).")
def check_capability(context: dg.OpExecutionContext, info: BulkChangeInfo) -> BulkChangeInfo:
    """Say up front what the carrier cannot do: the rows are validated at intake and the batches
    record the outcome (an unsupported change ends each row ERROR, writes disabled API_FAILED);
    this step only warns and publishes the rows to act on and how the carrier handles them."""
    if info.handling is None:
        context.log.warning(
            f"{info.change_type.label} is not supported for {info.service_provider.integration.value}; rows end in ERROR"
        )
    if not info.service_provider.write_enabled and info.handling in (Handling.CARRIER, Handling.CARRIER_ASYNC):
        context.log.warning(
            f"writes are disabled for {info.service_provider.name}: rows will end API_FAILED without a call"
        )
    handling = info.handling.value if info.handling else "unsupported"
    context.add_output_metadata({"actionable_rows": info.actionable_rows, "handling": handling})
    return info


@dg.op(out=dg.DynamicOut(IdRange), description="Split the rows to process into carrier-sized batches (id ranges).")
def plan_batches_op(
    context: dg.OpExecutionContext, config: ProcessConfig, database: DatabaseResource, info: BulkChangeInfo
):
    engine = database.engine()
    if info.status == BulkChangeStatus.AWAITING_APPROVAL.value:
        # Launched by hand (launchpad, backfill): the approval policy holds it; nothing is sent.
        context.log.warning(
            f"bulk change {info.id} is awaiting approval: nothing sent. Someone other than its submitter "
            f"approves it with `bulkchange approve {info.id}` (or POST /bulk-changes/{info.id}/approve)"
        )
        return
    if not config.dry_run and _held(engine, info.id):
        if not config.release_held:
            context.log.warning(
                f"bulk change {info.id} is held (processChanges=false): nothing sent. Release it with "
                f"`bulkchange release {info.id}`, or launch this partition with release_held: true"
            )
            return
        release_bulk_change(
            engine,
            info.tenant_id,
            info.id,
            by=f"dagster:{context.run_id[:8]} (launchpad release_held)",
            processing=True,
        )
        context.log.info(f"bulk change {info.id} was held: released by this run (release_held)")
    if config.retry_failed_only and not config.dry_run:
        requeued = run_transaction(
            engine, lambda conn: requeue_failed_rows(conn, info.id, f"retry from run {context.run_id[:8]}")
        )
        add_log(
            engine,
            tenant_id=info.tenant_id,
            bulk_change_id=info.id,
            process_by=f"dagster:{context.run_id[:8]}",
            description=f"Launchpad retry_failed_only: {requeued} failed device rows back to NEW",
        )
        info = dataclasses.replace(info, counts=count_rows_by_status(engine, info.id))
    ranges = plan_batches(engine, info, config.batch_size)
    rows = sum(r.size for r in ranges)
    context.log.info(
        f"bulk change {info.id}: {rows} rows in {len(ranges)} batches{' (dry run: nothing sent)' if config.dry_run else ''}"
    )
    if config.dry_run:
        return
    if ranges:
        mark_processing(engine, info)
    for rng in ranges:
        yield dg.DynamicOutput(rng, mapping_key=f"ids_{rng.first_id}_{rng.last_id}")


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    pool="carrier_api",
    description="Apply one batch: claim rows, call the carrier concurrently under its limits, record results, logs "
    "and device history. A retry is safe: finished rows are skipped, rows left PROCESSING are checked first.",
)
def apply_batch(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    carriers: CarrierGatewayResource,
    info: BulkChangeInfo,
    rng: IdRange,
) -> BatchSummary:
    if run_is_stopping(context):  # terminated before this step started (or while it waited to retry)
        context.log.warning("run is stopping: this batch sends nothing")
        return BatchSummary(rng.first_id, rng.last_id, stopped=True)
    account = (
        carriers.account(info.service_provider) if info.handling in (Handling.CARRIER, Handling.CARRIER_ASYNC) else None
    )
    progress = BatchProgress(context, rng)
    summary = run_stoppably(
        context,
        lambda should_stop: process_batch(
            database.engine(),
            info,
            rng,
            account,
            process_by=f"dagster:{context.run_id[:8]}",
            should_stop=should_stop,
            on_record=progress.update,
        ),
        report=progress.report,
    )
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "sample_failures"})
    return summary


@dg.op(description="Derive the bulk change's status from its rows; publish counts and first failures as markdown.")
def finalize_bulk_change(
    context: dg.OpExecutionContext, database: DatabaseResource, info: BulkChangeInfo, summaries: list[StepSummary]
) -> str:
    if run_is_stopping(context):
        # Terminate means cancel: the rows not yet sent end CANCELLED, and the run ends Canceled.
        # Terminating a processing run cancels what it had not sent; terminating a reconcile pass
        # only stops its polls (its bulk change's scheduled rows are not the pass's to cancel).
        settled = settle_after_run(
            database.engine(),
            info.id,
            attempt=None,
            stop=context.job_name == PROCESS_JOB,
            note=f"Stopped by Terminate of Dagster run {context.run_id}",
            by=f"dagster:{context.run_id[:8]}",
        )
        # The run ends Canceled by raising, so Dagster drops output metadata: say it in the run's log.
        context.log.warning(
            f"Stopped by Terminate: {settled.cancelled} device rows not yet sent are CANCELLED; "
            f"bulk change {info.id} is {settled.status}"
            + (f" with {settled.unfinished} rows unfinished (resume finishes them)" if settled.unfinished else "")
        )
        _record_outcome(context, database, info.id)
        raise_if_stopping(context)
    result = finalize(database.engine(), info, summaries)
    _record_outcome(context, database, info.id)
    metadata = {
        "status": result.status.value,
        "summary": dg.MetadataValue.md(result.summary_markdown),
        **{f"rows_{k.lower()}": v for k, v in result.counts.items()},
    }
    context.add_output_metadata(metadata)
    return result.status.value


def _held(engine: sa.Engine, bulk_change_id: int) -> bool:
    bc = get_bulk_change(engine, bulk_change_id)
    return bc is not None and not bc["process_changes"]


def _record_outcome(context: dg.OpExecutionContext, database: DatabaseResource, bulk_change_id: int) -> None:
    """Record the bulk change's state on its ``bulk_change`` asset partition and as the run's
    ``bulkchange/outcome`` tag (``defs/outcome.py`` says why)."""
    bc = get_bulk_change(database.engine(), bulk_change_id)
    if bc is not None:
        record_outcome(context, bc)


@dg.job(
    name=PROCESS_JOB,
    config=bulk_change_config,
    executor_def=dg.in_process_executor,
    tags=job_tags("process"),
    description="Process one bulk change (partition = bulk change id) against its carrier. Started by "
    "bulk_change_sensor; re-running a partition is always safe.",
)
def process_bulk_change_job():
    info = check_capability(load_bulk_change_op())
    summaries = plan_batches_op(info).map(lambda rng: apply_batch(info, rng))
    finalize_bulk_change(info, summaries.collect())
