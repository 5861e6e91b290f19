"""Security (DESIGN 9): no configured secret anywhere after a full run with faults; database URLs
that require TLS; write_enabled = false stops an asynchronous carrier's calls.

The secret scan covers what the pipeline tests do not (they scan Jasper's exchanges, or ThingSpace's
callbacks and logs): all three kinds of carrier in one run with faults (and the Jasper account
over SOAP too: its password and license key, raw and XML-escaped), token and session renewals
and duplicated callbacks, an intake API key, and then every table of the business database (read
by reflection, so a table added later is scanned too), every run's config and tags and its whole
event log (process and reconcile runs).
"""

from __future__ import annotations

import base64
import os
from xml.sax.saxutils import escape as xml_escape

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from bulkchange_pipeline.cli import main as cli
from bulkchange_pipeline.defs import DatabaseResource, build_definitions
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.jasper import API_PREFIX as JASPER_API_PREFIX
from bulkchange_pipeline.simulators.teal_rules import make_eids
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import (
    bulk_change_log,
    carrier_callback,
    device,
    device_change,
)

from ..defs.harness import FAST_CARRIERS, execute, fast_definitions, sensor_then_runs
from ..factories import (
    JASPER_KEY,
    JASPER_USER,
    iccid,
    make_account,
    make_bulk_change,
    make_devices,
)
from ..simulators.fixtures import (
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
)
from .common import add_devices
from .conftest import SECRETS


def _b64(a: str, b: str) -> str:
    return base64.b64encode(f"{a}:{b}".encode()).decode()


def _teal_devices(engine: sa.Engine, ids: dict[str, int], sim, n: int, start: int) -> list[dict]:
    eids = make_eids(n, start=start)
    devices = add_devices(engine, ids, [iccid(start + i) for i in range(n)], status="online")
    with engine.begin() as conn:
        for d, eid in zip(devices, eids):
            conn.execute(sa.update(device).where(device.c.id == d["id"]).values(eid=eid))
            d["eid"] = eid
    sim.seed_devices({"eid": d["eid"], "iccid": d["iccid"], "deviceStatus": "online"} for d in devices)
    return devices


def _teal_bulk_change(engine: sa.Engine, ids: dict[str, int], devices: list[dict]) -> int:
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "stopped"})
    with engine.begin() as conn:
        for d in devices:
            conn.execute(sa.update(device_change).where(device_change.c.device_id == d["id"]).values(eid=d["eid"]))
    return bc_id


def _settle(instance: dg.DagsterInstance, sims, rounds: int = 8) -> list[dg.ExecuteInProcessResult]:
    runs: list[dg.ExecuteInProcessResult] = []
    for _ in range(rounds):
        for sim in sims:
            sim.wait_idle(30)  # its callbacks are stored by the callback app before it answers them
        result, new = sensor_then_runs(instance, fast_definitions(), sensor_name="async_results_sensor")
        runs += new
        if not result.run_requests:
            break
    return runs


SOAP_PASSWORD, LICENSE_KEY = "soap&PW<r3l1ab>-41", "lk&<r3l1ab>-KEY-8"


def test_no_configured_secret_in_database_logs_callbacks_event_log_or_run_config(
    engine, db_url, dagster_instance, jasper, thingspace, teal, carrier_env, monkeypatch
):
    jsim, jurl = jasper
    # The same Jasper account reached over SOAP too: one credentials entry, SOAP extras.
    jsim.configure(soap_accounts={JASPER_USER: SOAP_PASSWORD}, license_keys=[LICENSE_KEY])
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SOAP_PASSWORD", SOAP_PASSWORD)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_LICENSE_KEY", LICENSE_KEY)
    tsim, turl = thingspace
    teal_sim, teal_url = teal
    # Faults everywhere: failed exchanges are logged with their request and response text.
    jsim.configure(
        error_rate=0.1, burst_rate=0.03, malformed_rate=0.05, timeout_rate=0.02, timeout_hold_seconds=2.5, seed=5
    )
    tsim.configure(
        error_rate=0.15, malformed_rate=0.05, session_max_calls=2, duplicate_rate=0.3, seed=5
    )  # re-login: password sent again
    teal_sim.configure(
        error_rate=0.35, malformed_rate=0.1, duplicate_callback_rate=0.3, seed=3
    )  # few calls (batched): faults early

    j_ids = make_account(engine, jurl, batch_size=20)
    j_devices = make_devices(engine, j_ids, 40)
    jsim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in j_devices)
    t_ids = make_account(engine, turl, integration="thingspace", name="TEST_TS", batch_size=10)
    t_devices = add_devices(engine, t_ids, _ts_iccids(40), status="active")
    tsim.seed_devices({"iccid": d["iccid"], "state": "active", "servicePlan": "M2M-4G-1GB"} for d in t_devices)
    teal_ids = make_account(engine, teal_url, integration="teal", name="TEST_TEAL", batch_size=15)
    teal_devices = _teal_devices(engine, teal_ids, teal_sim, 30, start=3000)
    s_ids = make_account(
        engine,
        jurl.removesuffix(JASPER_API_PREFIX),
        protocol="soap",
        account_name="TEST_JASPER over SOAP",
        batch_size=15,
    )
    s_devices = add_devices(engine, s_ids, [iccid(4000 + i) for i in range(30)])
    jsim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in s_devices)

    api_key = create_api_key(engine, j_ids["tenant_id"], "ops")
    with TestClient(create_app(db_url)) as client:  # one bulk change arrives through the API
        r = client.post(
            "/bulk-changes",
            headers={"Authorization": f"Bearer {api_key}"},
            json={
                "serviceProviderId": j_ids["service_provider_id"],
                "changeType": 1,
                "devices": [d["iccid"] for d in j_devices],
                "statusUpdate": {"status": "DEACTIVATED"},
            },
        )
        assert r.status_code == 201, r.text
    j_bc = r.json()["id"]
    t_bc = make_bulk_change(engine, t_ids, t_devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    teal_bc = _teal_bulk_change(engine, teal_ids, teal_devices)
    s_bc = make_bulk_change(
        engine, s_ids, s_devices, ChangeType.EDIT_USERNAME_COST_CENTER, {"username": "u-1", "cost_center": "cc-1"}
    )

    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert len(runs) == 4 and all(r.success for r in runs)
    reconcile = _settle(dagster_instance, [tsim, teal_sim])
    assert reconcile and all(r.success for r in reconcile)
    for bc in (j_bc, t_bc, teal_bc, s_bc):
        counts = count_rows_by_status(engine, bc)
        assert "PROCESSING" not in counts and "NEW" not in counts, (bc, counts)
    assert (
        sum(jsim.stats()["injected"].values())
        and sum(tsim.stats()["injected"].values())
        and sum(teal_sim.stats()["injected"].values())
    )
    assert tsim.stats()["logins"] > 1  # the session was renewed: the password went over the wire again
    assert jsim.stats()["soap_calls"]["EditTerminal"] >= 60  # two fields a device, over SOAP

    needles = {
        **SECRETS,
        "jasper basic token": _b64(JASPER_USER, JASPER_KEY),
        "thingspace oauth basic token": _b64(TS_CLIENT_ID, TS_CLIENT_SECRET),
        "thingspace callback basic token": _b64(TS_CB_USER, TS_CB_PASSWORD),
        "intake API key": api_key,
        "soap password": SOAP_PASSWORD,
        "soap password (XML)": xml_escape(SOAP_PASSWORD),
        "license key": LICENSE_KEY,
        "license key (XML)": xml_escape(LICENSE_KEY),
    }

    # 1. Every table of the business database, found by reflection.
    tables = sa.MetaData()
    tables.reflect(engine)
    found: list[str] = []  # "where: which secret"
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            dump = "\n".join(repr(tuple(row)) for row in conn.execute(sa.select(table)))
            found += [f"{table.name}: {name}" for name, secret in needles.items() if secret in dump]
        exchanges = conn.execute(
            sa.select(sa.func.count()).select_from(bulk_change_log).where(bulk_change_log.c.request_text.is_not(None))
        ).scalar()
        failed = conn.execute(
            sa.select(sa.func.count()).select_from(bulk_change_log).where(bulk_change_log.c.has_errors)
        ).scalar()
        callbacks = conn.execute(sa.select(sa.func.count()).select_from(carrier_callback)).scalar()
    assert {"bulk_change_log", "carrier_callback", "api_key", "device_history", "service_provider"} <= set(
        tables.tables
    )
    assert exchanges > 100 and failed > 0 and callbacks >= 40  # the scan is not vacuous
    # 2. Every run (process and reconcile): its config, its tags, its whole event log.
    records = dagster_instance.get_run_records()
    assert len(records) == len(runs) + len(reconcile)
    for rec in records:
        run = rec.dagster_run
        dump = (
            repr(run.run_config)
            + repr(run.tags)
            + "\n".join(dg.serialize_value(e) for e in dagster_instance.all_logs(run.run_id))
        )
        found += [
            f"run {run.run_id[:8]} ({run.job_name}): {name}" for name, secret in needles.items() if secret in dump
        ]
    assert not found, found


def _ts_iccids(n: int) -> list[str]:
    return [iccid(2000 + i) for i in range(n)]


# --- TLS for database connections -------------------------------------------------------------------


def test_database_url_with_sslmode_require(pg_database_url, tmp_path):
    """``?sslmode=require`` is accepted and reaches the driver; against a server without TLS the
    connection fails with the driver's clear message, in the CLI and in a run, never silently
    falling back to plain text. (If the server has TLS, the connection must use it.)"""
    url = f"{pg_database_url}?sslmode=require"
    engine = make_engine(url)
    assert engine.dialect.create_connect_args(engine.url)[1]["sslmode"] == "require"
    with make_engine(f"{pg_database_url}?sslmode=disable").connect() as conn:
        server_tls = conn.execute(sa.text("SHOW ssl")).scalar() == "on"
    if server_tls:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar() is True
        return
    clear = "server does not support SSL, but SSL was required"
    with pytest.raises(sa.exc.OperationalError, match=clear):
        engine.connect()
    engine.dispose()

    result = CliRunner().invoke(cli, ["status", "1", "--database-url", url])
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None)))
    assert "database error: connection to server at" in result.output and clear in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1

    with dg.instance_for_test() as instance:
        os.environ["BULKCHANGE_TLS_TEST_URL"] = url
        try:
            defs = build_definitions(
                database=DatabaseResource(url_env="BULKCHANGE_TLS_TEST_URL"), carriers=FAST_CARRIERS
            )
            instance.add_dynamic_partitions("bulk_change", ["1"])
            # A run's tags are read from its bulk change (``defs/partitions.py``) before it starts:
            # the launch itself fails with the driver's message, and no run is created.
            with pytest.raises(sa.exc.OperationalError, match=clear):
                execute(instance, defs, "1", raise_on_error=False)
        finally:
            del os.environ["BULKCHANGE_TLS_TEST_URL"]
        assert not instance.get_run_records()


# --- write_enabled = false on asynchronous carriers ---------------------------------------------------


@pytest.mark.parametrize("integration", ["thingspace", "teal"])
def test_writes_disabled_async_carrier_refuses_without_any_call(
    engine, dagster_instance, thingspace, teal, carrier_env, integration
):
    tsim, turl = thingspace
    teal_sim, teal_url = teal
    if integration == "thingspace":
        sim = tsim
        ids = make_account(engine, turl, integration="thingspace", name="TEST_TS", write_enabled=False)
        devices = add_devices(engine, ids, _ts_iccids(8), status="active")
        tsim.seed_devices({"iccid": d["iccid"], "state": "active", "servicePlan": "M2M-4G-1GB"} for d in devices)
        bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    else:
        sim = teal_sim
        ids = make_account(engine, teal_url, integration="teal", name="TEST_TEAL", write_enabled=False)
        bc_id = _teal_bulk_change(engine, ids, _teal_devices(engine, ids, teal_sim, 8, start=4000))

    _, runs = sensor_then_runs(dagster_instance, fast_definitions())
    assert runs[0].success
    assert count_rows_by_status(engine, bc_id) == {"API_FAILED": 8}
    with engine.connect() as conn:
        details = set(
            conn.execute(
                sa.select(device_change.c.status_details).where(device_change.c.bulk_change_id == bc_id)
            ).scalars()
        )
    assert all(d.startswith("Writes disabled for service provider") for d in details), details
    assert sim.stats()["total_calls"] == 0  # no login, no callback registration, no action
    assert get_bulk_change(engine, bc_id)["status"] == "PROCESSED"
    result, _ = sensor_then_runs(dagster_instance, fast_definitions(), sensor_name="async_results_sensor")
    assert not result.run_requests  # nothing waits on the carrier
