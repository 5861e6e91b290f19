"""The simulators' one source of time: token and session lifetimes, rate windows, operation and
activation delays, callback delays and retries, injected latency, and the dates they write.

Every simulator asks its `Clock` instead of the operating system, so a test can run one on a
`ManualClock` and step time with `advance()` instead of sleeping against the wall clock: "the token
expired" or "the operation completed after 0.3 s" becomes one call, and background threads waiting
for simulator time wake at once. `SYSTEM_CLOCK` (real time) stays the default: the demo, the CLI and
the benchmarks run the simulators in real time.

The simulators are a separate program that depends on nothing of the application, so this is not
the application's clock (`domain.clock`); the two never meet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock", "pause_until"]


class Clock(Protocol):
    """Where a simulator's time comes from, and how its threads wait for it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines, rate windows)."""
        ...

    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC (dates the carrier writes, effective dates)."""
        ...

    def wait(self, condition: threading.Condition, until: float | None) -> None:
        """Wait on `condition` (held by the caller) until notified or until `monotonic()` reaches
        `until` (None: no deadline). May return early: callers re-check their state in a loop."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Let `seconds` pass in a request handler (injected latency, held answers)."""
        ...


class SystemClock:
    """Real time (the default everywhere)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def wait(self, condition: threading.Condition, until: float | None) -> None:
        condition.wait(None if until is None else max(0.0, until - time.monotonic()))

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def pause_until(clock: Clock, condition: threading.Condition, due: float, closed: Callable[[], bool]) -> bool:
    """A background thread's wait (a callback delay, the wait between retries) until `clock` reaches
    `due`; False if `closed()` turned true first. Waiting on the simulator's `condition` instead of
    sleeping lets `close()` (which notifies it) end the wait at once, whatever the clock."""
    with condition:
        while not closed() and clock.monotonic() < due:
            clock.wait(condition, due)
        return not closed()


class ManualClock:
    """Time that moves only when a test calls `advance()`; then every thread waiting on it (for a
    deadline or a delay) and every handler in `asleep` that is due wakes at once.

    `monotonic()` starts at 0; `now()` starts at `start` (default: the real time when created).
    Thread-safe: the test thread advances it while the simulators' threads read and wait on it.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._start = (start or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        self._elapsed = 0.0
        self._lock = threading.Lock()
        # Every condition a thread ever waited on: notified on each advance (a spurious wake-up is
        # harmless, a missed one would hang a test). Weak: a closed simulator's go with it.
        self._conditions: weakref.WeakSet[threading.Condition] = weakref.WeakSet()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def now(self) -> dt.datetime:
        with self._lock:
            return self._start + dt.timedelta(seconds=self._elapsed)

    def wait(self, condition: threading.Condition, until: float | None) -> None:
        # Registered and checked under the clock's lock before waiting: an advance either happened
        # before the check (seen here) or notifies this condition, which it can only take once the
        # caller is inside condition.wait().
        with self._lock:
            self._conditions.add(condition)
            if until is not None and self._elapsed >= until:
                return
        condition.wait()

    async def asleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._sleepers.append((self._elapsed + seconds, loop, done))
        await done

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` and wake whatever became due; returns the new
        `monotonic()`. Never backwards."""
        if seconds < 0:
            raise ValueError(f"a clock does not run backwards (asked to move by {seconds})")
        with self._lock:
            self._elapsed += seconds
            elapsed = self._elapsed
            due = [s for s in self._sleepers if s[0] <= elapsed]
            self._sleepers = [s for s in self._sleepers if s[0] > elapsed]
            conditions = list(self._conditions)
        for _, loop, done in due:
            try:
                loop.call_soon_threadsafe(_settle, done)
            except RuntimeError:  # that server's loop is closed: nobody is waiting any more
                pass
        for condition in conditions:
            with condition:
                condition.notify_all()
        return elapsed

    def __repr__(self) -> str:
        return f"ManualClock(+{self.monotonic():g}s)"


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
