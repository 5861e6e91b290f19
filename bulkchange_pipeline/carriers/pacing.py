"""Pacing of one account's calls to the carrier's rate (`RateLimiter`).

Kept apart from the HTTP layer (`http.py`, which owns one limiter per account and penalizes it on
an over-limit answer) because pacing is plain asyncio: it can be read and tested without a socket,
and a client can pace a subset of its calls more slowly (ThingSpace activations, 100 a minute).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimiter"]


class RateLimiter:
    """Async pacing of calls to at most `rate_per_second`, evenly spaced.

    Calls are scheduled one interval apart (a token bucket of depth one), because carriers count
    calls in fixed one-second windows: a burst at a window edge would be answered over-limit.
    `headroom` keeps the pace slightly under the rate so network jitter cannot push one extra call
    into a window. It is adaptive: `penalize` pushes every waiter past a wait the carrier states
    (or into the next one-second window) after an over-limit answer.
    """

    def __init__(self, rate_per_second: float, *, headroom: float = 0.98, penalty_seconds: float = 1.0) -> None:
        self.rate_per_second = rate_per_second
        self.penalty_seconds = penalty_seconds
        self._interval = 1.0 / (rate_per_second * headroom) if rate_per_second > 0 else 0.0
        self._next = 0.0
        self._blocked_until = 0.0

    @property
    def unlimited(self) -> bool:
        return self._interval <= 0

    async def acquire(self) -> None:
        """Wait for this caller's slot. Slots are handed out in call order without a lock: the
        reservation is synchronous, so concurrent callers never get the same slot."""
        if self._interval <= 0 and self._blocked_until == 0.0:
            return
        now = time.monotonic()
        slot = max(now, self._next, self._blocked_until)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
        # A penalty that arrived while this caller slept still applies to it.
        while (late := self._blocked_until - time.monotonic()) > 0:
            await asyncio.sleep(late)

    def penalize(self, seconds: float | None = None) -> None:
        """After an over-limit answer: no new call before `seconds` (default `penalty_seconds`, a
        full second, which always reaches the carrier's next one-second window)."""
        wait = self.penalty_seconds if seconds is None or seconds <= 0 else seconds
        self._blocked_until = max(self._blocked_until, time.monotonic() + wait)
