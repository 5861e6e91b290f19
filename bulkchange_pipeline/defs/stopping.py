"""Terminate means cancel: how a run of a bulk change stops when an operator terminates it.

Dagster terminates a run by interrupting its worker (SIGINT, raised as
``DagsterExecutionInterruptedError`` inside the step, or SIGTERM mapped to it) and marking the run
CANCELING. Left alone, the interrupt lands anywhere: in the middle of an HTTP call (applied at the
carrier, never recorded), and ``apply_batch``'s retry policy turns it into a step retry, so the
run went on sending. Instead a carrier step runs its work in a worker thread and the op's thread
only waits: an interrupt, or the run found CANCELING/CANCELED, sets a stop flag the engine reads
before each chunk. The chunk in flight finishes and is recorded, no other chunk starts, and the
step returns normally. ``finalize_bulk_change`` then cancels the unsent rows, writes the header
and ends the run Canceled (``raise_if_stopping``). A run stopped before any of this could happen
(interrupted between steps) is settled by ``bulk_change_stopped_sensor`` the same way.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

T = TypeVar("T")
STOPPING = frozenset({dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED})
WATCH_SECONDS = 2.0  # how often the waiting thread reads the run's status (see run_stoppably)
TICK_SECONDS = 0.5  # how often it wakes to pass on progress (``report``)


def run_is_stopping(context: dg.OpExecutionContext) -> bool:
    """True once the run was terminated (CANCELING) or force-marked CANCELED."""
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status in STOPPING


def run_stoppably(
    context: dg.OpExecutionContext,
    work: Callable[[Callable[[], bool]], T],
    report: Callable[[], None] | None = None,
) -> T:
    """Run ``work(should_stop)`` to its end in a worker thread, whatever interrupts this one.

    ``should_stop`` turns true when this thread is interrupted or the run's status says it is
    stopping; ``work`` is expected to stop at its next safe point and return. ``report`` is called
    from this (the op's) thread while it waits, so progress reaches the step's log as it happens."""
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulkchange-step")
    future = pool.submit(work, stop.is_set)
    told = False
    # The status is read every WATCH_SECONDS, not every tick: each read opens a database connection
    # (Dagster's storage), 48 a second for 24 runs at 0.5 s. The interrupt of a Terminate sets the
    # flag at once; the read is the backup for a run marked canceled without one.
    next_read = time.monotonic() + WATCH_SECONDS
    while not future.done():
        try:
            concurrent.futures.wait([future], timeout=TICK_SECONDS)
            if not stop.is_set() and not future.done() and time.monotonic() >= next_read:
                next_read = time.monotonic() + WATCH_SECONDS
                if run_is_stopping(context):
                    stop.set()
            if report is not None:
                report()
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            stop.set()  # wherever the interrupt landed in this loop, the work goes on to its safe point
        if stop.is_set() and not told:
            told = True
            context.log.warning("run is stopping: the chunk in flight finishes and is recorded, no other chunk starts")
    pool.shutdown(wait=True)
    return future.result()


def raise_if_stopping(context: dg.OpExecutionContext) -> None:
    """End the run Canceled (not Success) when it was terminated: Dagster records an interrupted
    run whose status is CANCELING as Canceled."""
    if run_is_stopping(context):
        raise dg.DagsterExecutionInterruptedError("run terminated: unsent rows were cancelled")
