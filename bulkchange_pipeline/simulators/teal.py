"""A loopback simulator of Teal's integration API (eSIMs by EID, asynchronous operations).

Wire format (reference/carriers.md section 4; the sources are cited in `carriers/teal_wire.py` and
`bulkchange_pipeline_tests/contracts/teal.yaml`): headers `ApiKey`/`ApiSecret`; `requestId` (and an
optional `callbackUrl`) as query parameters. Every call, reads included, only enqueues work and
answers `{success, message, link:{operationResult:{href}}}` at once; nothing else comes back
synchronously. Writes (`POST api/v1/esims/enable|disable|assign-plan|activate`) complete after
`operation_delay_seconds`, reads (`GET api/v1/esims`, `GET api/v1/esims/info?eid=&limit=`,
`GET api/v1/plans`) after `read_delay_seconds`, in a background thread. Then
`GET api/v1/operation-result?requestId=` answers `{success, requestId, entries:[...]}` (per-entry
`{eid, success, errorCode, errorMessage}` for a write; eSIM or plan records for a read) and the
callback URL, if one was given, is POSTed with `requestId=<id>` appended (retried a few times;
drops and duplicates switchable). `deviceStatus` is upper case on the wire and in the state
(`ONLINE`, `WAITING`, `STOPPED`); seeds may use any case.

Each operation takes only the query parameters `teal.yaml` gives it (`teal_rules.QUERY`), each at most once;
any other is 400 VALIDATION_ERROR, so a read the description does not give (the old
`esims?eid=`, or `offset` on `esims/info`) is refused instead of being answered with something
else. A path Teal does not serve (any method), or a method a served path does not take, answers in
the envelope after auth like every call: 404, or 405 with `Allow`, errorCode GENERIC_ERROR [I:
Teal's answer to those is not public; its API checks ApiKey/ApiSecret on every call, so auth comes
first].

Inferred [I]: the error envelope `{success:false, errorCode, message}`; an unknown EID in
`esims/info` gives `entries: []`; idempotent replay of a re-sent requestId; and how "still
processing" travels: a literal 102 is an interim status in HTTP/1.1 that clients skip (httpx then
fails to read an answer), so by default the pending answer is a final HTTP 202 whose body says
`status: 102, message: Processing`; `pending_http_status=102` sends the literal one. Enable moves
`STOPPED` to `ONLINE`; enabling an enabled eSIM or disabling a stopped one is a successful no-op.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed), `GET /_sim/devices/{eid}`,
`GET /_sim/stats`, `GET|POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import teal_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock, pause_until
from .faults import Fault, FaultConfig, answer_fault
from .server import ServerHandle

__all__ = ["TealSimulator", "run_in_thread"]

API_PREFIX = ""  # paths are api/v1/... under the host, as on integrationapi.teal.global


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json(status, {"success": False, "errorCode": code, "message": message}, headers)


class TealSimulator(SimulatorBase):
    """In-memory Teal account(s) behind a Starlette app (`.app`); `accounts` maps ApiKey to
    ApiSecret."""

    API_PREFIX = API_PREFIX
    RATE_KEY = "calls_per_minute"
    RATE_SCALE = 60.0

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        *,
        calls_per_minute: float = 1000,
        max_concurrency: int = 0,
        faults: FaultConfig | None = None,
        operation_delay_seconds: float = 0.5,
        read_delay_seconds: float = 0.1,
        plans: Iterable[Mapping[str, Any]] = rules.DEFAULT_PLANS,
        max_entries: int = 100,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(calls_per_minute, max_concurrency, faults, clock)
        self.accounts: dict[str, str] = dict(accounts or {"demo-key": "demo-secret"})
        self.operation_delay_seconds = operation_delay_seconds
        self.read_delay_seconds = read_delay_seconds
        self.max_entries = max_entries
        self.plans: dict[str, dict[str, Any]] = {p["uuid"]: dict(p) for p in plans}
        self.esims: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, rules.Operation] = {}
        self.pending_http_status = 202
        self.retry_after_seconds: float | None = None  # None: until the rate window ends
        self.drop_callback_rate = 0.0
        self.duplicate_callback_rate = 0.0
        self.callback_attempts = 3
        self.callback_retry_seconds = 0.2
        self._cb_random = random.Random(self.faults.config.seed)
        self.lock = threading.RLock()
        self._queue: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self.lock)  # an operation came or went, time moved, close()
        self._sending = 0  # callbacks handed to the senders and not yet delivered or given up
        self._closed = False
        self._callbacks = ThreadPoolExecutor(4, thread_name_prefix="teal-callback")
        self._http = httpx.Client(timeout=2.0)
        self._worker = threading.Thread(target=self._complete_loop, daemon=True, name="teal-operations")
        self._worker.start()
        self.reset_counters()
        self.app = self._build_app()

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (eSIMs and operations are kept)."""
        with self.lock:
            self._reset_base_counters()
            self.applied_counts: Counter[str] = Counter()
            self.calls_by_path: Counter[str] = Counter()
            self.counts: Counter[str] = Counter()  # operations_*, callbacks_*

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace eSIMs (at least `eid`; deviceStatus, in any case, defaults to ONLINE and is
        kept upper case as Teal sends it; the plan defaults to the first plan; `active` to true).
        `flowRestricted: true` makes every operation on it FLOW_RESTRICTED_ERROR."""
        n = 0
        with self.lock:
            for seed in devices:
                record = rules.esim_record(seed, self.plans)
                self.esims[record["eid"]] = record
                n += 1
        return n

    def device(self, eid: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.esims.get(eid)
            return dict(record) if record else None

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change limits (`calls_per_minute`, `max_concurrency`), `operation_delay_seconds`,
        `read_delay_seconds`, `pending_http_status`, `retry_after_seconds`, callback switches (`drop_callback_rate`,
        `duplicate_callback_rate`, `callback_attempts`, `callback_retry_seconds`), `accounts`
        ({ApiKey: ApiSecret}), `plans` (list), or faults (FaultConfig fields)."""
        simple = {
            "operation_delay_seconds": float,
            "read_delay_seconds": float,
            "pending_http_status": int,
            "drop_callback_rate": float,
            "duplicate_callback_rate": float,
            "callback_attempts": int,
            "callback_retry_seconds": float,
            "max_entries": int,
        }
        with self.lock:
            for key, value in changes.items():
                if key == "accounts":
                    self.accounts = dict(value)
                elif key == "plans":
                    self.plans = {p["uuid"]: dict(p) for p in value}
                elif key == "retry_after_seconds":
                    self.retry_after_seconds = None if value is None else float(value)
                elif key in simple:
                    setattr(self, key, simple[key](value))
                else:
                    self._configure_base(key, value)
        return self.config()

    def _reseed(self, seed: int) -> None:
        self._cb_random.seed(seed)

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "accounts": sorted(self.accounts),
            "operation_delay_seconds": self.operation_delay_seconds,
            "read_delay_seconds": self.read_delay_seconds,
            "pending_http_status": self.pending_http_status,
            "retry_after_seconds": self.retry_after_seconds,
            "drop_callback_rate": self.drop_callback_rate,
            "duplicate_callback_rate": self.duplicate_callback_rate,
            "callback_attempts": self.callback_attempts,
            "callback_retry_seconds": self.callback_retry_seconds,
            "max_entries": self.max_entries,
            **self.faults.config.as_dict(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        with self.lock:
            pending = sum(1 for op in self.operations.values() if op.results is None)
            return {
                **self._base_stats(),
                "calls_by_path": dict(self.calls_by_path),
                "devices": len(self.esims),
                "operations": len(self.operations),
                "operations_pending": pending,
                **{
                    k: self.counts.get(k, 0)
                    for k in (
                        "operations_enqueued",
                        "operations_completed",
                        "operations_replayed",
                        "reads_enqueued",
                        "reads_completed",
                        "callbacks_sent",
                        "callbacks_dropped",
                        "callbacks_duplicated",
                        "callbacks_failed",
                    )
                },
                **self._applied_stats(self.applied_counts),
            }

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no operation is pending and every callback is delivered (or given up), so
        its receiver has it; True if that happened in time. For tests and the demo.

        `timeout` is real time, not the simulator's: it bounds a wait for threads, which must end
        even when a test holds the clock still."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def close(self) -> None:
        """Stop the completion thread and the callback senders."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._worker.join(5)
        self._callbacks.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- operations -------------------------------------------------------------------------------

    def _complete_loop(self) -> None:
        """Complete operations when due, then hand their callbacks to the sender pool."""
        with self._wake:
            while not self._closed:
                due = self._queue[0][0] if self._queue else None
                if due is None or due > self.clock.monotonic():
                    self.clock.wait(self._wake, due)
                    continue
                _, _, request_id = heapq.heappop(self._queue)
                op = self.operations[request_id]
                if op.kind in rules.READS:
                    op.results = rules.read_records(self.esims, self.plans, op.kind, op.query)
                    self.counts["reads_completed"] += 1
                else:
                    op.results = [self._apply_entry(op.kind, entry) for entry in op.entries]
                    self.counts["operations_completed"] += 1
                if op.callback_url:
                    self._schedule_callback(op)
                self._wake.notify_all()  # wait_idle

    def _apply_entry(self, kind: str, entry: Any) -> dict[str, Any]:
        """One entry's result (``rules.apply_entry``); counted when it changed the eSIM."""
        result, changed = rules.apply_entry(self.esims, self.plans, kind, entry)
        if changed:
            self.applied_counts[result["eid"]] += 1
        return result

    def _schedule_callback(self, op: rules.Operation) -> None:
        if self._cb_random.random() < self.drop_callback_rate:
            self.counts["callbacks_dropped"] += 1
            return
        times = 2 if self._cb_random.random() < self.duplicate_callback_rate else 1
        if times == 2:
            self.counts["callbacks_duplicated"] += 1
        sep = "&" if "?" in (op.callback_url or "") else "?"
        url = f"{op.callback_url}{sep}requestId={op.request_id}"
        self._sending += times
        for _ in range(times):
            self._callbacks.submit(self._send_callback, url, op.request_id)

    def _send_callback(self, url: str, request_id: str) -> None:
        try:
            for attempt in range(max(1, self.callback_attempts)):
                try:
                    if self._http.post(url, json={"requestId": request_id}).status_code < 300:
                        with self.lock:
                            self.counts["callbacks_sent"] += 1
                        return
                except httpx.HTTPError:
                    pass
                wait = self.callback_retry_seconds * (attempt + 1)
                if not pause_until(self.clock, self._wake, self.clock.monotonic() + wait, lambda: self._closed):
                    return  # closed
            with self.lock:
                self.counts["callbacks_failed"] += 1
        finally:
            with self._wake:
                self._sending -= 1
                self._wake.notify_all()

    # -- request plumbing -------------------------------------------------------------------------

    def _retry_after(self) -> str:
        if self.retry_after_seconds is not None:
            return f"{self.retry_after_seconds:g}"
        rate = self.gate.rate_per_second
        length = 1.0 if rate >= 1 or rate <= 0 else 1.0 / rate
        return str(max(1, math.ceil(length - self.clock.monotonic() % length)))

    async def _guarded(self, request: Request, handler: Any) -> Response:
        """Auth, limits and faults around one API call, then the handler."""
        self.total_calls += 1
        self.calls_by_path[f"{request.method} {request.url.path}"] += 1
        key = request.headers.get("apikey")
        secret = request.headers.get("apisecret")
        if not key or key not in self.accounts or self.accounts[key] != secret:
            self.auth_failures += 1
            return _error(401, "UNAUTHORIZED", "Invalid ApiKey or ApiSecret")
        state, refused = self.gate.enter(key)
        fault = Fault.NONE if refused else self.faults.draw(key)
        if refused or fault is Fault.BURST_429:  # answered at once: no latency first
            self.gate.leave(state)
            return answer_fault(fault, self._over_limit(), self.faults.config)
        return await self._faulted(
            key,
            state,
            lambda: handler(request, key),
            over_limit=self._over_limit,
            server_error=lambda: _error(500, "GENERIC_ERROR", "Internal server error"),
            drawn=fault,
        )

    def _over_limit(self) -> Response:
        self.over_limit_answers += 1
        calls = self.gate.rate_per_second * 60.0
        return _error(
            429,
            "GENERIC_ERROR",
            f"Rate limit exceeded ({calls:g} calls per minute)",
            {"Retry-After": self._retry_after()},
        )

    # -- API handlers -----------------------------------------------------------------------------

    async def _operate(self, request: Request, account: str) -> Response:
        kind = request.url.path.rsplit("/", 1)[1]  # one route per operation: always one of rules.OPERATIONS
        body = await self._body(request)
        entries = body.get("entries") if isinstance(body, dict) else None
        problem = rules.query_problem(request.query_params, kind) or rules.entries_problem(
            kind, entries, self.max_entries
        )
        return self._enqueue(request, account, kind, entries, {}, problem, self.operation_delay_seconds)

    async def _read_request(self, request: Request, account: str) -> Response:
        """`GET esims`, `esims/info` or `plans`: checked and queued; records only via operation-result."""
        kind = request.url.path.split("/api/v1/", 1)[1]
        q = request.query_params
        query: dict[str, Any] = {}
        problem = rules.query_problem(q, kind)
        try:
            offset, limit = int(q.get("offset") or 0), int(q.get("limit") or 100)
        except ValueError:
            problem = problem or "offset and limit must be integers"
        else:
            if offset < 0 or not 1 <= limit <= 100:
                problem = problem or "limit must be 1..100 and offset >= 0"
            query = {"offset": offset, "limit": limit}
        if kind == "esims/info":
            query = {"eid": q.get("eid") or "", "limit": query.get("limit")}
            problem = problem or (None if query["eid"] else "eid is required")
        elif kind == "plans":
            query = {}
        return self._enqueue(request, account, kind, [], query, problem, self.read_delay_seconds)

    def _enqueue(
        self,
        request: Request,
        account: str,
        kind: str,
        entries: Any,
        query: dict[str, Any],
        problem: str | None,
        delay: float,
    ) -> Response:
        """Queue one operation (or replay the one its requestId already names) and answer the
        synchronous reply; a malformed request is VALIDATION_ERROR and queues nothing."""
        request_id = request.query_params.get("requestId") or ""
        if not request_id:
            problem = "requestId is required"
        if problem:
            self.business_refusals += 1
            return _error(400, "VALIDATION_ERROR", problem)
        with self._wake:
            known = self.operations.get(request_id)
            if known is not None:
                if (known.account, known.kind, known.entries, known.query) != (account, kind, entries, query):
                    self.business_refusals += 1
                    return _error(400, "VALIDATION_ERROR", f"requestId {request_id} already used")
                self.counts["operations_replayed"] += 1
                return _json(200, known.reply)
            href = f"{str(request.base_url).rstrip('/')}/api/v1/operation-result?requestId={request_id}"
            reply = {
                "success": True,
                "message": f"{kind} request accepted",
                "link": {"operationResult": {"href": href}},
            }
            due = self.clock.monotonic() + delay
            self.operations[request_id] = rules.Operation(
                request_id,
                account,
                kind,
                list(entries),
                request.query_params.get("callbackUrl"),
                reply,
                due,
                None,
                query,
            )
            heapq.heappush(self._queue, (due, next(self._seq), request_id))
            self.counts["reads_enqueued" if kind in rules.READS else "operations_enqueued"] += 1
            self._wake.notify_all()  # all: callback senders pause on the same condition
        return _json(200, reply)

    async def _operation_result(self, request: Request, account: str) -> Response:
        problem = rules.query_problem(request.query_params, "operation-result")
        if problem:
            self.business_refusals += 1
            return _error(400, "VALIDATION_ERROR", problem)
        request_id = request.query_params.get("requestId") or ""
        with self.lock:
            op = self.operations.get(request_id)
            results = None if op is None else op.results
        if op is None or op.account != account:
            self.business_refusals += 1
            return _error(404, "VALIDATION_ERROR", f"No operation with requestId {request_id!r}")
        if results is None:
            return _json(
                self.pending_http_status,
                {"success": True, "status": 102, "message": "Processing", "requestId": request_id},
            )
        return _json(200, {"success": True, "requestId": request_id, "entries": results})

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """A path Teal does not serve, or a method the path does not take: the envelope, after auth
        (module docstring), never Starlette's plain text. Under /_sim: the admin endpoints' JSON."""
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        allow = {"Allow": exc.headers["Allow"]} if isinstance(exc, HTTPException) and exc.headers else None
        if request.url.path.startswith("/_sim"):
            return _json(status, {"error": f"no admin endpoint {request.method} {request.url.path}"}, allow)

        async def answer(req: Request, _account: str) -> Response:
            if status == 405:
                return _error(405, "GENERIC_ERROR", f"Request method {req.method} is not supported", allow)
            return _error(404, "GENERIC_ERROR", f"No endpoint {req.method} {req.url.path}")

        return await self._guarded(request, answer)

    def _build_app(self) -> Starlette:
        def api(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler)

            return endpoint

        v1 = API_PREFIX + "/api/v1"
        routes = [
            *(Route(f"{v1}/esims/{kind}", api(self._operate), methods=["POST"]) for kind in sorted(rules.OPERATIONS)),
            Route(v1 + "/esims", api(self._read_request), methods=["GET"]),
            Route(v1 + "/esims/info", api(self._read_request), methods=["GET"]),
            Route(v1 + "/plans", api(self._read_request), methods=["GET"]),
            Route(v1 + "/operation-result", api(self._operation_result), methods=["GET"]),
            *admin_routes(self),
        ]
        return Starlette(routes=routes, exception_handlers={404: self._no_route, 405: self._no_route})


def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: TealSimulator | None = None,
    accounts: Mapping[str, str] | None = None,
    calls_per_minute: float = 1000,
    faults: FaultConfig | None = None,
    operation_delay_seconds: float = 0.5,
) -> ServerHandle:
    """Start a Teal simulator (a new one unless `simulator` is given) in a background thread.
    The handle's `.simulator` is the TealSimulator, `.base_url` the API base."""
    sim = simulator or TealSimulator(
        accounts, calls_per_minute=calls_per_minute, faults=faults, operation_delay_seconds=operation_delay_seconds
    )
    return sim.run_in_thread(host, port)
