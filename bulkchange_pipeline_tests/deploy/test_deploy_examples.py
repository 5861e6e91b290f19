"""The deployment examples (``deploy/helm``, ``deploy/docker``) agree with the local deployment.

No Docker engine or cluster runs here, so the examples are parsed, validated where Dagster's own
schema can validate them, and cross-checked against ``deploy/dagster.postgres.yaml`` and
``bulkchange_pipeline.deploy`` (what ``test_deploy_local`` runs): the same run-queue tag limit, the
same code location module, the same storage scheme, the same environment variable names.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulkchange_pipeline.defs.pools import ACCOUNT_TAG
from bulkchange_pipeline.deploy import (
    CODE_SERVER_MODULE,
    DAEMON_MODULE,
    MODULE,
    LocalDeployment,
    dagster_pg_env,
    prepare,
    service_environment,
)
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.store.seed import demo_credentials_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LOCATION = "bulkchange_pipeline"
SECRET = "bulkchange-secrets"


def load(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def env_names(node: Any) -> set[str]:
    """Every ``{env: NAME}`` a Dagster config refers to."""
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} else set()
        return found.union(*(env_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(v) for v in node))
    return set()


def validated(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The file checked by Dagster's instance config schema (env values resolved from dummies)."""
    from dagster._core.instance.config import dagster_instance_config

    for name in env_names(yaml.safe_load(path.read_text())):
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    home = tmp_path / path.parent.name
    home.mkdir()
    shutil.copy(path, home / "dagster.yaml")
    config, _ = dagster_instance_config(str(home))
    return dict(config)


@pytest.fixture
def local() -> dict[str, Any]:
    return load("dagster.postgres.yaml")


def test_production_instance_config(local: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = validated(DEPLOY / "dagster.postgres.yaml", tmp_path, monkeypatch)
    pg = cfg["storage"]["postgres"]["postgres_db"]
    assert pg["scheme"] == "postgresql+psycopg2"
    assert env_names(local["storage"]) == {
        "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_DB",
    }
    assert set(dagster_pg_env("postgresql+psycopg2://u:p@h:5433/d")) == env_names(local["storage"])
    assert cfg["run_coordinator"] == {
        "module": "bulkchange_pipeline.defs.run_coordinator",
        "class": "BulkChangeRunCoordinator",
        # read every second, launches in parallel (issue 22: P5 start latency, P6 24 accounts at once)
        "config": {"dequeue_interval_seconds": 1, "dequeue_use_threads": True, "dequeue_num_workers": 8},
    }
    assert cfg["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": ACCOUNT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert cfg["concurrency"]["pools"] == {
        "default_limit": 8,
        "granularity": "run",
    }  # runs wait in the queue (issue 22)
    assert cfg["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
    assert cfg["run_monitoring"]["enabled"] is True
    assert (
        cfg["retention"]["sensor"]["purge_after_days"]["skipped"] >= 1
        and cfg["retention"]["schedule"]["purge_after_days"] > 0
    )
    # The embedded default (SQLite, dagster dev) queues with the same per-account limit.
    assert (
        yaml.safe_load((ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
        == local["concurrency"]["runs"]["tag_concurrency_limits"]
    )


def test_local_deployment_files(local: dict[str, Any], tmp_path: Path) -> None:
    dep = LocalDeployment(tmp_path / "run", code_server_port=4999)
    env = service_environment(
        dep, "postgresql://app:pw@db:5432/business", "postgresql://dg:secret@db:5432/dagster", base={}
    )
    assert env["BULKCHANGE_DATABASE_URL"] == "postgresql+psycopg2://app:pw@db:5432/business"
    assert env_names(local["storage"]) <= set(env) and env["DAGSTER_PG_PASSWORD"] == "secret"
    prepare(dep, env)
    assert yaml.safe_load((dep.dagster_home / "dagster.yaml").read_text()) == local
    assert yaml.safe_load(dep.workspace.read_text()) == {
        "load_from": [{"grpc_server": {"host": "127.0.0.1", "port": 4999, "location_name": LOCATION}}]
    }
    assert stat.S_IMODE(dep.env_file.stat().st_mode) == 0o600
    argv = dep.commands()["code-server"]
    assert argv[1:5] == ["-m", CODE_SERVER_MODULE, "api", "grpc"] and argv[argv.index("-m", 2) + 1] == MODULE
    assert argv[argv.index("--location-name") + 1] == LOCATION
    assert LocalDeployment.load(dep.run_dir) == dep


def test_docker_instance_config_differs_only_in_the_launcher(
    local: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = load("docker/dagster.yaml")
    launcher = docker.pop("run_launcher")
    assert docker == {k: v for k, v in local.items() if k != "run_launcher"}
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    passed = set(launcher["config"]["env_vars"])
    assert env_names(local["storage"]) | {"BULKCHANGE_DATABASE_URL", "BULKCHANGE_CALLBACK_BASE_URL"} <= passed
    validated(DEPLOY / "docker" / "dagster.yaml", tmp_path, monkeypatch)


def local_commands(tmp_path: Path) -> dict[str, list[str]]:
    """What ``bulkchange deploy-local`` runs, host, port and workspace path left as placeholders."""
    dep = LocalDeployment(tmp_path / "run", host="HOST", code_server_port=4999)
    commands = dep.commands()
    return {
        name: ["PORT" if a == "4999" else "WORKSPACE" if a == str(dep.workspace) else a for a in argv]
        for name, argv in commands.items()
    }


def as_local(argv: list[str], host: str, port: str, workspace: str) -> list[str]:
    return ["HOST" if a == host else "PORT" if a == port else "WORKSPACE" if a == workspace else a for a in argv]


def test_docker_compose(local: dict[str, Any], tmp_path: Path) -> None:
    compose = load("docker/docker-compose.yml")
    services = compose["services"]
    launcher = load("docker/dagster.yaml")["run_launcher"]["config"]
    commands = {name: s.get("command", []) for name, s in services.items()}
    assert [n for n, c in commands.items() if DAEMON_MODULE in c] == ["daemon"]  # exactly one daemon
    # The daemon and the code server are the ones `deploy-local` runs (issue 22: the 1 s sensor
    # loop, run workers forked from a preloaded process), with the same arguments.
    expected = local_commands(tmp_path)
    code = commands["user_code"]
    assert as_local(code, "0.0.0.0", "4000", "") == ["python", *expected["code-server"][1:]]
    assert as_local(commands["daemon"], "", "", "workspace.yaml") == ["python", *expected["daemon"][1:]]
    assert code[code.index(CODE_SERVER_MODULE) + 3 :][:2] == ["-m", MODULE]
    assert code[code.index("--location-name") + 1] == LOCATION
    [entry] = load("docker/workspace.yaml")["load_from"]
    assert entry["grpc_server"] == {
        "host": "user_code",
        "port": int(code[code.index("-p") + 1]),
        "location_name": LOCATION,
    }
    for name in ("user_code", "webserver", "daemon", "setup"):  # every process that opens the instance
        assert env_names(local["storage"]) <= set(services[name]["environment"]), name
    for name in ("user_code", "daemon", "intake", "setup"):  # every process that runs our code or launches runs
        assert services[name]["env_file"] == "bulkchange.env", name
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / "docker" / "bulkchange.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["BULKCHANGE_DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert {v for v in launcher["env_vars"] if v.startswith("BULKCHANGE_")} == set(example)
    assert compose["networks"]["bulkchange_network"]["name"] == launcher["network"]
    assert services["user_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["user_code"]["image"]
    assert {s["image"] for n, s in services.items() if n != "postgres"} == {services["user_code"]["image"]}
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    pins = (ROOT / "pyproject.toml").read_text()
    assert '"dagster-docker==0.29.27"' in dockerfile and '"dagster-postgres==0.29.27"' in pins
    # Whatever starts them (the Helm chart's fixed commands), `dagster-daemon` and `dagster` in the
    # image are the wrappers, taking Dagster's arguments unchanged.
    assert f'exec python -m {DAEMON_MODULE} "$@"' in dockerfile and "/usr/local/bin/dagster-daemon" in dockerfile
    assert f'exec python -m {CODE_SERVER_MODULE} "$@"' in dockerfile and "> /usr/local/bin/dagster " in dockerfile
    assert "deploy/docker/dagster.yaml deploy/docker/workspace.yaml /opt/dagster/dagster_home/" in dockerfile


def dagster_libs_version() -> str:
    """The dagster-* libraries' version that goes with the pinned Dagster (0.29.27 for 1.13.27)."""
    from importlib.metadata import version

    return version("dagster-postgres")


def test_helm_values(local: dict[str, Any]) -> None:
    from dagster._cli.api import grpc_command

    v = load("helm/values.yaml")
    queue = v["dagsterDaemon"]["runCoordinator"]
    # The same coordinator and queue settings as the local deployment (the chart renders
    # customRunCoordinator's module, class and config as they are).
    assert queue["type"] == "CustomRunCoordinator" and queue["enabled"] is True
    custom = queue["config"]["customRunCoordinator"]
    assert {"module": custom["module"], "class": custom["class"], "config": custom["config"]} == local[
        "run_coordinator"
    ]
    # The fleet settings (issue 22): pools granularity run, the run limit, one run per account.
    c = v["concurrency"]
    assert c["enabled"] is True
    assert c["pools"] == {
        "defaultLimit": local["concurrency"]["pools"]["default_limit"],
        "granularity": local["concurrency"]["pools"]["granularity"],
    }
    assert c["runs"] == {
        "maxConcurrentRuns": local["concurrency"]["runs"]["max_concurrent_runs"],
        "tagConcurrencyLimits": local["concurrency"]["runs"]["tag_concurrency_limits"],
    }
    assert "concurrency" not in (v.get("additionalInstanceConfig") or {})  # once, where the chart renders it
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert {"name": SECRET} in v["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    pg = v["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlScheme"] == local["storage"]["postgres"]["postgres_db"]["scheme"]
    [code] = v["dagster-user-deployments"]["deployments"]
    args = code["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == MODULE and args[args.index("--location-name") + 1] == LOCATION
    known = {opt for p in grpc_command.params for opt in p.opts}
    assert {a for a in args if a.startswith("-")} <= known
    assert {"name": SECRET} in code["envSecrets"] and code["includeConfigInLaunchedRuns"]["enabled"] is True
    d = v["dagsterDaemon"]
    # The daemon and the webserver run our image: its `dagster-daemon` is the 1 s sensor loop
    # wrapper (the chart's daemon command is fixed), and both load BulkChangeRunCoordinator.
    assert d["enabled"] is True and d["image"] == v["dagsterWebserver"]["image"] == code["image"]
    assert {"name": SECRET} in d["envSecrets"] and {"name": SECRET} in v["dagsterWebserver"]["envSecrets"]
    assert f"dagster-k8s=={dagster_libs_version()}" in (DEPLOY / "helm" / "values.yaml").read_text()
    retries = local["run_retries"]
    assert d["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
        "retryOnAssetOrOpFailure": retries["retry_on_asset_or_op_failure"],
    }
    mon = local["run_monitoring"]
    assert d["runMonitoring"] == {
        "enabled": mon["enabled"],
        "startTimeoutSeconds": mon["start_timeout_seconds"],
        "cancelTimeoutSeconds": mon["cancel_timeout_seconds"],
        "pollIntervalSeconds": mon["poll_interval_seconds"],
        "maxResumeRunAttempts": mon["max_resume_run_attempts"],
    }
    assert d["sensors"] == {
        "useThreads": True,
        "numWorkers": local["sensors"]["num_workers"],
        "numSubmitWorkers": local["sensors"]["num_submit_workers"],
    }
    assert v["retention"]["enabled"] is True
    assert v["retention"]["sensor"]["purgeAfterDays"] == local["retention"]["sensor"]["purge_after_days"]
    assert v["retention"]["schedule"]["purgeAfterDays"] == local["retention"]["schedule"]["purge_after_days"]


def test_helm_secrets_and_pool_sync_job() -> None:
    from bulkchange_pipeline.cli import main

    v = load("helm/values.yaml")
    secrets = {
        d["metadata"]["name"]: d["stringData"]
        for d in yaml.safe_load_all((DEPLOY / "helm" / "bulkchange-secret.example.yaml").read_text())
    }
    assert "postgresql-password" in secrets[v["global"]["postgresqlSecretName"]]
    business = secrets[SECRET]
    assert business["BULKCHANGE_DATABASE_URL"].startswith("postgresql+psycopg2://")
    jasper = credential_env_key(demo_credentials_names()["jasper"])
    assert {f"{jasper}_USERNAME", f"{jasper}_SECRET"} <= set(business)
    assert all(k == "BULKCHANGE_DATABASE_URL" or k.startswith("BULKCHANGE_CRED_") for k in business)

    job = load("helm/sync-pools-cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = job["containers"]
    assert container["command"][:2] == ["bulkchange", "sync-pools"]
    main.make_context("bulkchange", list(container["command"][1:]))  # the options exist
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == v["global"]["dagsterHome"]
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == v["global"]["postgresqlSecretName"]
    assert {"secretRef": {"name": SECRET}} in container["envFrom"]
    [code] = v["dagster-user-deployments"]["deployments"]
    assert container["image"] == f"{code['image']['repository']}:{code['image']['tag']}"
