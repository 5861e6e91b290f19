"""The capability matrix (DESIGN section 4), cell by cell, end to end.

Columns are the six integrations over REST plus ``jasper/soap``: the Jasper family reached through
Control Center's SOAP Terminal service (a second demo service provider, ``seed_demo_soap``, of the
same Jasper account and simulator). For every change type x column: the demo seed (60 devices per
carrier) is written, the six
simulators of one shared park are synced from it, and a 6-device bulk change is submitted through
``intake.submit.submit`` (validation runs). Then the real ``bulk_change_sensor`` and
``process_bulk_change_job`` run it; for asynchronous carriers (ThingSpace, Teal: callbacks to the
real callback app; Telegence activation: status polls) ``async_results_sensor`` and
``reconcile_async_job`` run until the bulk change is final. A supported cell must end with every
row PROCESSED, the device column the change targets changed in our database, and the carrier's
state changed in the simulator where the carrier holds it. A ``-`` cell must be refused at
validation (every row ERROR with the capability reason) with no call to any simulator. A SOAP cell
must also have gone over SOAP (EditTerminal calls at the simulator, none over REST), left each
device a history row, and stored its exchanges with neither the password nor the license key.

Backends: every cell runs on SQLite and on PostgreSQL (business database and Dagster storage
alike); both matrices together take about 100 s on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.defs import CarrierGatewayResource, build_definitions
from bulkchange_pipeline.defs.local_runner import ASYNC_SENSOR_NAME, QUIET, tick_and_run
from bulkchange_pipeline.demo import soap_credentials_env
from bulkchange_pipeline.domain import (
    PAYLOAD_KEYS,
    BulkChangeRequest,
    CarrierProtocol,
    ChangeType,
    Integration,
    capability,
    unsupported_reason,
)
from bulkchange_pipeline.domain.capabilities import Handling
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.park import Park, start_park
from bulkchange_pipeline.simulators.server import run_app_in_thread
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status, get_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.schema import bulk_change_log, device, device_history
from bulkchange_pipeline.store.seed import (
    DemoSeed,
    demo_credentials_names,
    demo_iccid,
    demo_imei,
    load_demo,
    point_demo_at,
    seed_demo,
)
from bulkchange_pipeline.store.seed_soap import seed_demo_soap

DEVICES_PER_CARRIER = 60  # 6 Telegence INVENTORY SIMs (every 10th) for the activation cell
N = 6
CT = ChangeType
INTEGRATIONS = [i.value for i in Integration]
SOAP = "jasper/soap"
COLUMNS = [*INTEGRATIONS, SOAP]  # (integration, protocol) columns; a bare name is its REST column
TEAL_5GB, POND_5GB = "5f0c2a8e-1d3b-4c6a-9e7f-000000000005", "2003"
FINAL = {"PROCESSED", "ERROR", "CANCELLED"}

Row = dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One supported cell: which devices, what request, and what must hold afterwards."""

    payload: Callable[[DemoSeed], dict[str, Any]]
    pick: Callable[[Row], bool] = lambda d: True
    per_device: Callable[[int, Row], dict[str, Any]] | None = None
    db: Callable[[Row, Row, DemoSeed], bool] = lambda before, after, seed: True
    sim: Callable[[Park, Row, Row], bool] | None = None
    marks: list[Any] = field(default_factory=list)


def _jasper(p: Park, d: Row) -> dict:
    return p.simulators["jasper"].device(d["iccid"])


def _ts(p: Park, d: Row) -> dict:
    return p.simulators["thingspace"].device(d["iccid"])


def _tg(p: Park, d: Row) -> dict:
    return p.simulators["telegence"].device(d["msisdn"])


def _teal(p: Park, d: Row) -> dict:
    return p.simulators["teal"].device(d["eid"])


def _rev_services(p: Park, d: Row, customer: str) -> list[dict]:
    view = p.simulators["revio"].device(d["msisdn"]) or {"services": []}
    return [s for s in view["services"] if str(s["customer_id"]) == customer and s["status"] == "ACTIVE"]


def _rev_products(p: Park, d: Row) -> set[int]:
    view = p.simulators["revio"].device(d["msisdn"]) or {"service_products": []}
    return {sp["product_id"] for sp in view["service_products"]}


def _status(target: str, before: str) -> Cell:
    return Cell(
        lambda s: {"targetStatus": target},
        pick=lambda d: d["status"] == before,
        db=lambda b, a, s: a["status"] == target,
    )


def _plan(code: str, **kw: Any) -> Cell:
    return Cell(
        lambda s: {"carrierRatePlan": code},
        pick=lambda d: d["carrier_rate_plan"] != code,
        db=lambda b, a, s: a["carrier_rate_plan"] == code,
        **kw,
    )


ARCHIVE = Cell(
    lambda s: {"overrideUsageCheck": False},
    pick=lambda d: d["last_usage_at"] < utcnow() - timedelta(days=31) and not d["has_active_rev_service"],
    db=lambda b, a, s: a["archived_at"] is not None,
)
CUSTOMER_PLAN = Cell(
    lambda s: {
        "customerRatePlanId": s.customer_rate_plans["Fleet Plus 5GB"],
        "customerPoolId": s.pools["Acme Shared Pool"],
    },
    db=lambda b, a, s: (
        (a["customer_rate_plan_id"], a["customer_rate_pool_id"], a["data_allocation_mb"])
        == (s.customer_rate_plans["Fleet Plus 5GB"], s.pools["Acme Shared Pool"], 5120)
    ),
)
ASSIGN = Cell(
    lambda s: {"customerId": s.customers["Acme Logistics"]},
    pick=lambda d: not d["has_active_rev_service"],
    db=lambda b, a, s: a["customer_id"] == s.customers["Acme Logistics"],
)
EDIT = Cell(
    lambda s: {"username": "truck-17", "costCenter": "CC-42"},
    db=lambda b, a, s: (a["username"], a["cost_center"]) == ("truck-17", "CC-42"),
)


def _with(cell: Cell, **changes: Any) -> Cell:
    return Cell(**{**cell.__dict__, **changes})


# Every supported cell of DESIGN section 4; any (change type, integration) not here is a "-".
CELLS: dict[tuple[ChangeType, str], Cell] = {
    (CT.STATUS_UPDATE, "jasper"): _with(
        _status("DEACTIVATED", "ACTIVATED"), sim=lambda p, b, a: _jasper(p, a)["status"] == "DEACTIVATED"
    ),
    (CT.STATUS_UPDATE, "thingspace"): _with(
        _status("suspend", "active"), sim=lambda p, b, a: _ts(p, a)["state"] == "suspend"
    ),
    (CT.STATUS_UPDATE, "telegence"): _with(_status("S", "A"), sim=lambda p, b, a: _tg(p, a)["subscriberStatus"] == "S"),
    (CT.STATUS_UPDATE, "teal"): _with(
        _status("stopped", "online"), sim=lambda p, b, a: _teal(p, a)["deviceStatus"] == "STOPPED"
    ),
    (CT.STATUS_UPDATE, "pond"): _with(
        _status("DEACTIVATED", "ACTIVATED"),
        sim=lambda p, b, a: not any(s["enabled"] for s in p.simulators["pond"].device(a["iccid"])["services"]),
    ),
    (CT.ACTIVATE_NEW_SERVICE, "telegence"): Cell(
        lambda s: {"carrierRatePlan": "IOTSOC5GB"},
        pick=lambda d: d["status"] == "INVENTORY",
        db=lambda b, a, s: a["status"] == "A" and a["carrier_rate_plan"] == "IOTSOC5GB" and a["msisdn"] != b["msisdn"],
        sim=lambda p, b, a: _tg(p, a)["subscriberStatus"] == "A" and _tg(p, a)["sim"] == a["iccid"],
    ),
    **{(CT.ARCHIVAL, i): ARCHIVE for i in INTEGRATIONS if i != "revio"},
    **{(CT.CUSTOMER_RATE_PLAN_CHANGE, i): CUSTOMER_PLAN for i in INTEGRATIONS if i != "revio"},
    (CT.CUSTOMER_ASSIGNMENT, "jasper"): _with(
        ASSIGN, sim=lambda p, b, a: _jasper(p, a)["customer"] == "Acme Logistics"
    ),
    **{(CT.CUSTOMER_ASSIGNMENT, i): ASSIGN for i in ("thingspace", "telegence", "teal", "pond")},
    (CT.CUSTOMER_ASSIGNMENT, "revio"): _with(
        ASSIGN, sim=lambda p, b, a: len(_rev_services(p, a, "1001")) == 1 and _rev_products(p, a) == {101, 102}
    ),
    (CT.CARRIER_RATE_PLAN_CHANGE, "jasper"): _plan(
        "IOT-5GB", sim=lambda p, b, a: _jasper(p, a)["ratePlan"] == "IOT-5GB"
    ),
    (CT.CARRIER_RATE_PLAN_CHANGE, "thingspace"): _with(  # ThingSpace refuses a plan change while suspended
        _plan("M2M-4G-5GB", sim=lambda p, b, a: _ts(p, a)["servicePlan"] == "M2M-4G-5GB"),
        pick=lambda d: d["status"] == "active" and d["carrier_rate_plan"] != "M2M-4G-5GB",
    ),
    (CT.CARRIER_RATE_PLAN_CHANGE, "telegence"): _with(
        _plan("IOTSOC5GB", sim=lambda p, b, a: _tg(p, a)["singleUserCode"] == "IOTSOC5GB"),
        pick=lambda d: d["status"] == "A" and d["carrier_rate_plan"] != "IOTSOC5GB",
    ),
    (CT.CARRIER_RATE_PLAN_CHANGE, "teal"): _plan(TEAL_5GB, sim=lambda p, b, a: _teal(p, a)["planUuid"] == TEAL_5GB),
    (CT.CARRIER_RATE_PLAN_CHANGE, "pond"): _plan(
        POND_5GB,
        sim=lambda p, b, a: [x["packageTypeId"] for x in p.simulators["pond"].active_packages(a["iccid"])] == [2003],
    ),
    (CT.CREATE_REV_SERVICE, "revio"): Cell(
        lambda s: {"customerId": s.customers["Globex Fleet"], "productIds": [103]},
        pick=lambda d: not d["has_active_rev_service"],
        # Billing only: the device row keeps its customer and now shows its active Rev service.
        db=lambda b, a, s: a["customer_id"] == b["customer_id"] and a["has_active_rev_service"],
        sim=lambda p, b, a: len(_rev_services(p, a, "1002")) == 1 and _rev_products(p, a) == {103},
    ),
    (CT.CHANGE_ICCID_AND_IMEI, "thingspace"): Cell(
        lambda s: {},
        pick=lambda d: d["status"] == "active",
        per_device=lambda k, d: {"newIccid": demo_iccid(2, 0, 900 + k)},
        db=lambda b, a, s: a["iccid"] != b["iccid"] and a["iccid"].startswith("8901200000000009"),
        sim=lambda p, b, a: _ts(p, a) is not None and _ts(p, b) is None,
    ),
    (CT.CHANGE_ICCID_AND_IMEI, "telegence"): Cell(
        lambda s: {},
        pick=lambda d: d["status"] == "A",
        per_device=lambda k, d: {"newImei": demo_imei(3, 0, 900 + k)},
        db=lambda b, a, s: a["imei"] != b["imei"] and a["imei"].startswith("353000000009"),
        sim=lambda p, b, a: _tg(p, a)["BLIMEI"] == a["imei"],
    ),
    (CT.EDIT_USERNAME_COST_CENTER, "jasper"): _with(
        EDIT,
        sim=lambda p, b, a: (_jasper(p, a)["accountCustom1"], _jasper(p, a)["accountCustom2"]) == ("truck-17", "CC-42"),
    ),
    # "PATCH + Rev update": three lines without a Rev service (serials 0-2) and three with one
    # (the seed flags every 7th); the line's Rev service must show the edit too, and only those.
    (CT.EDIT_USERNAME_COST_CENTER, "telegence"): _with(
        EDIT,
        pick=lambda d: d["status"] in ("A", "S") and (d["has_active_rev_service"] or int(d["msisdn"][-8:]) < 3),
        sim=lambda p, b, a: (
            (_tg(p, a)["contactName"], _tg(p, a)["costCenter"]) == ("truck-17", "CC-42")
            and [
                (s["status"], s["description"], {f["label"]: f["value"] for f in s["fields"]}.get("Cost Center"))
                for s in (p.simulators["revio"].device(a["msisdn"]) or {"services": []})["services"]
            ]
            == ([("ACTIVE", "truck-17", "CC-42")] if b["has_active_rev_service"] else [])
        ),
    ),
    **{(CT.EDIT_USERNAME_COST_CENTER, i): EDIT for i in ("thingspace", "teal", "pond")},
}
# Jasper over SOAP: every cell of its REST column, checked the same way on the same simulator.
CELLS.update({(ct, SOAP): cell for (ct, column), cell in list(CELLS.items()) if column == "jasper"})


def _column(column: str) -> tuple[Integration, CarrierProtocol]:
    integration, _, protocol = column.partition("/")
    return Integration(integration), CarrierProtocol.parse(protocol or None)


ALL = [(ct, i) for ct in ChangeType for i in COLUMNS]
SUPPORTED = [
    pytest.param(ct, i, id=f"{ct.name.lower()}-{i}", marks=CELLS[(ct, i)].marks) for ct, i in ALL if (ct, i) in CELLS
]
REFUSED = [pytest.param(ct, i, id=f"{ct.name.lower()}-{i}") for ct, i in ALL if (ct, i) not in CELLS]


def test_table_covers_the_design_matrix() -> None:
    """The table above is DESIGN section 4: a cell is listed exactly when the domain supports it."""
    assert {(ct, i) for ct, i in ALL if capability(ct, *_column(i)) is not None} == set(CELLS)
    assert len(ALL) == 63 and len(CELLS) == 41


@pytest.fixture(scope="module")
def park():
    with start_park(teal_operation_delay_seconds=0.05, telegence_activation_polls=1) as p:
        yield p


@dataclass
class World:
    engine: sa.Engine
    instance: Any
    park: Park
    seed: DemoSeed

    def provider(self, column: str) -> int:
        """The service provider of a column: the demo's own, or its Jasper account over SOAP."""
        sp = self.seed.soap_service_provider_id if column == SOAP else self.seed.service_providers[column]
        assert sp is not None
        return sp


@pytest.fixture
def world(engine, db_url, dagster_instance, park, monkeypatch) -> World:
    """A fresh demo seed on this backend, the park synced from it, credentials and callback app set."""
    with run_app_in_thread(create_app(db_url)) as callbacks:
        seed = seed_demo(engine, devices_per_carrier=DEVICES_PER_CARRIER)
        point_demo_at(engine, park.base_urls, unlimited=True)
        seed_demo_soap(engine, park.handles["jasper"].root_url, DEVICES_PER_CARRIER, unlimited=True)
        seed = load_demo(engine)
        sync_from_database(engine, park, seed.tenant_id)
        env = park.credentials_env(demo_credentials_names(), credential_env_key)
        env.update(soap_credentials_env(demo_credentials_names()["jasper"]))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BULKCHANGE_CALLBACK_BASE_URL", callbacks.root_url)
        yield World(engine, dagster_instance, park, seed)


def _devices(w: World, integration: str, pick: Callable[[Row], bool]) -> list[Row]:
    with w.engine.connect() as conn:
        rows = conn.execute(
            sa.select(device).where(device.c.service_provider_id == w.provider(integration)).order_by(device.c.id)
        ).all()
    chosen = [dict(r._mapping) for r in rows if pick(dict(r._mapping))][:N]
    assert len(chosen) == N, f"the seed has only {len(chosen)} {integration} devices for this cell"
    return chosen


def _submit(w: World, ct: ChangeType, integration: str, cell: Cell, devices: list[Row]) -> int:
    entries = [
        {"iccid": d["iccid"], **(cell.per_device(k, d) if cell.per_device else {})} for k, d in enumerate(devices)
    ]
    body = {"serviceProviderId": w.provider(integration), "changeType": int(ct), "devices": entries}
    payload = cell.payload(w.seed)
    if payload:
        body[PAYLOAD_KEYS[ct]] = payload
    outcome = submit(w.engine, w.seed.tenant_id, BulkChangeRequest.model_validate(body), created_by="matrix-test")
    return outcome.bulk_change_id


def _run_to_the_end(w: World, bc_id: int, poll_now: bool) -> None:
    """Process run, then (async) callbacks / polls -> reconcile runs until the bulk change is final."""
    defs = build_definitions(
        carriers=CarrierGatewayResource(
            timeout_seconds=5.0,
            max_attempts=4,
            retry_wait_seconds=0.02,
            poll_after_seconds=0 if poll_now else 3600,
            async_timeout_seconds=7200,
        )
    )
    _, runs = tick_and_run(w.instance, defs, run_config=QUIET)
    assert all(r.success for r in runs)
    for _ in range(20):
        if get_bulk_change(w.engine, bc_id)["status"] in FINAL:
            return
        w.park.wait_idle(30)
        _, runs = tick_and_run(w.instance, defs, run_config=QUIET, sensor_name=ASYNC_SENSOR_NAME)
        assert all(r.success for r in runs)
        if not runs:
            time.sleep(0.05)  # a Teal callback may still be on its way
    raise AssertionError(f"bulk change {bc_id} did not finish: {get_bulk_change(w.engine, bc_id)}")


@pytest.mark.parametrize("change_type,integration", SUPPORTED)
def test_supported_cell_runs_end_to_end(world: World, change_type: ChangeType, integration: str) -> None:
    cell = CELLS[(change_type, integration)]
    before = _devices(world, integration, cell.pick)
    bc_id = _submit(world, change_type, integration, cell, before)
    assert count_rows_by_status(world.engine, bc_id) == {"NEW": N}, _details(world, bc_id)

    handling = capability(change_type, *_column(integration)).handling
    calls = world.park.calls()
    soap_before = _soap_calls(world)
    _run_to_the_end(world, bc_id, poll_now=integration == "telegence")

    assert count_rows_by_status(world.engine, bc_id) == {"PROCESSED": N}, _details(world, bc_id)
    assert get_bulk_change(world.engine, bc_id)["status"] == "PROCESSED"
    with world.engine.connect() as conn:
        after = {
            r.id: dict(r._mapping)
            for r in conn.execute(sa.select(device).where(device.c.id.in_([d["id"] for d in before])))
        }
    for b in before:
        assert cell.db(b, after[b["id"]], world.seed), (b, after[b["id"]])
        assert cell.sim is None or cell.sim(world.park, b, after[b["id"]]), b
    if handling is Handling.DB:  # database only: the carrier is never called
        assert world.park.calls() == calls
    if integration == SOAP:
        _assert_went_over_soap(world, bc_id, before, after, handling, calls, soap_before)


def _columns(row: Row) -> Row:
    return {k: v for k, v in row.items() if k != "updated_at"}


def _soap_calls(w: World) -> dict[str, int]:
    return dict(w.park.simulators["jasper"].stats().get("soap_calls", {}))


def _assert_went_over_soap(
    w: World,
    bc_id: int,
    before: list[Row],
    after: dict[int, Row],
    handling: Handling,
    calls: dict[str, int],
    soap_before: dict[str, int],
) -> None:
    """The carrier cells went over SOAP only (every Jasper call was an EditTerminal), every device
    the change changed has its history, and no stored exchange holds the SOAP password or the
    license key."""
    with w.engine.connect() as conn:
        logs = conn.execute(
            sa.select(bulk_change_log.c.request_text, bulk_change_log.c.response_text).where(
                bulk_change_log.c.bulk_change_id == bc_id
            )
        ).all()
        history = set(
            conn.execute(
                sa.select(device_history.c.device_id).where(device_history.c.bulk_change_id == bc_id)
            ).scalars()
        )
    changed = {b["id"] for b in before if _columns(b) != _columns(after[b["id"]])}
    assert changed and history == changed
    secrets = list(soap_credentials_env("DEMO_JASPER").values())
    assert not [t for row in logs for t in row if t and any(s in t for s in secrets)]
    if handling is Handling.CARRIER:
        edits = _soap_calls(w).get("EditTerminal", 0) - soap_before.get("EditTerminal", 0)
        jasper_calls = w.park.calls()["jasper"] - calls["jasper"]
        assert edits >= N and jasper_calls == edits, (edits, jasper_calls)
        sent = [r.request_text for r in logs if r.request_text and "EditTerminalRequest" in r.request_text]
        assert len(sent) == edits and all("<ns0:licenseKey>***</ns0:licenseKey>" in t for t in sent)


@pytest.mark.parametrize("change_type,integration", REFUSED)
def test_unsupported_cell_is_refused_at_validation(world: World, change_type: ChangeType, integration: str) -> None:
    devices = _devices(world, integration, lambda d: True)
    calls = world.park.calls()
    cell = Cell(lambda s: {})
    bc_id = _submit(world, change_type, integration, cell, devices)
    _run_to_the_end(world, bc_id, poll_now=False)

    reason = unsupported_reason(change_type, *_column(integration))
    rows = list(iter_device_results(world.engine, world.seed.tenant_id, bc_id))
    assert [(r["status"], r["status_details"]) for r in rows] == [("ERROR", reason)] * N
    assert world.park.calls() == calls  # nothing was sent to any carrier
    with world.engine.connect() as conn:
        now = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(device).where(device.c.id.in_([d["id"] for d in devices])).order_by(device.c.id)
            )
        ]
    assert [{k: v for k, v in d.items() if k != "updated_at"} for d in now] == [
        {k: v for k, v in d.items() if k != "updated_at"} for d in devices
    ]


def _details(w: World, bc_id: int) -> list[tuple[str, str | None]]:
    return [(r["status"], r["status_details"]) for r in iter_device_results(w.engine, w.seed.tenant_id, bc_id)]
