"""Shared set-up for the benchmarks: a Jasper simulator in its own process, a fresh business
database (SQLite file or a new PostgreSQL database), N devices in both, and RESULTS.md output.

The simulator runs in a separate process so that the code under test and the simulator do not
share one interpreter (and one GIL); every benchmark in a run talks to the same kind of server.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus, luhn_check_digit  # noqa: E402
from bulkchange_pipeline.store import migrate  # noqa: E402
from bulkchange_pipeline.store.bulk_changes import NewBulkChange, create_bulk_change  # noqa: E402
from bulkchange_pipeline.store.db import make_engine, utcnow  # noqa: E402
from bulkchange_pipeline.store.device_rows import NewDeviceChange  # noqa: E402
from bulkchange_pipeline.store.schema import device, service_provider, tenant  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
USER, KEY = "bench", "bench-api-key"
PG_ADMIN = os.environ.get("BULKCHANGE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def iccid(n: int) -> str:
    body = f"8901990{n:012d}"
    return body + luhn_check_digit(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jasper_simulator(
    rate: float = 0, concurrency: int = 0, latency_ms: float = 0, accounts: dict[str, str] | None = None
) -> Iterator[str]:
    """Start `python -m bulkchange_pipeline.simulators jasper` and yield its API base URL.

    ``accounts`` ({username: apiKey}, default the one bench account): the simulator limits each
    account on its own (``rate`` calls/s and ``concurrency`` in flight per account)."""
    port = free_port()
    logins = [f"{user}:{key}" for user, key in (accounts or {USER: KEY}).items()]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkchange_pipeline.simulators",
            "jasper",
            "--port",
            str(port),
            "--rate",
            str(rate),
            "--concurrency",
            str(concurrency),
            "--latency-ms",
            str(latency_ms),
            *(arg for login in logins for arg in ("--account", login)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{root}/_sim/stats", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(10)


def seed_simulator(root: str, iccids: list[str], status: str = "ACTIVATED") -> None:
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(iccids), 20_000):
            chunk = [{"iccid": i, "status": status} for i in iccids[start : start + 20_000]]
            client.post(f"{root}/_sim/devices", json=chunk).raise_for_status()


def sim_stats(root: str) -> dict:
    return httpx.get(f"{root}/_sim/stats", timeout=30).json()


def reset_sim_counters(root: str) -> None:
    httpx.post(f"{root}/_sim/reset", timeout=30).raise_for_status()


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, migrated business database URL on ``backend`` ('sqlite' or 'postgresql')."""
    if backend == "sqlite":
        path = ROOT / ".bulkchange" / "bench" / f"bench-{uuid.uuid4().hex[:8]}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"bc_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def pg_databases(prefix: str = "bc_bench") -> Iterator[tuple[str, str]]:
    """Fresh PostgreSQL business and Dagster databases (psycopg2 URLs), dropped afterwards: what
    the ``deploy-local`` benchmarks start the production shape on."""
    stem = f"{prefix}_{uuid.uuid4().hex[:8]}"
    names = (stem, f"{stem}_dagster")
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(PG_ADMIN)
    try:
        business, dagster = (
            base.set(drivername="postgresql+psycopg2", database=n).render_as_string(hide_password=False) for n in names
        )
        yield business, dagster
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def load_average() -> str:
    """The machine's 1/5/15-minute load (``uptime``), recorded next to a figure measured while
    other work may share the machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def seed_account(
    engine: sa.Engine,
    base_url: str,
    n: int,
    *,
    rate: float = 0,
    concurrency: int = 16,
    batch_size: int = 500,
    status: str = "ACTIVATED",
    integration: str = "jasper",
    credentials_name: str = "BENCH_JASPER",
) -> tuple[dict, list[dict]]:
    """A tenant, a service provider (Jasper by default) and n devices; returns ids and the devices."""
    now = utcnow()
    with engine.begin() as conn:
        tid = conn.execute(
            sa.insert(tenant).values(name=f"bench-{uuid.uuid4().hex[:6]}", created_at=now).returning(tenant.c.id)
        ).scalar_one()
        sp = conn.execute(
            sa.insert(service_provider)
            .values(
                tenant_id=tid,
                name=f"bench {integration}",
                integration=integration,
                carrier=integration,
                portal_type=0,
                base_url=base_url,
                credentials_name=credentials_name,
                write_enabled=True,
                rate_per_second=rate,
                max_concurrency=concurrency,
                batch_size=batch_size,
            )
            .returning(service_provider.c.id)
        ).scalar_one()
        rows = [
            {"tenant_id": tid, "service_provider_id": sp, "iccid": iccid(i), "status": status, "updated_at": now}
            for i in range(n)
        ]
        for start in range(0, n, 20_000):
            conn.execute(sa.insert(device), rows[start : start + 20_000])
        devices = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(device.c.id, device.c.iccid).where(device.c.service_provider_id == sp).order_by(device.c.id)
            )
        ]
    os.environ["BULKCHANGE_CRED_BENCH_JASPER_USERNAME"] = USER
    os.environ["BULKCHANGE_CRED_BENCH_JASPER_SECRET"] = KEY
    return {"tenant_id": tid, "service_provider_id": sp}, devices


def submit(engine: sa.Engine, ids: dict, devices: list[dict], change_type: ChangeType, target: dict) -> int:
    rows = [
        NewDeviceChange(change_request=dict(target), status=DeviceChangeStatus.NEW, device_id=d["id"], iccid=d["iccid"])
        for d in devices
    ]
    return create_bulk_change(
        engine,
        NewBulkChange(
            tenant_id=ids["tenant_id"],
            service_provider_id=ids["service_provider_id"],
            change_type=int(change_type),
            portal_type=0,
            process_changes=True,
            request={"changeType": int(change_type), "bench": True},
            created_by="bench",
            rows=rows,
        ),
    ).bulk_change_id


def record(title: str, lines: list[str]) -> None:
    """Print the figures and append them to bench/RESULTS.md with machine, date and commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    head = (
        f"## {title}\n\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}\n"
    )
    text = head + "\n" + "\n".join(lines) + "\n\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in bench/; newest last.\n\n")
    with RESULTS.open("a") as fh:
        fh.write(text)


def engine_for(url: str) -> sa.Engine:
    return make_engine(url)
