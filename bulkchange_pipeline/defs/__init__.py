"""Dagster definitions, loaded by ``dagster dev`` through workspace.yaml (module bulkchange_pipeline.defs)."""

import dagster as dg

from .assets import ArchiveResource, bulk_change_archive, bulk_change_metrics, retention_purge
from .checks import lifecycle_checks
from .file_drops import file_drop_sensor
from .notifications import NotificationsResource, deliver_notifications_job, notification_sensor
from .outcome import bulk_change_asset, outcome_checks
from .partitions import bulk_change_partitions, use_database
from .pipeline import ProcessConfig, process_bulk_change_job
from .reconcile import async_results_sensor, reconcile_async_job
from .resources import CarrierGatewayResource, DatabaseResource
from .schedules import metrics_today_job, metrics_today_schedule, retention_job, retention_schedule
from .sensors import bulk_change_failure_sensor, bulk_change_sensor, bulk_change_stopped_sensor


def build_definitions(
    database: DatabaseResource | None = None,
    carriers: CarrierGatewayResource | None = None,
    archive: ArchiveResource | None = None,
    notifications: NotificationsResource | None = None,
) -> dg.Definitions:
    """The code location's definitions; tests pass resources with small retry waits."""
    database = database or DatabaseResource()
    use_database(database)  # run tags are read from the same business database as the steps use
    return dg.Definitions(
        assets=[bulk_change_archive, retention_purge, bulk_change_metrics, bulk_change_asset],
        asset_checks=[*lifecycle_checks, *outcome_checks],
        schedules=[retention_schedule, metrics_today_schedule],
        jobs=[
            process_bulk_change_job,
            reconcile_async_job,
            retention_job,
            metrics_today_job,
            deliver_notifications_job,
        ],
        sensors=[
            bulk_change_sensor,
            bulk_change_failure_sensor,
            bulk_change_stopped_sensor,
            async_results_sensor,
            file_drop_sensor,
            notification_sensor,
        ],
        resources={
            "database": database,
            "carriers": carriers or CarrierGatewayResource(),
            "archive": archive or ArchiveResource(),
            "notifications": notifications or NotificationsResource(),
        },
    )


defs = build_definitions()

__all__ = [
    "defs",
    "build_definitions",
    "bulk_change_partitions",
    "process_bulk_change_job",
    "ProcessConfig",
    "bulk_change_sensor",
    "bulk_change_failure_sensor",
    "bulk_change_stopped_sensor",
    "async_results_sensor",
    "file_drop_sensor",
    "reconcile_async_job",
    "DatabaseResource",
    "CarrierGatewayResource",
    "ArchiveResource",
    "NotificationsResource",
    "deliver_notifications_job",
    "notification_sensor",
    "bulk_change_archive",
    "retention_purge",
    "bulk_change_metrics",
    "retention_job",
    "retention_schedule",
    "metrics_today_job",
    "metrics_today_schedule",
]
