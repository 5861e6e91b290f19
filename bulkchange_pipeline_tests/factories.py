"""Test data written straight through the store: tenants, service providers, devices, bulk changes.

Pipeline tests start from stored bulk changes; intake tests cover how requests become them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType, DeviceChangeStatus, luhn_check_digit
from bulkchange_pipeline.store.bulk_changes import NewBulkChange, create_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.device_rows import NewDeviceChange
from bulkchange_pipeline.store.schema import customer, device, service_provider, tenant

JASPER_USER, JASPER_KEY = "acme-ops", "s3cr3t-jasper-api-key-9f2"


def iccid(n: int, prefix: str = "8901260") -> str:
    body = f"{prefix}{n:011d}"
    return body + luhn_check_digit(body)


def make_account(
    engine: sa.Engine,
    base_url: str,
    *,
    integration: str = "jasper",
    name: str = "TEST_JASPER",
    rate_per_second: float = 0.0,
    max_concurrency: int = 8,
    batch_size: int = 250,
    tenant_name: str = "acme",
    write_enabled: bool = True,
    protocol: str = "rest",
    account_name: str | None = None,
) -> dict[str, int]:
    """A tenant (found or made), a service provider naming credentials entry ``name`` and one
    customer; ``protocol`` soap makes a Jasper account reached over SOAP, ``account_name`` names the
    provider (default ``"<name> account"``)."""
    now = utcnow()
    with engine.begin() as conn:
        tid = conn.execute(sa.select(tenant.c.id).where(tenant.c.name == tenant_name)).scalar()
        if tid is None:
            tid = conn.execute(
                sa.insert(tenant).values(name=tenant_name, created_at=now).returning(tenant.c.id)
            ).scalar_one()
        sp = conn.execute(
            sa.insert(service_provider)
            .values(
                tenant_id=tid,
                name=account_name or f"{name} account",
                integration=integration,
                carrier="att_pod19",
                portal_type=0,
                base_url=base_url,
                credentials_name=name,
                write_enabled=write_enabled,
                rate_per_second=rate_per_second,
                max_concurrency=max_concurrency,
                batch_size=batch_size,
                protocol=protocol,
            )
            .returning(service_provider.c.id)
        ).scalar_one()
        cust = conn.execute(
            sa.insert(customer).values(tenant_id=tid, name="Fleet Co").returning(customer.c.id)
        ).scalar_one()
    return {"tenant_id": tid, "service_provider_id": sp, "customer_id": cust}


def make_devices(
    engine: sa.Engine, ids: dict[str, int], n: int, *, status: str = "ACTIVATED", start: int = 0
) -> list[dict[str, Any]]:
    now = utcnow()
    rows = [
        {
            "tenant_id": ids["tenant_id"],
            "service_provider_id": ids["service_provider_id"],
            "iccid": iccid(start + i),
            "status": status,
            "carrier_rate_plan": "IOT-1GB",
            "communication_plan": "CP-Basic",
            "updated_at": now,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(device), rows)
        out = conn.execute(
            sa.select(device.c.id, device.c.iccid, device.c.status)
            .where(device.c.service_provider_id == ids["service_provider_id"])
            .order_by(device.c.id)
        )
        return [dict(r._mapping) for r in out][start : start + n]


def make_bulk_change(
    engine: sa.Engine,
    ids: dict[str, int],
    devices: list[dict[str, Any]],
    change_type: ChangeType,
    target: dict[str, Any],
    *,
    key: str | None = None,
    effective_at=None,
) -> int:
    status = DeviceChangeStatus.SCHEDULED if effective_at else DeviceChangeStatus.NEW
    rows = [
        NewDeviceChange(
            change_request=dict(target), status=status, device_id=d["id"], iccid=d["iccid"], effective_at=effective_at
        )
        for d in devices
    ]
    result = create_bulk_change(
        engine,
        NewBulkChange(
            tenant_id=ids["tenant_id"],
            service_provider_id=ids["service_provider_id"],
            change_type=int(change_type),
            portal_type=0,
            process_changes=True,
            request={"changeType": int(change_type)},
            created_by="test",
            rows=rows,
            idempotency_key=key,
        ),
    )
    return result.bulk_change_id
