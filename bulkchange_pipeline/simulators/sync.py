"""Make the simulator park hold what our database says a tenant has at each carrier.

The pipeline checks a change against our database (validation), then sends it to the carrier; a
carrier that does not know the device, the plan or the customer refuses it. For the demo,
``make dev`` and the matrix test to mean anything, each simulator must therefore start from the
same devices and catalogue as the database: devices with their status, plan and identifiers;
rate plans as Teal plans, Pond package types, Telegence SOC codes, ThingSpace service plans and
Jasper rate/communication plans; Rev.io customers (by Rev customer id) and the active service
lines the database flags, for the devices of every carrier (Rev.io bills lines whatever carrier
serves them; a Telegence username/cost-center edit updates the line's Rev service).

``replace=True`` (the default) first forgets every device the simulator holds, so a second sync
after a reseeded database gives the same state as the first (lines that an earlier activation
created, ICCIDs an earlier swap changed, are gone). The catalogue and the accounts are kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..domain import Integration
from ..domain.transitions import TELEGENCE
from ..store import reference as ref
from . import revio_rules, thingspace_rules
from .park import REVIO_PROVIDER_ID, TELEGENCE_BAN, Park

# Pond package sizes for the package types synced from our rate plans (allowance is informative).
_MB = 1024**2


@dataclass(frozen=True)
class _Billing:
    """What the tenant's Rev.io account bills: the customers with a Rev id, and every live device
    (of any carrier) our database says has an active Rev service line."""

    customers: list[str]
    lines: list[dict[str, Any]]


def sync_from_database(engine: sa.Engine, park: Park, tenant_id: int, *, replace: bool = True) -> dict[str, int]:
    """Seed every simulator with the tenant's live devices of its integration and the catalogue
    they refer to; returns how many devices each simulator got (Rev.io: the Rev.io service
    provider's devices; it also gets the service lines of other carriers' devices)."""
    sps = ref.list_service_providers(engine, tenant_id)
    plans: dict[str, list[ref.CarrierRatePlan]] = defaultdict(list)
    devices: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sp_integration = {sp.id: _family(sp.integration) for sp in sps}
    for sp in sps:
        plans[sp_integration[sp.id]] += list(ref.carrier_rate_plans(engine, tenant_id, sp.id).values())
    rev_customers = ref.rev_customer_ids(engine, tenant_id)
    for r in ref.live_devices(engine, tenant_id):
        family = sp_integration.get(r["service_provider_id"])
        if family:
            devices[family].append(r)
    billing = _Billing(rev_customers, [d for family in devices.values() for d in family if d["has_active_rev_service"]])
    counts = {}
    for name, sim in park.simulators.items():
        if replace:
            _forget_devices(name, sim)
        counts[name] = _SYNC[name](sim, devices.get(name, []), plans.get(name, []), billing)
    return counts


def _family(integration: Integration) -> str:
    """The simulator serving an integration (the Jasper family shares the Jasper simulator)."""
    return integration.value if integration.value in _SYNC else "jasper"


def _jasper(sim: Any, rows: list[dict], plans: list[ref.CarrierRatePlan], _billing: _Billing) -> int:
    if plans:
        sim.configure(
            rate_plans=sorted({p.code for p in plans}),
            communication_plans=sorted(
                {p.communication_plan for p in plans if p.communication_plan}
                | {r["communication_plan"] for r in rows if r["communication_plan"]}
            ),
        )
    return sim.seed_devices(
        {
            "iccid": r["iccid"],
            "imei": r["imei"] or "",
            "msisdn": r["msisdn"],
            "status": r["status"],
            "ratePlan": r["carrier_rate_plan"],
            "communicationPlan": r["communication_plan"],
            "customer": r["customer_name"],
            "accountCustom1": r["username"] or "",
            "accountCustom2": r["cost_center"] or "",
        }
        for r in rows
        if r["iccid"]
    )


def _thingspace(sim: Any, rows: list[dict], plans: list[ref.CarrierRatePlan], _billing: _Billing) -> int:
    if plans:
        sim.configure(service_plans=sorted(p.code for p in plans))
    return sim.seed_devices(
        {
            "iccid": r["iccid"],
            "imei": r["imei"],
            "mdn": r["msisdn"],
            "state": r["status"],
            "servicePlan": r["carrier_rate_plan"],
        }
        for r in rows
        if r["iccid"] and (r["status"] or "").lower() in thingspace_rules.STATES
    )


def _telegence(sim: Any, rows: list[dict], plans: list[ref.CarrierRatePlan], _billing: _Billing) -> int:
    """Lines for devices with a subscriber status; a device in another status (the seed's
    ``INVENTORY``) has no line yet: it is what ActivateNewService activates."""
    if plans:
        sim.configure(plans=sorted(p.code for p in plans))
    return sim.seed_devices(
        {
            "subscriberNumber": r["msisdn"],
            "status": r["status"],
            "sim": r["iccid"],
            "imei": r["imei"],
            "plan": r["carrier_rate_plan"],
            "contactName": r["username"] or "",
            "costCenter": r["cost_center"] or "",
            "ban": TELEGENCE_BAN,
        }
        for r in rows
        if r["msisdn"] and r["status"] in TELEGENCE
    )


def _teal(sim: Any, rows: list[dict], plans: list[ref.CarrierRatePlan], _billing: _Billing) -> int:
    if plans:
        sim.configure(
            plans=[{"uuid": p.code, "name": p.name, "volume": 1, "volumeUnit": "GB", "price": 0.0} for p in plans]
        )
    return sim.seed_devices(
        {
            "eid": r["eid"],
            "iccid": r["iccid"],
            "imei": r["imei"],
            "msisdn": r["msisdn"],
            "deviceStatus": r["status"] if r["status"] in ("online", "waiting", "stopped") else "online",
            "planUuid": r["carrier_rate_plan"],
        }
        for r in rows
        if r["eid"]
    )


def _pond(sim: Any, rows: list[dict], plans: list[ref.CarrierRatePlan], _billing: _Billing) -> int:
    """Rate plans are package types of the simulator's inventory 1; each device holds one ACTIVE
    package of its plan, and its services are on when the device is ACTIVATED."""
    if plans:
        sim.configure(
            inventories={
                1: [
                    {
                        "packageTypeId": int(p.code) if p.code.isdigit() else p.code,
                        "name": p.name,
                        "status": "ACTIVE",
                        "dataUsageAllowanceInBytes": 1024 * _MB,
                    }
                    for p in plans
                ]
            }
        )
    return sim.seed_devices(
        {
            "iccid": r["iccid"],
            "servicesEnabled": r["status"] == "ACTIVATED",
            "packages": [
                {
                    "packageTypeId": int(r["carrier_rate_plan"])
                    if str(r["carrier_rate_plan"]).isdigit()
                    else r["carrier_rate_plan"],
                    "status": "ACTIVE",
                }
            ]
            if r["carrier_rate_plan"]
            else [],
        }
        for r in rows
        if r["iccid"]
    )


def _revio(sim: Any, rows: list[dict], _plans: list[ref.CarrierRatePlan], billing: _Billing) -> int:
    """Every customer with a Rev id; an ACTIVE service line for each device (of any carrier) our
    database says has one (for the device's own Rev customer, else the first), so Rev.io refuses
    what it would. The
    service carries the device's username as its description and its cost center in the "Cost
    Center" custom field, as a Telegence username/cost-center edit keeps them."""
    sim.seed_devices({"type": "customer", "customer_id": _rev_id(c)} for c in billing.customers)
    if not billing.customers:
        return 0
    services = [
        {
            "type": "service",
            "number": r["msisdn"] or r["iccid"],
            "provider_id": int(REVIO_PROVIDER_ID),
            "customer_id": _rev_id(r["rev_customer_id"] or billing.customers[0]),
            "status": "ACTIVE",
            "description": r["username"],
            "fields": [{"label": "Cost Center", "value": r["cost_center"]}],
        }
        for r in billing.lines
    ]
    sim.seed_devices(services)
    return len(rows)


def _rev_id(value: str) -> Any:
    return int(value) if str(value).isdigit() else value


def _forget_devices(name: str, sim: Any) -> None:
    """Drop the simulator's device state (not its accounts, catalogue or counters)."""
    if name == "jasper":
        sim.devices.clear()
        sim._updated.clear()
        sim.scheduled.clear()
    elif name == "thingspace":
        with sim._lock:
            sim.book = thingspace_rules.DeviceBook(sim.clock.now)
    elif name == "telegence":
        for attr in ("lines", "by_sim", "scheduled", "activations", "activation_by_sim"):
            getattr(sim, attr).clear()
    elif name == "teal":
        with sim.lock:
            sim.esims.clear()
    elif name == "pond":
        for attr in ("devices", "packages", "history"):
            getattr(sim, attr).clear()
    elif name == "revio":
        products = sim.book.products
        sim.book = revio_rules.RevBook(products.values(), now=sim.clock.now)


_SYNC = {
    "jasper": _jasper,
    "thingspace": _thingspace,
    "telegence": _telegence,
    "teal": _teal,
    "pond": _pond,
    "revio": _revio,
}


__all__ = ["sync_from_database"]
