"""The per-device rules of validation (``validation``), applied to one chunk of rows at a time.

Why chunks: a 1,000,000-row file validated in one piece held every row, its lookups and its
result at once (1.9 GB). Here a chunk (``CHUNK_ROWS`` rows) goes through the two passes with the
database touched only in between, by set-based lookups (``store.reference``); what must span the
whole file is kept in ``file_state.FileState``: the identifiers and devices already listed (for
the duplicate check, as compact keys and row numbers) and the new identifiers of an ICCID/IMEI
change. A whole request is one chunk. What an accepted or refused row becomes, and the carriers'
published rules, are ``row_outcome``'s.

Tenant isolation: devices are looked up in this tenant's inventory only, and an unknown
identifier gets the same message whether or not another tenant owns it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from ..domain import (
    ChangeType,
    DeviceEntry,
    IdentifierKind,
    Integration,
    build_target,
    canonical_status,
    classify,
    normalize,
    transition_error,
)
from ..domain.carrier_rules import LineHistory, Refusal
from ..domain.identifiers import CHECKS, rev_io_id
from ..store import reference as ref
from ..store.db import to_naive_utc
from . import carrier_limits
from .file_state import FileState, listed_before, seen_key
from .parsing import formula_reason

ARCHIVE_USAGE_DAYS = 30
CHUNK_ROWS = 10_000
CT = ChangeType
_KIND_FIELDS = (
    ("iccid", IdentifierKind.ICCID),
    ("device", None),
    ("imei", IdentifierKind.IMEI),
    ("msisdn", IdentifierKind.MSISDN),
    ("eid", IdentifierKind.EID),
)
_KIND_NAME = {kind: kind.name for kind in IdentifierKind}  # an Enum's .name is a slow property, read per row


@lru_cache(maxsize=4096)
def _status_change(integ: Integration, current: str | None, target: str) -> tuple[str | None, str | None]:
    """``transition_error`` and ``canonical_status`` of a status update, worked out once per
    (carrier, current, target): a million rows hold a handful of distinct ones."""
    return transition_error(integ, current, target), canonical_status(integ, target)


class Row:
    """One device of a chunk as validation works on it."""

    __slots__ = ("entry", "raw", "kind", "value", "reason", "target", "target_error", "device", "deferred")

    def __init__(self, entry: DeviceEntry) -> None:
        self.entry = entry
        self.raw = ""
        self.kind: IdentifierKind | None = None
        self.value = ""
        self.reason: str | None = None
        self.target: dict[str, Any] | None = None
        self.target_error: str | None = None
        self.device: ref.DeviceRecord | None = None
        self.deferred: Refusal | None = None  # a carrier rule's refusal turned into a wait (deferIfLimited)


def payload_reason(payload: Mapping[str, Any]) -> str | None:
    for key, value in payload.items():
        if reason := formula_reason(key, value):
            return reason
    return None


def first_pass(
    rows: list[Row],
    ct: ChangeType,
    payload: dict[str, Any],
    row_errors: Mapping[int, str],
    blanket: str | None,
    numbers: Sequence[int],
    state: FileState,
) -> None:
    """Identifiers, duplicates, formula strings and targets: everything that needs no database.
    ``row_errors`` and ``numbers`` are this chunk's, by its 0-based row index."""
    seen = state.seen
    targets: dict[Any, tuple[dict[str, Any] | None, str | None]] = {}
    formulas: dict[tuple[str, str], str | None] = {}  # a chunk's values repeat: each checked once
    for i, r in enumerate(rows):
        e = r.entry
        for name, kind in _KIND_FIELDS:
            raw = getattr(e, name)
            if raw:
                r.raw = str(raw)
                r.kind = kind
                break
        values: dict[str, Any] = e.__pydantic_extra__ or {}  # ``e.values`` without its copy: only read
        if i in row_errors:
            r.reason = row_errors[i]
        elif blanket:
            r.reason = blanket
        elif not r.raw:
            r.reason = "no device identifier on this row"
        else:
            r.reason = formula_reason("device", r.raw) or _values_formula(values, formulas)
        if r.raw:
            r.value = normalize(r.raw)
            if r.kind is None:
                r.kind, reason = classify(r.raw)
            else:
                reason = CHECKS[r.kind](r.raw)
            if r.reason is None and reason:
                r.reason = reason
        if r.reason is None and r.kind is not None:
            key = seen_key(r.kind, r.value)
            if key in seen:
                r.reason = f"duplicate: {_KIND_NAME[r.kind]} {r.value} is already listed in row {seen[key]}"
            else:
                seen[key] = numbers[i]
        try:
            cache_key: Any = tuple(sorted(values.items()))
            hash(cache_key)
        except TypeError:
            cache_key = None
        built = targets.get(cache_key) if cache_key is not None else None
        if built is None:
            built = build_target(ct, {**payload, **values})
            if cache_key is not None:
                targets[cache_key] = built
        r.target = dict(built[0]) if built[0] is not None else None
        r.target_error = built[1]


def _values_formula(values: dict[str, Any], seen: dict[tuple[str, str], str | None]) -> str | None:
    """The first per-device value that would run as a spreadsheet formula (``formula_reason``),
    each distinct text value judged once per chunk."""
    for k, v in values.items():
        if not isinstance(v, str):
            continue  # formula_reason judges text only
        found = seen.get((k, v), _UNSEEN)
        if found is _UNSEEN:
            found = seen[(k, v)] = formula_reason(k, v)
        if found:
            return str(found)
    return None


_UNSEEN: Any = object()


@dataclass
class Lookups:
    devices: dict[int, ref.DeviceRecord | None]  # row index -> device (rows still valid only)
    providers: dict[int, ref.ServiceProviderInfo]
    plans: dict[str, ref.CarrierRatePlan]
    customers: dict[int, ref.CustomerInfo]
    customer_plans: dict[int, int | None]
    pools: set[int]
    histories: dict[int, LineHistory]  # device id -> what the carrier rules count (carrier_limits)
    taken: dict[tuple[str, str], list[ref.DeviceRecord]]

    @classmethod
    def load(
        cls,
        engine: sa.Engine,
        tenant_id: int,
        sp: ref.ServiceProviderInfo,
        ct: ChangeType,
        rows: list[Row],
        now: datetime,
        known: KnownDevices | None = None,
    ) -> Lookups:
        wanted: dict[IdentifierKind, set[str]] = defaultdict(set)
        ids: dict[str, set[int]] = defaultdict(set)
        new_ids: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            if r.reason is not None or r.kind is None:
                continue
            wanted[r.kind].add(r.value)
            t = r.target or {}
            for key in ("customer_id", "customer_rate_plan_id", "customer_rate_pool_id"):
                if t.get(key) is not None:
                    ids[key].add(t[key])
            for key in ("new_iccid", "new_imei"):
                if t.get(key):
                    new_ids[key].add(normalize(t[key]))
        found = {kind: _find(engine, tenant_id, kind, values, known) for kind, values in wanted.items()}
        devices: dict[int, ref.DeviceRecord | None] = {}
        for i, r in enumerate(rows):
            if r.reason is None and r.kind is not None:
                devices[i] = _pick(found[r.kind].get(r.value, []), sp.id)
        live = [d for d in devices.values() if d is not None and d.service_provider_id == sp.id]
        histories = carrier_limits.load_histories(engine, tenant_id, sp.integration, ct, live, to_naive_utc(now))
        taken = {}
        for key, kind in (("new_iccid", IdentifierKind.ICCID), ("new_imei", IdentifierKind.IMEI)):
            if new_ids[key]:
                for value, recs in ref.find_devices(engine, tenant_id, kind, new_ids[key]).items():
                    taken[(key, value)] = recs
        needs_plans = ct in (CT.CARRIER_RATE_PLAN_CHANGE, CT.ACTIVATE_NEW_SERVICE)
        return cls(
            devices=devices,
            providers={p.id: p for p in ref.list_service_providers(engine, tenant_id)},
            plans=ref.carrier_rate_plans(engine, tenant_id, sp.id) if needs_plans else {},
            customers=ref.customers(engine, tenant_id, ids["customer_id"]) if ids["customer_id"] else {},
            customer_plans=ref.customer_rate_plans(engine, tenant_id, ids["customer_rate_plan_id"])
            if ids["customer_rate_plan_id"]
            else {},
            pools=ref.customer_pool_ids(engine, tenant_id, ids["customer_rate_pool_id"])
            if ids["customer_rate_pool_id"]
            else set(),
            histories=histories,
            taken=taken,
        )


# Devices already looked up, by identifier kind: every value looked up maps to what the inventory
# holds for it (an empty list: none). The cross-carrier split looks each device up to place it and
# hands the result to each child's validation, so a device is read once, not twice.
KnownDevices = Mapping[IdentifierKind, Mapping[str, list[ref.DeviceRecord]]]


def _find(
    engine: sa.Engine, tenant_id: int, kind: IdentifierKind, values: set[str], known: KnownDevices | None
) -> dict[str, list[ref.DeviceRecord]]:
    """``ref.find_devices`` for the values ``known`` does not already answer."""
    have = known.get(kind, {}) if known else {}
    missing = {v for v in values if v not in have}
    found = ref.find_devices(engine, tenant_id, kind, missing) if missing else {}
    found.update((v, have[v]) for v in values if v in have and have[v])
    return found


def _pick(candidates: list[ref.DeviceRecord], sp_id: int) -> ref.DeviceRecord | None:
    """Of several devices with the identifier, prefer a live one of this service provider."""
    if not candidates:
        return None
    for test in (lambda d: d.service_provider_id == sp_id and d.archived_at is None, lambda d: d.archived_at is None):
        for d in candidates:
            if test(d):
                return d
    return candidates[0]


def second_pass(
    rows: list[Row],
    ct: ChangeType,
    sp: ref.ServiceProviderInfo,
    ctx: Lookups,
    now: datetime,
    numbers: Sequence[int],
    state: FileState,
) -> None:
    """What needs the lookups: the device itself, its service provider and the change type's rules."""
    new_seen = state.new_seen
    for i, r in enumerate(rows):
        if r.reason is not None:
            continue
        assert r.kind is not None
        d = ctx.devices.get(i)
        label = f"{_KIND_NAME[r.kind]} {r.value}"
        if d is None:
            r.reason = f"no device with {label} in this tenant's inventory"
            continue
        r.device = d
        if (first := listed_before(state.seen, r.kind, d, numbers[i])) is not None:
            r.reason = f"duplicate: this device is already listed in row {first}"
            continue
        if d.archived_at is not None:
            r.reason = f"device {label} was archived on {d.archived_at:%Y-%m-%d}; archived devices cannot be changed"
        elif d.service_provider_id != sp.id:
            other = ctx.providers.get(d.service_provider_id)
            r.reason = (
                f"device {label} belongs to service provider {other.name if other else d.service_provider_id!r}, "
                f"not {sp.name!r}; submit it with its own service provider"
            )
        elif r.target_error is not None or r.target is None:
            r.reason = f"invalid values for {ct.label}: {r.target_error}"
        else:
            r.reason = _check_target(ct, sp, d, r.target, ctx, now, label, new_seen, numbers[i])


def _check_target(
    ct: ChangeType,
    sp: ref.ServiceProviderInfo,
    d: ref.DeviceRecord,
    t: dict[str, Any],
    ctx: Lookups,
    now: datetime,
    label: str,
    new_seen: dict[tuple[str, str], int],
    row: int,
) -> str | None:
    """The change-type specific rules; may complete ``t`` (carrier spelling, names, defaults)."""
    integ = sp.integration
    if ct is CT.STATUS_UPDATE:
        err, canonical = _status_change(integ, d.status, t["status"])
        if err:
            return err
        t["status"] = canonical
    elif ct in (CT.CARRIER_RATE_PLAN_CHANGE, CT.ACTIVATE_NEW_SERVICE):
        code = t["carrier_rate_plan"]
        plan = ctx.plans.get(code) or next((p for c, p in ctx.plans.items() if c.lower() == code.lower()), None)
        if plan is None:
            known = ", ".join(sorted(ctx.plans)[:10]) or "none configured"
            return f"unknown carrier rate plan {code!r} for {sp.name!r}; known plans: {known}"
        t["carrier_rate_plan"] = plan.code
        if plan.communication_plan and not t.get("communication_plan"):
            t["communication_plan"] = plan.communication_plan
        if ct is CT.CARRIER_RATE_PLAN_CHANGE and integ is Integration.TEAL and not d.eid:
            return f"device {label} has no EID; Teal plan changes need one"
    elif ct is CT.CUSTOMER_RATE_PLAN_CHANGE:
        plan_id, pool_id = t.get("customer_rate_plan_id"), t.get("customer_rate_pool_id")
        if plan_id is not None and plan_id not in ctx.customer_plans:
            return f"no customer rate plan with id {plan_id} in this tenant"
        if pool_id is not None and pool_id not in ctx.pools:
            return f"no customer rate pool with id {pool_id} in this tenant"
        if plan_id is not None and t.get("data_allocation_mb") is None and ctx.customer_plans[plan_id] is not None:
            t["data_allocation_mb"] = ctx.customer_plans[plan_id]
    elif ct in (CT.CUSTOMER_ASSIGNMENT, CT.CREATE_REV_SERVICE):
        cust = ctx.customers.get(t["customer_id"])
        if cust is None:
            return f"no customer with id {t['customer_id']} in this tenant"
        t["customer_name"] = cust.name
        stored = cust.rev_customer_id
        if stored and not t.get("rev_customer_id"):
            # A free-text column: held to the rule a given revCustomerId meets (int32, canonical).
            try:
                rev_io_id(stored)
            except ValueError:
                return (
                    f"customer {cust.name!r} has Rev.io customer id {stored!r} stored, which is not a Rev.io "
                    "customer id (a whole number from 1 to 2147483647); correct it on the customer first"
                )
            t["rev_customer_id"] = stored
        if ct is CT.CREATE_REV_SERVICE and not t.get("rev_customer_id"):
            return f"customer {cust.name!r} has no Rev.io customer id; link it in Rev.io first"
    elif ct is CT.ARCHIVAL and not t.get("override_usage_check"):
        if d.last_usage_at is not None and d.last_usage_at >= now - timedelta(days=ARCHIVE_USAGE_DAYS):
            return (
                f"device {label} had usage on {d.last_usage_at:%Y-%m-%d}, within the last {ARCHIVE_USAGE_DAYS} days; "
                "archive it later or set overrideUsageCheck"
            )
        if d.has_active_rev_service:
            return f"device {label} has an active Rev.io service; end it first or set overrideUsageCheck"
    elif ct is CT.CHANGE_ICCID_AND_IMEI:
        for key, name in (("new_iccid", "ICCID"), ("new_imei", "IMEI")):
            if not t.get(key):
                continue
            value = t[key] = normalize(t[key])
            if any(other.id != d.id for other in ctx.taken.get((key, value), [])):
                return f"new {name} {value} is already used by another device in this inventory"
            if (key, value) in new_seen:
                return f"new {name} {value} is also requested in row {new_seen[(key, value)]}"
            new_seen[(key, value)] = row
    return None


__all__ = [
    "ARCHIVE_USAGE_DAYS",
    "CHUNK_ROWS",
    "Lookups",
    "Row",
    "first_pass",
    "payload_reason",
    "second_pass",
]
