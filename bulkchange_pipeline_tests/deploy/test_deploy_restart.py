"""``bulkchange deploy-local restart`` and ``status`` after a crash, on the production shape.

A real deployment (four processes, fresh PostgreSQL databases) started with the real CLI, with a
marker variable in its environment standing for the carrier credentials. The intake API and the
daemon are SIGKILLed (their whole process groups) and ``status`` must say both are down; ``restart``
is then run from an environment without the marker and must bring back exactly those two: ``status``
says every service is ready, with the new pids and ``restarts 1``, the API answers an authenticated
request (so it reaches the database), the daemon's heartbeats are newer than the restart, and both
new processes run with the marker (the environment of the deployment, not the caller's).

Then the case the issue saw: the intake killed again and started by hand (``bulkchange serve`` with
``deployment.env`` sourced, so the pid file still names the dead process). ``status`` used to say
"down" while it served; it must report it ready under its real pid, and ``restart intake`` must
take it over (end it, start its own). Errors: an unknown service, a stopped deployment and a run
folder that never held one end non-zero with a message. Takes 45-65 s.
Skipped without PostgreSQL, except under ``CI=true`` where that fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from bulkchange_pipeline.deploy import SERVICES, LocalDeployment, group_alive, open_instance, read_env_file, read_record
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.reference import create_tenant

from ..ports import free_port
from .test_deploy_local import BIN, _pg_env, bulkchange, databases  # noqa: F401 - databases is a fixture

MARKER = "BULKCHANGE_CRED_RESTART_TEST_MARKER"
KILLED = ("daemon", "intake")


def parse_status(stdout: str) -> dict[str, dict[str, str]]:
    """``status`` lines as {service: {state, pid, line}}."""
    out = {}
    for line in stdout.splitlines():
        name, rest = line.split(None, 1)
        state = next(s for s in ("up, not ready", "ready", "down") if rest.startswith(s))
        out[name] = {"state": state, "pid": rest[len(state) :].split()[1], "line": line}
    return out


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid), f"process group {pgid} survived SIGKILL"


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_restart_crashed_services(databases: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811 - the fixture
    db_url, dagster_url = databases
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    tenant_id = create_tenant(engine, "restart-test")
    key = create_api_key(engine, tenant_id, "restart-test")
    engine.dispose()

    dep = LocalDeployment(
        tmp_path / "run", code_server_port=free_port(), webserver_port=free_port(), intake_port=free_port()
    )
    env = {**os.environ, MARKER: "from-start"}
    env.pop("DAGSTER_HOME", None)
    caller_env = {k: v for k, v in env.items() if k != MARKER}  # restart runs without it: it must copy the deployment's
    run_dir_args = ["--run-dir", str(dep.run_dir)]

    never = bulkchange("deploy-local", "restart", "--run-dir", str(tmp_path / "never"), env=caller_env)
    assert never.returncode == 1 and "no deployment" in never.stderr, never.stdout + never.stderr

    started = bulkchange(
        "deploy-local",
        "start",
        *run_dir_args,
        "--database-url",
        db_url,
        "--dagster-database-url",
        dagster_url,
        "--code-server-port",
        str(dep.code_server_port),
        "--webserver-port",
        str(dep.webserver_port),
        "--intake-port",
        str(dep.intake_port),
        "--carrier-api-slots",
        "2",
        env=env,
    )
    hand: subprocess.Popen[bytes] | None = None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        first = {s: read_record(dep, s) for s in SERVICES}
        assert all(first.values()), first

        unknown = bulkchange("deploy-local", "restart", "intake", "scheduler", *run_dir_args, env=caller_env)
        assert unknown.returncode == 1 and "unknown service 'scheduler'" in unknown.stderr, (
            unknown.stdout + unknown.stderr
        )

        # Crash: SIGKILL the intake's and the daemon's whole process groups.
        for service in KILLED:
            os.killpg(first[service].pid, signal.SIGKILL)  # type: ignore[union-attr]
        for service in KILLED:
            wait_group_gone(first[service].pid)  # type: ignore[union-attr]
        down = bulkchange("deploy-local", "status", *run_dir_args, env=caller_env)
        states = parse_status(down.stdout)
        assert down.returncode == 1, down.stdout + down.stderr
        assert {s: v["state"] for s, v in states.items()} == {
            "code-server": "ready",
            "daemon": "down",
            "webserver": "ready",
            "intake": "down",
        }, down.stdout

        # Restart what is down (no names): exactly the two killed services, in start order.
        restart_began = time.time()
        restarted = bulkchange("deploy-local", "restart", *run_dir_args, env=caller_env, timeout=180)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert [line.split()[0] for line in restarted.stdout.splitlines() if " restarted, pid " in line] == list(
            KILLED
        ), restarted.stdout
        second = {s: read_record(dep, s) for s in SERVICES}

        up = bulkchange("deploy-local", "status", *run_dir_args, env=caller_env)
        states = parse_status(up.stdout)
        assert up.returncode == 0, up.stdout + up.stderr
        assert all(v["state"] == "ready" for v in states.values()), up.stdout
        for service in SERVICES:
            record = second[service]
            assert record is not None and states[service]["pid"] == str(record.pid), up.stdout
            if service in KILLED:
                assert record.pid != first[service].pid and record.restarts == 1, (service, record)  # type: ignore[union-attr]
                assert "restarts 1" in states[service]["line"], up.stdout
                assert environ_of(record.pid).get(MARKER) == "from-start", (
                    f"{service} lost the deployment's environment"
                )
            else:
                assert record.pid == first[service].pid and "restarts" not in states[service]["line"], up.stdout  # type: ignore[union-attr]

        # The restarted services work: the API answers an authenticated request (database reached),
        # the daemon heartbeats again (every required daemon, after the restart).
        api = httpx.Client(base_url=dep.url("intake"), headers={"Authorization": f"Bearer {key}"}, timeout=10.0)
        r = api.get("/bulk-changes/1")
        assert r.status_code == 404 and "no bulk change 1" in r.text, r.text
        with open_instance(dep, {**env, **_pg_env(dagster_url)}) as instance:
            required = list(instance.get_required_daemon_types())  # type: ignore[attr-defined]
            beats = instance.get_daemon_heartbeats()  # type: ignore[attr-defined]
        assert required and all(beats[d].timestamp >= restart_began for d in required), {
            d: beats.get(d) for d in required
        }

        # Started by hand: the pid file names a dead process, yet the service is up. Status tells the truth.
        os.killpg(second["intake"].pid, signal.SIGKILL)  # type: ignore[union-attr]
        wait_group_gone(second["intake"].pid)  # type: ignore[union-attr]
        hand = subprocess.Popen(
            [str(BIN / "bulkchange"), "serve", "--host", dep.host, "--port", str(dep.intake_port)],
            env={**caller_env, **read_env_file(dep)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{dep.url('intake')}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        by_hand = bulkchange("deploy-local", "status", *run_dir_args, env=caller_env)
        states = parse_status(by_hand.stdout)
        assert by_hand.returncode == 0 and states["intake"]["state"] == "ready", by_hand.stdout
        assert states["intake"]["pid"] == str(hand.pid) and "not started by deploy-local" in states["intake"]["line"], (
            by_hand.stdout
        )

        taken = bulkchange("deploy-local", "restart", "intake", *run_dir_args, env=caller_env, timeout=120)
        assert taken.returncode == 0, taken.stdout + taken.stderr
        assert (
            f"was up as pid {hand.pid}, started by hand" in taken.stdout and f"pid {hand.pid} stopped" in taken.stdout
        ), taken.stdout
        assert hand.wait(timeout=10) is not None
        third = read_record(dep, "intake")
        assert third is not None and third.restarts == 2 and environ_of(third.pid).get(MARKER) == "from-start", third
        final = bulkchange("deploy-local", "status", *run_dir_args, env=caller_env)
        assert final.returncode == 0 and parse_status(final.stdout)["intake"]["pid"] == str(third.pid), final.stdout
        assert api.get("/bulk-changes/1").status_code == 404
    finally:
        if hand is not None and hand.poll() is None:
            hand.kill()
            hand.wait()
        pids = {s: read_record(dep, s) for s in SERVICES}
        stopped = bulkchange("deploy-local", "stop", *run_dir_args, env=caller_env, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(line.split()[1] == "stopped" for line in stopped.stdout.splitlines()), stopped.stdout
    assert not [s for s, r in pids.items() if r and group_alive(r.pid)]
    after = bulkchange("deploy-local", "restart", *run_dir_args, env=caller_env)
    assert after.returncode == 1 and "not running" in after.stderr, after.stdout + after.stderr
