"""Carrier-neutral parts of every simulator: per-account rate/concurrency enforcement and
seeded fault injection.

They are separate from any one carrier's wire format so the ThingSpace, Teal, Rev.io...
simulators can enforce limits and inject faults the same way, and so tests reason about one
implementation of "over the limit" and "10% faults".

Faults that shape the answer itself (a connection reset instead of an answer, the wait an injected
429 states) are applied by `answer_fault`, which a simulator calls on the response it built; the
fault drawn for the request in hand is `drawn_fault()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import math
import random
import socket
import struct
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .clock import SYSTEM_CLOCK, Clock


class Fault(enum.Enum):
    NONE = "none"
    ERROR_5XX = "error_5xx"  # refused before applying; safe to retry
    TIMEOUT = "timeout"  # applied, then the answer is held past the client's timeout
    MALFORMED = "malformed"  # applied, then a truncated body is sent
    BURST_429 = "burst_429"  # over-limit answers for the next `burst_length` calls
    RESET = "reset"  # applied, then the TCP connection is reset without a byte of answer


_DRAWN: contextvars.ContextVar[Fault] = contextvars.ContextVar("simulator_fault", default=Fault.NONE)


def drawn_fault() -> Fault:
    """The fault `FaultInjector.draw` picked for the request being handled (each request is its
    own task, so this never sees another request's draw); NONE if nothing was drawn."""
    return _DRAWN.get()


@dataclass
class FaultConfig:
    """Rates are per call, in [0, 1]; they are drawn from one seeded generator."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_hold_seconds: float = 30.0
    malformed_rate: float = 0.0
    burst_rate: float = 0.0
    burst_length: int = 5
    burst_retry_after_seconds: float = 0.0  # wait an injected 429 states (Retry-After); 0: none
    reset_rate: float = 0.0
    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply known keys (e.g. from the admin endpoint); unknown keys are an error so a typo
        does not silently leave faults off."""
        names = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise KeyError(key)
            current = getattr(self, key)
            setattr(self, key, type(current)(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Draws the fault for each call. One uniform draw per call, split by the configured rates,
    so the rates add up exactly as configured (a 10% total is 10%, not 1-(0.9^n))."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.reseed(config.seed)
        # "reset" is counted from its first draw on: it came later, and stats readers compare the
        # original four kinds.
        self.counts: dict[str, int] = {f.value: 0 for f in Fault if f not in (Fault.NONE, Fault.RESET)}
        self._burst_left: dict[str, int] = {}

    def reseed(self, seed: int) -> None:
        self._random = random.Random(seed)

    def draw(self, account: str) -> Fault:
        fault = self._draw(account)
        _DRAWN.set(fault)
        return fault

    def _draw(self, account: str) -> Fault:
        left = self._burst_left.get(account, 0)
        if left > 0:
            self._burst_left[account] = left - 1
            self.counts[Fault.BURST_429.value] += 1
            return Fault.BURST_429
        c = self.config
        total = c.error_rate + c.timeout_rate + c.malformed_rate + c.reset_rate + c.burst_rate
        if total <= 0:
            return Fault.NONE
        x = self._random.random()
        fault = Fault.NONE
        # Reset sits before the burst band, so a seed draws what it drew before when reset_rate is 0.
        if x < c.error_rate:
            fault = Fault.ERROR_5XX
        elif x < c.error_rate + c.timeout_rate:
            fault = Fault.TIMEOUT
        elif x < c.error_rate + c.timeout_rate + c.malformed_rate:
            fault = Fault.MALFORMED
        elif x < c.error_rate + c.timeout_rate + c.malformed_rate + c.reset_rate:
            fault = Fault.RESET
        elif x < total:
            fault = Fault.BURST_429
            self._burst_left[account] = max(0, c.burst_length - 1)
        if fault is not Fault.NONE:
            self.counts[fault.value] = self.counts.get(fault.value, 0) + 1
        return fault

    def latency_seconds(self) -> float:
        c = self.config
        if c.latency_ms <= 0 and c.latency_jitter_ms <= 0:
            return 0.0
        jitter = self._random.uniform(-c.latency_jitter_ms, c.latency_jitter_ms)
        return max(0.0, c.latency_ms + jitter) / 1000.0


class ConnectionReset(Response):
    """Not an answer: the server resets the TCP connection (SO_LINGER 0, then abort: an RST, not a
    byte of HTTP), as a carrier's load balancer does when a backend dies mid-request. The client
    sees ``httpx.ReadError`` (connection reset by peer) or ``httpx.RemoteProtocolError`` (server
    disconnected without sending a response) and cannot tell whether the request was applied.

    Needs uvicorn (the simulators' server): its ASGI ``receive`` is a method of the request cycle,
    which holds the connection's transport."""

    def __init__(self) -> None:
        super().__init__(b"", 500)  # never sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise RuntimeError("ConnectionReset needs uvicorn's request cycle (receive.__self__.transport)")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # Let uvicorn see the connection is gone before this returns, or it answers 500 for us.
        for _ in range(100):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)


def answer_fault(fault: Fault, response: Response, config: FaultConfig) -> Response:
    """Apply the part of a fault that shapes the answer to the response a simulator built: RESET
    replaces it with a connection reset (the handler ran: the change is applied, its answer lost);
    an injected 429 gets ``Retry-After`` when ``burst_retry_after_seconds`` is set."""
    if fault is Fault.RESET:
        return ConnectionReset()
    if fault is Fault.BURST_429 and config.burst_retry_after_seconds > 0:
        response.headers["Retry-After"] = f"{config.burst_retry_after_seconds:g}"
    return response


@dataclass
class AccountState:
    """Per-account counters; `peak_concurrency` counts attempted overlap, refused calls
    included, so a test can prove the client never tried more than it may."""

    window: int = -1
    window_calls: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0
    calls: int = 0
    rate_refusals: int = 0
    concurrency_refusals: int = 0


class AccountGate:
    """Fixed one-second windows of at most `rate_per_second` calls and at most `max_concurrency`
    calls in flight per account; the carrier refuses the rest of a window once it is over.

    `rate_per_second <= 0` or `max_concurrency <= 0` switch that limit off. O(1) per call. The
    windows are `clock`'s (the simulator's time).
    """

    def __init__(self, rate_per_second: float = 5.0, max_concurrency: int = 1, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate_per_second = rate_per_second
        self.max_concurrency = max_concurrency
        self.clock = clock
        self.accounts: dict[str, AccountState] = {}

    def enter(self, account: str) -> tuple[AccountState, str | None]:
        """Count the call; returns the state and None if admitted, or "concurrency"/"rate".
        The caller must call `leave(state)` in every case."""
        st = self.accounts.get(account)
        if st is None:
            st = self.accounts[account] = AccountState()
        st.calls += 1
        st.in_flight += 1
        if st.in_flight > st.peak_concurrency:
            st.peak_concurrency = st.in_flight
        if 0 < self.max_concurrency < st.in_flight:
            st.concurrency_refusals += 1
            return st, "concurrency"
        rate = self.rate_per_second
        if rate > 0:
            length = 1.0 if rate >= 1 else 1.0 / rate
            window = math.floor(self.clock.monotonic() / length)
            if window != st.window:
                st.window, st.window_calls = window, 0
            st.window_calls += 1
            if st.window_calls > rate * length:
                st.rate_refusals += 1
                return st, "rate"
        return st, None

    @staticmethod
    def leave(state: AccountState) -> None:
        state.in_flight -= 1
