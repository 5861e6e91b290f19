"""P1 throughput: an N-device Jasper StatusUpdate through the real job, on SQLite and PostgreSQL,
side by side with the bare-httpx ceiling and the naive one-call-one-commit loop, in two cases:

- zero latency (the simulator answers at once, no rate limit): the ceiling at its best number of
  calls in flight on this machine (a sweep), and the pipeline's account given that concurrency;
- a carrier answering in ``--latency-ms`` (150 by default) with ``--latency-concurrency`` calls in
  flight (64): ceiling and pipeline at that same latency and concurrency, the naive loop at that
  latency (one call at a time, so a few hundred devices give its rate).

Each backend's ceiling is measured just before its pipeline run, so both see the same machine
load (other work on this 2-core machine moves the figures; the load average is printed with each).

    python bench/p1_throughput.py [--devices N] [--naive-devices N] [--latency-ms MS]
        [--latency-concurrency C] [--latency-naive-devices N] [--backends sqlite,postgresql]
        [--cases zero,latency] [--no-record]
"""

from __future__ import annotations

import argparse
import os

import ceiling
import naive
from harness import database, engine_for, jasper_simulator, record, seed_account, seed_simulator, sim_stats, submit
from pipeline import run_pipeline

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status


def pipeline_rate(n: int, backend: str, latency_ms: float = 0, concurrency: int = 16) -> tuple[float, list[int], dict]:
    with jasper_simulator(latency_ms=latency_ms) as root, database(backend) as url:
        engine = engine_for(url)
        ids, devices = seed_account(engine, root + "/rws/api/v1", n, concurrency=concurrency, batch_size=500)
        seed_simulator(root, [d["iccid"] for d in devices])
        bc = submit(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
        run = run_pipeline(url)
        counts = count_rows_by_status(engine, bc)
        stats = sim_stats(root)
        engine.dispose()
    assert run.success and counts == {"PROCESSED": n}, counts
    assert stats["applied_more_than_once"] == 0
    return n / run.seconds, run.steps, stats


def load() -> str:
    """The 1-minute load average: how busy the machine was (other helpers' tests and benchmarks)."""
    return f"{os.getloadavg()[0]:.1f}"


def row(case: str, backend: str, n: int, conc: int, rate: float, top: float, base: float, steps: int, ld: str) -> str:
    return (
        f"| {case} | {backend} | {conc} | {n:,} | **{rate:,.0f}** | {top:,.0f} | {base:,.1f} | "
        f"**{rate / top:.0%}** | **{rate / base:.1f}x** | {steps} | {ld} |"
    )


HEADER = [
    "| case | backend | calls in flight | devices | pipeline devices/s | ceiling calls/s | naive devices/s "
    "| pipeline / ceiling | pipeline / naive | steps | load (1 min) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--naive-devices", type=int, default=5_000, help="naive loop sample at zero latency")
    p.add_argument(
        "--ceiling-devices", type=int, default=20_000, help="calls per ceiling measurement (at most --devices)"
    )
    p.add_argument("--latency-ms", type=float, default=150.0)
    p.add_argument("--latency-concurrency", type=int, default=64)
    p.add_argument("--latency-naive-devices", type=int, default=200, help="naive loop sample at latency")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--cases", default="zero,latency")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = p.parse_args()
    n, backends, cases = args.devices, args.backends.split(","), args.cases.split(",")
    ceil_n = min(n, args.ceiling_devices)
    lines = [*HEADER]
    notes = []
    if "zero" in cases:
        # The ceiling at its best number of calls in flight on this machine; the pipeline's
        # account gets that same concurrency.
        sweep = {c: ceiling.measure(min(ceil_n, 10_000), c) for c in (4, 8, 16)}
        conc = max(sweep, key=sweep.__getitem__)
        notes.append(
            f"- zero latency: calls in flight chosen by a ceiling sweep over {min(ceil_n, 10_000):,} calls: "
            + ", ".join(f"{c} in flight {r:,.0f}/s" for c, r in sweep.items())
        )
        for backend in backends:
            base = naive.measure(min(n, args.naive_devices), backend)
            top = ceiling.measure(ceil_n, conc)
            ld = load()
            rate, steps, _ = pipeline_rate(n, backend, concurrency=conc)
            lines.append(row("0 ms", backend, n, conc, rate, top, base, steps[0], ld))
            print(lines[-1], flush=True)
    if "latency" in cases:
        lat, conc = args.latency_ms, args.latency_concurrency
        for backend in backends:
            base = naive.measure(min(n, args.latency_naive_devices), backend, latency_ms=lat)
            top = ceiling.measure(ceil_n, conc, latency_ms=lat)
            ld = load()
            rate, steps, _ = pipeline_rate(n, backend, latency_ms=lat, concurrency=conc)
            lines.append(row(f"{lat:g} ms", backend, n, conc, rate, top, base, steps[0], ld))
            print(lines[-1], flush=True)
        notes.append(
            f"- {lat:g} ms: ideal at {conc} in flight {conc / (lat / 1000):,.0f} calls/s; naive loop over "
            f"{min(n, args.latency_naive_devices):,} devices (one call at a time)"
        )
    notes.append(
        f"- ceiling: {ceil_n:,} calls per measurement, measured just before each pipeline run; "
        f"naive at zero latency over {min(n, args.naive_devices):,} devices"
    )
    if args.no_record:
        print("\n".join(lines + [""] + notes))
    else:
        record(
            f"P1 throughput and latency: {n:,}-device Jasper StatusUpdate (bench/p1_throughput.py)",
            lines + [""] + notes,
        )


if __name__ == "__main__":
    main()
