"""``process_bulk_change_job``: load -> validate -> plan batches -> apply (mapped) -> finalize.

The ops are thin: each calls one function of ``engine/``. Batches are carrier-sized id ranges, so a
run has tens of mapped steps, not thousands; inside a step the per-device calls run concurrently.
"""


import dagster as dg
from pydantic import Field

from ..domain import DeviceChangeStatus, Handling
from ..engine import BulkChangeInfo, finalize, load_bulk_change, plan_batches, process_batch
from ..engine.bulk_change import mark_processing
from ..store.device_changes import IdRange
from .partitions import bulk_change_partitions
from .resources import CarrierGatewayResource, DatabaseResource


class ProcessConfig(dg.Config):
    """Launchpad options of a bulk change run."""

    batch_size: int | None = Field(
        None, ge=1, le=10_000, description="Devices per apply_batch step; default: the service provider's setting"
    )


def _bulk_change_id(context: dg.OpExecutionContext) -> int:
    try:
        return int(context.partition_key)
    except ValueError as exc:  # pragma: no cover - partition keys are written by the sensor
        raise dg.Failure(f"partition key {context.partition_key!r} is not a bulk change id") from exc


@dg.op
def load_bulk_change_op(context: dg.OpExecutionContext, database: DatabaseResource) -> BulkChangeInfo:
    info = load_bulk_change(database.engine(), _bulk_change_id(context))
    context.add_output_metadata({"counts": dict(info.counts), "carrier": info.service_provider.name})
    return info


@dg.op
def validate_and_transform(context: dg.OpExecutionContext, database: DatabaseResource, info: BulkChangeInfo) -> BulkChangeInfo:
    """Refuse what cannot run (unsupported cell, nothing to do) and mark the bulk change PROCESSING."""
    actionable = sum(info.counts.get(s.value, 0) for s in (DeviceChangeStatus.NEW, DeviceChangeStatus.PROCESSING, DeviceChangeStatus.SCHEDULED))
    if info.handling is None:
        context.log.warning(f"{info.change_type.label} is not supported for {info.service_provider.integration.value}; rows end in ERROR")
    if actionable:
        mark_processing(database.engine(), info)
    context.add_output_metadata({"actionable_rows": actionable, "handling": info.handling.value if info.handling else "unsupported"})
    return info


@dg.op(out=dg.DynamicOut(IdRange))
def plan_batches_op(context: dg.OpExecutionContext, config: ProcessConfig, database: DatabaseResource, info: BulkChangeInfo):
    ranges = plan_batches(database.engine(), info, config.batch_size)
    context.log.info(f"bulk change {info.id}: {sum(r.size for r in ranges)} rows in {len(ranges)} batches")
    for rng in ranges:
        yield dg.DynamicOutput(rng, mapping_key=f"ids_{rng.first_id}_{rng.last_id}")


@dg.op(
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    pool="carrier_api",
)
def apply_batch(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    carriers: CarrierGatewayResource,
    info: BulkChangeInfo,
    rng: IdRange,
) -> dict:
    """Apply one batch. A retry re-runs it safely: finished rows are skipped, PROCESSING ones re-checked."""
    account = carriers.account(info.service_provider) if info.handling in (Handling.CARRIER, Handling.CARRIER_ASYNC) else None
    summary = process_batch(database.engine(), info, rng, account, process_by=f"dagster:{context.run_id[:8]}")
    context.add_output_metadata({k: v for k, v in summary.as_dict().items() if k != "sample_failures"})
    return summary.as_dict()


@dg.op
def finalize_bulk_change(context: dg.OpExecutionContext, database: DatabaseResource, info: BulkChangeInfo, summaries: list[dict]) -> str:
    result = finalize(database.engine(), info, summaries)
    metadata = {
        "status": result.status.value,
        "summary": dg.MetadataValue.md(result.summary_markdown),
        **{f"rows_{k.lower()}": v for k, v in result.counts.items()},
    }
    context.add_output_metadata(metadata)
    return result.status.value


@dg.job(partitions_def=bulk_change_partitions, executor_def=dg.in_process_executor, tags={"bulkchange/job": "process"})
def process_bulk_change_job():
    info = validate_and_transform(load_bulk_change_op())
    summaries = plan_batches_op(info).map(lambda rng: apply_batch(info, rng))
    finalize_bulk_change(info, summaries.collect())
