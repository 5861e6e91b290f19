"""Security (DESIGN 9): tenant isolation through launchpad config and in reconcile.

A run's tenant, devices and carrier account come from the stored bulk change its partition names,
never from run config or tags, which anyone with the launchpad can write. And a carrier callback
speaks only for the account whose credentials it carries: it settles nothing of another account's
bulk change, and another tenant's partition is reconciled with that tenant's own account.

Two tenants share each carrier simulator (as two customers of one carrier would), each with its
own account there; the simulators count calls per account, so "used only its own account" is what
the carrier saw, not what our logs say.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.tags import account_tag_value
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline.simulators.teal import TealSimulator
from bulkchange_pipeline.simulators.teal_rules import make_eids
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.schema import (
    bulk_change_log,
    carrier_callback,
    device,
    device_change,
    device_history,
)

from ..defs.harness import evaluate_sensor, execute
from ..factories import (
    JASPER_KEY,
    JASPER_USER,
    iccid,
    make_account,
    make_bulk_change,
    make_devices,
)
from ..simulators.fixtures import (
    TS_ACCOUNT,
    TS_CB_PASSWORD,
    TS_CB_USER,
    TS_CLIENT_ID,
    TS_CLIENT_SECRET,
    TS_PASSWORD,
    TS_USER,
)
from ..waiting import wait_until
from .common import HoldingThingSpace, add_devices, row_statuses
from .conftest import TEAL_KEY, TEAL_SECRET

# Tenant A ("acme") uses the reliability suite's credentials (conftest.carrier_env); tenant B
# ("globex") has its own account at each carrier, under its own credentials names.
B_JASPER_USER, B_JASPER_KEY = "globex-ops", "globex-jasper-KEY-51"
B_TS = {
    "USERNAME": "globex-uws",
    "SECRET": "globex-TS-pw-8",
    "CLIENT_ID": "globex-client",
    "CLIENT_SECRET": "globex-client-SECRET",
    "ACCOUNT_NAME": "0000456789-00001",
    "CALLBACK_USERNAME": "globex-cb",
    "CALLBACK_PASSWORD": "globex-cb-PW-3",
    "SERVICE_PLAN": "M2M-4G-1GB",
}
B_TEAL_KEY, B_TEAL_SECRET = "teal-key-globex", "teal-SECRET-globex-2"
CARRIERS: dict[str, Any] = {"timeout_seconds": 5.0, "max_attempts": 4, "retry_wait_seconds": 0.02}
NO_POLL = build_definitions(
    carriers=CarrierGatewayResource(**CARRIERS, poll_after_seconds=3600, async_timeout_seconds=7200)
)
POLL_NOW = build_definitions(
    carriers=CarrierGatewayResource(**CARRIERS, poll_after_seconds=0, async_timeout_seconds=7200)
)


def _crafted_tags(a: dict[str, int], a_credentials: str, a_bc: int | None = None) -> dict[str, str]:
    """Tags that claim the run belongs to tenant A and A's carrier account (the launchpad lets
    anyone set them)."""
    tags = {"bulkchange/tenant": str(a["tenant_id"]), "bulkchange/carrier_account": account_tag_value(a_credentials)}
    return {**tags, "bulkchange/bulk_change_id": str(a_bc)} if a_bc else tags


def _calls_by_account(stats: dict[str, Any]) -> dict[str, int]:
    return {name: s["calls"] for name, s in stats["accounts"].items() if s["calls"]}


# --- (a) launchpad: partition, run config, tags ------------------------------------------------------


@pytest.fixture
def shared_jasper(carrier_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JasperSimulator, str]]:
    """One Jasper with an account per tenant. B's credentials name is "JASPER", whose environment
    key is a suffix of A's ("TEST_JASPER"): the alignment a crafted credentials prefix needs."""
    monkeypatch.setenv("BULKCHANGE_CRED_JASPER_USERNAME", B_JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_JASPER_SECRET", B_JASPER_KEY)
    sim = JasperSimulator({JASPER_USER: JASPER_KEY, B_JASPER_USER: B_JASPER_KEY}, rate_per_second=0, max_concurrency=0)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url


def _two_jasper_tenants(
    engine: sa.Engine, sim: JasperSimulator, base_url: str
) -> tuple[dict, list[dict], dict, list[dict]]:
    a = make_account(engine, base_url, name="TEST_JASPER", tenant_name="acme")
    b = make_account(engine, base_url, name="JASPER", tenant_name="globex")
    a_devices = make_devices(engine, a, 6)
    b_devices = add_devices(engine, b, [iccid(1000 + i) for i in range(6)])
    sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in a_devices + b_devices)
    return a, a_devices, b, b_devices


def test_crafted_launch_of_another_tenants_partition_touches_only_that_tenant(
    engine: sa.Engine, dagster_instance: dg.DagsterInstance, shared_jasper: tuple[JasperSimulator, str]
) -> None:
    """B's partition launched with tags claiming tenant A, A's account and A's bulk change, and with
    every launchpad option set: it changes B's devices through B's account, and nothing of A's."""
    sim, base_url = shared_jasper
    a, a_devices, b, b_devices = _two_jasper_tenants(engine, sim, base_url)
    a_bc = make_bulk_change(
        engine, a, a_devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"}
    )  # waiting, not to be run
    b_bc = make_bulk_change(engine, b, b_devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(a_bc), str(b_bc)])
    defs = build_definitions(carriers=CarrierGatewayResource(**CARRIERS))

    # Run config cannot even name a tenant, an account or a device list: refused before any step.
    for config in (
        {"tenant_id": a["tenant_id"]},
        {"service_provider_id": a["service_provider_id"]},
        {"bulk_change_id": a_bc},
    ):
        with pytest.raises(dg.DagsterInvalidConfigError):
            execute(dagster_instance, defs, str(b_bc), run_config={"ops": {"plan_batches_op": {"config": config}}})
    assert sim.stats()["total_calls"] == 0

    launchpad = {"ops": {"plan_batches_op": {"config": {"retry_failed_only": True, "batch_size": 2}}}}
    result = execute(
        dagster_instance, defs, str(b_bc), tags=_crafted_tags(a, "TEST_JASPER", a_bc), run_config=launchpad
    )
    assert result.success

    # B's devices changed, through B's account only; A's devices, bulk change and account untouched.
    assert count_rows_by_status(engine, b_bc) == {"PROCESSED": len(b_devices)}
    assert _calls_by_account(sim.stats()) == {B_JASPER_USER: len(b_devices)}
    assert [sim.device(d["iccid"])["status"] for d in b_devices] == ["DEACTIVATED"] * len(b_devices)
    assert [sim.device(d["iccid"])["status"] for d in a_devices] == ["ACTIVATED"] * len(a_devices)
    assert (
        count_rows_by_status(engine, a_bc) == {"NEW": len(a_devices)}
        and get_bulk_change(engine, a_bc)["status"] == "NEW"
    )
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(device.c.id, device.c.status)).all())
        history = conn.execute(sa.select(device_history.c.tenant_id, device_history.c.device_id)).all()
        logs = conn.execute(sa.select(bulk_change_log.c.tenant_id, bulk_change_log.c.bulk_change_id)).all()
    assert all(statuses[d["id"]] == "ACTIVATED" for d in a_devices)
    assert all(statuses[d["id"]] == "DEACTIVATED" for d in b_devices)
    assert {(h.tenant_id, h.device_id) for h in history} == {(b["tenant_id"], d["id"]) for d in b_devices}
    assert logs and {(r.tenant_id, r.bulk_change_id) for r in logs} == {(b["tenant_id"], b_bc)}


def test_crafted_credentials_prefix_cannot_borrow_another_tenants_account(
    engine: sa.Engine, dagster_instance: dg.DagsterInstance, shared_jasper: tuple[JasperSimulator, str]
) -> None:
    """Resource config is part of the launchpad too. B's credentials name is "JASPER"; with the
    prefix set to "BULKCHANGE_CRED_TEST_", B's run would read A's "BULKCHANGE_CRED_TEST_JASPER_*"
    credentials. B's partition must still be sent with B's account, or not at all."""
    sim, base_url = shared_jasper
    _, _, b, b_devices = _two_jasper_tenants(engine, sim, base_url)
    b_bc = make_bulk_change(engine, b, b_devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(b_bc)])
    defs = build_definitions(carriers=CarrierGatewayResource(**CARRIERS))
    crafted = {"resources": {"carriers": {"config": {"credentials_env_prefix": "BULKCHANGE_CRED_TEST_"}}}}

    try:
        execute(dagster_instance, defs, str(b_bc), run_config=crafted, raise_on_error=False)
    except dg.DagsterInvalidConfigError:
        pass  # refusing the config is a fix too
    assert JASPER_USER not in _calls_by_account(sim.stats()), "B's devices were sent with tenant A's credentials"


# --- (b) reconcile: callbacks and partitions of another tenant ---------------------------------------


@pytest.fixture
def shared_thingspace(
    carrier_env: None, callback_app: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HoldingThingSpace, str]]:
    """One ThingSpace with an account per tenant (own OAuth client, user, account name and
    callback credentials). Callbacks are all lost, so only the ones the test sends arrive."""
    for key, value in B_TS.items():
        monkeypatch.setenv(f"BULKCHANGE_CRED_TEST_TS_B_{key}", value)
    sim = HoldingThingSpace(
        {TS_CLIENT_ID: TS_CLIENT_SECRET, B_TS["CLIENT_ID"]: B_TS["CLIENT_SECRET"]},
        {TS_USER: (TS_PASSWORD, TS_ACCOUNT), B_TS["USERNAME"]: (B_TS["SECRET"], B_TS["ACCOUNT_NAME"])},
    )
    sim.configure(drop_rate=1.0)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
        sim.holder.released.set()
    sim.close()


class RunInThread:
    """A process run executed in a thread while the test acts on the carrier and the callbacks."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions, key: str) -> None:
        self.result: dg.ExecuteInProcessResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(instance, defs, key), daemon=True)
        self._thread.start()

    def _run(self, instance: dg.DagsterInstance, defs: dg.Definitions, key: str) -> None:
        try:
            self.result = execute(instance, defs, key)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float = 60) -> dg.ExecuteInProcessResult:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "the run did not finish"
        return self.result


def _ts_fault(user: str, password: str, request_id: str, iccid_: str) -> dict[str, Any]:
    """A CarrierService callback reporting that the device's request failed."""
    return {
        "username": user,
        "password": password,
        "requestId": request_id,
        "deviceIds": [{"kind": "iccid", "id": iccid_}],
        "status": "Failed",
        "faultResponse": {"faultcode": "ns:SVC0001", "faultstring": "forged failure"},
    }


def test_thingspace_callback_with_another_accounts_credentials_settles_nothing(
    engine: sa.Engine,
    dagster_instance: dg.DagsterInstance,
    shared_thingspace: tuple[HoldingThingSpace, str],
    callback_app: ServerHandle,
) -> None:
    """Callbacks sent with tenant A's callback credentials that name tenant B's request and devices:
    one while B's request id is not recorded yet (the endpoint cannot tell whose it is and stores
    it), one after (refused). Neither settles a row of B; B's partition, launched with tags naming
    A, is reconciled with B's account only, and B's own poll settles the rows."""
    sim, base_url = shared_thingspace
    a = make_account(engine, base_url, integration="thingspace", name="TEST_TS", tenant_name="acme", max_concurrency=2)
    b = make_account(
        engine, base_url, integration="thingspace", name="TEST_TS_B", tenant_name="globex", max_concurrency=2
    )
    b_devices = add_devices(engine, b, [iccid(5000 + i) for i in range(4)], status="active")
    sim.seed_devices(
        {"iccid": d["iccid"], "state": "active", "servicePlan": "M2M-4G-1GB", "accountName": B_TS["ACCOUNT_NAME"]}
        for d in b_devices
    )
    b_bc = make_bulk_change(engine, b, b_devices, ChangeType.STATUS_UPDATE, {"status": "suspend"})
    dagster_instance.add_dynamic_partitions("bulk_change", [str(b_bc)])
    url = f"{callback_app.root_url}/callbacks/thingspace"

    # B's request is accepted by the carrier; its answer (the request id) is held from our client.
    sim.hold_action = lambda n: "after"
    run = RunInThread(dagster_instance, NO_POLL, str(b_bc))
    wait_until(lambda: sim.holder.held, timeout=30, what="B's request accepted and its answer held")
    (request_id,) = [rid for rid, r in sim.requests.items() if r["account"] == B_TS["ACCOUNT_NAME"]]
    early = httpx.post(url, json=_ts_fault(TS_CB_USER, TS_CB_PASSWORD, request_id, b_devices[0]["iccid"]))
    assert early.status_code == 200 and early.json()["stored"] == 1, (
        early.text
    )  # not recorded yet: cannot be judged here
    sim.holder.released.set()
    assert run.join().success
    assert {r.status for r in row_statuses(engine, b_bc)} == {"PROCESSING"}

    # Now the request id is B's: A's credentials are refused, nothing is stored.
    late = httpx.post(url, json=_ts_fault(TS_CB_USER, TS_CB_PASSWORD, request_id, b_devices[1]["iccid"]))
    assert late.status_code == 403, late.text
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(carrier_callback)).scalar() == 1

    # The sensor asks for a reconcile of B (a callback arrived); launched with tags naming tenant A.
    requested = evaluate_sensor(dagster_instance, NO_POLL, sensor_name="async_results_sensor").run_requests
    assert [r.partition_key for r in requested] == [str(b_bc)]
    assert execute(
        dagster_instance, NO_POLL, str(b_bc), tags=_crafted_tags(a, "TEST_TS"), job_name="reconcile_async_job"
    ).success
    assert {r.status for r in row_statuses(engine, b_bc)} == {"PROCESSING"}, (
        "a callback with A's credentials settled a row of B"
    )

    # B's own poll settles them, with B's account; A's account is never used.
    assert execute(
        dagster_instance, POLL_NOW, str(b_bc), tags=_crafted_tags(a, "TEST_TS"), job_name="reconcile_async_job"
    ).success
    rows = row_statuses(engine, b_bc)
    assert {r.status for r in rows} == {"PROCESSED"}, [(r.status, r.iccid) for r in rows]
    assert get_bulk_change(engine, b_bc)["status"] == "PROCESSED"
    with engine.connect() as conn:
        details = (
            conn.execute(sa.select(device_change.c.status_details).where(device_change.c.bulk_change_id == b_bc))
            .scalars()
            .all()
        )
    assert not [d for d in details if "forged" in d]
    assert set(_calls_by_account(sim.stats())) - {"-"} == {B_TS["USERNAME"]}  # "-": token and login, before a session


@pytest.fixture
def shared_teal(
    carrier_env: None, callback_app: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TealSimulator, str]]:
    """One Teal with a key per tenant; callbacks all lost."""
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_B_USERNAME", B_TEAL_KEY)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_TEAL_B_SECRET", B_TEAL_SECRET)
    sim = TealSimulator(
        {TEAL_KEY: TEAL_SECRET, B_TEAL_KEY: B_TEAL_SECRET}, calls_per_minute=0, operation_delay_seconds=0.05
    )
    sim.configure(drop_callback_rate=1.0)
    with sim.run_in_thread() as handle:
        yield sim, handle.base_url
    sim.close()


def test_teal_callback_only_makes_the_owners_reconcile_poll_with_its_own_account(
    engine: sa.Engine,
    dagster_instance: dg.DagsterInstance,
    shared_teal: tuple[TealSimulator, str],
    callback_app: ServerHandle,
) -> None:
    """A Teal callback carries no credentials, so it must carry no result either: one naming B's
    request and claiming B's devices failed only makes B's reconcile fetch the result, from Teal,
    with B's key (even when B's partition is launched with tags naming tenant A)."""
    sim, base_url = shared_teal
    a = make_account(engine, base_url, integration="teal", name="TEST_TEAL", tenant_name="acme", max_concurrency=2)
    b = make_account(engine, base_url, integration="teal", name="TEST_TEAL_B", tenant_name="globex", max_concurrency=2)
    eids = make_eids(4, start=7000)
    b_devices = add_devices(engine, b, [iccid(7000 + i) for i in range(4)], status="online")
    with engine.begin() as conn:
        for d, eid in zip(b_devices, eids):
            conn.execute(sa.update(device).where(device.c.id == d["id"]).values(eid=eid))
            d["eid"] = eid
    sim.seed_devices({"eid": d["eid"], "iccid": d["iccid"], "deviceStatus": "online"} for d in b_devices)
    b_bc = make_bulk_change(engine, b, b_devices, ChangeType.STATUS_UPDATE, {"status": "stopped"})
    with engine.begin() as conn:
        for d in b_devices:
            conn.execute(sa.update(device_change).where(device_change.c.device_id == d["id"]).values(eid=d["eid"]))
    dagster_instance.add_dynamic_partitions("bulk_change", [str(b_bc)])

    assert execute(dagster_instance, NO_POLL, str(b_bc)).success
    (request_id,) = {r.carrier_request_id for r in row_statuses(engine, b_bc)}
    forged = {
        "requestId": request_id,
        "status": "FAILED",
        "entries": [{"eid": d["eid"], "status": "FAILED", "message": "forged"} for d in b_devices],
    }
    answer = httpx.post(f"{callback_app.root_url}/callbacks/teal", params={"requestId": request_id}, json=forged)
    assert answer.status_code == 200, answer.text
    wait_until(lambda: sim.stats()["operations_pending"] == 0, timeout=10, what="Teal to finish the operation")

    assert execute(
        dagster_instance, NO_POLL, str(b_bc), tags=_crafted_tags(a, "TEST_TEAL"), job_name="reconcile_async_job"
    ).success
    assert count_rows_by_status(engine, b_bc) == {"PROCESSED": len(b_devices)}
    assert [sim.device(d["eid"])["deviceStatus"] for d in b_devices] == ["STOPPED"] * len(b_devices)
    with engine.connect() as conn:
        details = (
            conn.execute(sa.select(device_change.c.status_details).where(device_change.c.bulk_change_id == b_bc))
            .scalars()
            .all()
        )
    assert not [d for d in details if "forged" in d]
    assert set(_calls_by_account(sim.stats())) == {B_TEAL_KEY}
