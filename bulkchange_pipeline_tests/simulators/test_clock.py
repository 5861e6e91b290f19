"""The simulators' clock: a `ManualClock` moves only when advanced and wakes what waits on it at
once (threads on a condition, handlers in `asleep`); and the free-port helper never hands out a
port twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading

import pytest

from bulkchange_pipeline.simulators.clock import SYSTEM_CLOCK, ManualClock
from bulkchange_pipeline_tests.ports import PORT_RANGE, free_port

pytestmark = pytest.mark.timeout(30)


def test_manual_time_moves_only_when_advanced() -> None:
    start = dt.datetime(2030, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
    clock = ManualClock(start)
    assert clock.monotonic() == 0 and clock.now() == start
    assert clock.advance(1.5) == 1.5
    assert clock.monotonic() == 1.5 and clock.now() == start + dt.timedelta(seconds=1.5)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert SYSTEM_CLOCK.now().tzinfo is not None


def test_a_thread_waiting_for_a_deadline_wakes_when_time_reaches_it() -> None:
    clock, condition, woke = ManualClock(), threading.Condition(), threading.Event()

    def wait_for_ten() -> None:
        with condition:
            while clock.monotonic() < 10:
                clock.wait(condition, 10)
        woke.set()

    threading.Thread(target=wait_for_ten, daemon=True).start()
    clock.advance(9.99)
    assert not woke.wait(0.05)  # short of the deadline: still waiting
    clock.advance(0.01)
    assert woke.wait(5)


def test_a_deadline_already_passed_does_not_wait() -> None:
    clock, condition = ManualClock(), threading.Condition()
    clock.advance(2)
    with condition:
        clock.wait(condition, 1)  # returns at once: nothing will notify it


def test_asleep_ends_when_the_clock_passes_its_time() -> None:
    clock = ManualClock()

    async def main() -> float:
        sleeper = asyncio.create_task(clock.asleep(3))
        await asyncio.sleep(0)  # it registers when it is due
        await asyncio.to_thread(clock.advance, 2)  # from another thread, as a test does
        for _ in range(3):  # room for a wrong wake-up to be delivered and finish the task
            await asyncio.sleep(0)
        assert not sleeper.done()
        await asyncio.to_thread(clock.advance, 1)
        await asyncio.wait_for(sleeper, 5)
        return clock.monotonic()

    assert asyncio.run(main()) == 3


def test_free_ports_are_never_handed_out_twice_across_processes() -> None:
    """What a second pytest-xdist worker (or a concurrent run) would be given while this one holds
    its ports: none of them."""
    mine = {free_port() for _ in range(20)}
    assert len(mine) == 20 and all(p in PORT_RANGE for p in mine)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bulkchange_pipeline_tests.ports import free_port\nprint(*(free_port() for _ in range(200)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    theirs = {int(p) for p in child.stdout.split()}
    assert len(theirs) == 200 and not mine & theirs
