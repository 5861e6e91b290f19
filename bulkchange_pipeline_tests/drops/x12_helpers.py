"""X12 file drop test helpers: a tenant whose devices are DEACTIVATED (the 856's changes assign the
customer, then activate), its partner settings, 856 files of its ICCIDs, and reading our answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake.x12 import Interchange, parse_interchange

from ..factories import make_account, make_devices
from ..intake.x12_inputs import iccid, interchange, render, ship_notice_body
from .helpers import Tenant

SENDER = "ZZ:DISTRIB01"  # ISA05:ISA06 of x12_inputs.isa
UNKNOWN = iccid(50)  # a valid ICCID that is not in the tenant's inventory


def seed_inactive_tenant(engine: sa.Engine, sim: Any, base_url: str, n: int = 3) -> Tenant:
    ids = make_account(engine, base_url)
    devices = make_devices(engine, ids, n, status="DEACTIVATED")
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "DEACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices
    )
    return Tenant(ids, [d["iccid"] for d in devices])


def partner_settings(tenant: Tenant) -> dict[str, Any]:
    """Assign the customer, then activate: two bulk changes per 856."""
    return {
        SENDER: {
            "serviceProviderId": tenant.ids["service_provider_id"],
            "changes": [
                {
                    "changeType": int(ChangeType.CUSTOMER_ASSIGNMENT),
                    "customerAssignment": {"customerId": tenant.ids["customer_id"]},
                },
                {"changeType": int(ChangeType.STATUS_UPDATE), "statusUpdate": {"targetStatus": "ACTIVATED"}},
            ],
        }
    }


def ship_notice(iccids: list[str], control: str = "000000905") -> bytes:
    """An 856 listing ``iccids``: one in a LIN pair qualified SN, the others as REF*SE."""
    devices = [[("LIN" if n % 2 == 0 else "REF", value)] for n, value in enumerate(iccids)]
    return render(interchange([("856", ship_notice_body(devices))], control=control)).encode()


def read_x12(path: Path) -> Interchange:
    return parse_interchange(path.read_bytes())


def elements(parsed: Interchange, seg_id: str) -> list[list[str]]:
    """Every ``seg_id`` segment of every transaction set, as its element lists."""
    return [
        [seg.id, *seg.elements]
        for g in parsed.groups
        for tx in g.transactions
        for seg in tx.segments
        if seg.id == seg_id
    ]
