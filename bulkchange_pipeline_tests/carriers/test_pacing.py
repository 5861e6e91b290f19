"""`RateLimiter`: never over a carrier's fixed window, whatever the window's phase, evenly spaced
by default or over the carrier's whole window, where a late call is caught up (issue 22, P6: 24
accounts at 5 calls/s, one call in flight, 150 ms latency).

The property tests drive the limiter on an event loop whose clock jumps to the next timer
(`VirtualTimeLoop`), so thousands of paced calls take milliseconds and the times are exact; the
last test runs it against the real Jasper simulator, which counts calls in fixed one-second windows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import selectors
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.carriers.base import CarrierAccount
from bulkchange_pipeline.carriers.http import CarrierHttp
from bulkchange_pipeline.carriers.jasper import JasperClient
from bulkchange_pipeline.carriers.pacing import DEFAULT_MARGIN, RateLimiter, carrier_window
from bulkchange_pipeline.simulators.jasper_rules import make_iccids
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.fixtures import JASPER_API_KEY, JASPER_USER, jasper_account
from bulkchange_pipeline_tests.waiting import wait_for_server

pytestmark = pytest.mark.timeout(120)


class _JumpSelector(selectors.SelectSelector):
    """Never blocks: a wait for the next timer moves the loop's virtual clock there instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._vloop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self._vloop.virtual_now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop with a virtual clock (`loop.time()`), which `asyncio.sleep` and the limiter read."""

    def __init__(self) -> None:
        self.virtual_now = 1000.0
        super().__init__(_JumpSelector(self))

    def time(self) -> float:
        return self.virtual_now


def run_virtual(coro: Callable[[], Awaitable[Any]]) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro())
    finally:
        loop.close()


async def paced_calls(
    limiter: RateLimiter,
    durations: list[float],
    concurrency: int = 1,
    penalties: dict[int, float | None] | None = None,
) -> tuple[list[float], list[tuple[float, float]]]:
    """``concurrency`` workers making the calls in order: acquire, then the call's duration; call
    i penalizes the limiter when it ends if ``penalties`` has i (an over-limit answer). Returns
    the start times and the (time, seconds) of each penalty."""
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    penalized: list[tuple[float, float]] = []
    queue = iter(enumerate(durations))

    async def worker() -> None:
        for i, seconds in queue:
            await limiter.acquire()
            starts.append(loop.time())
            await asyncio.sleep(seconds)
            if penalties and i in penalties:
                stated = penalties[i]
                limiter.penalize(stated)
                penalized.append((loop.time(), stated if stated else limiter.penalty_seconds))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return starts, penalized


def most_in_one_fixed_window(arrivals: list[float], window: float, phase: float) -> int:
    """What a carrier counting fixed windows [phase + k*window, phase + (k+1)*window) sees at most."""
    counts: dict[int, int] = {}
    for t in arrivals:
        k = math.floor((t - phase) / window)
        counts[k] = counts.get(k, 0) + 1
    return max(counts.values(), default=0)


RATES = st.sampled_from([1.0, 2.0, 5.0, 10.0, 50.0, 0.5, 0.25, 100 / 60, 2.5])
WINDOWS = st.sampled_from([None, 1.0, 60.0])  # even spacing (the default), the carrier's second, a minute


@settings(max_examples=200, deadline=None)
@given(
    rate=RATES,
    window_seconds=WINDOWS,
    concurrency=st.integers(1, 4),
    durations=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=80),
    penalties=st.dictionaries(st.integers(0, 79), st.sampled_from([None, 0.3, 2.0]), max_size=3),
    jitter=st.lists(st.floats(0.0, 1.0), min_size=80, max_size=80),
    phase=st.floats(0.0, 1.0),
)
def test_never_over_a_fixed_window_of_unknown_phase(
    rate: float,
    window_seconds: float | None,
    concurrency: int,
    durations: list[float],
    penalties: dict[int, float | None],
    jitter: list[float],
    phase: float,
) -> None:
    """Whatever the call durations, concurrency, penalties, and the carrier window's phase, and with
    each arrival late by up to the margin's share of the window: no window sees more than allowed.
    No start falls inside a penalty either."""
    limiter = RateLimiter(rate, window_seconds=window_seconds)
    allowed, window = carrier_window(rate, window_seconds)
    starts, penalized = run_virtual(lambda: paced_calls(limiter, durations, concurrency, penalties))
    assert len(starts) == len(durations)
    ordered = sorted(starts)
    for first, last in zip(ordered, ordered[allowed:], strict=False):
        assert last - first >= window * (1 + DEFAULT_MARGIN) - 1e-9
    arrivals = [t + j * DEFAULT_MARGIN * window for t, j in zip(starts, jitter, strict=False)]
    assert most_in_one_fixed_window(arrivals, window, phase * window) <= allowed
    for at, seconds in penalized:
        assert not any(at < t < at + seconds - 1e-9 for t in starts)


def greedy_starts(durations: list[float], allowed: int, span: float, gap: float) -> list[float]:
    """The earliest starts one call in flight can have without N+1 starts inside ``span``: the
    best any limiter can do against a fixed window of unknown phase (each start as early as the
    rule and the previous call's end allow)."""
    starts: list[float] = []
    end = 0.0
    for d in durations:
        t = end
        if starts:
            t = max(t, starts[-1] + gap)
        if len(starts) >= allowed:
            t = max(t, starts[-allowed] + span)
        starts.append(t)
        end = t + d
    return starts


@settings(max_examples=100, deadline=None)
@given(
    rate=st.sampled_from([1.0, 5.0, 10.0, 20.0]),
    base=st.floats(0.0, 0.15),
    late=st.lists(st.tuples(st.integers(0, 199), st.floats(0.0, 0.5)), max_size=30),
)
def test_late_calls_are_caught_up(rate: float, base: float, late: list[tuple[int, float]]) -> None:
    """The carrier's whole window (``window_seconds=1``), one call in flight, some calls late: the
    limiter starts each call as early as the window rule allows (the greedy optimum), never later
    than even spacing would."""
    durations = [base] * 200
    for i, extra in late:
        durations[i] += extra
    limiter = RateLimiter(rate, window_seconds=1.0)
    starts, _ = run_virtual(lambda: paced_calls(limiter, durations))
    origin = starts[0]
    got = [t - origin for t in starts]
    best = greedy_starts(durations, limiter.calls_per_window, limiter.span, 1 / (2 * rate))
    assert got == pytest.approx(best, abs=1e-6)
    interval = limiter.span / limiter.calls_per_window  # the old design: starts one interval apart
    even = 0.0
    for d in durations[:-1]:
        even += max(interval, d)
    assert got[-1] <= even + 1e-6


def test_one_late_call_costs_only_what_its_window_could_not_absorb() -> None:
    """The whole window at 5/s, calls of 170 ms, one of them 500 ms: spacing calls 204 ms apart lost 296 ms for good;
    the window of five loses only what its five calls took beyond it, 4 x 170 + 500 - 1020 = 160 ms."""
    durations = [0.17] * 51
    durations[12] = 0.5
    limiter = RateLimiter(5, window_seconds=1.0)
    starts, _ = run_virtual(lambda: paced_calls(limiter, durations))
    steady = 10 * limiter.span  # call 50 opens the eleventh window
    assert starts[-1] - starts[0] == pytest.approx(steady + 0.16, abs=1e-6)


def test_thousand_calls_with_noisy_overhead_keep_the_rate() -> None:
    """P6's account: 1,000 calls of 150 ms plus our own overhead, exponential with a mean of 30 ms
    (so one call in six ends after 204 ms). Even spacing lost each late call's excess for good
    (E[max(204, 150 + X)] a call); the window of five loses about half as much. Not all of it: a
    late call still delays the call N later when that one waits for the window (the greedy
    optimum above), so what is left is our own overhead per call."""
    rng = random.Random(7)
    durations = [0.15 + rng.expovariate(1 / 0.03) for _ in range(1001)]
    limiter = RateLimiter(5, window_seconds=1.0)
    starts, _ = run_virtual(lambda: paced_calls(limiter, durations))
    elapsed = starts[-1] - starts[0]
    ideal = 1000 / 5 * (1 + DEFAULT_MARGIN)
    even = sum(max(0.204, d) for d in durations[:-1])
    assert even - ideal > 4.0  # what the old spacing lost on these calls
    assert elapsed - ideal < 0.6 * (even - ideal), (elapsed, even)


def test_windows_of_sub_one_and_fractional_rates() -> None:
    assert carrier_window(5) == (1, 0.2)  # the default: evenly, one call every 204 ms with the margin
    assert carrier_window(5, 1.0) == (5, 1.0)  # the carrier's whole second when the client asks
    assert carrier_window(0.5) == (1, 2.0)  # one call per two seconds
    assert carrier_window(2.5, 1.0) == (1, 0.4)  # not a whole number per second: evenly
    assert carrier_window(100 / 60) == (1, 0.6)  # ThingSpace activations: evenly, 100 a minute
    assert carrier_window(100 / 60, 60) == (100, 60)  # or a minute's window when the client says so
    assert carrier_window(0) == (0, 0.0) and RateLimiter(0).unlimited
    durations = [0.0] * 7
    starts, _ = run_virtual(lambda: paced_calls(RateLimiter(0.5), durations))
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [2.04] * 6
    starts, _ = run_virtual(lambda: paced_calls(RateLimiter(5), durations))
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [0.204] * 6


def test_penalty_holds_an_unlimited_account_too() -> None:
    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        limiter = RateLimiter(0)
        await limiter.acquire()
        before = loop.time()
        limiter.penalize(1.5)
        await limiter.acquire()
        return before, loop.time()

    before, after = run_virtual(run)
    assert after - before >= 1.5


def test_limiter_outlives_its_event_loop() -> None:
    """The engine runs one asyncio.run per batch; one account's limiter serves them all."""
    limiter = RateLimiter(5)

    async def burst() -> float:
        for _ in range(5):
            await limiter.acquire()
        return time.monotonic()

    first = asyncio.run(burst())
    second_started = time.monotonic()
    asyncio.run(burst())
    assert time.monotonic() - second_started >= 1.0 - (second_started - first) - 0.05


@pytest.mark.parametrize(
    ("window_seconds", "noise", "share"),
    [(None, 0.02, 0.9), (1.0, 0.08, 0.7)],
    ids=["evenly spaced, 0-20 ms", "whole window, 0-80 ms"],
)
def test_real_simulator_with_noisy_callers_is_never_refused_and_keeps_the_rate(
    window_seconds: float | None, noise: float, share: float
) -> None:
    """The Jasper simulator, in its own process like a carrier, at 5 calls/s and one in flight,
    answering in 150 ms; our side adds up to ``noise`` seconds at random between calls (a claim, a
    write, a loaded machine). Zero rate refusals, and the rate achieved is at least ``share`` of
    the limit: evenly spaced, what the 54 ms of slack leaves (a loaded machine eats some of it);
    with the carrier's whole window and up to 80 ms of noise (a mean cycle of about 200 ms) it
    reaches 95% on a quiet machine, but the suite's other workers lengthen every cycle (80% seen in
    CI), so here only a floor that a limiter stuck on whole seconds would miss. The rate it catches
    up to is checked exactly in virtual time above; what this test holds is zero refusals."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkchange_pipeline.simulators",
            "jasper",
            "--port",
            str(port),
            "--rate",
            "5",
            "--concurrency",
            "1",
            "--latency-ms",
            "150",
            "--account",
            f"{JASPER_USER}:{JASPER_API_KEY}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    iccids = make_iccids(60)
    rng = random.Random(5)
    try:
        wait_for_server(f"{root}/_sim/stats", proc)
        httpx.post(
            f"{root}/_sim/devices", json=[{"iccid": i, "status": "ACTIVATED"} for i in iccids]
        ).raise_for_status()
        handle = SimpleNamespace(base_url=f"{root}/rws/api/v1")
        client = JasperClient(jasper_account(handle, rate_per_second=5, max_concurrency=1))  # type: ignore[arg-type]
        client.http.limiter = RateLimiter(5, window_seconds=window_seconds)

        async def run() -> list[float]:
            starts = []
            try:
                for iccid in iccids:
                    starts.append(time.monotonic())
                    await client.get_device(iccid)
                    await asyncio.sleep(rng.uniform(0.0, noise))
            finally:
                await client.aclose()
            return starts

        starts = asyncio.run(run())
        stats = httpx.get(f"{root}/_sim/stats").json()
    finally:
        proc.terminate()
        proc.wait(10)
    refusals = sum(a["rate_refusals"] + a["concurrency_refusals"] for a in stats["accounts"].values())
    assert refusals == 0 and stats["over_limit_answers"] == 0, stats
    assert stats["total_calls"] == len(iccids) and client.http.stats.over_limit == 0
    achieved = (len(starts) - 5) / (starts[-1] - starts[4])  # after the first window's five
    assert achieved >= share * 5, achieved


def test_one_limiter_per_account_across_the_batches_of_a_run() -> None:
    """The engine builds a client per batch; the account's limiter is the process's one, so the
    next batch's first call is paced after the previous batch's last (not at once)."""
    account = CarrierAccount(1, "jasper", "http://carrier.example/api", "fleet01", "key", rate_per_second=5)
    first, second = CarrierHttp(account), CarrierHttp(dataclasses.replace(account))
    other = CarrierHttp(dataclasses.replace(account, username="fleet02"))
    assert first.limiter is second.limiter and other.limiter is not first.limiter

    async def two_batches() -> list[float]:
        loop = asyncio.get_running_loop()
        starts = []
        for http in (first, first, second):
            await http.limiter.acquire()
            starts.append(loop.time())
        return starts

    starts = run_virtual(two_batches)
    assert starts[2] - starts[1] == pytest.approx(0.204)
