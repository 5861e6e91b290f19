"""What a change writes to our ``device`` row, per change type.

One function serves both the database-only changes and the carrier ones: after a carrier accepts
a change, the same columns are written, plus whatever the carrier reports it now holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..domain import ChangeType


def device_values(change_type: ChangeType, target: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Device columns to set for ``target`` (the per-device target values of a change row)."""
    ct = ChangeType(change_type)
    if ct is ChangeType.ARCHIVAL:
        return {"archived_at": now}
    if ct is ChangeType.CUSTOMER_RATE_PLAN_CHANGE:
        keys = ("customer_rate_plan_id", "customer_rate_pool_id", "data_allocation_mb")
        return {k: target[k] for k in keys if k in target}
    if ct is ChangeType.CUSTOMER_ASSIGNMENT:
        return {"customer_id": target["customer_id"]}
    if ct is ChangeType.EDIT_USERNAME_COST_CENTER:
        return {k: target[k] for k in ("username", "cost_center") if k in target}
    if ct is ChangeType.CARRIER_RATE_PLAN_CHANGE:
        out = {"carrier_rate_plan": target["carrier_rate_plan"]}
        if target.get("communication_plan"):
            out["communication_plan"] = target["communication_plan"]
        return out
    if ct is ChangeType.STATUS_UPDATE:
        return {"status": target["status"]}
    if ct is ChangeType.CREATE_REV_SERVICE:
        return {"has_active_rev_service": True}
    if ct is ChangeType.CHANGE_ICCID_AND_IMEI:
        return {k: target[f"new_{k}"] for k in ("iccid", "imei") if target.get(f"new_{k}")}
    return {}
