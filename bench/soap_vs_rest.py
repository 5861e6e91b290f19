"""What SOAP costs against REST: N Jasper StatusUpdates through the production clients
(`JasperClient`, `JasperSoapClient`: the same CarrierHttp, pacing off), against one simulator in its
own process, no database and no Dagster. Reports calls/s and this process's CPU seconds per 1,000
devices, so the price of zeep's envelopes and parsing is a number, not a guess.

    python bench/soap_vs_rest.py [N] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

import httpx
from harness import KEY, USER, iccid, jasper_simulator, record, reset_sim_counters, seed_simulator, sim_stats

from bulkchange_pipeline.carriers import CarrierAccount, DeviceChange, build_adapter
from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus

SOAP_PASSWORD, LICENSE_KEY = "bench-soap-password", "bench-license-key"


def account(root: str, protocol: str, concurrency: int) -> CarrierAccount:
    soap = protocol == "soap"
    return CarrierAccount(
        service_provider_id=1,
        integration="jasper",
        base_url=root if soap else root + "/rws/api/v1",
        username=USER,
        secret=SOAP_PASSWORD if soap else KEY,
        rate_per_second=0,
        max_concurrency=concurrency,
        protocol=protocol,
        extra={"license_key": LICENSE_KEY} if soap else {},
    )


async def apply_all(acct: CarrierAccount, changes: Sequence[DeviceChange]) -> tuple[float, float, int]:
    client = build_adapter(acct)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        results = await client.apply(changes)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await client.aclose()
    return wall, cpu, sum(r.status is DeviceChangeStatus.PROCESSED for r in results)


def measure(n: int, concurrency: int) -> list[str]:
    lines = []
    with jasper_simulator(rate=0, concurrency=0) as root:
        httpx.post(
            root + "/_sim/config",
            json={"soap_accounts": {USER: SOAP_PASSWORD}, "license_keys": [LICENSE_KEY]},
            timeout=10,
        ).raise_for_status()
        for protocol, target in (("rest", "DEACTIVATED"), ("soap", "ACTIVATED")):
            iccids = [iccid(i) for i in range(n)]
            seed_simulator(root, iccids, status="ACTIVATED" if target == "DEACTIVATED" else "DEACTIVATED")
            reset_sim_counters(root)
            changes = [
                DeviceChange(i, i, ChangeType.STATUS_UPDATE, d, None, None, None, {"status": target})
                for i, d in enumerate(iccids)
            ]
            wall, cpu, ok = asyncio.run(apply_all(account(root, protocol, concurrency), changes))
            calls = sim_stats(root)["total_calls"]
            lines.append(
                f"- {protocol}: {ok:,} of {n:,} devices PROCESSED in {wall:.1f} s = **{n / wall:,.0f} calls/s**, "
                f"**{cpu / n * 1000:.2f} CPU-s per 1,000 devices** in the client process ({calls:,} simulator calls)"
            )
    return lines


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    lines = measure(n, c)
    lines.append(
        f"- {c} concurrent, pacing off, simulator in its own process; the difference is zeep building and "
        "reading envelopes (and the simulator validating them against the XSD)"
    )
    record("Jasper SOAP vs REST client cost (bench/soap_vs_rest.py)", lines)
