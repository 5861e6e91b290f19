"""What every carrier simulator shares: the per-account gate and fault injector, the counters the
admin endpoints and benchmarks read, limit/fault configuration, and the fault handling around an
admitted API call.

Each simulator keeps only its carrier's wire format, state and routes. Keeping the generic part in
one place means a new fault kind (``faults.answer_fault``) reaches every simulator that runs its
calls through `SimulatorBase._faulted`, instead of being re-wired six times.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from .clock import SYSTEM_CLOCK, Clock
from .faults import (
    AccountGate,
    AccountState,
    Fault,
    FaultConfig,
    FaultInjector,
    answer_fault,
)
from .server import ServerHandle, run_app_in_thread

JSON_MEDIA = "application/json"
ACCOUNT_STAT_FIELDS = ("calls", "peak_concurrency", "rate_refusals", "concurrency_refusals")


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON answer (the simulators serve 100,000-call benchmarks: no pretty printing)."""
    return Response(json.dumps(body, separators=(",", ":")), status, headers, JSON_MEDIA)


class SimulatorBase:
    """Counters, limits, faults and serving shared by the carrier simulators.

    Subclasses set `API_PREFIX` (what `run_in_thread`'s handle appends to its root URL) and, where
    the carrier states its limit per minute, `RATE_KEY`/`RATE_SCALE` so `configure`/`config` keep
    the carrier's own unit. `app` is the subclass's Starlette app. `clock` is the simulator's one
    source of time (`clock.SYSTEM_CLOCK` unless a test steps a `clock.ManualClock`).
    """

    API_PREFIX: ClassVar[str] = ""
    RATE_KEY: ClassVar[str] = "rate_per_second"
    RATE_SCALE: ClassVar[float] = 1.0  # RATE_KEY units per call per second (60: calls per minute)

    app: Any

    def __init__(
        self, rate: float, max_concurrency: int, faults: FaultConfig | None, clock: Clock | None = None
    ) -> None:
        """`rate` is in `RATE_KEY` units; 0 (or less) switches that limit off."""
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.gate = AccountGate(rate / self.RATE_SCALE, max_concurrency, self.clock)
        self.faults = FaultInjector(faults or FaultConfig())

    # -- counters ---------------------------------------------------------------------------------

    def _reset_base_counters(self) -> None:
        """Zero the counters every simulator keeps; subclasses zero their own next to this."""
        self.total_calls = 0
        self.over_limit_answers = 0
        self.auth_failures = 0
        self.business_refusals = 0
        self.gate.accounts.clear()
        self.faults.counts = {k: 0 for k in self.faults.counts}

    def _account_stats(self, names: tuple[str, ...] = ACCOUNT_STAT_FIELDS) -> dict[str, dict[str, int]]:
        """Per-account gate counters; `names` picks the ones a simulator has always reported."""
        return {account: {n: getattr(st, n) for n in names} for account, st in self.gate.accounts.items()}

    def _base_stats(self, names: tuple[str, ...] = ACCOUNT_STAT_FIELDS) -> dict[str, Any]:
        """The stats keys every simulator reports, `accounts` and overall `peak_concurrency` included."""
        return {
            "total_calls": self.total_calls,
            "over_limit_answers": self.over_limit_answers,
            "auth_failures": self.auth_failures,
            "business_refusals": self.business_refusals,
            "injected": dict(self.faults.counts),
            "accounts": self._account_stats(names),
            "peak_concurrency": max((st.peak_concurrency for st in self.gate.accounts.values()), default=0),
        }

    @staticmethod
    def _applied_stats(applied_counts: Mapping[str, int]) -> dict[str, int]:
        """How many changes were applied, to how many devices, and how many devices saw more than
        one: the proof tests and benchmarks use that nothing was applied twice."""
        counts = applied_counts.values()
        return {
            "applied_total": sum(counts),
            "applied_devices": len(applied_counts),
            "applied_more_than_once": sum(1 for c in counts if c > 1),
        }

    # -- configuration ----------------------------------------------------------------------------

    def _configure_base(self, key: str, value: Any) -> None:
        """Apply a limit (`RATE_KEY`, `max_concurrency`) or a FaultConfig field (unknown keys raise
        KeyError, so the admin endpoint answers 400 to a typo); a subclass calls this for every
        key it does not handle itself."""
        if key == self.RATE_KEY:
            self.gate.rate_per_second = float(value) / self.RATE_SCALE
        elif key == "max_concurrency":
            self.gate.max_concurrency = int(value)
        else:
            self.faults.config.update({key: value})
            if key == "seed":
                self.faults.reseed(int(value))
                self._reseed(int(value))

    def _reseed(self, seed: int) -> None:
        """Hook for simulators with a random generator of their own (callback drops...), so one
        `seed` makes the whole simulator repeatable."""

    def _limits_config(self) -> dict[str, Any]:
        return {
            self.RATE_KEY: self.gate.rate_per_second * self.RATE_SCALE,
            "max_concurrency": self.gate.max_concurrency,
        }

    @staticmethod
    async def _body(request: Request) -> Any:
        """The request's JSON body, or None if it is not JSON (each carrier words that refusal
        its own way, so the handler decides what None means)."""
        try:
            return json.loads(await request.body())
        except ValueError:
            return None

    # -- serving ----------------------------------------------------------------------------------

    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
        """Serve this simulator in a background thread; the handle's `.base_url` is its root URL
        plus `API_PREFIX`, `.simulator` this simulator."""
        return run_app_in_thread(self.app, host, port, api_prefix=self.API_PREFIX, app_state=self)

    async def _faulted(
        self,
        account: str,
        state: AccountState,
        handler: Callable[[], Awaitable[Response]],
        *,
        over_limit: Callable[[], Response],
        server_error: Callable[[], Response],
        malformed_status: int | None = 200,
        refusals: tuple[type[Exception], ...] = (),
        refused: Callable[[Any], Response] | None = None,
        drawn: Fault | None = None,
    ) -> Response:
        """Run an admitted call under the fault drawn for it, and leave the gate (`state`).

        Latency first; an injected 429 burst answers `over_limit()` and a 5xx `server_error()`
        without running the handler (nothing applied, safe to retry). Otherwise the handler runs
        (the change is applied) and the fault shapes its answer: held past the client's timeout
        (the call leaves the gate first, like a carrier that finished while the client gave up),
        truncated (`malformed_status`, None: the handler's status), or lost to a connection reset;
        an injected 429 states `burst_retry_after_seconds` when set (`faults.answer_fault`).

        A handler may raise one of `refusals` instead of answering (a business refusal): that
        answer, `refused(exc)`, goes out at once and unshaped, as the carrier refuses before it
        does any work there is to hold or lose. `drawn` is a fault the caller drew already (Teal
        answers a burst before any latency), else it is drawn here.
        """
        left = False
        try:
            fault = self.faults.draw(account) if drawn is None else drawn
            latency = self.faults.latency_seconds()
            if latency:
                await self.clock.asleep(latency)
            if fault is Fault.BURST_429:
                return answer_fault(fault, over_limit(), self.faults.config)
            if fault is Fault.ERROR_5XX:
                return server_error()
            try:
                response = answer_fault(fault, await handler(), self.faults.config)
            except refusals as exc:
                if refused is None:
                    raise
                return refused(exc)
            if fault is Fault.TIMEOUT:
                self.gate.leave(state)
                left = True
                await self.clock.asleep(self.faults.config.timeout_hold_seconds)
            elif fault is Fault.MALFORMED:
                status = response.status_code if malformed_status is None else malformed_status
                return Response(response.body[: max(1, len(response.body) // 2)], status, media_type=JSON_MEDIA)
            return response
        finally:
            if not left:
                self.gate.leave(state)
