"""The demo Jasper account reached over SOAP: a second service provider of the demo tenant's AT&T
Control Center account, made on request (``bulkchange demo`` does), not by ``seed_demo``, so the
seed keeps one service provider per integration for everything keyed by integration.

It names the REST Jasper provider's credentials entry (``DEMO_JASPER``): one carrier account, so
the run queue gives both providers one slot (``defs.tags.account_tag_value``); its SOAP password
and license key are that entry's ``SOAP_PASSWORD`` and ``LICENSE_KEY`` (the entry's SECRET stays
the REST API key). Its devices are its own (ICCID carrier digit 7), in the same Jasper simulator.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..domain import CarrierProtocol, Integration
from . import reference as ref
from .db import run_transaction
from .schema import customer, service_provider
from .seed import DEMO_TENANT, PROVIDERS, RATE_PLANS, _device_rows, demo_credentials_names

__all__ = ["SOAP_DEVICE_INDEX", "SOAP_PROVIDER_NAME", "seed_demo_soap"]

SOAP_PROVIDER_NAME = "AT&T Control Center (POD19, SOAP)"
SOAP_DEVICE_INDEX = 7  # the ICCID/IMEI carrier digit of its devices (the six integrations use 1-6)


def seed_demo_soap(engine: sa.Engine, base_url: str, devices: int = 100, *, unlimited: bool = False) -> int:
    """The demo tenant's Jasper account over SOAP (made once, with ``devices`` devices of its own and
    the Jasper rate plans; its ``base_url``, and with ``unlimited`` its limits, set on every call,
    as ``point_demo_at`` does for the others). Returns its id; the demo seed must exist."""
    demo_id = ref.tenant_id_by_name(engine, DEMO_TENANT)
    if demo_id is None:
        raise LookupError("the demo seed is not in this database; run `bulkchange seed-demo`")
    tenant_id: int = demo_id
    limits: dict[str, Any] = {"rate_per_second": 0, "max_concurrency": 8} if unlimited else {}

    def work(conn: sa.Connection) -> int:
        found = conn.execute(
            sa.select(service_provider.c.id).where(
                service_provider.c.tenant_id == tenant_id, service_provider.c.name == SOAP_PROVIDER_NAME
            )
        ).scalar_one_or_none()
        if found is not None:
            conn.execute(
                sa.update(service_provider).where(service_provider.c.id == found).values(base_url=base_url, **limits)
            )
            return int(found)
        _, carrier, _url, portal, rate, conc, batch = PROVIDERS[Integration.JASPER]
        sp_id = ref.create_service_provider(
            conn,
            tenant_id,
            name=SOAP_PROVIDER_NAME,
            integration=Integration.JASPER,
            carrier=carrier,
            base_url=base_url,
            credentials_name=demo_credentials_names()[Integration.JASPER.value],
            portal_type=portal,
            rate_per_second=limits.get("rate_per_second", rate),
            max_concurrency=limits.get("max_concurrency", conc),
            batch_size=batch,
            protocol=CarrierProtocol.SOAP,
        )
        for code, name, comm in RATE_PLANS[Integration.JASPER]:
            ref.create_carrier_rate_plan(conn, tenant_id, sp_id, code=code, name=name, communication_plan=comm)
        customer_ids = list(
            conn.execute(sa.select(customer.c.id).where(customer.c.tenant_id == tenant_id).order_by(customer.c.id))
            .scalars()
            .all()
        )
        rows = _device_rows(Integration.JASPER, SOAP_DEVICE_INDEX, 0, devices, customer_ids)
        ref.insert_devices(conn, tenant_id, sp_id, rows)
        return sp_id

    return run_transaction(engine, work)
