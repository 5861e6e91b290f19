"""The admin endpoints every simulator serves under ``/_sim`` (seed, inspect, stats, faults, reset).

Tests and benchmarks drive a simulator in another process through these; each simulator only
provides the methods of ``Administered``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Administered(Protocol):
    applied_counts: Any

    def seed_devices(self, devices: Any) -> int: ...
    def device(self, key: str) -> dict[str, Any] | None: ...
    def stats(self) -> dict[str, Any]: ...
    def config(self) -> dict[str, Any]: ...
    def configure(self, **changes: Any) -> dict[str, Any]: ...
    def reset_counters(self) -> None: ...


def admin_routes(sim: Administered) -> list[Route]:
    """``POST /_sim/devices`` (seed), ``GET /_sim/devices/{key}``, ``GET /_sim/stats``,
    ``GET|POST /_sim/config`` (unknown keys are a 400, so a typo never leaves faults off) and
    ``POST /_sim/reset`` (counters only; device state is kept)."""

    async def seed(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
            devices = payload.get("devices", []) if isinstance(payload, dict) else payload
            n = sim.seed_devices(devices)
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"seeded": n, "devices": sim.stats().get("devices")})

    async def device(request: Request) -> Response:
        key = request.path_params["key"]
        record = sim.device(key)
        if record is None:
            return JSONResponse({"error": f"no device {key}"}, status_code=404)
        return JSONResponse({"device": record, "applied": sim.applied_counts.get(key, 0)})

    async def stats(request: Request) -> Response:
        return JSONResponse(sim.stats())

    async def config(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(sim.config())
        try:
            return JSONResponse(sim.configure(**json.loads(await request.body())))
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"error": f"bad config: {exc}"}, status_code=400)

    async def reset(request: Request) -> Response:
        sim.reset_counters()
        return JSONResponse(sim.stats())

    return [
        Route("/_sim/devices", seed, methods=["POST"]),
        Route("/_sim/devices/{key}", device, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/config", config, methods=["GET", "POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]
