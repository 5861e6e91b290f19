"""One source of "now" for the application.

Reconcile (is a poll overdue?), the lifecycle assets (what is old enough to archive or purge?),
the sensors and the engine's timestamps all ask a `Clock` instead of the operating system, so a
test moves time forward with `ManualClock.advance` instead of sleeping against the wall clock.
The schema's one time convention is naive UTC (`store.db.utcnow`), so `now()` returns that.

The simulators keep their own notion of time (they are a separate program that depends on nothing
of ours); this clock is the application's.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where "now" comes from."""

    def now(self) -> datetime:
        """The current time as naive UTC."""
        ...


class SystemClock:
    """The operating system's clock (the default everywhere)."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: tests step time instead of sleeping.

    Thread-safe, because a sensor tick, an op and the test body may read it from different threads.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or SYSTEM_CLOCK.now()).replace(tzinfo=None)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, by: timedelta | float) -> datetime:
        """Move forward by `by` (a timedelta or seconds) and return the new now; never backwards."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"a clock does not run backwards (asked to move by {step})")
        with self._lock:
            self._now += step
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"


SYSTEM_CLOCK = SystemClock()
