"""Waiting for another thread or process, with a deadline, instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a slow
suite). Waiting for *time* to pass is not done here at all: a test steps the simulators'
`ManualClock` (the `sim_clock` fixture) instead. What is left is waiting for work that really runs
elsewhere, a background thread or a child process: poll for its visible result, return as soon as
it is there, and fail with a message at the deadline.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["wait_for_server", "wait_until"]

MAX_INTERVAL = 0.05


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.005, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail the test after ``timeout`` s.

    The pause starts at ``interval`` and grows by half each time up to ``MAX_INTERVAL`` (or
    ``interval``, if larger): a quick result is still seen within milliseconds, while a long wait for
    a run worker no longer queries the database 200 times a second, taking the CPU from the very
    process it is waiting for (two CPUs, three test workers and their children)."""
    deadline = time.monotonic() + timeout
    ceiling = max(interval, MAX_INTERVAL)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, ceiling)


def wait_for_server(url: str, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> httpx.Response:
    """The first answer to ``GET url`` from a server starting in a child process; fails at once,
    with the child's captured output, if ``proc`` exits first."""

    def answer() -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                output = proc.stdout or proc.stderr
                raise AssertionError(
                    f"the server exited with {proc.returncode}: "
                    f"{output.read().decode(errors='replace') if output else ''}"
                ) from None
            return None

    return wait_until(answer, timeout, interval=0.05, what=f"{url} to answer")
