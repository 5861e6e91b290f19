"""The HTTP ceiling: N Jasper PUTs made by a bare httpx async loop against the simulator, no
database, no Dagster. The best this machine can do; P1 is measured against it.

    python bench/ceiling.py [N] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time

import httpx
from harness import KEY, USER, iccid, jasper_simulator, record, seed_simulator


async def ceiling(base: str, n: int, concurrency: int) -> float:
    auth = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(iccid(i))
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": auth},
        timeout=30,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                dev = queue.get_nowait()
                r = await client.put(f"/devices/{dev}", json={"status": "DEACTIVATED"})
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def measure(n: int, concurrency: int = 16, latency_ms: float = 0) -> float:
    """Devices per second of the bare loop (starts its own simulator, answering after
    ``latency_ms``)."""
    with jasper_simulator(latency_ms=latency_ms) as root:
        seed_simulator(root, [iccid(i) for i in range(n)])
        seconds = asyncio.run(ceiling(root + "/rws/api/v1", n, concurrency))
    return n / seconds


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rate = measure(n, c)
    record("HTTP ceiling (bench/ceiling.py)", [f"- {n} PUTs, {c} concurrent, bare httpx: **{rate:,.0f} calls/s**"])
