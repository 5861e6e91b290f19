"""``bulkchange deploy-local``: the production shape of the deployment on one machine.

Four separate processes, as a cluster runs them, against PostgreSQL for both Dagster's storage and
the business database: ``dagster api grpc`` (loads ``bulkchange_pipeline.defs``, evaluates
sensors, launches run workers; run through ``deploy_code_server`` so workers are forked from a
preloaded process), ``dagster-webserver`` and ``dagster-daemon run`` (sensors, the run queue, run
monitoring and retries; run through ``deploy_daemon`` for a 1 s sensor loop), both pointed at the
code server through a ``grpc_server`` workspace, and ``bulkchange serve`` (intake API and carrier
callbacks). Why not ``dagster dev``: it
runs everything in one process tree with its own code server, so the run queue, the gRPC boundary
and process crashes are never exercised the way they are in production. ``restart`` brings back
one crashed service (or every one that is down) with the environment the others run with.

Everything lives in one run folder: ``dagster_home/dagster.yaml`` (a copy of
``deploy/dagster.postgres.yaml``), ``workspace.yaml``, ``deployment.json`` (ports, no secrets),
``deployment.env`` (mode 0600: ``source`` it to point ``dagster instance info`` or ``bulkchange
sync-pools`` at this deployment), ``pids/<service>.pid`` and ``logs/<service>.log``. Each service
is started in its own session, so ``stop`` can end it with all its children (run workers, the code
server's gRPC subprocess): SIGTERM to the process group, SIGKILL after a timeout. Linux only (/proc).

A pid file names the service's leader and its start time (clock ticks since boot), so a recycled
pid is not taken for the service. ``status`` believes it only while that process lives; otherwise it
looks for the process that actually is the service (see ``find_service``), so a service restarted
by hand is not reported down while it serves.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml

from .settings import CALLBACK_BASE_URL_ENV, DAGSTER_HOME_ENV, DATABASE_URL_ENV

MODULE = "bulkchange_pipeline.defs"
DAEMON_MODULE = "bulkchange_pipeline.deploy_daemon"
CODE_SERVER_MODULE = "bulkchange_pipeline.deploy_code_server"
LOCATION = "bulkchange_pipeline"
DEFAULT_INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dagster.postgres.yaml"
SERVICES = ("code-server", "daemon", "webserver", "intake")  # start order; stop goes in reverse
PG_ENV = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB")
HEARTBEAT_FRESH_SECONDS = 60.0


class DeployError(RuntimeError):
    """The deployment cannot be started or inspected; the message says what to fix."""


def psycopg2_url(url: str) -> str:
    """A PostgreSQL URL with the psycopg2 driver named (SQLAlchemy 2.1 defaults to psycopg 3)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DeployError(
            f"{parsed.render_as_string(hide_password=True)} is not PostgreSQL: the deployment's "
            "processes share the databases, pass postgresql+psycopg2://user@host:5432/db"
        )
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def dagster_pg_env(url: str) -> dict[str, str]:
    """The ``DAGSTER_PG_*`` variables ``dagster.postgres.yaml`` reads, from one URL."""
    u = sa.engine.make_url(psycopg2_url(url))
    if not u.database:
        raise DeployError("the Dagster storage URL names no database")
    return dict(
        zip(
            PG_ENV,
            (u.username or "postgres", u.password or "", u.host or "127.0.0.1", str(u.port or 5432), u.database),
            strict=True,
        )
    )


@dataclass
class LocalDeployment:
    """Where the deployment lives and how its services listen (saved as ``deployment.json``)."""

    run_dir: Path
    host: str = "127.0.0.1"
    code_server_port: int = 4266
    webserver_port: int = 3000
    intake_port: int = 8080
    instance_config: Path = DEFAULT_INSTANCE_CONFIG

    @property
    def dagster_home(self) -> Path:
        return self.run_dir / "dagster_home"

    @property
    def workspace(self) -> Path:
        return self.run_dir / "workspace.yaml"

    @property
    def env_file(self) -> Path:
        return self.run_dir / "deployment.env"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / "pids" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.run_dir / "logs" / f"{service}.log"

    def url(self, service: str) -> str:
        port = {"webserver": self.webserver_port, "intake": self.intake_port}[service]
        return f"http://{self.host}:{port}"

    def commands(self) -> dict[str, list[str]]:
        """Each service's argv: the venv's own entry points, so the same Python runs everything."""
        exe, h = _entry_point, self.host
        return {
            # `dagster api grpc` with run workers forked from a preloaded process (deploy_code_server
            # says why), same arguments.
            "code-server": [
                sys.executable,
                "-m",
                CODE_SERVER_MODULE,
                "api",
                "grpc",
                "-m",
                MODULE,
                "-h",
                h,
                "-p",
                str(self.code_server_port),
                "--location-name",
                LOCATION,
            ],
            # dagster-daemon with a 1 s sensor loop (deploy_daemon says why), same arguments.
            "daemon": [sys.executable, "-m", DAEMON_MODULE, "run", "-w", str(self.workspace)],
            "webserver": [exe("dagster-webserver"), "-w", str(self.workspace), "-h", h, "-p", str(self.webserver_port)],
            "intake": [exe("bulkchange"), "serve", "--host", h, "--port", str(self.intake_port)],
        }

    def save(self) -> None:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.run_dir / "deployment.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> LocalDeployment:
        path = run_dir / "deployment.json"
        if not path.exists():
            raise DeployError(
                f"no deployment in {run_dir} (no deployment.json): start one with `bulkchange deploy-local start`"
            )
        data = json.loads(path.read_text())
        return cls(**{**data, "run_dir": Path(data["run_dir"]), "instance_config": Path(data["instance_config"])})


@dataclass
class ServiceState:
    """One service as ``status`` sees it."""

    name: str
    pid: int | None
    running: bool
    ready: bool
    detail: str = ""
    since: float | None = None  # when the running process started (epoch seconds)
    restarts: int = 0  # `restart`s since `start`


def _entry_point(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise DeployError(f"`{name}` is not installed next to {sys.executable} nor on PATH")
    return found


def service_environment(
    dep: LocalDeployment, database_url: str, dagster_url: str | None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every service runs with: the caller's (carrier credentials
    ``BULKCHANGE_CRED_*`` pass through), plus DAGSTER_HOME, the storage and database settings."""
    env = dict(os.environ if base is None else base)
    env.update(dagster_pg_env(dagster_url) if dagster_url else {})
    missing = [k for k in PG_ENV if k not in env]
    if missing:
        raise DeployError(f"Dagster storage not configured: pass --dagster-database-url or set {', '.join(missing)}")
    env.update(
        {DAGSTER_HOME_ENV: str(dep.dagster_home), DATABASE_URL_ENV: psycopg2_url(database_url), "PYTHONUNBUFFERED": "1"}
    )
    env.setdefault(CALLBACK_BASE_URL_ENV, dep.url("intake"))
    return env


def prepare(dep: LocalDeployment, env: Mapping[str, str]) -> None:
    """Write the run folder: instance config, workspace (grpc_server), settings, env file."""
    for sub in ("pids", "logs"):
        (dep.run_dir / sub).mkdir(parents=True, exist_ok=True)
    dep.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dep.instance_config, dep.dagster_home / "dagster.yaml")
    workspace = {
        "load_from": [{"grpc_server": {"host": dep.host, "port": dep.code_server_port, "location_name": LOCATION}}]
    }
    dep.workspace.write_text(yaml.safe_dump(workspace, sort_keys=False))
    dep.save()
    keys = (*PG_ENV, DAGSTER_HOME_ENV, DATABASE_URL_ENV, CALLBACK_BASE_URL_ENV)
    with os.fdopen(os.open(dep.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(
            "# The deployment's settings (may hold the database password): source it, then run dagster or bulkchange\n"
            + "".join(f"export {k}={shlex.quote(env[k])}\n" for k in keys if k in env)
        )


@contextmanager
def open_instance(dep: LocalDeployment, env: Mapping[str, str]) -> Iterator[object]:
    """A DagsterInstance on the deployment's storage. Config ``env:`` values are resolved while it
    is built, so the variables are set only for that moment."""
    import dagster as dg

    if missing := [k for k in PG_ENV if k not in env]:
        raise DeployError(f"Dagster storage settings missing ({', '.join(missing)}): is {dep.env_file} there?")
    saved = {k: os.environ.get(k) for k in PG_ENV}
    os.environ.update({k: env[k] for k in PG_ENV})
    try:
        instance = dg.DagsterInstance.from_config(str(dep.dagster_home))
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    try:
        yield instance
    finally:
        instance.dispose()


# --- processes ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (index 0: state, 2: pgid, 19:
    start time in clock ticks since boot); None: gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _state(pid: int) -> str | None:
    """Process state letter from /proc/<pid>/stat (None: gone). Reaps the pid first if it is our
    own child, so a stopped service is not mistaken for a live zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:
        pass
    fields = _stat(pid)
    return fields[0] if fields else None


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, it names one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group (a service with its run workers)."""
    return [pid for pid in _pids() if (f := _stat(pid)) and int(f[2]) == pgid and f[0] not in ("Z", "X")]


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the service's process group (its run workers too)."""
    return bool(group_members(pgid))


@dataclass
class PidRecord:
    """What ``pids/<service>.pid`` says: the leader (= process group), when it started, restarts."""

    pid: int
    started: float = 0.0
    ticks: int | None = None  # the leader's start time, clock ticks since boot (None: older pid file)
    restarts: int = 0

    def alive(self) -> bool:
        """The recorded process itself still runs (not a zombie, not another process given its pid)."""
        return alive(self.pid) and (self.ticks is None or start_ticks(self.pid) == self.ticks)


def read_record(dep: LocalDeployment, service: str) -> PidRecord | None:
    try:
        data = json.loads(dep.pid_file(service).read_text())
        return PidRecord(
            int(data["pid"]), float(data.get("started", 0.0)), data.get("ticks"), int(data.get("restarts", 0))
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_pid(dep: LocalDeployment, service: str) -> int | None:
    record = read_record(dep, service)
    return record.pid if record else None


def _default_stop_signals() -> None:
    """In the child, before exec: give the service the default SIGINT and SIGTERM, unblocked.

    An ignored or blocked signal survives exec. Started from a shell that ignores SIGINT (``nohup``,
    a background job in a script), a service would inherit that, and Dagster's processes map
    SIGTERM to whatever SIGINT does (``signal.signal(SIGTERM, signal.getsignal(SIGINT))``): the
    code server then ignored `deploy-local stop`, and its run workers' `tail -F` log mirrors
    ignored their cleanup, until SIGKILL."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def spawn(dep: LocalDeployment, service: str, env: Mapping[str, str], restarts: int = 0) -> int:
    """Start one service in its own session (process group = its pid), output to its log."""
    argv = dep.commands()[service]
    with open(dep.log_file(service), "ab") as log:  # the child keeps its own copy of the descriptor
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=dep.run_dir,
            start_new_session=True,
            preexec_fn=_default_stop_signals,
        )
    record = {
        "pid": proc.pid,
        "argv": argv,
        "started": time.time(),
        "ticks": start_ticks(proc.pid),
        "restarts": restarts,
    }
    dep.pid_file(service).write_text(json.dumps(record) + "\n")
    return proc.pid


def _listening(port: int) -> set[int]:
    """Pids holding a TCP socket listening on ``port`` (this user's processes: their fds are readable)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    found = set()
    for pid in _pids() if inodes else ():
        try:
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                found.add(pid)
        except OSError:
            continue
    return found


def _environ(pid: int) -> dict[str, str] | None:
    """The environment a process was started with (/proc/<pid>/environ)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return dict(item.partition("=")[::2] for item in raw.decode(errors="surrogateescape").split("\0") if "=" in item)


def _port(dep: LocalDeployment, service: str) -> int | None:
    return {"code-server": dep.code_server_port, "webserver": dep.webserver_port, "intake": dep.intake_port}.get(
        service
    )


def _is_daemon(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any(
        (Path(a).name == "dagster-daemon" or (a == DAEMON_MODULE and argv[i - 1 : i] == ["-m"]))
        and argv[i + 1 : i + 2] == ["run"]
        for i, a in enumerate(argv)
    )


def find_service(dep: LocalDeployment, service: str) -> tuple[list[int], list[int]]:
    """The live processes that are ``service`` of this deployment whoever started them (a
    restart by hand): the one listening on its port, for the daemon a ``dagster-daemon run``, and
    started with this deployment's DAGSTER_HOME (``deployment.env`` sourced). Second: other
    processes holding the service's port (not this deployment's)."""
    port = _port(dep, service)
    candidates = sorted(_listening(port)) if port is not None else [pid for pid in _pids() if _is_daemon(pid)]
    ours = [
        pid for pid in candidates if alive(pid) and (_environ(pid) or {}).get(DAGSTER_HOME_ENV) == str(dep.dagster_home)
    ]
    return ours, [pid for pid in candidates if pid not in ours and port is not None]


def terminate(pgid: int, timeout: float, *, group: bool = True) -> str:
    """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL what is left. With
    ``group=False`` the one process ``pgid`` only (a service someone started by hand: its group may
    be their shell's)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig) if group else os.kill(pgid, sig)
        except ProcessLookupError:
            return "stopped"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            alive(pgid)  # reaps the leader when it is our child
            if not (group_alive(pgid) if group else alive(pgid)):
                return "stopped" if sig == signal.SIGTERM else "killed after timeout"
            time.sleep(0.2)
    return "still running after SIGKILL"


def stop(dep: LocalDeployment, timeout: float = 20.0) -> dict[str, str]:
    """Stop every service, intake first and the code server last (the daemon stops launching
    runs before the code server they launch from goes away). The stopped daemon's heartbeats are
    wiped, so a restart is not mistaken for a second daemon on the same storage."""
    results = {}
    for service in reversed(SERVICES):
        pid = read_pid(dep, service)
        if pid is None:
            results[service] = "not started"
            continue
        results[service] = terminate(pid, timeout) if group_alive(pid) else "not running"
        dep.pid_file(service).unlink(missing_ok=True)
        if service == "daemon" and results[service] != "not running":
            try:
                with open_instance(dep, read_env_file(dep)) as instance:
                    instance.wipe_daemon_heartbeats()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - storage unreachable: start waits out the stale heartbeats
                pass
    return results


def read_env_file(dep: LocalDeployment) -> dict[str, str]:
    """The ``export K=V`` lines of ``deployment.env``."""
    lines = dep.env_file.read_text().splitlines() if dep.env_file.exists() else []
    return dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))


# --- readiness ------------------------------------------------------------------------------------


def code_server_ready(dep: LocalDeployment) -> tuple[bool, str]:
    """The code server answers and has loaded the definitions (lists the repository)."""
    from dagster._grpc.client import DagsterGrpcClient

    try:
        repos = DagsterGrpcClient(port=dep.code_server_port, host=dep.host).list_repositories()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready yet
        return False, type(exc).__name__
    error = getattr(repos, "serializable_error_info", None)
    return (
        (False, f"load error: {error.message.strip()[:200]}")
        if error
        else (True, f"grpc {dep.host}:{dep.code_server_port}")
    )


def webserver_ready(dep: LocalDeployment) -> tuple[bool, str]:
    """The webserver answers and shows our code location loaded from the gRPC server."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"
    try:
        r = httpx.post(f"{dep.url('webserver')}/graphql", json={"query": query}, timeout=5.0)
        entries = r.json()["data"]["workspaceOrError"]["locationEntries"]
    except Exception as exc:  # noqa: BLE001
        return False, type(exc).__name__
    mine = [e for e in entries if e["name"] == LOCATION]
    ok = (
        bool(mine)
        and mine[0]["loadStatus"] == "LOADED"
        and mine[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    )
    return ok, f"{dep.url('webserver')} location {mine[0]['locationOrLoadError']['__typename'] if mine else 'missing'}"


def intake_ready(dep: LocalDeployment) -> tuple[bool, str]:
    try:
        ok = httpx.get(f"{dep.url('intake')}/healthz", timeout=5.0).status_code == 200
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return ok, dep.url("intake")


def daemon_ready(instance: object, since: float = 0.0) -> tuple[bool, str]:
    """Every daemon the instance needs (sensors, run queue, monitoring...) heartbeat recently
    (and after ``since``, so a previous daemon's last heartbeats do not count)."""
    required = list(instance.get_required_daemon_types())  # type: ignore[attr-defined]
    beats = instance.get_daemon_heartbeats()  # type: ignore[attr-defined]
    oldest = max(since, time.time() - HEARTBEAT_FRESH_SECONDS)
    stale = [d for d in required if d not in beats or beats[d].timestamp < oldest]
    return not stale, f"waiting for {', '.join(stale)}" if stale else f"heartbeats: {', '.join(sorted(required))}"


def wait_until(check: Callable[[], tuple[bool, str]], pid: int, timeout: float, what: str, log: Path) -> str:
    deadline, detail = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if not alive(pid):
            raise DeployError(f"{what} exited during startup; last lines of {log}:\n{tail(log)}")
        ok, detail = check()
        if ok:
            return detail
        time.sleep(0.5)
    raise DeployError(f"{what} not ready after {timeout:.0f} s ({detail}); last lines of {log}:\n{tail(log)}")


def readiness_checks(dep: LocalDeployment, instance: object, since: float) -> dict[str, Callable[[], tuple[bool, str]]]:
    """What ``start`` and ``restart`` wait for, per service (the daemon: heartbeats after ``since``)."""
    return {
        "code-server": lambda: code_server_ready(dep),
        "daemon": lambda: daemon_ready(instance, since),
        "webserver": lambda: webserver_ready(dep),
        "intake": lambda: intake_ready(dep),
    }


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


# --- start / status -------------------------------------------------------------------------------


def start(
    dep: LocalDeployment,
    env: Mapping[str, str],
    *,
    migrate_db: bool = True,
    sync_pools: bool = True,
    carrier_api_slots: int | None = None,
    startup_timeout: float = 120.0,
) -> tuple[list[ServiceState], dict[str, int]]:
    """Migrate, sync pools (``carrier_api_slots`` None: sized to the service providers, see
    ``defs.pools.sized_carrier_api_slots``), then start the services in order, each only once the
    previous one is ready; returns the services and the pool limits set. On any failure the
    services already started are stopped again."""
    running = [s for s in SERVICES if (pid := read_pid(dep, s)) is not None and group_alive(pid)]
    if running:
        raise DeployError(
            f"already running in {dep.run_dir}: {', '.join(running)} (`bulkchange deploy-local stop` first)"
        )
    prepare(dep, env)
    if migrate_db:
        from .store import migrate

        migrate.upgrade(env[DATABASE_URL_ENV])
    services: list[ServiceState] = []
    pools: dict[str, int] = {}
    spawned_at = time.time()
    with open_instance(dep, env) as instance:
        if daemon_ready(instance)[0]:
            raise DeployError(
                "a dagster-daemon is already heartbeating on this Dagster storage: run exactly one daemon "
                "per deployment (stop the other one, or wait a minute after it died)"
            )
        if sync_pools:
            from .defs.pools import sync_from_database
            from .store.db import make_engine

            engine = make_engine(env[DATABASE_URL_ENV])
            try:
                pools = sync_from_database(instance, engine, carrier_api_slots).desired  # type: ignore[arg-type]
            finally:
                engine.dispose()
        checks = readiness_checks(dep, instance, spawned_at)
        try:
            for service in SERVICES:
                pid = spawn(dep, service, env)
                detail = wait_until(checks[service], pid, startup_timeout, service, dep.log_file(service))
                services.append(ServiceState(service, pid, True, True, detail))
        except BaseException:
            stop(dep, timeout=10.0)
            raise
    return services, pools


def _started_at(pid: int) -> float | None:
    """When a process started, in epoch seconds (boot time + its start ticks)."""
    ticks = start_ticks(pid)
    try:
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    return None if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


def status(dep: LocalDeployment) -> list[ServiceState]:
    """Which services are up, and ready by the same checks as ``start`` (the daemon's heartbeats
    read with the settings in ``deployment.env``). Up means the process the pid file names still
    runs (same pid and start time) or, failing that, another process holds the service (see
    ``find_service``: restarted by hand), reported with its own pid."""
    probes = {"code-server": code_server_ready, "webserver": webserver_ready, "intake": intake_ready}
    states = []
    for service in SERVICES:
        record = read_record(dep, service)
        ours = record is not None and record.alive()
        found, others = ([], []) if ours else find_service(dep, service)
        pid = record.pid if ours else found[0] if found else record.pid if record else None
        ready, detail = False, "no pid file (stopped or never started)"
        if record is not None and not ours:
            left = group_members(record.pid)
            detail = f"pid {record.pid} gone" + (
                f", {len(left)} process(es) of its group still running" if left else ""
            )
        if others and not found:
            detail += f"; port {_port(dep, service)} held by pid {', '.join(map(str, others))}, not this deployment's"
        if ours or found:
            if service in probes:
                ready, detail = probes[service](dep)
            else:
                with open_instance(dep, read_env_file(dep)) as instance:
                    ready, detail = daemon_ready(instance)
            if found:
                gone = f"pid file names {record.pid}, gone" if record else "no pid file"
                detail = f"not started by deploy-local ({gone}; `restart {service}` takes it over); {detail}"
        since = record.started if ours and record else _started_at(pid) if found and pid else None
        states.append(
            ServiceState(service, pid, ours or bool(found), ready, detail, since, record.restarts if record else 0)
        )
    return states


@dataclass
class Restarted:
    """One service ``restart`` brought back: what it found, and the new process."""

    state: ServiceState
    before: str


def restart_environment(
    dep: LocalDeployment, live: Mapping[str, int], base: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """The environment to restart a service with: the one its sibling services were started
    with (read from /proc, so carrier credentials and settings are exactly those of ``start``
    without being written to disk); when none runs, the caller's environment with ``deployment.env``
    (as ``start`` builds it)."""
    for service, pid in live.items():
        env = _environ(pid)
        if env and env.get(DAGSTER_HOME_ENV) == str(dep.dagster_home):
            return env, f"copied from {service} (pid {pid})"
    saved = read_env_file(dep)
    if missing := [k for k in (*PG_ENV, DAGSTER_HOME_ENV, DATABASE_URL_ENV) if k not in saved]:
        raise DeployError(
            f"no service is running to copy the environment from, and {dep.env_file} lacks "
            f"{', '.join(missing)}: `bulkchange deploy-local stop`, then `start`"
        )
    return {
        **(os.environ if base is None else base),
        **saved,
        "PYTHONUNBUFFERED": "1",
    }, f"this shell's, with {dep.env_file}"


def restart(
    dep: LocalDeployment,
    services: Sequence[str] = (),
    *,
    startup_timeout: float = 120.0,
    timeout: float = 20.0,
    base_env: Mapping[str, str] | None = None,
) -> tuple[list[Restarted], str]:
    """Restart the named services of a running deployment (none named: every one that is down),
    in start order, each with the environment the others run with (``restart_environment``), and
    wait until it is ready by the checks ``start`` uses. What is left of a service first ends as
    ``stop`` ends it (its process group: a running one, or a crashed leader's children); one started
    by hand is ended by its pid alone. The daemon's heartbeats are wiped before it starts again.
    Returns what was done and where the environment came from. A service that does not come up is
    stopped again and the error shows its log."""
    if unknown := [s for s in services if s not in SERVICES]:
        raise DeployError(f"unknown service {', '.join(map(repr, unknown))}: the services are {', '.join(SERVICES)}")
    records = {s: read_record(dep, s) for s in SERVICES}
    if not any(records.values()):
        raise DeployError(
            f"the deployment in {dep.run_dir} is not running (no pid files: stopped or never started): "
            "start it with `bulkchange deploy-local start`"
        )
    ours = {s: r for s, r in records.items() if r is not None and r.alive()}
    foreign = {s: find_service(dep, s) for s in SERVICES if s not in ours}
    targets = (
        [s for s in SERVICES if s in services]
        if services
        else [s for s in SERVICES if s not in ours and not foreign[s][0]]
    )
    if not targets:
        return [], ""
    if blocked := [
        f"{s}: port {_port(dep, s)} is held by pid {', '.join(map(str, foreign[s][1]))}"
        for s in targets
        if s in foreign and foreign[s][1] and not foreign[s][0]
    ]:
        raise DeployError(
            f"{'; '.join(blocked)}, not this deployment's (no DAGSTER_HOME={dep.dagster_home}): stop it, "
            "or start the deployment on other ports"
        )
    env, source = restart_environment(dep, {s: r.pid for s, r in ours.items()}, base_env)
    done: list[Restarted] = []
    with open_instance(dep, env) as instance:
        for service in targets:
            record = records[service]
            if service in ours and record is not None:
                before = f"was up as pid {record.pid}, {terminate(record.pid, timeout)}"
            else:
                hand = foreign[service][0]
                before = (f"was up as pid {', '.join(map(str, hand))}, started by hand" if hand else "was down") + (
                    f" (pid {record.pid} gone)" if record else " (no pid file)"
                )
                if record is not None and (left := group_members(record.pid)):
                    before += f", {len(left)} leftover process(es) of its group {terminate(record.pid, timeout)}"
                for pid in hand:
                    before += f", pid {pid} {terminate(pid, timeout, group=False)}"
            if service == "daemon":
                instance.wipe_daemon_heartbeats()  # type: ignore[attr-defined]
            spawned_at = time.time()
            pid = spawn(dep, service, env, restarts=(record.restarts if record else 0) + 1)
            try:
                detail = wait_until(
                    readiness_checks(dep, instance, spawned_at)[service],
                    pid,
                    startup_timeout,
                    service,
                    dep.log_file(service),
                )
            except BaseException:
                terminate(pid, 10.0)
                raise
            new = read_record(dep, service)
            done.append(
                Restarted(
                    ServiceState(
                        service, pid, True, True, detail, new.started if new else spawned_at, new.restarts if new else 0
                    ),
                    before,
                )
            )
    return done, source


__all__ = [
    "CODE_SERVER_MODULE",
    "DAEMON_MODULE",
    "DEFAULT_INSTANCE_CONFIG",
    "LOCATION",
    "MODULE",
    "SERVICES",
    "DeployError",
    "LocalDeployment",
    "ServiceState",
    "dagster_pg_env",
    "open_instance",
    "psycopg2_url",
    "restart",
    "service_environment",
    "start",
    "status",
    "stop",
]
