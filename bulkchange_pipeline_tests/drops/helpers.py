"""File drop test helpers: a tenant with a Jasper account and devices, request files in the three
formats, and the sensor ticks (the file drop sensor through the production local runner)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa
from lxml import etree

from bulkchange_pipeline.defs.local_runner import evaluate_sensor, tick_and_run
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.store.schema import bulk_change

from ..defs.harness import fast_definitions
from ..factories import make_account, make_devices
from ..intake.xml_inputs import to_xml

DROP_SENSOR = "file_drop_sensor"


@dataclass
class Tenant:
    ids: dict[str, int]
    iccids: list[str]


def seed_tenant(engine: sa.Engine, sim: Any, base_url: str, n: int = 3, tenant_name: str = "acme") -> Tenant:
    ids = make_account(engine, base_url, tenant_name=tenant_name)
    devices = make_devices(engine, ids, n)
    sim.seed_devices(
        {"iccid": d["iccid"], "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": "CP-Basic"}
        for d in devices
    )
    return Tenant(ids, [d["iccid"] for d in devices])


def request_file(fmt: str, tenant: Tenant, iccids: list[str] | None = None) -> bytes:
    """A status update (DEACTIVATED) of ``iccids`` as a CSV (change type and provider from the
    drop settings), JSON or XML file."""
    iccids = tenant.iccids if iccids is None else iccids
    if fmt == "csv":
        return ("iccid,targetStatus\n" + "".join(f"{i},DEACTIVATED\n" for i in iccids)).encode()
    body = {
        "serviceProviderId": tenant.ids["service_provider_id"],
        "changeType": "StatusUpdate",
        "devices": iccids,
        "statusUpdate": {"targetStatus": "DEACTIVATED"},
    }
    return json.dumps(body).encode() if fmt == "json" else to_xml(body).encode()


def results_statuses(fmt: str, data: bytes) -> dict[str, str]:
    """iccid -> status of a results file in ``fmt``."""
    if fmt == "csv":
        return {r["iccid"]: r["status"] for r in csv.DictReader(io.StringIO(data.decode()))}
    if fmt == "json":
        return {d["iccid"]: d["status"] for d in json.loads(data)["devices"]}
    root = etree.fromstring(data)
    ns = "{urn:bulkchange:results:1}"
    return {r.findtext(f"{ns}iccid"): r.findtext(f"{ns}status") for r in root.iter(f"{ns}deviceResult")}


class Ticks:
    """The file drop sensor's ticks with its cursor carried over, and the bulk change sensor's runs."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.defs = fast_definitions()
        self.cursor: str | None = None

    def drop(self) -> dg.SensorResult:
        result = evaluate_sensor(self.instance, self.defs, self.cursor, sensor_name=DROP_SENSOR)
        self.cursor = result.cursor
        return result

    def process(self) -> list[dg.ExecuteInProcessResult]:
        _, runs = tick_and_run(self.instance, self.defs)
        return runs


def bulk_change_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(bulk_change.c.id).order_by(bulk_change.c.id)).scalars())


STATUS_UPDATE = int(ChangeType.STATUS_UPDATE)
