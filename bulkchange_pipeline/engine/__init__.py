"""Plain functions that process bulk changes; they know nothing of Dagster."""

from .batch import BatchSummary, process_batch, process_batch_async
from .bulk_change import BulkChangeInfo, FinalizeResult, StepSummary, finalize, load_bulk_change, plan_batches

__all__ = [
    "BatchSummary",
    "process_batch",
    "process_batch_async",
    "BulkChangeInfo",
    "FinalizeResult",
    "StepSummary",
    "finalize",
    "load_bulk_change",
    "plan_batches",
]
