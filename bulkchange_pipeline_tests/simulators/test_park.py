"""The simulator park and its sync from the database (what the demo, `make dev` and the matrix test
stand on): URLs the clients expect, credentials that match the simulators' demo accounts, and
simulators that hold exactly the database's devices and catalogue, however often they are synced."""

from __future__ import annotations

import socket

import httpx
import pytest
import sqlalchemy as sa

from bulkchange_pipeline.engine.accounts import carrier_account
from bulkchange_pipeline.settings import credential_env_key
from bulkchange_pipeline.simulators.faults import FaultConfig
from bulkchange_pipeline.simulators.park import start_park
from bulkchange_pipeline.simulators.sync import sync_from_database
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.schema import device
from bulkchange_pipeline.store.seed import (
    demo_credentials_names,
    point_demo_at,
    seed_demo,
)


@pytest.fixture(scope="module")
def park():
    with start_park("http://127.0.0.1:9/") as p:
        yield p


def test_base_urls_are_what_each_client_expects(park) -> None:
    urls = park.base_urls
    assert set(urls) == {"jasper", "thingspace", "telegence", "teal", "pond", "revio"}
    assert urls["jasper"].endswith("/rws/api/v1") and urls["pond"].endswith("/api") and urls["revio"].endswith("/v1")
    assert len({u.split("/")[2] for u in urls.values()}) == 6  # six ports
    # The Rev.io simulator answers its demo account at that base (auth + subscription key).
    got = httpx.get(
        f"{urls['revio']}/Customers",
        auth=("demo@DEMO", "demo-password"),
        headers={"Ocp-Apim-Subscription-Key": "demo-subscription-key"},
    )
    assert got.status_code == 200 and got.json()["ok"] is True


def test_credentials_env_gives_every_client_what_it_reads(park, engine) -> None:
    seed = seed_demo(engine, devices_per_carrier=3)
    point_demo_at(engine, park.base_urls)
    env = park.credentials_env(demo_credentials_names(), credential_env_key)
    assert env["BULKCHANGE_CALLBACK_BASE_URL"] == "http://127.0.0.1:9/"
    extras = {
        sp.integration.value: carrier_account(sp, environ=env).extra
        for sp in ref.list_service_providers(engine, seed.tenant_id)
    }
    assert {"client_id", "client_secret", "account_name", "callback_username", "callback_password"} <= set(
        extras["thingspace"]
    )
    assert {"ban", "service_zip_code"} <= set(extras["telegence"])
    assert extras["pond"] == {"distributor_id": "1001"}
    assert {"subscription_key", "provider_id", "product_ids"} <= set(extras["revio"])
    for sp in ref.list_service_providers(engine, seed.tenant_id):
        assert ref.get_service_provider(engine, seed.tenant_id, sp.id).base_url == park.base_urls[sp.integration.value]


def test_sync_makes_simulators_hold_the_database_and_is_repeatable(park, engine) -> None:
    seed = seed_demo(engine, devices_per_carrier=20)
    calls = park.calls()
    first = sync_from_database(engine, park, seed.tenant_id)
    assert first == {"jasper": 20, "thingspace": 20, "telegence": 18, "teal": 20, "pond": 20, "revio": 20}
    with engine.connect() as conn:
        rows = {
            sp: [dict(r._mapping) for r in conn.execute(sa.select(device).where(device.c.service_provider_id == sp_id))]
            for sp, sp_id in seed.service_providers.items()
        }
    sims = park.simulators
    for d in rows["jasper"]:
        assert (sims["jasper"].device(d["iccid"])["status"], sims["jasper"].device(d["iccid"])["ratePlan"]) == (
            d["status"],
            d["carrier_rate_plan"],
        )
    for d in rows["teal"]:
        assert sims["teal"].device(d["eid"])["planUuid"] == d["carrier_rate_plan"]  # seed plans are Teal plan UUIDs
    for d in rows["pond"]:
        assert [p["packageTypeId"] for p in sims["pond"].active_packages(d["iccid"])] == [int(d["carrier_rate_plan"])]
    inventory = [d for d in rows["telegence"] if d["status"] == "INVENTORY"]
    assert len(inventory) == 2 and all(sims["telegence"].device(d["iccid"]) is None for d in inventory)
    rev_lines = [d for d in rows["revio"] if d["has_active_rev_service"]]
    assert rev_lines and all(sims["revio"].device(d["msisdn"])["services"][0]["status"] == "ACTIVE" for d in rev_lines)

    # A line the simulator gained (as after an activation) is gone after the next sync.
    sims["telegence"].seed_devices([{"subscriberNumber": "2145559999", "sim": inventory[0]["iccid"]}])
    assert sync_from_database(engine, park, seed.tenant_id) == first
    assert sims["telegence"].device("2145559999") is None and sims["telegence"].device(inventory[0]["iccid"]) is None
    assert park.calls() == calls  # syncing goes through no carrier API


def test_options_set_limits_and_faults_and_stop_frees_the_ports() -> None:
    park = start_park(limits=True, faults={"jasper": FaultConfig(error_rate=1.0)})
    try:
        assert park.simulators["jasper"].gate.rate_per_second == 5.0
        assert park.simulators["revio"].config()["calls_per_minute"] == pytest.approx(500)
        got = httpx.get(f"{park.base_urls['jasper']}/devices/1", auth=("demo", "demo-api-key"))
        assert got.status_code == 500
        ports = [h.port for h in park.handles.values()]
    finally:
        park.stop()
    park.stop()  # idempotent
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
