"""The HTTP ceiling: N Jasper PUTs made by a bare httpx async loop against the simulator, no
database, no Dagster. The best this machine can do; P1 is measured against it.

The loop spreads its calls in flight over clients of at most ``POOL_CONNECTIONS`` connections, as
the carrier clients do: one httpx pool's CPU per call grows with the square of its connections
(one pool of 64 made about 90 calls/s against a 150 ms carrier), and the ceiling is the best bare
httpx can do, not what one oversized pool does.

    python bench/ceiling.py [N] [CONCURRENCY] [LATENCY_MS]
"""

from __future__ import annotations

import asyncio
import base64
import math
import sys
import time

import httpx
from harness import KEY, USER, iccid, jasper_simulator, record, seed_simulator

from bulkchange_pipeline.carriers.http import POOL_CONNECTIONS


async def ceiling(base: str, n: int, concurrency: int) -> float:
    auth = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(iccid(i))
    count = math.ceil(concurrency / POOL_CONNECTIONS)
    per_pool = math.ceil(concurrency / count)
    clients = [
        httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": auth},
            timeout=30,
            limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
        )
        for _ in range(count)
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            dev = queue.get_nowait()
            r = await client.put(f"/devices/{dev}", json={"status": "DEACTIVATED"})
            r.raise_for_status()

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(clients[i % count]) for i in range(concurrency)))
        return time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()


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
    latency = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    rate = measure(n, c, latency)
    record(
        "HTTP ceiling (bench/ceiling.py)",
        [f"- {n} PUTs, {c} concurrent, simulator answering in {latency:g} ms, bare httpx: **{rate:,.0f} calls/s**"],
    )
