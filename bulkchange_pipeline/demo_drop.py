"""The demo's file drop: a distributor's X12 856 Ship Notice dropped into the demo tenant's local
inbox, taken by the real ``file_drop_sensor`` (ticked through the local runner like the demo's
other sensors), answered at once with a 997, processed with the demo's bulk changes, and answered
with an 824 when done.

Used by ``bulkchange demo`` (``make demo``)::

    drop = DemoDrop.start(engine, seed, instance, defs)   # 856 in, 997 out, bulk change stored
    ...                                                    # process the bulk changes as before
    for line in drop.finish(): console.print(line)         # 824 out; where everything landed

The trading-partner settings it gives the demo tenant (any sender): assign the shipped devices to
the seed's first customer. The shipped devices are the tenant's last three Jasper devices, which
the demo's StatusUpdate (the first ones of a status) does not touch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from .defs.local_runner import evaluate_sensor
from .domain import ChangeType
from .intake.drops import default_root
from .store.file_drops import set_drop_settings
from .store.reference import live_devices
from .store.seed import DemoSeed
from .store.x12_interchanges import find_interchange

__all__ = ["DROP_SENSOR", "DemoDrop", "demo_856"]

DROP_SENSOR = "file_drop_sensor"


def demo_856(iccids: list[str], control: int, now: datetime) -> str:
    """An 856 from ``DISTRIB01`` listing ``iccids`` (one HL item loop each, LIN qualified SN)."""
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M")
    isa = (
        f"ISA*00*{'':10}*00*{'':10}*ZZ*{'DISTRIB01':15}*ZZ*{'BULKCHANGE':15}*{now:%y%m%d}*{time}*^*00501*"
        f"{control:09d}*0*P*>~"
    )
    body = [f"BSN*00*DEMO-{control}*{date}*{time}", "HL*1**S"]
    for n, iccid in enumerate(iccids, start=1):
        body += [f"HL*{n + 1}*1*I", f"LIN*{n}*SN*{iccid}", "SN1**1*EA"]
    body.append(f"CTT*{len(iccids) + 1}")
    tx = ["ST*856*0001", *body, f"SE*{len(body) + 2}*0001"]
    envelope = [f"GS*SH*DISTRIB01*BULKCHANGE*{date}*{time}*{control}*X*005010", *tx, f"GE*1*{control}"]
    return isa + "".join(s + "~" for s in envelope) + f"IEA*1*{control:09d}~"


@dataclass
class DemoDrop:
    engine: sa.Engine
    instance: dg.DagsterInstance
    defs: dg.Definitions
    root: Path
    tenant_id: int
    control: str
    name: str
    cursor: str | None = None

    def tick(self) -> None:
        result = evaluate_sensor(self.instance, self.defs, self.cursor, sensor_name=DROP_SENSOR)
        self.cursor = result.cursor

    def outbox(self) -> list[str]:
        folder = self.root / "outbox"
        return sorted(p.name for p in folder.iterdir() if p.name.startswith(Path(self.name).stem))

    @classmethod
    def start(cls, engine: sa.Engine, seed: DemoSeed, instance: dg.DagsterInstance, defs: dg.Definitions) -> DemoDrop:
        """Configure the demo tenant's drops, drop the 856 and take it (two ticks: a file is taken
        once a tick saw it unchanged)."""
        sp = seed.service_providers["jasper"]
        settings = {
            "serviceProviderId": sp,
            "changes": [
                {
                    "changeType": int(ChangeType.CUSTOMER_ASSIGNMENT),
                    "customerAssignment": {"customerId": min(seed.customers.values())},
                }
            ],
        }
        set_drop_settings(engine, seed.tenant_id, partner_settings={"*": settings})
        now = datetime.now(UTC)
        control = int(now.timestamp()) % 1_000_000_000 or 1  # a new interchange each run
        iccids = [d["iccid"] for d in live_devices(engine, seed.tenant_id, sp)[-3:]]
        root = default_root(seed.tenant_id)
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        drop = cls(engine, instance, defs, root, seed.tenant_id, f"{control:09d}", f"asn-{control:09d}.x12")
        (root / "inbox" / drop.name).write_text(demo_856(iccids, control, now), encoding="ascii")
        drop.tick()
        drop.tick()
        return drop

    @property
    def bulk_change_ids(self) -> list[int]:
        record = find_interchange(self.engine, self.tenant_id, "ZZ:DISTRIB01", self.control)
        return record.bulk_change_ids if record else []

    def finish(self) -> list[str]:
        """One more tick (the 824 of the finished bulk change) and where the files are."""
        self.tick()
        reason = self.root / "inbox" / "rejected" / f"{self.name}.reason.txt"
        taken = f"rejected: {reason.read_text().strip()}" if reason.exists() else "taken to processed/"
        return [
            f"file drop: {self.root / 'inbox' / self.name} {taken}",
            f"outbox {self.root / 'outbox'}: {', '.join(self.outbox()) or 'nothing'} (997 at once, 824 when done)",
        ]
