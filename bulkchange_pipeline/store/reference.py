"""Tenant-scoped reference data: tenants, service providers, devices, plans, customers, pools.

Validation of a 100,000-device request needs these lookups in a few seconds, so every lookup is
set-based: identifiers go to the database in IN lists of at most ``IN_CHUNK`` values (under
SQLite's bound-parameter limit), never one query per device. Every function takes a tenant id and
never returns another tenant's rows, so a caller cannot leak them by accident; the one exception,
``account_limits``, reads every tenant's call limits for the deployment's Dagster pools.

Write helpers accept an Engine (own transaction, retried on transient errors) or a Connection (the
caller's transaction; the seed uses that to write everything atomically).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from ..domain import CarrierProtocol, ChangeType, DeviceChangeStatus, IdentifierKind, Integration, checked_protocol
from .db import run_transaction, utcnow
from .schema import (
    bulk_change,
    carrier_rate_plan,
    customer,
    customer_rate_plan,
    customer_rate_pool,
    device,
    device_change,
    service_provider,
    tenant,
)

IN_CHUNK = 900
NOT_APPLIED = (DeviceChangeStatus.ERROR.value, DeviceChangeStatus.CANCELLED.value, DeviceChangeStatus.API_FAILED.value)
"""Device row statuses of a change that did not happen (a plan change in them does not count against a quota)."""
INSERT_CHUNK = 5_000

T = TypeVar("T")
Bind = sa.Engine | sa.Connection


def _write(bind: Bind, work: Callable[[sa.Connection], T]) -> T:
    if isinstance(bind, sa.Engine):
        return run_transaction(bind, work)
    return work(bind)


def _insert(bind: Bind, stmt: sa.Executable) -> int:
    """Run an INSERT ... RETURNING id and give the new id."""
    return _write(bind, lambda conn: int(conn.execute(stmt).scalar_one()))


def _chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


# --- tenants --------------------------------------------------------------------------------


def create_tenant(bind: Bind, name: str, *, archive_after_days: int = 90, purge_after_days: int = 365) -> int:
    """Insert a tenant and return its id (the name is unique)."""
    stmt = (
        sa.insert(tenant)
        .values(
            name=name, archive_after_days=archive_after_days, purge_after_days=purge_after_days, created_at=utcnow()
        )
        .returning(tenant.c.id)
    )
    return _insert(bind, stmt)


def tenant_id_by_name(engine: sa.Engine, name: str) -> int | None:
    """The id of the tenant called ``name``, or None (the CLI selects tenants by name)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(tenant.c.id).where(tenant.c.name == name)).scalar_one_or_none()


# --- service providers ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProviderInfo:
    """A carrier account as validation and the gateway need it (never holds a secret)."""

    id: int
    tenant_id: int
    name: str
    integration: Integration
    carrier: str
    portal_type: int
    base_url: str
    credentials_name: str
    write_enabled: bool
    rate_per_second: float
    max_concurrency: int
    batch_size: int
    # The API the account is reached through: rest, or soap for a Jasper-family account whose
    # Control Center is used through its SOAP Terminal service (`carriers.build_adapter`).
    protocol: CarrierProtocol = CarrierProtocol.REST


def _sp_info(row: sa.Row[*tuple[Any, ...]]) -> ServiceProviderInfo:
    m = dict(row._mapping)
    m["integration"] = Integration.parse(m["integration"])
    m["protocol"] = CarrierProtocol.parse(m["protocol"])
    return ServiceProviderInfo(**m)


def create_service_provider(
    bind: Bind,
    tenant_id: int,
    *,
    name: str,
    integration: Integration | str,
    carrier: str,
    base_url: str,
    credentials_name: str,
    portal_type: int = 0,
    write_enabled: bool = True,
    rate_per_second: float = 5.0,
    max_concurrency: int = 1,
    batch_size: int = 500,
    protocol: CarrierProtocol | str = CarrierProtocol.REST,
) -> int:
    """Insert a service provider; ``credentials_name`` names env entries, the secret stays there.

    ``protocol`` soap is refused (``ProtocolNotSupported``, nothing written) for an integration
    other than the Jasper family."""
    integ = Integration.parse(integration.value if isinstance(integration, Integration) else integration)
    proto = checked_protocol(integ, protocol)
    stmt = (
        sa.insert(service_provider)
        .values(
            tenant_id=tenant_id,
            name=name,
            integration=integ.value,
            carrier=carrier,
            portal_type=portal_type,
            base_url=base_url,
            credentials_name=credentials_name,
            write_enabled=write_enabled,
            rate_per_second=rate_per_second,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            protocol=proto.value,
        )
        .returning(service_provider.c.id)
    )
    return _insert(bind, stmt)


def get_service_provider(engine: sa.Engine, tenant_id: int, service_provider_id: int) -> ServiceProviderInfo | None:
    """The tenant's service provider with this id, or None (also when it is another tenant's)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*_SP_COLS).where(
                service_provider.c.tenant_id == tenant_id, service_provider.c.id == service_provider_id
            )
        ).first()
    return _sp_info(row) if row else None


def list_service_providers(engine: sa.Engine, tenant_id: int) -> list[ServiceProviderInfo]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*_SP_COLS).where(service_provider.c.tenant_id == tenant_id).order_by(service_provider.c.id)
        )
        return [_sp_info(r) for r in rows]


_SP_COLS = tuple(service_provider.c[name] for name in ServiceProviderInfo.__dataclass_fields__)


@dataclass(frozen=True)
class AccountLimit:
    """One service provider's call limit, as the deployment's pools publish it (``defs.pools``)."""

    service_provider_id: int
    tenant_id: int
    name: str
    max_concurrency: int


def account_limits(engine: sa.Engine) -> list[AccountLimit]:
    """Every service provider of every tenant, with its ``max_concurrency`` (operators' view, not a tenant's)."""
    sp = service_provider
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sp.c.id, sp.c.tenant_id, sp.c.name, sp.c.max_concurrency).order_by(sp.c.id)).all()
    return [AccountLimit(r.id, r.tenant_id, r.name, int(r.max_concurrency)) for r in rows]


# --- devices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRecord:
    """The device columns validation looks at."""

    id: int
    service_provider_id: int
    iccid: str | None
    imei: str | None
    msisdn: str | None
    eid: str | None
    status: str | None
    carrier_rate_plan: str | None
    communication_plan: str | None
    customer_id: int | None
    customer_rate_plan_id: int | None
    customer_rate_pool_id: int | None
    last_usage_at: datetime | None
    has_active_rev_service: bool
    archived_at: datetime | None


_DEVICE_COLS = tuple(device.c[name] for name in DeviceRecord.__dataclass_fields__)


def find_devices(
    engine: sa.Engine, tenant_id: int, kind: IdentifierKind | str, values: Iterable[str]
) -> dict[str, list[DeviceRecord]]:
    """This tenant's devices whose ``kind`` column equals one of ``values``, grouped by value.

    A value can match several devices (an MSISDN recycled onto a new SIM, an archived twin), so
    every match is returned and the caller decides which one counts.
    """
    col = device.c[IdentifierKind(kind).value]
    wanted = sorted(set(values))
    found: dict[str, list[DeviceRecord]] = defaultdict(list)
    # ``tenant_id + 0``: without table statistics SQLite would pick the (unselective) tenant_id
    # index and scan every device of the tenant per chunk; the expression leaves it the
    # identifier index. PostgreSQL plans on statistics and is unaffected.
    tenant_match = (device.c.tenant_id + 0) == tenant_id
    with engine.connect() as conn:
        for chunk in _chunks(wanted):
            rows = conn.execute(sa.select(*_DEVICE_COLS).where(tenant_match, col.in_(chunk)).order_by(device.c.id))
            for r in rows:
                rec = DeviceRecord(*r)
                found[getattr(rec, col.name)].append(rec)
    return dict(found)


def live_devices(engine: sa.Engine, tenant_id: int, service_provider_id: int | None = None) -> list[dict[str, Any]]:
    """The tenant's devices that are not archived (of one service provider, or all), in id order,
    each a dict of its columns plus its customer's ``customer_name`` and ``rev_customer_id``."""
    query = (
        sa.select(device, customer.c.name.label("customer_name"), customer.c.rev_customer_id)
        .select_from(device.outerjoin(customer, customer.c.id == device.c.customer_id))
        .where(device.c.tenant_id == tenant_id, device.c.archived_at.is_(None))
        .order_by(device.c.id)
    )
    if service_provider_id is not None:
        query = query.where(device.c.service_provider_id == service_provider_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def rev_customer_ids(engine: sa.Engine, tenant_id: int) -> list[str]:
    """The Rev.io customer ids of the tenant's customers that have one, in customer id order."""
    query = (
        sa.select(customer.c.rev_customer_id)
        .where(customer.c.tenant_id == tenant_id, customer.c.rev_customer_id.is_not(None))
        .order_by(customer.c.id)
    )
    with engine.connect() as conn:
        return [str(r) for r in conn.execute(query).scalars()]


def insert_devices(bind: Bind, tenant_id: int, service_provider_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Bulk-insert devices of one service provider (executemany in chunks); returns the count.

    Each row maps device column names to values; tenant, provider and updated_at are filled in.
    """
    now = utcnow()
    allowed = set(device.c.keys()) - {"id", "tenant_id", "service_provider_id"}

    def work(conn: sa.Connection) -> int:
        for chunk in _chunks(rows, INSERT_CHUNK):
            params = []
            for row in chunk:
                unknown = set(row) - allowed
                if unknown:
                    raise ValueError(f"unknown device columns: {', '.join(sorted(unknown))}")
                params.append(
                    {"updated_at": now, **row, "tenant_id": tenant_id, "service_provider_id": service_provider_id}
                )
            conn.execute(sa.insert(device), params)
        return len(rows)

    return _write(bind, work)


def plan_change_counts(engine: sa.Engine, tenant_id: int, device_ids: Sequence[int], since: datetime) -> dict[int, int]:
    """Carrier rate plan changes per device submitted since ``since`` and not refused.

    ThingSpace allows at most 4 plan changes per device per month; validation uses this count.
    """
    counts: dict[int, int] = {}
    with engine.connect() as conn:
        for chunk in _chunks(sorted(set(device_ids))):
            rows = conn.execute(
                sa.select(device_change.c.device_id, sa.func.count())
                .select_from(device_change.join(bulk_change, bulk_change.c.id == device_change.c.bulk_change_id))
                .where(
                    device_change.c.tenant_id == tenant_id,
                    device_change.c.device_id.in_(chunk),
                    bulk_change.c.change_type == int(ChangeType.CARRIER_RATE_PLAN_CHANGE),
                    bulk_change.c.created_at >= since,
                    device_change.c.status.notin_(NOT_APPLIED),
                )
                .group_by(device_change.c.device_id)
            )
            counts.update({device_id: n for device_id, n in rows})
    return counts


# --- plans, customers, pools -----------------------------------------------------------------


@dataclass(frozen=True)
class CarrierRatePlan:
    code: str
    name: str
    communication_plan: str | None


def carrier_rate_plans(engine: sa.Engine, tenant_id: int, service_provider_id: int) -> dict[str, CarrierRatePlan]:
    """The carrier rate plans of one service provider, by code (a provider has tens, not thousands)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(carrier_rate_plan.c.code, carrier_rate_plan.c.name, carrier_rate_plan.c.communication_plan).where(
                carrier_rate_plan.c.tenant_id == tenant_id,
                carrier_rate_plan.c.service_provider_id == service_provider_id,
            )
        )
        return {r.code: CarrierRatePlan(*r) for r in rows}


def create_carrier_rate_plan(
    bind: Bind, tenant_id: int, service_provider_id: int, *, code: str, name: str, communication_plan: str | None = None
) -> int:
    stmt = (
        sa.insert(carrier_rate_plan)
        .values(
            tenant_id=tenant_id,
            service_provider_id=service_provider_id,
            code=code,
            name=name,
            communication_plan=communication_plan,
        )
        .returning(carrier_rate_plan.c.id)
    )
    return _insert(bind, stmt)


@dataclass(frozen=True)
class CustomerInfo:
    id: int
    name: str
    rev_customer_id: str | None


def customers(engine: sa.Engine, tenant_id: int, ids: Iterable[int] | None = None) -> dict[int, CustomerInfo]:
    """The tenant's customers by id (all of them, or only those among ``ids``)."""
    cols = (customer.c.id, customer.c.name, customer.c.rev_customer_id)
    return {r[0]: CustomerInfo(*r) for r in _by_ids(engine, tenant_id, customer, cols, ids)}


def create_customer(bind: Bind, tenant_id: int, *, name: str, rev_customer_id: str | None = None) -> int:
    stmt = (
        sa.insert(customer)
        .values(tenant_id=tenant_id, name=name, rev_customer_id=rev_customer_id)
        .returning(customer.c.id)
    )
    return _insert(bind, stmt)


def customer_rate_plans(engine: sa.Engine, tenant_id: int, ids: Iterable[int] | None = None) -> dict[int, int | None]:
    """Customer rate plan id -> its default data allocation (MB), for the tenant's plans."""
    cols = (customer_rate_plan.c.id, customer_rate_plan.c.data_allocation_mb)
    return {r[0]: r[1] for r in _by_ids(engine, tenant_id, customer_rate_plan, cols, ids)}


def create_customer_rate_plan(bind: Bind, tenant_id: int, *, name: str, data_allocation_mb: int | None = None) -> int:
    stmt = (
        sa.insert(customer_rate_plan)
        .values(tenant_id=tenant_id, name=name, data_allocation_mb=data_allocation_mb)
        .returning(customer_rate_plan.c.id)
    )
    return _insert(bind, stmt)


def customer_pool_ids(engine: sa.Engine, tenant_id: int, ids: Iterable[int] | None = None) -> set[int]:
    """The ids among ``ids`` (or all) that are customer rate pools of this tenant."""
    return {r[0] for r in _by_ids(engine, tenant_id, customer_rate_pool, (customer_rate_pool.c.id,), ids)}


def create_customer_pool(bind: Bind, tenant_id: int, *, name: str) -> int:
    stmt = sa.insert(customer_rate_pool).values(tenant_id=tenant_id, name=name).returning(customer_rate_pool.c.id)
    return _insert(bind, stmt)


def _by_ids(
    engine: sa.Engine, tenant_id: int, table: sa.Table, cols: Sequence[sa.Column[Any]], ids: Iterable[int] | None
) -> list[sa.Row[*tuple[Any, ...]]]:
    base = sa.select(*cols).where(table.c.tenant_id == tenant_id)
    with engine.connect() as conn:
        if ids is None:
            return list(conn.execute(base.order_by(table.c.id)))
        out: list[sa.Row[*tuple[Any, ...]]] = []
        for chunk in _chunks(sorted({int(i) for i in ids})):
            out.extend(conn.execute(base.where(table.c.id.in_(chunk))))
        return out
