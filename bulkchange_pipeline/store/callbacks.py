"""Stored carrier callbacks: written once by the callback endpoint, applied by reconcile runs.

Each callback is stored at most once per (integration, request id, device key): carriers deliver
the same callback again when they are unsure it arrived, and out-of-order or late duplicates must
not change an outcome already recorded (DESIGN R6).

Two guarantees for ``async_results_sensor`` (docs/reliability.md, "Issue 14: callbacks after a
receiver restart") live here:

- Whatever order callbacks commit in, a newly visible unapplied callback changes its bulk
  change's ``AsyncWork.callback_marker``. The marker is a digest of the *set* of unapplied
  callback ids, not the newest id: on PostgreSQL an id is taken at insert, not at commit, so a
  callback committed after a higher id was seen would otherwise reuse that id's run key, and get
  no run when the run requested for that key never applied them (cancelled, worker killed).
- Each start of a callback receiver is recorded (``record_receiver_start``). Callbacks that came
  while it was down were refused or lost; rows sent before its latest start are therefore due for
  one poll right away (``latest_receiver_start``), instead of after ``poll_after``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..domain import BulkChangeStatus, DeviceChangeStatus
from .db import run_transaction, utcnow
from .schema import bulk_change, callback_receiver_start, carrier_callback, device_change, service_provider, tenant

RECEIVER_STARTS_KEPT = 100

# The columns a stored callback is keyed by: the receiver refuses longer values (a 4xx, not a 500).
MAX_REQUEST_ID: int = cast(sa.String, carrier_callback.c.request_id.type).length or 0
MAX_DEVICE_KEY: int = cast(sa.String, carrier_callback.c.device_key.type).length or 0

AUTHENTICATED_AS = "_authenticated_as"
"""Key the callback endpoint adds to a stored callback that carried credentials: the credentials
names of the accounts it authenticated as (never taken from the sender's own body). Reconcile
applies such a callback only to those accounts' bulk changes."""


def store_callback(
    engine: sa.Engine, integration: str, request_id: str, device_key: str, payload: dict[str, Any]
) -> bool:
    """Insert a (redacted) callback; False when the same one was stored before."""
    values = {
        "integration": integration,
        "request_id": request_id,
        "device_key": device_key,
        "payload": payload,
        "received_at": utcnow(),
    }
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(carrier_callback)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["integration", "request_id", "device_key"])
    )
    return run_transaction(engine, lambda conn: conn.execute(stmt).rowcount) == 1


@dataclass(frozen=True)
class RequestOwner:
    """Who issued a carrier request id: used to authenticate the callback that answers it."""

    bulk_change_id: int
    tenant_id: int
    integration: str
    credentials_name: str


def request_owner(engine: sa.Engine, request_id: str) -> RequestOwner | None:
    """The bulk change and service provider whose device rows carry this carrier request id."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                bulk_change.c.id,
                bulk_change.c.tenant_id,
                service_provider.c.integration,
                service_provider.c.credentials_name,
            )
            .select_from(
                device_change.join(bulk_change, bulk_change.c.id == device_change.c.bulk_change_id).join(
                    service_provider, service_provider.c.id == bulk_change.c.service_provider_id
                )
            )
            .where(device_change.c.carrier_request_id == request_id)
            .limit(1)
        ).first()
    return RequestOwner(row.id, row.tenant_id, row.integration, row.credentials_name) if row else None


@dataclass
class StoredCallback:
    id: int
    request_id: str
    device_key: str
    payload: dict[str, Any]


def unapplied_callbacks(engine: sa.Engine, integration: str, request_ids: Sequence[str]) -> list[StoredCallback]:
    out: list[StoredCallback] = []
    ids = sorted(set(request_ids))
    with engine.connect() as conn:
        for start in range(0, len(ids), 900):
            rows = conn.execute(
                sa.select(
                    carrier_callback.c.id,
                    carrier_callback.c.request_id,
                    carrier_callback.c.device_key,
                    carrier_callback.c.payload,
                )
                .where(
                    carrier_callback.c.integration == integration,
                    carrier_callback.c.request_id.in_(ids[start : start + 900]),
                    carrier_callback.c.applied_at.is_(None),
                )
                .order_by(carrier_callback.c.id)
            )
            out += [StoredCallback(r.id, r.request_id, r.device_key, r.payload) for r in rows]
    return out


def mark_applied(engine: sa.Engine, callback_ids: Sequence[int]) -> None:
    if not callback_ids:
        return
    now = utcnow()
    ids = list(callback_ids)

    def work(conn: sa.Connection) -> None:
        for start in range(0, len(ids), 900):
            conn.execute(
                sa.update(carrier_callback)
                .where(carrier_callback.c.id.in_(ids[start : start + 900]))
                .values(applied_at=now)
            )

    run_transaction(engine, work)


@dataclass(frozen=True)
class AsyncWork:
    """A bulk change with rows waiting on an asynchronous carrier, as the sensor sees it."""

    bulk_change_id: int
    tenant_id: int
    service_provider_id: int
    change_type: int
    newest_callback_id: int | None  # unapplied callbacks for its requests (None: none arrived)
    oldest_sent_at: Any  # the oldest PROCESSING row's send time
    integration: str = ""
    tenant_name: str = ""
    account_name: str = ""
    unapplied_callbacks: int = 0
    callback_marker: str | None = None
    """``<count>-<newest id>-<digest of the sorted unapplied ids>`` (None: none unapplied). A
    callback that just became visible is in no set seen before it committed, so the first set that
    holds it differs from every earlier one, whatever the commit order, and so does its marker: the
    sensor's run key changes and the run it requests reads the callback. The newest id alone repeats
    when a lower id commits while a higher one seen before is still unapplied."""
    credentials_name: str = ""  # the carrier account the run queue limits (run tag bulkchange/carrier_account)


def _marker(ids: Sequence[int]) -> str | None:
    if not ids:
        return None
    ordered = sorted(ids)
    digest = hashlib.sha256(",".join(map(str, ordered)).encode()).hexdigest()[:12]
    return f"{len(ordered)}-{ordered[-1]}-{digest}"


def async_work(engine: sa.Engine, limit: int = 500) -> list[AsyncWork]:
    """Bulk changes in PENDING with PROCESSING rows: their unapplied callbacks (the set's marker and
    newest id), oldest send time and integration."""
    processing = DeviceChangeStatus.PROCESSING.value
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(
                bulk_change.c.id,
                bulk_change.c.tenant_id,
                bulk_change.c.service_provider_id,
                bulk_change.c.change_type,
                service_provider.c.integration,
                service_provider.c.name.label("account_name"),
                service_provider.c.credentials_name,
                tenant.c.name.label("tenant_name"),
                sa.func.min(device_change.c.updated_at).label("oldest"),
            )
            .join(device_change, device_change.c.bulk_change_id == bulk_change.c.id)
            .join(service_provider, service_provider.c.id == bulk_change.c.service_provider_id)
            .join(tenant, tenant.c.id == bulk_change.c.tenant_id)
            .where(
                bulk_change.c.status == BulkChangeStatus.PENDING.value,
                device_change.c.status == processing,
                bulk_change.c.deleted_at.is_(None),
            )
            .group_by(
                bulk_change.c.id,
                bulk_change.c.tenant_id,
                bulk_change.c.service_provider_id,
                bulk_change.c.change_type,
                service_provider.c.integration,
                service_provider.c.name,
                service_provider.c.credentials_name,
                tenant.c.name,
            )
            .order_by(bulk_change.c.id)
            .limit(limit)
        ).all()
        if not pending:
            return []
        # Distinct (bulk change, request id) pairs first: one request covers up to 10,000 rows.
        requests = (
            sa.select(device_change.c.bulk_change_id, device_change.c.carrier_request_id)
            .where(
                device_change.c.bulk_change_id.in_([p.id for p in pending]),
                device_change.c.status == processing,
                device_change.c.carrier_request_id.is_not(None),
            )
            .distinct()
            .subquery()
        )
        unapplied: dict[int, list[int]] = {}
        for bc_id, cb_id in conn.execute(
            sa.select(requests.c.bulk_change_id, carrier_callback.c.id)
            .join(carrier_callback, carrier_callback.c.request_id == requests.c.carrier_request_id)
            .where(carrier_callback.c.applied_at.is_(None))
        ):
            unapplied.setdefault(bc_id, []).append(cb_id)
    out = []
    for p in pending:
        ids = unapplied.get(p.id, [])
        out.append(
            AsyncWork(
                p.id,
                p.tenant_id,
                p.service_provider_id,
                p.change_type,
                max(ids) if ids else None,
                p.oldest,
                integration=p.integration,
                tenant_name=p.tenant_name,
                account_name=p.account_name,
                unapplied_callbacks=len(ids),
                callback_marker=_marker(ids),
                credentials_name=p.credentials_name,
            )
        )
    return out


@dataclass(frozen=True)
class ReceiverStart:
    """One start of a callback receiver: rows sent before it may have lost their callbacks."""

    id: int
    started_at: datetime


def record_receiver_start(engine: sa.Engine, process: str, started_at: datetime | None = None) -> ReceiverStart:
    """Record that a callback receiver (``process``: host:pid) started; keeps the last
    ``RECEIVER_STARTS_KEPT`` starts. Called by the receiver's lifespan before it serves."""
    when = started_at or utcnow()

    def work(conn: sa.Connection) -> int:
        new_id = conn.execute(
            sa.insert(callback_receiver_start)
            .values(started_at=when, process=process[:200])
            .returning(callback_receiver_start.c.id)
        ).scalar_one()
        keep = (
            sa.select(callback_receiver_start.c.id)
            .order_by(callback_receiver_start.c.started_at.desc(), callback_receiver_start.c.id.desc())
            .limit(RECEIVER_STARTS_KEPT)
            .subquery()
        )
        conn.execute(
            sa.delete(callback_receiver_start).where(callback_receiver_start.c.id.not_in(sa.select(keep.c.id)))
        )
        return int(new_id)

    return ReceiverStart(run_transaction(engine, work), when)


def record_receiver_stop(engine: sa.Engine, start_id: int) -> None:
    """A clean shutdown of the receiver that recorded ``start_id`` (for the operator; the sensor
    reads starts only)."""
    run_transaction(
        engine,
        lambda conn: conn.execute(
            sa.update(callback_receiver_start)
            .where(callback_receiver_start.c.id == start_id)
            .values(stopped_at=utcnow())
        ),
    )


def latest_receiver_start(engine: sa.Engine) -> ReceiverStart | None:
    """The most recent start of any callback receiver (by start time; None: none recorded).

    A start is compared by identity, not as a cursor: a start that commits late still becomes the
    latest one if its time is the latest."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(callback_receiver_start.c.id, callback_receiver_start.c.started_at)
            .order_by(callback_receiver_start.c.started_at.desc(), callback_receiver_start.c.id.desc())
            .limit(1)
        ).first()
    return ReceiverStart(row.id, row.started_at) if row else None


def credentials_names(engine: sa.Engine, integration: str) -> list[str]:
    """Credentials entry names of every service provider on this integration (any tenant)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(service_provider.c.credentials_name)
                .where(service_provider.c.integration == integration)
                .distinct()
            ).scalars()
        )
