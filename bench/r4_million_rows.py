"""R4's largest hostile input: a CSV of 1,000,000 device rows (about 31 MB, under the 50 MB limit)
submitted through the real CLI (`bulkchange submit`, a separate process) into a SQLite business
database that holds those 1,000,000 devices, with a few bad rows mixed in.

Reported: wall time, the CLI process's peak RSS, and what was stored (every good row NEW, every bad
row ERROR with its reason, nothing lost). One more row than the limit is refused as a whole with a
one-line error, before anything is stored.

    python bench/r4_million_rows.py [ROWS]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from harness import database, engine_for, iccid, record, seed_account

from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
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


def cli(*args: str, url: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run the CLI; returns the result, wall seconds and the child's peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "bulkchange"), *args, "--database-url", url],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return done, seconds, max(peak, before) / 1024


def main(rows: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-r4-"))
    with database("sqlite") as url:
        engine = engine_for(url)
        seeded = time.perf_counter()
        ids, _ = seed_account(engine, "http://127.0.0.1:9/rws/api/v1", rows)
        seeded = time.perf_counter() - seeded
        with engine.connect() as conn:
            name = conn.execute(sa.select(tenant.c.name).where(tenant.c.id == ids["tenant_id"])).scalar_one()
        path = folder / "million.csv"
        bad = write_csv(path, rows)
        size_mb = path.stat().st_size / 1024 / 1024
        common = (
            "--change-type",
            "1",
            "--service-provider",
            str(ids["service_provider_id"]),
            "--tenant",
            name,
            "--max-rows",
            str(rows),
        )  # the default limit is 1,000,000: the same for the default run

        done, seconds, peak = cli("submit", str(path), *common, url=url)
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
        with engine.connect() as conn:
            bc_id = conn.execute(sa.select(sa.func.max(bulk_change.c.id))).scalar_one()
        counts = count_rows_by_status(engine, bc_id)
        assert counts == {"NEW": rows - bad, "ERROR": bad}, counts

        with path.open("a") as out:
            out.write(f"{iccid(rows)},DEACTIVATED\n")
        over, over_seconds, _ = cli("submit", str(path), *common, url=url)
        message = (over.stdout + over.stderr).strip()
        assert over.returncode == 2 and len(message.splitlines()) == 1, message[-2000:]
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one() == 1
        engine.dispose()
    record(
        f"R4 a {rows:,}-row CSV through the CLI (bench/r4_million_rows.py)",
        [
            f"- `bulkchange submit` of a {size_mb:.0f} MB CSV, {rows:,} rows ({bad} bad: check digit, length, formula) "
            f"against {rows:,} devices in SQLite (seeded in {seeded:.0f} s): **{seconds:.0f} s, peak RSS {peak:,.0f} MB**; "
            f"stored {counts.get('NEW', 0):,} NEW and {counts.get('ERROR', 0)} ERROR rows with their reasons",
            f"- one row more than the limit: refused in {over_seconds:.1f} s with exit code 2 and one line "
            f'("{message[:120]}"), nothing stored',
        ],
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
