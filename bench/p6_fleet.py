"""P6 fleet: every carrier account at its limit, all at once, through the production shape.

ACCOUNTS Jasper accounts (each a service provider with its own credentials entry, one tenant) on
one Jasper simulator in its own process that limits every account to RATE calls/s and one call in
flight and answers each call after LATENCY ms. Each account gets one bulk change of DEVICES
StatusUpdate rows; all are submitted at once (one thread each) with ``POST /bulk-changes`` to the
``deploy-local`` services (code server, daemon, webserver, intake; PostgreSQL for both stores),
started exactly as ``bulkchange deploy-local start`` starts them (``deploy.start`` with its
defaults: the instance config, the pools it syncs).

Sampled once a second until every row is final: the simulator's call and refusal counters, the
rows still open, and the resident memory of every process of the four services (their process
groups, so each run worker counts). Reported:

- aggregate calls/s over the busy period (first call to last call) / the summed limits (ACCOUNTS x RATE)
- time from submission until the last row is final / the ideal (DEVICES / RATE: the slowest account)
- over-limit answers (rate or concurrency refusals) / calls
- peak RSS of the services and run workers together (summed /proc VmRSS; shared pages count in
  every process, as RSS does)
- CPU-seconds of those processes per 1,000 devices (utime+stime, reaped children included, from
  just before the submissions to the end)
- from the Dagster run records: how long runs waited in the queue, how long workers took to start
  (RUN_STARTING -> RUN_START), how long runs executed: the profile that says what bounds the figure.

    python bench/p6_fleet.py [--accounts 24] [--devices 1000] [--no-record] [--json out.json]

A small run (``--accounts 4 --devices 100 --no-record``) takes about a minute and is what the test
(bulkchange_pipeline_tests/deploy/test_p6_fleet.py) runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
import sqlalchemy as sa
from harness import free_port, iccid, jasper_simulator, load_average, pg_databases, record, seed_simulator, sim_stats

from bulkchange_pipeline.deploy import LocalDeployment, open_instance, read_pid, start, stop
from bulkchange_pipeline.deploy import service_environment as deploy_environment
from bulkchange_pipeline.domain.enums import FINAL_DEVICE_STATUSES
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.db import make_engine, utcnow
from bulkchange_pipeline.store.schema import device, device_change, service_provider, tenant

FINAL = [s.value for s in FINAL_DEVICE_STATUSES]
SERVICES = ("code-server", "daemon", "webserver", "intake")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def seed_fleet(engine: sa.Engine, api_root: str, accounts: int, devices: int, rate: float) -> tuple[int, dict]:
    """One tenant, ``accounts`` Jasper service providers (credentials entries FLEET_J01...) limited
    to ``rate`` calls/s and 1 in flight, ``devices`` ACTIVATED devices each (ICCIDs unique across
    the fleet). Returns the tenant id and {service provider id: (username, key, iccids)}."""
    now = utcnow()
    fleet: dict[int, tuple[str, str, list[str]]] = {}
    with engine.begin() as conn:
        tid = conn.execute(
            sa.insert(tenant).values(name="p6-fleet", created_at=now).returning(tenant.c.id)
        ).scalar_one()
        for a in range(accounts):
            sp = conn.execute(
                sa.insert(service_provider)
                .values(
                    tenant_id=tid,
                    name=f"fleet jasper {a + 1:02d}",
                    integration="jasper",
                    carrier="jasper",
                    portal_type=0,
                    base_url=api_root,
                    credentials_name=f"FLEET_J{a + 1:02d}",
                    write_enabled=True,
                    rate_per_second=rate,
                    max_concurrency=1,
                )
                .returning(service_provider.c.id)
            ).scalar_one()
            iccids = [iccid(a * devices + i) for i in range(devices)]
            conn.execute(
                sa.insert(device),
                [
                    {"tenant_id": tid, "service_provider_id": sp, "iccid": i, "status": "ACTIVATED", "updated_at": now}
                    for i in iccids
                ],
            )
            fleet[sp] = (f"fleet{a + 1:02d}", f"fleet-key-{a + 1:02d}", iccids)
    return tid, fleet


def credentials_env(fleet: dict) -> dict[str, str]:
    env = {}
    for a, (user, key, _) in enumerate(fleet.values()):
        name = credential_env_key(f"FLEET_J{a + 1:02d}")
        env[f"{name}_USERNAME"], env[f"{name}_SECRET"] = user, key
    return env


class ProcessBook:
    """One pass over /proc a second: the services' process groups (each run worker, and the
    ``tail``/``watch_orphans`` helpers Dagster's compute-log capture starts, is in the code
    server's group), the simulator and PostgreSQL. Keeps the peak of the summed RSS of ours and
    each process's own CPU seconds by kind, for the profile; ``cpu`` (utime+stime with reaped
    children, of the live group members) is what the CPU figure uses, so processes that ended
    between samples still count."""

    def __init__(self, leaders: dict[int, str]) -> None:
        self.leaders = leaders  # pgid -> service
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self.peak_rss = self.peak_procs = 0
        self.started = False

    @staticmethod
    def _kind(pid: int, service: str) -> str:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return service
        if "multiprocessing" in cmd:
            return "run workers"
        if "watch_orphans" in cmd or cmd.startswith("tail "):
            return "compute-log capture"
        return service

    def sample(self) -> tuple[float, int, int]:
        """CPU seconds (with reaped children) and summed RSS of our live processes, and their count."""
        cpu, rss, n = 0.0, 0, 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
            except (OSError, ValueError):
                continue
            f = tail.split()
            comm, pgid, own = head.split("(", 1)[-1], int(f[2]), (int(f[11]) + int(f[12])) / TICKS
            if f[0] in ("Z", "X"):
                continue
            service = self.leaders.get(pgid)
            if service is None:
                kind = "postgresql (not ours)" if comm == "postgres" else ""
                kind = kind or ("simulator (not ours)" if comm == "python" and self._is_simulator(pid) else "")
                if not kind:
                    continue
            else:
                kind = self._kind(pid, service)
                cpu += own + (int(f[13]) + int(f[14])) / TICKS
                rss += int(f[21]) * PAGE
                n += 1
            key = (pid, int(f[19]))
            if key not in self.first:
                self.first[key] = own if not self.started else 0.0
            self.last[key] = (kind, own)
        self.started = True
        self.peak_rss, self.peak_procs = max(self.peak_rss, rss), max(self.peak_procs, n)
        return cpu, rss, n

    @staticmethod
    def _is_simulator(pid: int) -> bool:
        try:
            return b"bulkchange_pipeline.simulators" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, (kind, own) in self.last.items():
            out[kind] = out.get(kind, 0.0) + own - self.first[key]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def open_rows(engine: sa.Engine, bc_ids: list[int]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(device_change)
            .where(device_change.c.bulk_change_id.in_(bc_ids), device_change.c.status.not_in(FINAL))
        ).scalar_one()


def run_profile(instance: dg.DagsterInstance, submitted: float) -> dict[str, list[float]]:
    """Per process run: sensor (submitted -> created), queue (created -> RUN_STARTING), worker
    start-up (RUN_STARTING -> RUN_START), execution (start -> end), and within execution the
    carrier steps (``apply_batch``: STEP_START -> STEP_SUCCESS, summed) and the rest, and how long
    a started run took to reach its first carrier step (the steps before it: to_carrier)."""
    out: dict[str, list[float]] = {
        "sensor": [],
        "queue": [],
        "worker": [],
        "execution": [],
        "start": [],
        "apply_batch": [],
        "other_steps": [],
        "to_carrier": [],
    }
    for r in instance.get_run_records(dg.RunsFilter(job_name="process_bulk_change_job")):
        created = r.create_timestamp.timestamp()
        starting = instance.get_records_for_run(r.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING).records
        launched = starting[0].timestamp if starting else r.start_time or created
        out["sensor"].append(created - submitted)
        out["queue"].append(launched - created)
        if r.start_time:
            out["worker"].append(r.start_time - launched)
            out["start"].append(r.start_time - submitted)
            out["execution"].append((r.end_time or time.time()) - r.start_time)
        steps: dict[str, dict[str, float]] = {}
        for kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS):
            for rec in instance.get_records_for_run(r.dagster_run.run_id, of_type=kind, limit=1000).records:
                key = rec.event_log_entry.step_key or ""
                steps.setdefault(key, {})[kind.value] = rec.timestamp
        spans = {k: v["STEP_SUCCESS"] - v["STEP_START"] for k, v in steps.items() if len(v) == 2}
        carrier_starts = [
            v["STEP_START"] for k, v in steps.items() if k.startswith("apply_batch") and "STEP_START" in v
        ]
        if r.start_time and carrier_starts:
            out["to_carrier"].append(min(carrier_starts) - r.start_time)  # run start -> first carrier step
        out["apply_batch"].append(sum(d for k, d in spans.items() if k.startswith("apply_batch")))
        out["other_steps"].append(sum(d for k, d in spans.items() if not k.startswith("apply_batch")))
    return out


def measure(accounts: int, devices: int, rate: float, latency_ms: float, timeout: float) -> dict:
    logins = {f"fleet{a + 1:02d}": f"fleet-key-{a + 1:02d}" for a in range(accounts)}
    load_before = load_average()
    with (
        jasper_simulator(rate=rate, concurrency=1, latency_ms=latency_ms, accounts=logins) as root,
        pg_databases("bc_p6") as (db_url, dagster_url),
    ):
        migrate.upgrade(db_url)
        engine = make_engine(db_url)
        tid, fleet = seed_fleet(engine, root + "/rws/api/v1", accounts, devices, rate)
        seed_simulator(root, [i for _, _, iccids in fleet.values() for i in iccids])
        key = create_api_key(engine, tid, "p6-bench")
        dep = LocalDeployment(
            Path(tempfile.mkdtemp(prefix="bench-p6-")),
            code_server_port=free_port(),
            webserver_port=free_port(),
            intake_port=free_port(),
        )
        base = {**os.environ, **credentials_env(fleet)}
        base.pop("DAGSTER_HOME", None)
        env = deploy_environment(dep, db_url, dagster_url, base)
        t = time.monotonic()
        _, pools = start(dep, env)
        startup = time.monotonic() - t
        try:
            book = ProcessBook({p: s for s in SERVICES if (p := read_pid(dep, s))})
            cpu0, rss0, _ = book.sample()
            bodies = [
                {"serviceProviderId": sp, "changeType": 1, "devices": iccids, "statusUpdate": {"status": "DEACTIVATED"}}
                for sp, (_, _, iccids) in fleet.items()
            ]
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=dep.url("intake"), headers=headers, timeout=120.0) as api:

                def post(body: dict) -> int:
                    r = api.post("/bulk-changes", json=body)
                    r.raise_for_status()
                    return int(r.json()["id"])

                submitted = time.time()
                with ThreadPoolExecutor(len(bodies)) as pool:
                    bc_ids = list(pool.map(post, bodies))
                accepted = time.time() - submitted
            total = accounts * devices
            calls: list[tuple[float, int]] = []
            final_at = None
            deadline = time.time() + timeout
            while time.time() < deadline:
                now = time.time()
                calls.append((now, sim_stats(root)["total_calls"]))
                book.sample()
                if open_rows(engine, bc_ids) == 0:
                    final_at = now
                    break
                time.sleep(max(0.0, 1.0 - (time.time() - now)))
            cpu1, _, _ = book.sample()
            stats = sim_stats(root)
            with open_instance(dep, env) as instance:
                profile = run_profile(instance, submitted)  # type: ignore[arg-type]
        finally:
            stop(dep)
            engine.dispose()
    first = next((t for t, c in calls if c > 0), submitted)
    last = next((t for t, c in calls if c >= stats["total_calls"]), calls[-1][0] if calls else submitted)
    busy = max(last - first, 1e-9)
    window = max(
        ((c2 - c1) / (t2 - t1) for (t1, c1) in calls for (t2, c2) in calls if 9.5 <= t2 - t1 <= 10.5), default=0.0
    )
    refusals = sum(a["rate_refusals"] + a["concurrency_refusals"] for a in stats["accounts"].values())
    ideal = devices / rate
    return {
        "accounts": accounts,
        "devices": devices,
        "rate": rate,
        "latency_ms": latency_ms,
        "startup_s": startup,
        "accepted_s": accepted,
        "pools": pools,
        "calls": stats["total_calls"],
        "calls_per_s": stats["total_calls"] / busy,
        "limit_sum": accounts * rate,
        "best_10s": window,
        "busy_s": busy,
        "first_call_s": first - submitted,
        "final_s": (final_at - submitted) if final_at else None,
        "ideal_s": ideal,
        "over_limit": stats["over_limit_answers"],
        "refusals": refusals,
        "peak_concurrency": stats["peak_concurrency"],
        "applied_more_than_once": stats.get("applied_more_than_once", 0),
        "peak_rss_mb": book.peak_rss / 2**20,
        "idle_rss_mb": rss0 / 2**20,
        "peak_processes": book.peak_procs,
        "cpu_by_kind": book.cpu_by_kind(),
        "cpu_s": cpu1 - cpu0,
        "cpu_s_per_1000": (cpu1 - cpu0) / (total / 1000),
        "profile": profile,
        "load_before": load_before,
        "load_after": load_average(),
    }


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def lines(r: dict) -> list[str]:
    final = r["final_s"]
    p = r["profile"]
    final_text = (
        f"**{final:.0f} s = {final / r['ideal_s']:.2f}x the ideal** {r['ideal_s']:.0f} s" if final else "NOT final"
    )
    return [
        f"- {r['accounts']} Jasper accounts x {r['devices']:,} devices, {r['rate']:g} calls/s and 1 in flight per "
        f"account, {r['latency_ms']:.0f} ms per call, {r['accounts']} submissions at once through `POST /bulk-changes` "
        f"on `deploy-local` (PostgreSQL, daemon, run queue; pools {', '.join(f'{k}={v}' for k, v in sorted(r['pools'].items()) if not k.startswith('carrier-sp-'))})",
        f"- aggregate **{r['calls_per_s']:.1f} calls/s = {r['calls_per_s'] / r['limit_sum']:.0%} of the summed "
        f"{r['limit_sum']:g}** over the busy period ({r['calls']:,} calls in {r['busy_s']:.0f} s; first call after "
        f"{r['first_call_s']:.1f} s; best 10 s window {r['best_10s']:.1f} calls/s)",
        f"- last row final after {final_text}",
        f"- over-limit answers **{r['over_limit']} ({r['over_limit'] / max(r['calls'], 1):.2%} of calls)**; simulator "
        f"peak concurrency per account {r['peak_concurrency']}; applied more than once {r['applied_more_than_once']}",
        f"- peak RSS of the services and run workers **{r['peak_rss_mb'] / 1024:.2f} GB** ({r['peak_processes']} "
        f"processes at most; {r['idle_rss_mb']:.0f} MB idle before the submissions); **{r['cpu_s_per_1000']:.1f} "
        f"CPU-seconds per 1,000 devices** ({r['cpu_s']:.0f} s in all)",
        "- CPU-seconds by process: "
        + ", ".join(f"{kind} {seconds:.0f}" for kind, seconds in r["cpu_by_kind"].items() if seconds >= 0.5),
        f"- runs: sensor {spread(p['sensor'])}; queue {spread(p['queue'])}; worker start-up {spread(p['worker'])}; "
        f"execution {spread(p['execution'])} (carrier steps {spread(p['apply_batch'])}, other steps "
        f"{spread(p['other_steps'])}); run start to first carrier step {spread(p.get('to_carrier', []))}; "
        f"last run started {max(p['start'], default=0):.1f} s after submission",
        f"- machine: {r['load_before']} before, {r['load_after']} after (other work may share this 2-CPU machine)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=24)
    parser.add_argument("--devices", type=int, default=1000, help="per account (one bulk change each)")
    parser.add_argument("--rate", type=float, default=5.0, help="calls/s per account (Jasper's published limit)")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the last row")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    r = measure(args.accounts, args.devices, args.rate, args.latency_ms, args.timeout)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    title = "P6 fleet: every account at its limit, all at once (bench/p6_fleet.py)"
    if args.no_record:
        print("\n".join(lines(r)))
    else:
        record(title, lines(r))


if __name__ == "__main__":
    main()
