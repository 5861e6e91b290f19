"""Pacing of one account's calls to the carrier's rate (`RateLimiter`).

Kept apart from the HTTP layer (`http.py`, which owns one limiter per account and penalizes it on
an over-limit answer) because pacing is plain asyncio: it can be read and tested without a socket
(it reads the running loop's clock, so a test loop with virtual time drives it), and a client can
pace a subset of its calls more slowly (ThingSpace activations, 100 a minute).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import CarrierAccount

__all__ = ["DEFAULT_MARGIN", "PACING_WINDOW_SECONDS", "RateLimiter", "account_limiter", "carrier_window"]

DEFAULT_MARGIN = 0.02  # our window is this much longer than the carrier's: arrival jitter it absorbs


def carrier_window(rate_per_second: float, window_seconds: float | None = None) -> tuple[int, float]:
    """The window a limiter holds calls to: (calls allowed, window in seconds); (0, 0.0) for no limit.

    Without ``window_seconds``: one call per ``1 / rate``, so calls are spaced evenly (what every
    client does by default, see `RateLimiter` for why). With it, the carrier's own fixed window
    (one second for Jasper's 5 calls/s, a minute for ThingSpace's 100 activations a minute):
    ``rate * window`` calls in it, when that is a whole number; otherwise evenly again."""
    if rate_per_second <= 0:
        return 0, 0.0
    if not window_seconds or window_seconds <= 0:
        return 1, 1.0 / rate_per_second
    calls = rate_per_second * window_seconds
    whole = round(calls)
    if whole >= 1 and abs(calls - whole) < 1e-6:
        return whole, window_seconds
    return 1, 1.0 / rate_per_second


class RateLimiter:
    """Async pacing of call starts: at most N in any window of ``W * (1 + margin)`` seconds
    (`carrier_window`): by default N = 1 and W = 1 / rate, calls evenly spaced, 2% under the rate.

    The guarantee, whatever the window: the carrier counts calls in fixed windows whose phase we do
    not know, and N+1 starts that lie more than ``W * (1 + margin)`` apart can never fall into one
    window of W, even when each arrival is late by up to ``margin * W`` (20 ms at 5 calls/s).

    Why even spacing is the default, not the carrier's whole window (``window_seconds``, e.g. N = 5
    in one second at 5/s): the whole window lets a late call be followed by a sooner one, so a
    one-in-flight account catches up part of the time its slow calls lost (even spacing loses all
    of it: the mean spacing is E[max(1 / rate, call time)]). But catching up keeps the window
    tight: every N+1th start is exactly ``W * (1 + margin)`` after the first, so the margin is all
    that absorbs the difference between when we start a call and when the carrier counts it. In the
    run worker that difference is not only the network: the next chunk's first call is sent while
    the previous chunk's results are written in a thread (GIL), and Dagster's threads run too. On
    this 2-core machine under load, the whole-window limiter drew over-limit answers (the P6 test's
    120 devices took 123 calls; 2 refusals in 2,400 calls in an 8-account run) where even spacing
    drew none, and each costs a penalty second and a retry. A client whose carrier publishes a per-minute count (ThingSpace)
    can pass ``window_seconds``; the property tests (test_pacing.py) cover both.

    ``burst`` keeps starts at least ``1 / (burst * rate)`` apart within a whole window, so a
    high-rate account catches up at most ``burst`` times its rate, never in one instant.

    Adaptive: `penalize` pushes every waiter past a wait the carrier states (or into the next
    window) after an over-limit answer. Starts are reserved synchronously in call order (no lock,
    so the limiter outlives the event loop that created it: the engine may run one loop per batch).
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        window_seconds: float | None = None,
        margin: float = DEFAULT_MARGIN,
        burst: float = 2.0,
        penalty_seconds: float = 1.0,
    ) -> None:
        self.rate_per_second = rate_per_second
        self.penalty_seconds = penalty_seconds
        self.calls_per_window, self.window_seconds = carrier_window(rate_per_second, window_seconds)
        self.span = self.window_seconds * (1.0 + margin)  # our window: no N+1 starts inside it
        self._gap = 1.0 / (rate_per_second * burst) if rate_per_second > 0 and burst > 0 else 0.0
        self._starts: deque[float] = deque(maxlen=max(self.calls_per_window, 1))  # the last N starts
        self._blocked_until = 0.0

    @property
    def unlimited(self) -> bool:
        return self.calls_per_window <= 0

    def _earliest(self, now: float) -> float:
        slot = max(now, self._blocked_until)
        starts = self._starts
        if starts and not self.unlimited:
            slot = max(slot, starts[-1] + self._gap)
            if len(starts) == starts.maxlen:
                slot = max(slot, starts[0] + self.span)
        return slot

    async def acquire(self) -> None:
        """Wait for this caller's start. The start is reserved synchronously (the next caller
        counts it at once), then slept for; a caller that wakes late records when it really
        started, and one that a penalty overtook while it slept reserves again past the penalty
        (its first reservation stays counted, which can only make later starts later)."""
        if self.unlimited and self._blocked_until == 0.0:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            slot = self._earliest(now)
            if not self.unlimited:
                self._starts.append(slot)
            if slot > now:
                await asyncio.sleep(slot - now)
            started = loop.time()
            if self._blocked_until > started:
                continue  # a penalty arrived while this caller slept: it applies to it too
            if started > slot and not self.unlimited and self._starts[-1] == slot:
                self._starts[-1] = started  # woke late and nobody reserved after it: count the true start
            return

    def penalize(self, seconds: float | None = None) -> None:
        """After an over-limit answer: no new call before `seconds` (default `penalty_seconds`, a
        full second, which always reaches the carrier's next one-second window)."""
        wait = self.penalty_seconds if seconds is None or seconds <= 0 else seconds
        self._blocked_until = max(self._blocked_until, _now() + wait)


# The window every account is paced over (`carrier_window`): None spaces calls evenly, 1.0
# would use the carrier's whole second (5 calls in any 1.02 s at 5/s), which catches up late calls
# but draws over-limit answers when sending lags the start stamp (`RateLimiter` says why).
PACING_WINDOW_SECONDS: float | None = None
_LIMITERS: dict[tuple[str, str, str, float], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()
_LIMITERS_MAX = 1_000  # accounts a process remembers; a long-lived process starts over past this


def account_limiter(account: CarrierAccount) -> RateLimiter:
    """This process's one `RateLimiter` for the account's credential at its carrier.

    The engine builds an adapter (and so a `CarrierHttp`) per batch. A limiter per adapter would
    forget the starts the previous batch made a moment ago: its window allows N calls at once,
    so the next batch's first calls and the last ones before could share one carrier window."""
    key = (account.integration.lower(), account.base_url.rstrip("/"), account.username, float(account.rate_per_second))
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            if len(_LIMITERS) >= _LIMITERS_MAX:
                _LIMITERS.clear()
            limiter = _LIMITERS[key] = RateLimiter(account.rate_per_second, window_seconds=PACING_WINDOW_SECONDS)
        return limiter


def _now() -> float:
    """The running loop's clock (what `acquire` sleeps by), or the monotonic clock it defaults to."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
