"""The clock the Dagster definitions read "now" from.

The sensors (which scheduled bulk change is due, which asynchronous row is overdue), the reconcile
op (which rows to poll or time out), the lifecycle assets (what is old enough to archive or purge)
and the asset checks (which row is stuck) all ask ``now()`` here. It is the system clock; a test
replaces ``CLOCK`` with a ``domain.clock.ManualClock``
(``monkeypatch.setattr(bulkchange_pipeline.defs.clock, "CLOCK", clock)``) and advances it instead
of sleeping. Dagster builds resources from config values, and a clock is not one: hence a module
default rather than a resource field. Times the store writes (a row's send time) stay on the
system clock.
"""

from __future__ import annotations

from datetime import datetime

from ..domain.clock import SYSTEM_CLOCK, Clock

__all__ = ["CLOCK", "current", "now"]

CLOCK: Clock = SYSTEM_CLOCK


def current() -> Clock:
    """The clock in use, read at each call so that a replaced one takes effect at once."""
    return CLOCK


def now() -> datetime:
    """``current().now()``: naive UTC, as the schema stores times."""
    return CLOCK.now()
