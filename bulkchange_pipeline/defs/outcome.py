"""Each bulk change as a partition of the ``bulk_change`` asset, so the UI tells its state at a glance.

Why an asset and not only the run: a run's colour says whether the *pipeline* worked (a run that
sent every device and recorded 40 carrier refusals did its job: green), not what happened to the
devices; and an asynchronous bulk change ends in a later reconcile run, or never runs at all while
held or scheduled. So the runs that settle a bulk change (``finalize_bulk_change``, shared by the
processing and reconcile jobs) record its state on the ``bulk_change`` asset's partition:

- a materialization whose metadata holds ``outcome`` (``domain.Outcome``), status, counts;
- two partitioned asset checks: ``no_failed_devices`` (severity ERROR: red when any device
  failed) and ``settled`` (severity WARN: yellow while it waits on the carrier, a date, an
  operator, or was cancelled / left unfinished; its metadata says which and what to do);
- the run tag ``bulkchange/outcome`` on that run, so the runs list can be filtered by it.

Held and scheduled bulk changes have no run yet: ``bulk_change_sensor`` adds their partitions
and records an observation saying why they wait, so they are visible before they run; if one is
cancelled (or a run fails or is stopped outside a carrier step) a sensor records the new state as
a runless materialization. Both checks can also be executed from the UI for any partition: they read the database.
Partitioned asset checks are a Dagster preview feature (1.13); the materialization metadata and
the run tag carry the same facts.
"""

import warnings
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as TargetMaterialization,  # not exported by dagster's top level
)

from ..domain import Outcome, outcome_of
from ..domain.outcome import failed_rows
from ..store.bulk_changes import get_bulk_change
from .partitions import bulk_change_partitions
from .resources import DatabaseResource

__all__ = [
    "BULK_CHANGE_ASSET",
    "OUTCOME_TAG",
    "bulk_change_asset",
    "observation_events",
    "outcome_checks",
    "record_outcome",
    "report_outcome",
    "state_of",
]

BULK_CHANGE_ASSET = dg.AssetKey("bulk_change")
OUTCOME_TAG = "bulkchange/outcome"
NO_FAILED_DEVICES = "no_failed_devices"
SETTLED = "settled"

bulk_change_asset = dg.AssetSpec(
    BULK_CHANGE_ASSET,
    partitions_def=bulk_change_partitions,
    group_name="bulk_changes",
    description="One partition per bulk change: its outcome (done, done_with_failures, waiting_on_carrier, "
    "scheduled, held, awaiting_approval, cancelled, unfinished) recorded by the runs that settle it; see the checks.",
)

_WHAT_NEXT = {
    Outcome.DONE: "nothing: every device is done",
    Outcome.DONE_WITH_FAILURES: "failed devices: `bulkchange results ID --csv -`; retry them with `bulkchange retry-failed ID`",
    Outcome.WAITING_ON_CARRIER: "waiting on the carrier's asynchronous answers; reconcile_async_job settles them",
    Outcome.SCHEDULED: "rows wait for their effective date; the sensor starts them then",
    Outcome.HELD: "held (processChanges=false): release it with `bulkchange release ID` or launch this partition",
    Outcome.AWAITING_APPROVAL: "awaiting approval: someone other than its submitter runs `bulkchange approve ID` "
    "(or `bulkchange reject ID --reason ...`); it ends CANCELLED when the approval expires",
    Outcome.CANCELLED: "cancelled: rows not sent were cancelled",
    Outcome.IN_PROGRESS: "queued or running",
    Outcome.UNFINISHED: "a run stopped with rows left: `bulkchange resume ID` finishes them",
}


def state_of(bc: dict[str, Any]) -> tuple[Outcome, dict[str, Any]]:
    """The outcome of a stored bulk change (``get_bulk_change``'s dict) and the metadata saying it."""
    outcome = outcome_of(bc["status"], bc["counts"], held=not bc["process_changes"])
    metadata: dict[str, Any] = {
        "outcome": outcome.value,
        "status": bc["status"],
        "devices": bc["total"],
        "failed_devices": failed_rows(bc["counts"]),
        "what_next": _WHAT_NEXT[outcome].replace("ID", str(bc["id"])),
        **{f"rows_{k.lower()}": v for k, v in sorted(bc["counts"].items())},
    }
    if bc.get("effective_at") is not None and outcome is Outcome.SCHEDULED:
        metadata["next_effective_at"] = bc["effective_at"].isoformat()
    return outcome, metadata


def _evaluations(
    key: str, outcome: Outcome, metadata: dict[str, Any], target: TargetMaterialization | None = None
) -> list[dg.AssetCheckEvaluation]:
    failed = int(metadata["failed_devices"])
    return [
        dg.AssetCheckEvaluation(
            asset_key=BULK_CHANGE_ASSET,
            check_name=NO_FAILED_DEVICES,
            passed=failed == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            partition=key,
            metadata={"failed_devices": failed, "outcome": outcome.value},
            description=None if failed == 0 else f"{failed} devices failed",
            target_materialization_data=target,
        ),
        dg.AssetCheckEvaluation(
            asset_key=BULK_CHANGE_ASSET,
            check_name=SETTLED,
            passed=outcome.finished,
            severity=dg.AssetCheckSeverity.WARN,
            partition=key,
            metadata={"outcome": outcome.value, "what_next": metadata["what_next"]},
            description=metadata["what_next"],
            target_materialization_data=target,
        ),
    ]


def observation_events(bc: dict[str, Any]) -> list[Any]:
    """A bulk change that has not run (held, scheduled): an observation of its partition, for
    ``bulk_change_sensor`` to record. No check evaluation: Dagster keeps one runless evaluation
    per check and partition, and the run that settles it evaluates both."""
    outcome, metadata = state_of(bc)
    return [
        dg.AssetObservation(
            BULK_CHANGE_ASSET, partition=str(bc["id"]), metadata=metadata, tags={OUTCOME_TAG: outcome.value}
        )
    ]


def _target(instance: dg.DagsterInstance, key: str) -> TargetMaterialization | None:
    """The partition's latest materialization, which the check evaluations point at (so the
    check's partition view counts them as current)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=BULK_CHANGE_ASSET, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    return TargetMaterialization(
        storage_id=records[0].storage_id, run_id=records[0].run_id, timestamp=records[0].timestamp
    )


def record_outcome(context: dg.OpExecutionContext, bc: dict[str, Any]) -> Outcome:
    """From a run that settled the bulk change: materialize its partition, then evaluate the two
    checks against that materialization, and tag the run with the outcome."""
    key = str(bc["id"])
    outcome, metadata = state_of(bc)
    context.log_event(
        dg.AssetMaterialization(BULK_CHANGE_ASSET, partition=key, metadata=metadata, tags={OUTCOME_TAG: outcome.value})
    )
    for evaluation in _evaluations(key, outcome, metadata, _target(context.instance, key)):
        context.log_event(evaluation)
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: outcome.value})
    return outcome


def report_outcome(instance: dg.DagsterInstance, bc: dict[str, Any]) -> Outcome:
    """Outside a run that settles it (a sensor settled a failed or stopped run, or a held or
    scheduled bulk change changed without running): record its state as a runless
    materialization of its partition. The checks are not evaluated here (Dagster keeps one
    runless evaluation per check and partition); "Execute" on the asset page re-evaluates them
    from the database."""
    key = str(bc["id"])
    outcome, metadata = state_of(bc)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(BULK_CHANGE_ASSET, partition=key, metadata=metadata, tags={OUTCOME_TAG: outcome.value})
    )
    return outcome


def _check(name: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=BULK_CHANGE_ASSET,
        name=name,
        description=description,
        partitions_def=bulk_change_partitions,
    )
    def check(context: dg.AssetCheckExecutionContext, database: DatabaseResource) -> dg.AssetCheckResult:
        bc = get_bulk_change(database.engine(), int(context.partition_key))
        if bc is None:
            return dg.AssetCheckResult(passed=False, metadata={"what_next": "bulk change archived or deleted"})
        outcome, metadata = state_of(bc)
        [evaluation] = [e for e in _evaluations(context.partition_key, outcome, metadata) if e.check_name == name]
        return dg.AssetCheckResult(
            passed=evaluation.passed,
            severity=evaluation.severity,
            metadata=dict(evaluation.metadata),
            description=evaluation.description,
        )

    return check


with warnings.catch_warnings():
    # Partitioned checks are a preview in Dagster 1.13 (see the module docstring): said once, here.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    outcome_checks = [
        _check(NO_FAILED_DEVICES, "Red when any device of this bulk change failed (API_FAILED or ERROR)."),
        _check(SETTLED, "Yellow while it waits (carrier, date, release) or was cancelled / left unfinished."),
    ]
