"""R4's largest hostile input: a CSV of 1,000,000 device rows (about 31 MB, under the 50 MB limit)
with a few bad rows mixed in, into a SQLite (or, with `--backend postgresql`, PostgreSQL) business database that holds those devices, three
ways in:

- the real CLI (`bulkchange submit`, a separate process);
- the HTTP upload (`POST /bulk-changes/csv` to `bulkchange serve`, a separate process), with
  `/healthz` asked every 20 ms while the file is validated and stored (its p99 and worst answer);
- a file drop (the inbox tick, `take_inbox_files`, in a separate process).

Reported for each: wall time, the process's peak RSS and what was stored (every good row NEW,
every bad row ERROR with its reason, nothing lost). One more row than the limit is refused as a
whole with a one-line error, before anything is stored.

    python bench/r4_million_rows.py [--rows N] [--ways cli,http,drop] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from harness import database, engine_for, free_port, iccid, record, seed_account

from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.file_drops import set_drop_settings
from bulkchange_pipeline.store.schema import bulk_change, tenant

BIN = Path(sys.executable).parent
BAD = {
    17: "8901990000000000017",  # wrong check digit
    500_000: "89019900000000000000000000",  # too long
    999_998: '=HYPERLINK("http://x")',
}  # formula injection


def write_csv(path: Path, rows: int) -> int:
    """The file, with the bad rows that fall inside it; returns how many bad rows it has."""
    with path.open("w") as out:
        out.write("iccid,targetStatus\n")
        for i in range(rows):
            out.write(f"{BAD.get(i, iccid(i))},DEACTIVATED\n")
    return sum(1 for i in BAD if i < rows)


# Runs the command from a small process of its own and prints its peak RSS last: the child of
# this (big, seeded) process would count this one's pages, copied at fork before its exec, in
# ru_maxrss (Linux keeps the larger of the pre-exec and the new image's high-water mark).
LAUNCH = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f"\\nMAXRSS_KB {usage.ru_maxrss}", flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float, float]:
    """Run ``cmd``; returns its exit code, output, wall seconds and its own peak RSS in MB (wait4
    in a small launcher, ``LAUNCH``)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    seconds = time.perf_counter() - started
    output, _, peak = proc.stdout.rpartition("\nMAXRSS_KB ")
    return proc.returncode, output, seconds, int(peak.strip()) / 1024


def _targets(seconds: float, peak_mb: float, p99_ms: float | None = None) -> str:
    """Issue 22's R4 targets next to a figure: <= 30 s, <= 400 MB, /healthz p99 < 100 ms."""
    checks = [f"<= 30 s {'met' if seconds <= 30 else 'NOT met'}", f"<= 400 MB {'met' if peak_mb <= 400 else 'NOT met'}"]
    if p99_ms is not None:
        checks.append(f"p99 < 100 ms {'met' if p99_ms < 100 else 'NOT met'}")
    return f" (targets: {', '.join(checks)})"


def last_bulk_change(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(bulk_change.c.id))).scalar_one()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def way_cli(url: str, engine: sa.Engine, path: Path, name: str, sp_id: int, rows: int) -> tuple[list[str], int]:
    common = ["--change-type", "1", "--service-provider", str(sp_id), "--tenant", name, "--max-rows", str(rows)]
    code, out, seconds, peak = run_measured(
        [str(BIN / "bulkchange"), "submit", str(path), *common, "--database-url", url]
    )
    assert code in (0, 1), out[-3000:]
    bc_id = last_bulk_change(engine)
    return [f"`bulkchange submit`: **{seconds:.1f} s, peak RSS {peak:,.0f} MB**{_targets(seconds, peak)}"], bc_id


def way_http(url: str, engine: sa.Engine, path: Path, tenant_id: int, sp_id: int) -> tuple[list[str], int]:
    key = create_api_key(engine, tenant_id, "bench-r4")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "bulkchange"), "serve", "--database-url", url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while not done.is_set():
                    t = time.perf_counter()
                    client.get("/healthz").raise_for_status()
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        started = time.perf_counter()
        with path.open("rb") as f:
            answer = httpx.post(
                f"{base}/bulk-changes/csv",
                headers={"X-API-Key": key},
                data={"changeType": "1", "serviceProviderId": str(sp_id)},
                files={"file": ("million.csv", f, "text/csv")},
                timeout=600,
            )
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
        assert answer.status_code == 201, answer.text[:2000]
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return [
        f"`POST /bulk-changes/csv` to `bulkchange serve`: **{seconds:.1f} s, server peak RSS {peak:,.0f} MB**; "
        f"`/healthz` asked {len(latencies)} times meanwhile: **p99 {p99:.0f} ms**, worst {latencies[-1] * 1000:.0f} ms"
        f"{_targets(seconds, peak, p99)}"
    ], answer.json()["id"]


DROP_TICKS = """
import sys
import sqlalchemy as sa
from bulkchange_pipeline.intake.drops import take_inbox_files
from bulkchange_pipeline.store.db import make_engine
engine = make_engine(sys.argv[1])
seen = take_inbox_files(engine, {}).seen
report = take_inbox_files(engine, seen)
print(report.taken, report.errors, report.lines)
"""


def way_drop(
    url: str, engine: sa.Engine, path: Path, folder: Path, tenant_id: int, sp_id: int
) -> tuple[list[str], int]:
    inbox = folder / "inbox"
    inbox.mkdir()
    set_drop_settings(engine, tenant_id, inbox_url=str(inbox), service_provider_id=sp_id, change_type=1)
    target = inbox / "million.csv"
    target.write_bytes(path.read_bytes())
    os.utime(target, (time.time() - 120, time.time() - 120))
    code, out, seconds, peak = run_measured([sys.executable, "-c", DROP_TICKS, url])
    assert code == 0 and out.startswith("1 0"), out[-3000:]
    return [
        f"file drop (two inbox ticks, the second takes it): **{seconds:.1f} s, peak RSS {peak:,.0f} MB**{_targets(seconds, peak)}"
    ], (last_bulk_change(engine))


def main(rows: int, ways: list[str], keep: bool = True, backend: str = "sqlite") -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-r4-"))
    lines: list[str] = []
    with database(backend) as url:
        engine = engine_for(url)
        seeded = time.perf_counter()
        ids = seed_account(engine, "http://127.0.0.1:9/rws/api/v1", rows)[0]  # not its device list: memory
        if backend == "postgresql":
            # What autovacuum does within a minute of a million inserts: the planner's statistics of
            # the inventory. Without them the first lookups plan on an empty table.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
        seeded = time.perf_counter() - seeded
        tenant_id, sp_id = ids["tenant_id"], ids["service_provider_id"]
        with engine.connect() as conn:
            name = conn.execute(sa.select(tenant.c.name).where(tenant.c.id == tenant_id)).scalar_one()
        path = folder / "million.csv"
        bad = write_csv(path, rows)
        size_mb = path.stat().st_size / 1024 / 1024
        lines.append(
            f"- a {size_mb:.0f} MB CSV, {rows:,} rows ({bad} bad: check digit, length, formula) against {rows:,} "
            f"devices in {'PostgreSQL' if backend == 'postgresql' else 'SQLite'} (seeded in {seeded:.0f} s); `uptime` load before: {os.getloadavg()[0]:.2f}"
        )
        for way in ways:
            if way == "cli":
                found, bc_id = way_cli(url, engine, path, name, sp_id, rows)
            elif way == "http":
                found, bc_id = way_http(url, engine, path, tenant_id, sp_id)
            else:
                found, bc_id = way_drop(url, engine, path, folder, tenant_id, sp_id)
            counts = count_rows_by_status(engine, bc_id)
            assert counts == {"NEW": rows - bad, "ERROR": bad}, counts
            lines.extend(f"- {line}; stored {counts['NEW']:,} NEW and {counts['ERROR']} ERROR rows" for line in found)

        if "cli" in ways:
            with path.open("a") as out:
                out.write(f"{iccid(rows)},DEACTIVATED\n")
            before = last_bulk_change(engine)
            common = ["--change-type", "1", "--service-provider", str(sp_id), "--tenant", name, "--max-rows", str(rows)]
            code, out, over_seconds, _ = run_measured(
                [str(BIN / "bulkchange"), "submit", str(path), *common, "--database-url", url]
            )
            message = out.strip()
            assert code == 2 and len(message.splitlines()) == 1, message[-2000:]
            assert last_bulk_change(engine) == before
            lines.append(
                f"- one row more than the limit: refused in {over_seconds:.1f} s with exit code 2 and one line "
                f'("{message[:120]}"), nothing stored'
            )
        engine.dispose()
    lines.append(f"- `uptime` load after: {os.getloadavg()[0]:.2f}")
    if not keep:
        print("\n".join(lines))
        return
    record(f"R4 a {rows:,}-row CSV through the CLI, the HTTP upload and a file drop (bench/r4_million_rows.py)", lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ways", default="cli,http,drop")
    parser.add_argument("--no-record", action="store_true", help="print the figures; do not append them to RESULTS.md")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the business database (peak RSS is ours, not the server's)",
    )
    args = parser.parse_args()
    main(args.rows, args.ways.split(","), not args.no_record, args.backend)
