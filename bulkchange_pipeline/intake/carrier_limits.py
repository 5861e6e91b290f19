"""Intake's side of the carrier rules (``domain.carrier_rules``): read the lines' history in one
set-based pass, then check each accepted row sent now.

Why apart from ``validation``: the rules table, the history it needs and the defer decision are
one idea; validation calls ``load_histories`` once per bulk change and ``check`` once per row.
Rows with their own future effective date are not checked (they go on a later day, whose count
is not known yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from ..domain import ChangeType, Integration
from ..domain.carrier_rules import CARRIER_RULES, LineHistory, Refusal, RuleKind, check_row, rules_for
from ..store import reference as ref
from ..store.line_history import change_counts_today

__all__ = ["DEFERRED_PREFIX", "check", "deferred_detail", "load_histories"]

DEFERRED_PREFIX = "deferred by carrier rule until "


def load_histories(
    engine: sa.Engine,
    tenant_id: int,
    integration: Integration,
    change_type: ChangeType,
    devices: Iterable[ref.DeviceRecord],
    now: datetime,
) -> dict[int, LineHistory]:
    """Each device's ``LineHistory`` for the rules that apply; empty when none does (no query)."""
    rules = rules_for(CARRIER_RULES, integration, change_type)
    if not rules:
        return {}
    recs = {d.id: d for d in devices}
    ids = list(recs)
    kinds = {r.kind for r in rules}
    per_day = change_counts_today(engine, tenant_id, change_type, ids, now) if RuleKind.PER_DAY in kinds else {}
    per_month: dict[int, int] = {}
    if RuleKind.PER_MONTH in kinds:
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        per_month = ref.plan_change_counts(engine, tenant_id, ids, month_start)
    return {
        i: LineHistory(
            actions_today=per_day.get(i, 0), plan_changes_this_month=per_month.get(i, 0), status=recs[i].status
        )
        for i in ids
    }


def check(
    histories: dict[int, LineHistory],
    integration: Integration,
    change_type: ChangeType,
    device_id: int,
    now: datetime,
) -> Refusal | None:
    """The refusal for one row of a device, or None (no rule applies, or none is broken)."""
    history = histories.get(device_id)
    if history is None:
        return None
    return check_row(CARRIER_RULES, integration, change_type, history, now)


def deferred_detail(refusal: Refusal) -> str:
    """``status_details`` of a row deferred instead of refused: when it goes, and why."""
    assert refusal.allowed_at is not None
    return f"{DEFERRED_PREFIX}{refusal.allowed_at:%Y-%m-%d %H:%M} UTC: {refusal.reason}"
