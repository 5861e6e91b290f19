"""Sensors: start a run for every submitted bulk change; settle the header of runs that ended
without finishing (failed, or stopped by Terminate)."""

import time
from collections.abc import Iterable
from typing import Any

import dagster as dg
import sqlalchemy as sa

from ..domain import Outcome, outcome_of
from ..store.approvals import expire_overdue
from ..store.bulk_changes import (
    QueuedBulkChange,
    get_bulk_change,
    header_states,
    list_due_scheduled,
    list_not_started,
    list_waiting,
)
from ..store.results_paging import BulkChangeNotFound
from ..store.run_settle import settle_after_run
from . import clock
from .outcome import BULK_CHANGE_ASSET, OUTCOME_TAG, observation_events, report_outcome
from .partitions import bulk_change_partitions
from .pipeline import process_bulk_change_job
from .reconcile import reconcile_async_job
from .resources import DatabaseResource
from .tags import PARTITION_TAG, RUN_KEY_TAG, WILL_RETRY_TAG, attempt_of_run_key, attempt_run_key, due_run_key

__all__ = [
    "HOUSEKEEPING_SECONDS",
    "SCAN_PAGE",
    "SENSOR_INTERVAL_SECONDS",
    "SENSOR_PAGE",
    "bulk_change_failure_sensor",
    "bulk_change_sensor",
    "bulk_change_stopped_sensor",
]

SENSOR_PAGE = 500  # run requests per evaluation: keeps each tick far inside the 60 s sensor timeout
SCAN_PAGE = 1_000  # waiting bulk changes read per query while looking for ones without a run
SHOW_PAGE = 100  # newest held/scheduled bulk changes checked per tick for a partition to show them on
# The daemon looks at its sensors once per loop (``deploy_daemon.SENSOR_LOOP_SECONDS``) and skips
# one whose interval has not fully elapsed since its last tick began. At 5 s, a tick that began
# a moment after the previous one was skipped at the next loop, so the sensor ran every 10 s and a
# submission waited up to that long for its run (P5 baseline: median 9.3 s, in two groups). With
# 1 s it runs every loop; the tick is cheap (two indexed queries and one run-storage read), and the
# slower housekeeping below runs at most every HOUSEKEEPING_SECONDS.
SENSOR_INTERVAL_SECONDS = 1
HOUSEKEEPING_SECONDS = 10.0
MONITORED = [process_bulk_change_job, reconcile_async_job]


def _run_keys_with_runs(instance: dg.DagsterInstance, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    records = instance.get_run_records(dg.RunsFilter(job_name=process_bulk_change_job.name, tags={RUN_KEY_TAG: keys}))
    return {r.dagster_run.tags[RUN_KEY_TAG] for r in records}


def _without_runs(
    instance: dg.DagsterInstance, candidates: list[tuple[str, QueuedBulkChange]]
) -> list[tuple[str, QueuedBulkChange]]:
    started = _run_keys_with_runs(instance, (key for key, _ in candidates))
    return [(key, bc) for key, bc in candidates if key not in started]


@dg.sensor(
    job=process_bulk_change_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def bulk_change_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    """Request a run for every NEW bulk change (run key: id + attempt, so a resume or retry-failed
    runs once more) and every SCHEDULED one whose next effective date has come (run key: id + that
    date), oldest first, that has no run yet.

    There is no cursor: "has no run yet" is asked of Dagster's own run storage, so a bulk change
    that commits after a later one (PostgreSQL takes ids at insert, not at commit) is still found,
    whatever the number of intake processes. Pages of waiting bulk changes are read until
    ``SENSOR_PAGE`` requests are found, so a long queue of ones already requested hides nothing.

    AWAITING_APPROVAL bulk changes get no run (only NEW ones do): they are shown by an observation
    (``awaiting_approval``) like held ones, and each tick ends those whose approval expired
    (``store.approvals.expire_overdue``: rows CANCELLED, the log says so).

    The sensor ticks every second so a submission does not wait for it; what is not about
    starting runs (expiring approvals, showing and refreshing held/scheduled partitions) runs at
    most every ``HOUSEKEEPING_SECONDS``, timed by the cursor (no cursor: every tick, as in
    ``local_runner`` and tests)."""
    engine = database.engine()
    housekeeping, cursor = _housekeeping_due(context.cursor, time.time())
    expired = expire_overdue(engine, clock.now()) if housekeeping else []
    for ended in expired:
        context.log.info(f"bulk change {ended.bulk_change_id}: approval expired; it is {ended.status}")
    new: list[tuple[str, QueuedBulkChange]] = []
    after = 0
    while len(new) < SENSOR_PAGE:
        page = list_waiting(engine, after, SCAN_PAGE)
        if not page:
            break
        new += _without_runs(context.instance, [(attempt_run_key(bc.id, bc.attempt), bc) for bc in page])
        after = page[-1].id
    due = _without_runs(
        context.instance,
        [(due_run_key(bc.id, bc.effective_at), bc) for bc in list_due_scheduled(engine, clock.now(), SCAN_PAGE)],
    )
    chosen = (new + due)[:SENSOR_PAGE] if len(new) < SENSOR_PAGE else new[:SENSOR_PAGE]
    shown, events = (
        _not_started_partitions(context.instance, engine, {str(bc.id) for _, bc in chosen})
        if housekeeping
        else ([], [])
    )
    changed = _refresh_not_started(context.instance, engine) if housekeeping else 0
    if not chosen and not shown and not changed and not expired:
        return dg.SensorResult(skip_reason=dg.SkipReason("no bulk change waiting"), cursor=cursor)
    # Tags come from the partition (``partitions.partition_tags``), as for every other way a run starts.
    requests = [dg.RunRequest(partition_key=str(bc.id), run_key=key) for key, bc in chosen]
    keys = sorted({str(bc.id) for _, bc in chosen} | set(shown), key=int)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[bulk_change_partitions.build_add_request(keys)],
        asset_events=events,
        cursor=cursor,
    )


def _housekeeping_due(cursor: str | None, now: float) -> tuple[bool, str | None]:
    """Whether this tick does the housekeeping, and the cursor to leave: the time it last ran
    (unchanged when it is not due). No or unreadable cursor: due."""
    try:
        last = float(cursor) if cursor else None
    except ValueError:
        last = None
    if last is not None and 0 <= now - last < HOUSEKEEPING_SECONDS:
        return False, cursor
    return True, f"{now:.3f}"


OBSERVED_PAGE = 200  # newest held/scheduled observations re-checked per tick


def _refresh_not_started(instance: dg.DagsterInstance, engine: sa.Engine) -> int:
    """Held and scheduled bulk changes shown by an observation that changed without a run (a held
    or scheduled one cancelled, or archived): record what they are now, so a partition never keeps
    saying "held" after the operator cancelled it. One event-log read and one database query per
    tick; a released or due one is left to the run that will settle it. Returns how many changed."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET), limit=OBSERVED_PAGE)
    observed: dict[int, tuple[str, int]] = {}  # id -> (outcome shown, storage id), newest first
    for record in records.records:
        event = record.asset_observation
        if event is None or not (event.partition or "").isdigit():
            continue
        observed.setdefault(int(event.partition), (event.tags.get(OUTCOME_TAG, ""), record.storage_id))
    states = header_states(engine, list(observed))
    changed = 0
    for bc_id, (shown, storage_id) in observed.items():
        if bc_id not in states:
            continue  # archived: retention removes its partition
        status, process_changes = states[bc_id]
        now = outcome_of(status, {}, held=not process_changes)
        if now.value == shown or now in (Outcome.IN_PROGRESS, Outcome.WAITING_ON_CARRIER, Outcome.DONE):
            continue  # unchanged, or a run is on it and records what it finds
        later = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=BULK_CHANGE_ASSET, asset_partitions=[str(bc_id)], after_storage_id=storage_id
            ),
            limit=1,
        ).records
        stored = get_bulk_change(engine, bc_id)
        if later or stored is None:
            continue
        report_outcome(instance, stored)
        changed += 1
    return changed


def _not_started_partitions(
    instance: dg.DagsterInstance, engine: sa.Engine, requested: set[str]
) -> tuple[list[str], list[Any]]:
    """Held, scheduled and awaiting-approval bulk changes with no partition yet: their partitions, and an observation
    with the ``settled`` check saying why they wait (``defs/outcome.py``), so the UI shows them
    before they run. Each is shown once; the run that settles it records what happened."""
    keys: list[str] = []
    events: list[Any] = []
    for bc in list_not_started(engine, SHOW_PAGE):
        key = str(bc.id)
        if key in requested or instance.has_dynamic_partition(bulk_change_partitions.name, key):
            continue
        stored = get_bulk_change(engine, bc.id)
        if stored is None:
            continue
        keys.append(key)
        events += observation_events(stored)
    return keys, events


def _newer_run_active(instance: dg.DagsterInstance, run: dg.DagsterRun, partition: str) -> bool:
    """A later run of the same job and partition is queued or running: it owns the header now."""
    records = instance.get_run_records(
        dg.RunsFilter(
            tags={PARTITION_TAG: partition},
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
    )
    # Same job only: a reconcile run queued for an async bulk change does not finish a failed processing run's rows.
    return any(r.dagster_run.run_id != run.run_id and r.dagster_run.job_name == run.job_name for r in records)


def _settle(context: dg.RunStatusSensorContext, database: DatabaseResource, *, stop: bool, note: str) -> str:
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    key = run.tags.get(PARTITION_TAG, "")
    if not key.isdigit():
        return "not a bulk change run"
    if not stop and run.tags.get(WILL_RETRY_TAG) == "true":
        return "Dagster retries this run: the retry finishes the bulk change"
    if _newer_run_active(context.instance, run, key):
        return "a newer run of this bulk change is queued or running"
    try:
        attempt = attempt_of_run_key(run.tags.get(RUN_KEY_TAG, ""))  # None: not started by the sensor
        settled = settle_after_run(
            database.engine(), int(key), attempt=attempt, stop=stop, note=note, by=f"dagster:{context.sensor_name}"
        )
    except BulkChangeNotFound:
        return "bulk change gone"
    stored = get_bulk_change(database.engine(), int(key))
    outcome = report_outcome(context.instance, stored).value if stored else "gone"
    return f"bulk change {key} is {settled.status} ({outcome})"


@dg.run_failure_sensor(monitored_jobs=MONITORED, default_status=dg.DefaultSensorStatus.RUNNING)
def bulk_change_failure_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    """A failed run: when Dagster will not retry it and no newer run owns the bulk change, the
    header says what the rows say: ERROR while rows are unfinished (the log names ``resume``),
    else the status its rows derive (a failure after the work was done does not turn PROCESSED or
    PENDING into ERROR)."""
    message = (context.failure_event.message or "run failed")[:1000]
    outcome = _settle(context, database, stop=False, note=f"Run {context.dagster_run.run_id} failed: {message}")
    context.log.info(outcome)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED, monitored_jobs=MONITORED, default_status=dg.DefaultSensorStatus.RUNNING
)
def bulk_change_stopped_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource) -> None:
    """A run stopped by Terminate: for a processing run its rows not yet sent end CANCELLED, and the
    header says what the rows say (a stopped reconcile pass cancels nothing: its polls just stop).
    The run's own finalize does this when the stop reached a carrier step; this covers a stop that
    landed anywhere else (between steps, before any batch). Settling twice changes nothing."""
    run = context.dagster_run
    outcome = _settle(
        context,
        database,
        stop=run.job_name == process_bulk_change_job.name,
        note=f"Stopped by Terminate of Dagster run {run.run_id}",
    )
    context.log.info(outcome)
