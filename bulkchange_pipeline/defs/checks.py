"""Asset checks: the invariants operations staff rely on, checked against the live database.

- ``no_device_stuck_in_processing``: no device row waits in PROCESSING past the carrier timeout
  (plus one poll interval, the time reconcile may take to notice it);
- ``bulk_status_matches_rows``: no bulk change header contradicts its device rows;
- ``archive_matches_soft_deleted``: every soft-deleted bulk change has exactly its rows in the archive.
"""

from datetime import timedelta

import dagster as dg

from . import clock
from .assets import ArchiveResource, bulk_change_archive, bulk_change_metrics
from .resources import CarrierGatewayResource, DatabaseResource

__all__ = [
    "archive_matches_soft_deleted",
    "bulk_status_matches_rows",
    "lifecycle_checks",
    "no_device_stuck_in_processing",
]

SAMPLE = 20  # findings listed in the check's metadata

# ``store.archive`` (and ``store.health``, which uses it) import pandas and pyarrow: imported in the checks
# that use them, not by every run worker that loads the code location (see ``assets``).


@dg.asset_check(asset=bulk_change_metrics, description="No device row in PROCESSING past its carrier's timeout.")
def no_device_stuck_in_processing(database: DatabaseResource, carriers: CarrierGatewayResource) -> dg.AssetCheckResult:
    from ..store.health import ids_of, stuck_processing

    limit = timedelta(seconds=carriers.async_timeout_seconds + carriers.poll_after_seconds)
    stuck = stuck_processing(database.engine(), clock.now() - limit)
    return dg.AssetCheckResult(
        passed=not stuck,
        metadata={
            "stuck_rows": dg.MetadataValue.int(sum(s.rows for s in stuck)),
            "bulk_changes": dg.MetadataValue.json(ids_of(stuck)[:SAMPLE]),
            "timeout_seconds": dg.MetadataValue.int(int(limit.total_seconds())),
            "oldest_sent_at": dg.MetadataValue.text(
                min((s.oldest_sent_at for s in stuck), default=None).isoformat() if stuck else "-"
            ),
        },
        description=None
        if not stuck
        else f"{sum(s.rows for s in stuck)} device rows stuck in PROCESSING; "
        "reconcile should have ended them (is async_results_sensor running?)",
    )


@dg.asset_check(
    asset=bulk_change_metrics, description="No bulk change whose status or counts disagree with its device rows."
)
def bulk_status_matches_rows(database: DatabaseResource) -> dg.AssetCheckResult:
    from ..store.health import status_disagreements

    bad = status_disagreements(database.engine(), now=clock.now())
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "disagreeing_bulk_changes": dg.MetadataValue.int(len(bad)),
            "sample": dg.MetadataValue.json(
                [
                    {"id": d.bulk_change_id, "status": d.status, "rows_say": d.rows_say, "counts": d.counts}
                    for d in bad[:SAMPLE]
                ]
            ),
        },
        description=None if not bad else "run `bulkchange rebuild-status --all` to rebuild headers from their rows",
    )


@dg.asset_check(asset=bulk_change_archive, description="Archive row counts equal what was soft-deleted.")
def archive_matches_soft_deleted(database: DatabaseResource, archive: ArchiveResource) -> dg.AssetCheckResult:
    from ..store.archive import archive_mismatches
    from ..store.health import ids_of

    bad = archive_mismatches(database.engine(), archive.root())
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "mismatched_bulk_changes": dg.MetadataValue.int(len(ids_of(bad))),
            "sample": dg.MetadataValue.json(
                [
                    {"id": m.bulk_change_id, "table": m.table, "database": m.in_database, "archive": m.in_archive}
                    for m in bad[:SAMPLE]
                ]
            ),
        },
        description=None
        if not bad
        else "soft-deleted rows missing from (or extra in) the archive; the purge keeps them",
    )


lifecycle_checks = [no_device_stuck_in_processing, bulk_status_matches_rows, archive_matches_soft_deleted]
