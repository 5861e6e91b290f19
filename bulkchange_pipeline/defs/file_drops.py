"""The file drop sensor: each tick takes the stable new files of every tenant's inbox through the
API's intake (the bulk change sensor then processes them) and writes the results of finished drops
to the outboxes. Thin: the work is ``intake.drops.run_tick``.

The cursor holds the size and modification time each inbox file had at the last tick: a file is
taken only when they did not change for a whole tick (``intake.drops.inbox`` says why).
"""

import json

import dagster as dg

from ..intake.drops import run_tick
from .resources import DatabaseResource

__all__ = ["FILE_DROP_INTERVAL_SECONDS", "file_drop_sensor"]

FILE_DROP_INTERVAL_SECONDS = 15  # one quiet interval marks a file complete; SFTP listing is not free


def _cursor(text: str | None) -> dict[str, str]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@dg.sensor(minimum_interval_seconds=FILE_DROP_INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING)
def file_drop_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    """Take dropped request files from the tenants' inboxes; write finished drops' results to their outboxes."""
    tick = run_tick(database.engine(), _cursor(context.cursor))
    for line in tick.lines:
        context.log.info(line)
    cursor = json.dumps(tick.inbox.seen, sort_keys=True)
    if tick.idle:
        return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason("no file to take or results to write"))
    return dg.SensorResult(cursor=cursor)
