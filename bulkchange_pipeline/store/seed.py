"""Demo data: a "demo" tenant with one service provider per integration, and an "other" tenant.

The demo, the examples and the tests all start from this seed, so it is deterministic (the same
identifiers every time; on a fresh database the same ids) and idempotent (a second run finds the
tenant and writes nothing, unless ``reset`` deletes both tenants' rows first). Identifiers are
valid: ICCIDs and IMEIs carry a correct Luhn check digit, so a demo request never trips validation
by accident. Secrets are never stored: each service provider names a credentials entry
(``DEMO_JASPER``...) whose values live in ``BULKCHANGE_CRED_<NAME>_USERNAME`` / ``_SECRET``.

``seed_soap.seed_demo_soap`` adds, on request (the demo does), the demo Jasper account reached over
SOAP; ``load_demo`` reports it as ``soap_service_provider_id`` and keeps ``service_providers`` one
per integration (their REST providers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..domain import CarrierProtocol, Integration, luhn_check_digit
from . import reference as ref
from .db import run_transaction, utcnow
from .schema import (
    customer,
    customer_rate_plan,
    customer_rate_pool,
    device,
    metadata,
    service_provider,
    tenant,
)

DEMO_TENANT = "demo"
OTHER_TENANT = "other"
OTHER_DEVICES = 5

# Integration -> (service provider name, carrier, default base URL, portal type, rate/s, concurrency, batch).
PROVIDERS: dict[Integration, tuple[str, str, str, int, float, int, int]] = {
    Integration.JASPER: (
        "AT&T Control Center (POD19)",
        "att_pod19",
        "http://127.0.0.1:8910/rws/api/v1",
        0,
        5.0,
        1,
        500,
    ),
    Integration.THINGSPACE: ("Verizon ThingSpace", "verizon", "http://127.0.0.1:8911", 0, 10.0, 4, 10_000),
    Integration.TELEGENCE: ("AT&T Telegence", "att_telegence", "http://127.0.0.1:8912", 2, 10.0, 4, 200),
    Integration.TEAL: ("Teal", "teal", "http://127.0.0.1:8913", 0, 16.0, 4, 500),
    Integration.POND: ("Pond IoT", "pond", "http://127.0.0.1:8914", 0, 5.0, 2, 500),
    Integration.REVIO: ("Rev.io", "revio", "http://127.0.0.1:8915", 0, 8.0, 2, 500),
}

# Carrier rate plans: (code, name, communication plan).
RATE_PLANS: dict[Integration, list[tuple[str, str, str | None]]] = {
    Integration.JASPER: [
        ("IOT-1GB", "IoT 1 GB pooled", "CP-IOT-DATA"),
        ("IOT-5GB", "IoT 5 GB pooled", "CP-IOT-DATA"),
        ("IOT-10GB-SMS", "IoT 10 GB + SMS", "CP-IOT-DATA-SMS"),
    ],
    Integration.THINGSPACE: [("M2M-4G-1GB", "M2M 4G 1 GB", None), ("M2M-4G-5GB", "M2M 4G 5 GB", None)],
    Integration.TELEGENCE: [("IOTSOC1GB", "Mobility IoT 1 GB", None), ("IOTSOC5GB", "Mobility IoT 5 GB", None)],
    # Teal plans are UUIDs and Pond plans are package type ids: the simulators' own defaults, so a
    # simulator started on its own (``python -m bulkchange_pipeline.simulators teal``) knows them.
    Integration.TEAL: [
        ("5f0c2a8e-1d3b-4c6a-9e7f-000000000001", "Teal IoT 1 GB", None),
        ("5f0c2a8e-1d3b-4c6a-9e7f-000000000005", "Teal IoT 5 GB", None),
    ],
    Integration.POND: [("2002", "Pond IoT 1 GB package", None), ("2003", "Pond IoT 5 GB package", None)],
    Integration.REVIO: [],
}

# Device statuses in the carrier's own spelling, picked by index % 10.
STATUS_CYCLE: dict[Integration, list[str]] = {
    Integration.JASPER: ["ACTIVATED"] * 8 + ["DEACTIVATED", "TEST_READY"],
    Integration.THINGSPACE: ["active"] * 8 + ["suspend", "pre-active"],
    # INVENTORY: a SIM in stock with no line at Telegence yet (what ActivateNewService activates);
    # its MSISDN is the number reserved for it, replaced by the one Telegence assigns.
    Integration.TELEGENCE: ["A"] * 8 + ["S", "INVENTORY"],
    Integration.TEAL: ["online"] * 8 + ["stopped", "waiting"],
    Integration.POND: ["ACTIVATED"] * 9 + ["DEACTIVATED"],
    Integration.REVIO: ["ACTIVE"] * 10,
}

CUSTOMERS = [("Acme Logistics", "1001"), ("Globex Fleet", "1002"), ("Initech Sensors", None)]  # Rev.io ids are int32
CUSTOMER_RATE_PLANS = [("Fleet Basic 1GB", 1024), ("Fleet Plus 5GB", 5120), ("Sensor Lite 100MB", 100)]
POOLS = ["Acme Shared Pool", "Globex Shared Pool"]


@dataclass
class DemoSeed:
    """Ids of what the seed made (or found), for tests, examples and the demo command."""

    tenant_id: int
    other_tenant_id: int
    service_providers: dict[str, int]  # integration value -> id
    other_service_provider_id: int
    carrier_rate_plans: dict[str, list[str]]  # integration value -> codes
    customers: dict[str, int]  # name -> id
    customer_rate_plans: dict[str, int]  # name -> id
    pools: dict[str, int]  # name -> id
    sample_iccids: dict[str, list[str]] = field(default_factory=dict)  # integration -> first ICCIDs
    other_iccids: list[str] = field(default_factory=list)
    created: bool = True
    soap_service_provider_id: int | None = None  # the Jasper account over SOAP (``seed_demo_soap``)

    def example_customer_rate_plan_request(self) -> dict[str, Any]:
        """The seed's changeType 4 request (data-flow.md) with ids valid for this seed: three
        Jasper devices by ICCID and a fourth by IMEI, as the seed's mixed ``devices`` list does.
        This is ``examples/customer_rate_plan_change.json`` on a fresh database."""
        jasper_index = list(PROVIDERS).index(Integration.JASPER) + 1
        return {
            "serviceProviderId": self.service_providers["jasper"],
            "changeType": 4,
            "processChanges": True,
            "devices": [*self.sample_iccids["jasper"][:3], demo_imei(jasper_index, 0, 3)],
            "customerRatePlanUpdate": {
                "customerRatePlanId": self.customer_rate_plans["Fleet Plus 5GB"],
                "customerDataAllocationMB": 5120,
                "customerPoolId": self.pools["Acme Shared Pool"],
                "effectiveDate": "2024-01-01T00:00:00Z",
            },
        }


def demo_iccid(integration_index: int, tenant_index: int, i: int) -> str:
    """A valid 19-digit ICCID: 89 01 + carrier digit + tenant digit + 12-digit serial + Luhn."""
    payload = f"8901{integration_index}{tenant_index}{i:012d}"
    return payload + luhn_check_digit(payload)


def demo_imei(integration_index: int, tenant_index: int, i: int) -> str:
    payload = f"35{integration_index}{tenant_index}{i:010d}"
    return payload + luhn_check_digit(payload)


def demo_msisdn(integration_index: int, tenant_index: int, i: int) -> str:
    return f"1{5 + tenant_index}{integration_index}{i:08d}"  # 11 digits, North American style


def demo_eid(integration_index: int, tenant_index: int, i: int) -> str:
    return f"89049032{integration_index}{tenant_index}{i:022d}"  # 32 digits


def default_base_urls(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Base URL per integration: defaults, then ``overrides`` (the CLI passes the
    ``BULKCHANGE_DEMO_<INTEGRATION>_BASE_URL`` variables and its --base-url options)."""
    urls = {i.value: spec[2] for i, spec in PROVIDERS.items()}
    for key, url in (overrides or {}).items():
        urls[Integration.parse(key).value] = url
    return urls


def demo_credentials_names() -> dict[str, str]:
    """Integration -> the credentials entry its demo service provider names (``DEMO_JASPER``...)."""
    return {i.value: f"DEMO_{i.value.upper()}" for i in PROVIDERS}


def point_demo_at(engine: sa.Engine, base_urls: Mapping[str, str], *, unlimited: bool = False) -> int:
    """Set the demo tenant's service providers' ``base_url`` (e.g. at a simulator park that got
    new ports); ``unlimited`` also lifts their rate limits (a local simulator has none, so the demo
    shows the pipeline's own speed). Returns how many providers changed."""
    tenant_id = ref.tenant_id_by_name(engine, DEMO_TENANT)
    if tenant_id is None:
        return 0
    changed = 0
    with engine.begin() as conn:
        for integration, url in base_urls.items():
            values: dict[str, Any] = {"base_url": url}
            if unlimited:
                values.update(rate_per_second=0, max_concurrency=8)
            changed += conn.execute(
                sa.update(service_provider)
                .where(
                    service_provider.c.tenant_id == tenant_id,
                    service_provider.c.integration == Integration.parse(integration).value,
                    service_provider.c.protocol == CarrierProtocol.REST.value,  # a SOAP one: seed_demo_soap
                )
                .values(**values)
            ).rowcount
    return changed


def _device_rows(
    integ: Integration, index: int, tenant_index: int, count: int, customer_ids: list[int]
) -> list[dict[str, Any]]:
    now = utcnow()
    plans = RATE_PLANS[integ]
    cycle = STATUS_CYCLE[integ]
    rows = []
    for i in range(count):
        plan = plans[i % len(plans)] if plans else None
        rows.append(
            {
                "iccid": demo_iccid(index, tenant_index, i),
                "imei": demo_imei(index, tenant_index, i),
                "msisdn": demo_msisdn(index, tenant_index, i),
                "eid": demo_eid(index, tenant_index, i) if integ is Integration.TEAL else None,
                "status": cycle[i % len(cycle)],
                "carrier_rate_plan": plan[0] if plan else None,
                "communication_plan": plan[2] if plan else None,
                "customer_id": customer_ids[i % len(customer_ids)] if customer_ids and i % 4 else None,
                # Every third device was used in the last days (archival refuses it without override).
                "last_usage_at": now - timedelta(days=2) if i % 3 == 0 else now - timedelta(days=60),
                "has_active_rev_service": i % 7 == 6,
                "username": f"dev-{tenant_index}{index}-{i:06d}",
            }
        )
    return rows


def seed_demo(
    engine: sa.Engine,
    devices_per_carrier: int = 1000,
    base_urls: Mapping[str, str] | None = None,
    *,
    reset: bool = False,
) -> DemoSeed:
    """Create the demo and other tenants (skipped when "demo" exists, unless ``reset``)."""
    if reset:
        reset_demo(engine)
    if ref.tenant_id_by_name(engine, DEMO_TENANT) is not None:
        return load_demo(engine)
    urls = default_base_urls(base_urls)

    def work(conn: sa.Connection) -> None:
        demo_id = ref.create_tenant(conn, DEMO_TENANT)
        other_id = ref.create_tenant(conn, OTHER_TENANT)
        sp_ids: dict[Integration, int] = {}
        for integ, (name, carrier, _url, portal, rate, conc, batch) in PROVIDERS.items():
            sp_ids[integ] = ref.create_service_provider(
                conn,
                demo_id,
                name=name,
                integration=integ,
                carrier=carrier,
                base_url=urls[integ.value],
                credentials_name=f"DEMO_{integ.value.upper()}",
                portal_type=portal,
                rate_per_second=rate,
                max_concurrency=conc,
                batch_size=batch,
            )
        other_sp = ref.create_service_provider(
            conn,
            other_id,
            name="Other AT&T Control Center",
            integration=Integration.JASPER,
            carrier="att_pod19",
            base_url=urls["jasper"],
            credentials_name="OTHER_JASPER",
        )
        customer_ids = [ref.create_customer(conn, demo_id, name=n, rev_customer_id=r) for n, r in CUSTOMERS]
        other_customer = ref.create_customer(conn, other_id, name="Umbrella Corp", rev_customer_id="9001")
        for name, mb in CUSTOMER_RATE_PLANS:
            ref.create_customer_rate_plan(conn, demo_id, name=name, data_allocation_mb=mb)
        ref.create_customer_rate_plan(conn, other_id, name="Other 1GB", data_allocation_mb=1024)
        for name in POOLS:
            ref.create_customer_pool(conn, demo_id, name=name)
        ref.create_customer_pool(conn, other_id, name="Other Pool")
        for integ, sp_id in sp_ids.items():
            for code, name, comm in RATE_PLANS[integ]:
                ref.create_carrier_rate_plan(conn, demo_id, sp_id, code=code, name=name, communication_plan=comm)
        ref.create_carrier_rate_plan(
            conn, other_id, other_sp, code="IOT-1GB", name="IoT 1 GB", communication_plan="CP-IOT-DATA"
        )
        for index, (integ, sp_id) in enumerate(sp_ids.items(), start=1):
            ref.insert_devices(conn, demo_id, sp_id, _device_rows(integ, index, 0, devices_per_carrier, customer_ids))
        ref.insert_devices(
            conn, other_id, other_sp, _device_rows(Integration.JASPER, 1, 1, OTHER_DEVICES, [other_customer])
        )

    run_transaction(engine, work)
    return load_demo(engine, created=True)


def load_demo(engine: sa.Engine, *, created: bool = False, samples: int = 10) -> DemoSeed:
    """Read back the ids of an existing demo seed."""
    demo_id = ref.tenant_id_by_name(engine, DEMO_TENANT)
    other_id = ref.tenant_id_by_name(engine, OTHER_TENANT)
    if demo_id is None or other_id is None:
        raise LookupError("the demo seed is not in this database; run `bulkchange seed-demo`")
    every = ref.list_service_providers(engine, demo_id)
    sps = [sp for sp in every if sp.protocol is CarrierProtocol.REST]  # one per integration
    soap = [sp.id for sp in every if sp.protocol is CarrierProtocol.SOAP]
    other_sps = ref.list_service_providers(engine, other_id)
    with engine.connect() as conn:

        def names(table: sa.Table, tenant_id: int) -> dict[str, int]:
            rows = conn.execute(
                sa.select(table.c.name, table.c.id).where(table.c.tenant_id == tenant_id).order_by(table.c.id)
            )
            return {n: i for n, i in rows}

        def iccids(sp_id: int) -> list[str]:
            return list(
                conn.execute(
                    sa.select(device.c.iccid)
                    .where(device.c.service_provider_id == sp_id)
                    .order_by(device.c.id)
                    .limit(samples)
                ).scalars()
            )

        seed = DemoSeed(
            tenant_id=demo_id,
            other_tenant_id=other_id,
            service_providers={sp.integration.value: sp.id for sp in sps},
            other_service_provider_id=other_sps[0].id,
            carrier_rate_plans={
                sp.integration.value: sorted(ref.carrier_rate_plans(engine, demo_id, sp.id)) for sp in sps
            },
            customers=names(customer, demo_id),
            customer_rate_plans=names(customer_rate_plan, demo_id),
            pools=names(customer_rate_pool, demo_id),
            sample_iccids={sp.integration.value: iccids(sp.id) for sp in sps},
            other_iccids=iccids(other_sps[0].id),
            created=created,
            soap_service_provider_id=soap[0] if soap else None,
        )
    return seed


def reset_demo(engine: sa.Engine) -> None:
    """Delete every row of the demo and other tenants (children first), in one transaction."""

    def work(conn: sa.Connection) -> None:
        ids = list(conn.execute(sa.select(tenant.c.id).where(tenant.c.name.in_((DEMO_TENANT, OTHER_TENANT)))).scalars())
        if not ids:
            return
        for table in reversed(metadata.sorted_tables):
            if table is not tenant and "tenant_id" in table.c:
                conn.execute(sa.delete(table).where(table.c.tenant_id.in_(ids)))
        conn.execute(sa.delete(tenant).where(tenant.c.id.in_(ids)))

    run_transaction(engine, work)


__all__ = [
    "DemoSeed",
    "default_base_urls",
    "demo_credentials_names",
    "demo_iccid",
    "load_demo",
    "point_demo_at",
    "reset_demo",
    "seed_demo",
]
