"""Shared parts of the reliability tests: simulators that can hold a call (to stop a run at a chosen
point) and record what they applied, real run-worker processes, and consistency checks.

The simulators are the production ones, subclassed only to *observe* (per-device edit order,
per-device accepted requests) and to *hold* a request: a held request is answered 503 after the
test releases it and is never applied, so "the worker was killed before this call" is exact.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from bulkchange_pipeline.simulators import jasper_rules
from bulkchange_pipeline.simulators import jasper_soap_wire as soap_wire
from bulkchange_pipeline.simulators.jasper import JasperSimulator, _error
from bulkchange_pipeline.simulators.jasper_soap import TerminalService
from bulkchange_pipeline.simulators.thingspace import ThingSpaceSimulator, _json
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.schema import (
    bulk_change_log,
    device,
    device_change,
    device_history,
)

FINAL = {"PROCESSED", "API_FAILED", "ERROR", "CANCELLED"}


class Hold:
    """A gate a simulator handler waits at until the test releases it (then answers 503)."""

    def __init__(self) -> None:
        self.held = 0
        self.released = threading.Event()

    async def wait(self) -> None:
        self.held += 1
        while not self.released.is_set():
            await asyncio.sleep(0.005)


class HoldingTerminalService(TerminalService):
    """The simulator's SOAP Terminal service, held and counted like REST PUTs: an EditTerminal that
    ``hold_when`` picks waits for the test, then is answered a server fault and never applied."""

    sim: HoldingJasper

    async def _call(self, operation: str, payload: Any, username: str) -> Any:
        if operation == "EditTerminal":
            fields = soap_wire.validate_payload(payload)
            iccid = fields.get("iccid", "")
            if self.sim.hold_when is not None and self.sim.hold_when(iccid, fields):
                await self.sim.holder.wait()
                raise soap_wire.SoapFault(soap_wire.FAULT_SYSTEM, "held by the test: not applied", faultcode="Server")
            self.sim.puts[iccid] += 1
        return await super()._call(operation, payload, username)


class HoldingJasper(JasperSimulator):
    """The Jasper simulator, plus: ``hold_when(iccid, edit body) -> bool`` decides whether a PUT
    (or a SOAP EditTerminal: the body is then the request's fields) is held (never applied);
    ``puts[iccid]`` counts the PUTs and EditTerminals that reached the device (a repeat changes
    nothing, so only this count shows a re-send); ``edits[iccid]`` lists every applied edit as
    (monotonic time, edits) in the order the carrier applied them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_when: Callable[[str, dict[str, Any]], bool] | None = None
        self.holder = Hold()
        self.edits: dict[str, list[tuple[float, dict[str, str]]]] = defaultdict(list)
        self.intervals: list[tuple[float, float]] = []
        self.puts: Counter[str] = Counter()  # PUTs that reached the device (held ones excluded)
        self.soap = HoldingTerminalService(self)
        self.app = self._build_app()  # its routes serve the holding Terminal service

    async def _guarded(self, request: Request, handler: Any) -> Response:
        start = time.monotonic()
        try:
            return await super()._guarded(request, handler)
        finally:
            self.intervals.append((start, time.monotonic()))

    async def _put_device(self, request: Request, account: str) -> Response:
        iccid = request.path_params["iccid"]
        if self.hold_when is not None and self.hold_when(iccid, await self._edit_body(request)):
            await self.holder.wait()
            return _error(503, jasper_rules.ERR_SERVER, "held by the test: not applied")
        self.puts[iccid] += 1
        return await super()._put_device(request, account)

    @staticmethod
    async def _edit_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())  # Starlette keeps the body for the handler
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _set(self, iccid: str, edits: Any) -> bool:
        changed = super()._set(iccid, edits)
        if changed:
            self.edits[iccid].append((time.monotonic(), dict(edits)))
        return changed

    def call_window(self) -> tuple[float, float]:
        """First and last time an edit was applied (monotonic)."""
        times = [t for log in self.edits.values() for t, _ in log]
        return min(times), max(times)


class HoldingThingSpace(ThingSpaceSimulator):
    """The ThingSpace simulator, plus: ``hold_action(n) -> None | "before" | "after"`` for the n-th
    action request (0-based): "before" holds it unaccepted (never applied), "after" accepts it and
    holds the answer (the carrier has the request, the client never hears its requestId).
    ``accepted[iccid]`` counts the accepted requests that named each device."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.hold_action: Callable[[int], str | None] = lambda n: None
        self.holder = Hold()
        self.actions_seen = 0
        self.accepted: Counter[str] = Counter()
        self.action_times: list[float] = []
        self.intervals: list[tuple[float, float]] = []
        super().__init__(*args, **kwargs)

    async def _guarded(self, request: Request, handler: Any, needs_session: bool = True) -> Response:
        start = time.monotonic()
        try:
            return await super()._guarded(request, handler, needs_session)
        finally:
            self.intervals.append((start, time.monotonic()))

    def _action(self, action: str) -> Any:
        inner = super()._action(action)

        async def handler(request: Request, user: str) -> Response:
            n = self.actions_seen
            self.actions_seen += 1
            mode = self.hold_action(n)
            if mode == "before":
                await self.holder.wait()
                return _json(503, {"fault": {"code": "101503", "message": "held by the test: not accepted"}})
            response = await inner(request, user)
            self.action_times.append(time.monotonic())
            if mode == "after":
                await self.holder.wait()
            return response

        return handler

    def _process(self, rid: str, action: str, account: str, devices: list, params: dict) -> list:
        with self._lock:
            for ids in devices:
                for ident in ids:
                    if ident.get("kind") == "iccid":
                        self.accepted[str(ident["id"])] += 1
        return super()._process(rid, action, account, devices, params)


class Worker:
    """A run worker: a child Python process executing one partition of a job on the persistent
    Dagster instance named by DAGSTER_HOME (``worker.py``), as the run launcher would."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def ready(self) -> bool:
        """Imports done: an order starts the run at once."""
        return Path(f"{self.log_path}.ready").exists()

    def order(
        self, partition_key: str, job: str = "process_bulk_change_job", carriers: dict[str, Any] | None = None
    ) -> Worker:
        """Start the run, with this process's environment as it is now (DAGSTER_HOME, database URL,
        carrier credentials); ``carriers`` overrides CarrierGatewayResource settings."""
        assert self.proc.stdin is not None
        order = {"key": partition_key, "job": job, "env": dict(os.environ), "carriers": carriers}
        self.proc.stdin.write((json.dumps(order) + "\n").encode())
        self.proc.stdin.close()
        return self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finally blocks, connections dropped mid-flight."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class WarmWorkers:
    """Run workers started ahead: each imports Dagster and the definitions (seconds of CPU) before
    it is given a partition, so a test does not wait for that. ``take`` hands out the warm one and
    starts warming the next; ``start`` takes one and gives it its order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._n = 0
        self._next = self._spawn()

    def _spawn(self) -> Worker:
        self._n += 1
        log_path = self.log_dir / f"worker-{self._n}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bulkchange_pipeline_tests.reliability.worker", f"{log_path}.ready"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        return Worker(proc, log_path)

    def take(self) -> Worker:
        worker, self._next = self._next, self._spawn()
        return worker

    def start(
        self, partition_key: str, job: str = "process_bulk_change_job", carriers: dict[str, Any] | None = None
    ) -> Worker:
        return self.take().order(partition_key, job, carriers)

    def close(self) -> None:
        self._next.kill()


def busy_overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds during which both carriers had a call in flight (intervals: (start, end))."""

    def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[list[float]] = []
        for start, end in sorted(intervals):
            if out and start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([start, end])
        return [(s, e) for s, e in out]

    total = 0.0
    for s1, e1 in union(a):
        for s2, e2 in union(b):
            total += max(0.0, min(e1, e2) - max(s1, s2))
    return total


def busy_time(intervals: list[tuple[float, float]]) -> float:
    return busy_overlap(intervals, intervals)


def add_devices(
    engine: sa.Engine, ids: dict[str, int], iccids: list[str], status: str = "ACTIVATED"
) -> list[dict[str, Any]]:
    """Devices for a further service provider (``factories.make_devices`` numbers from the first)."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(device),
            [
                {
                    "tenant_id": ids["tenant_id"],
                    "service_provider_id": ids["service_provider_id"],
                    "iccid": i,
                    "status": status,
                    "updated_at": utcnow(),
                }
                for i in iccids
            ],
        )
        found = conn.execute(
            sa.select(device.c.id, device.c.iccid, device.c.status)
            .where(device.c.iccid.in_(iccids))
            .order_by(device.c.id)
        )
        return [dict(r._mapping) for r in found]


def row_statuses(engine: sa.Engine, bulk_change_id: int) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(
                device_change.c.id,
                device_change.c.device_id,
                device_change.c.iccid,
                device_change.c.status,
                device_change.c.carrier_request_id,
                device_change.c.processed_at,
            )
            .where(device_change.c.bulk_change_id == bulk_change_id)
            .order_by(device_change.c.id)
        ).all()


def assert_results_consistent(
    engine: sa.Engine, bulk_change_ids: Iterable[int], *, field: str, one_exchange_per_row: bool = False
) -> None:
    """Every row final with a processed time; every PROCESSED row has its log rows, and the device
    and its history agree with it: exactly one history entry per (device, field, bulk change), whose
    new value the device holds unless a later bulk change changed it again; no log row repeated."""
    ids = list(bulk_change_ids)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(device_change).where(device_change.c.bulk_change_id.in_(ids))).all()
        logs = conn.execute(sa.select(bulk_change_log).where(bulk_change_log.c.bulk_change_id.in_(ids))).all()
        hist = conn.execute(
            sa.select(device_history).where(device_history.c.bulk_change_id.in_(ids), device_history.c.field == field)
        ).all()
        devices = {d.id: d for d in conn.execute(sa.select(device)).all()}
    assert rows, "no rows"
    assert all(r.status in FINAL and r.processed_at is not None for r in rows), Counter(r.status for r in rows)
    logs_per_row = Counter(log.device_change_id for log in logs if log.device_change_id is not None)
    assert all(logs_per_row[r.id] >= 1 for r in rows if r.status == "PROCESSED"), "a PROCESSED row without its log row"
    if one_exchange_per_row:
        assert max(logs_per_row.values()) == 1, [k for k, v in logs_per_row.items() if v > 1][:5]
    exchanges = Counter(
        (log.device_change_id, log.description, log.request_text, log.response_text, log.created_at) for log in logs
    )
    assert max(exchanges.values()) == 1, "a log row was written twice"
    per_key = Counter((h.device_id, h.bulk_change_id) for h in hist)
    assert max(per_key.values(), default=1) == 1, "a history entry was written twice"
    processed = [r for r in rows if r.status == "PROCESSED"]
    latest: dict[int, Any] = {}
    for h in sorted(hist, key=lambda h: h.id):
        latest[h.device_id] = h.new_value
    for r in processed:
        assert r.device_id in latest or _already_there(r, devices, field), f"row {r.id}: no history for {field}"
    for device_id, value in latest.items():
        assert str(getattr(devices[device_id], field)) == value, (
            f"device {device_id}: {field} disagrees with its history"
        )


def _already_there(row: Any, devices: dict[int, Any], field: str) -> bool:
    """A change to the value the device already had writes no history entry."""
    target = (row.change_request or {}).get(field)
    return target is not None and str(getattr(devices[row.device_id], field)) == str(target)
