"""``dagster-daemon`` with a one-second sensor loop: what ``bulkchange deploy-local`` runs as its daemon.

Dagster's sensor daemon looks at the sensors at most once every 5 s (``MIN_INTERVAL_LOOP_TIME`` in
``dagster._daemon.sensor``, a module constant with no setting), whatever a sensor's
``minimum_interval_seconds`` says. A bulk change submitted through the API waits for the next
``bulk_change_sensor`` tick before its run exists, so that loop alone added 0-5 s (median 2.5 s)
to every submission's start (issue 22, P5: median <= 5 s from ``POST /bulk-changes`` to run
start). The loop itself is cheap (one read of the sensor states per pass; sensors whose interval
has not elapsed are skipped without a call to the code server), so this entry point sets it to
``SENSOR_LOOP_SECONDS`` and then runs the unchanged ``dagster-daemon`` command line.

``python -m bulkchange_pipeline.deploy_daemon run -w workspace.yaml`` takes exactly the arguments
of ``dagster-daemon``. If a Dagster upgrade drops the constant, the daemon refuses to start rather
than run with a loop nobody measured (``shorten_sensor_loop`` raises), and
``deploy/test_fleet_settings.py`` fails first.
"""

from __future__ import annotations

import sys

__all__ = ["SENSOR_LOOP_SECONDS", "main", "shorten_sensor_loop"]

SENSOR_LOOP_SECONDS = 1.0


def shorten_sensor_loop(seconds: float = SENSOR_LOOP_SECONDS) -> None:
    """Make Dagster's sensor daemon loop every ``seconds`` (in this process)."""
    import dagster._daemon.sensor as sensor_daemon

    if not isinstance(getattr(sensor_daemon, "MIN_INTERVAL_LOOP_TIME", None), (int, float)):
        raise RuntimeError(
            "dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME is gone (Dagster upgraded?): check how the sensor "
            "daemon paces its loop now, then update bulkchange_pipeline/deploy_daemon.py"
        )
    sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


def main() -> None:
    """``dagster-daemon`` (same arguments), with the shorter sensor loop."""
    shorten_sensor_loop()
    from dagster._daemon.cli import main as daemon_main

    sys.argv[0] = "dagster-daemon"
    daemon_main()


if __name__ == "__main__":
    main()
