"""A batch's progress in the step's log while it runs, not only when it ends.

The engine commits each chunk's rows as its answers come in and tells ``BatchProgress.update``
the running counts (from the worker thread); the op's thread, waiting in ``run_stoppably``, calls
``report`` and logs the counts at most every ``PROGRESS_SECONDS`` when they have moved.
"""

from __future__ import annotations

import time

import dagster as dg

from ..engine import BatchSummary
from ..store.device_changes import IdRange

__all__ = ["PROGRESS_SECONDS", "BatchProgress"]

PROGRESS_SECONDS = 5.0


class BatchProgress:
    """Running counts of one ``apply_batch`` step, logged as they move."""

    def __init__(self, context: dg.OpExecutionContext, rng: IdRange, every: float | None = None) -> None:
        self._context = context
        self._rng = rng
        self._every = PROGRESS_SECONDS if every is None else every
        self._latest: tuple[int, int, int, int] | None = None  # rows, processed, failed, waiting
        self._logged: tuple[int, int, int, int] | None = None
        self._next_at = time.monotonic() + self._every

    def update(self, summary: BatchSummary) -> None:
        """Called by the engine after each commit (worker thread): one tuple assignment."""
        self._latest = (summary.rows, summary.processed, summary.api_failed, summary.processing)

    def report(self) -> None:
        """Called by the op's thread while it waits: log the counts if due and changed."""
        latest = self._latest
        if latest is None or latest == self._logged or time.monotonic() < self._next_at:
            return
        self._logged, self._next_at = latest, time.monotonic() + self._every
        rows, processed, failed, waiting = latest
        self._context.log.info(
            f"batch {self._rng.first_id}-{self._rng.last_id}: {processed + failed + waiting}/{rows} rows recorded "
            f"(processed {processed}, failed {failed}, waiting on the carrier {waiting})"
        )
