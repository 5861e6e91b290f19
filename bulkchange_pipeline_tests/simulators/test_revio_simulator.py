"""The Rev.io simulator over real HTTP: auth (Basic + subscription key), paging, creates, JSON
Patch, APIM rate limit and quota answers, fault injection, inventory and the admin endpoints."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from click.testing import CliRunner

from bulkchange_pipeline.simulators import __main__ as sim_cli
from bulkchange_pipeline.simulators.revio import RevioSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.simulators.revio_fixtures import (
    CUSTOMER_A,
    CUSTOMER_B,
    REVIO_PASSWORD,
    REVIO_PROVIDER_ID,
    REVIO_SUBSCRIPTION_KEY,
    REVIO_USER,
    seed_service,
)

pytestmark = pytest.mark.timeout(60)

PATCH_TYPE = "application/json-patch+json"


def headers(
    user: str = REVIO_USER, password: str = REVIO_PASSWORD, key: str | None = REVIO_SUBSCRIPTION_KEY
) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    out = {"Authorization": f"Basic {token}"}
    if key is not None:
        out["Ocp-Apim-Subscription-Key"] = key
    return out


def api(handle: ServerHandle) -> httpx.Client:
    return httpx.Client(base_url=handle.base_url + "/", headers=headers(), timeout=5)


def new_service(client: httpx.Client, number: str, customer: int = CUSTOMER_A) -> int:
    r = client.post("Services", json={"customer_id": customer, "provider_id": REVIO_PROVIDER_ID, "number": number})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_auth_needs_both_basic_and_subscription_key(revio_sim) -> None:
    url = revio_sim.base_url + "/Services"
    missing = httpx.get(url, headers=headers(key=None))
    assert missing.status_code == 401 and "missing subscription key" in missing.json()["message"]
    wrong_key = httpx.get(url, headers=headers(key="nope"))
    assert wrong_key.status_code == 401 and "invalid subscription key" in wrong_key.json()["message"]
    wrong_password = httpx.get(url, headers=headers(password="bad"))
    assert wrong_password.status_code == 401
    assert wrong_password.json()[0]["ok"] is False
    ok = httpx.get(url, headers=headers())
    assert ok.status_code == 200 and ok.json()["ok"] is True
    assert revio_sim.simulator.stats()["auth_failures"] == 3


def test_create_answers_201_with_location_and_id(revio_sim) -> None:
    with api(revio_sim) as client:
        r = client.post(
            "Services", json={"customer_id": CUSTOMER_A, "provider_id": REVIO_PROVIDER_ID, "number": "15550001"}
        )
        assert r.status_code == 201
        body = r.json()
        assert body["ok"] is True and isinstance(body["id"], int)
        assert r.headers["location"].endswith(f"/v1/Services/{body['id']}")
        got = client.get(f"Services/{body['id']}").json()
        assert got["ok"] is True and got["status"] == "ACTIVE" and got["customer_id"] == CUSTOMER_A
    assert revio_sim.simulator.applied_counts["15550001"] == 1


def test_create_refusals_use_the_error_array(revio_sim) -> None:
    with api(revio_sim) as client:
        unknown = client.post("Services", json={"customer_id": 999, "provider_id": 14})
        assert unknown.status_code == 400
        assert unknown.json() == [{"ok": False, "error": "BadRequest", "message": "customer_id 999 does not exist"}]
        no_provider = client.post("Services", json={"customer_id": CUSTOMER_A})
        assert no_provider.status_code == 400 and "provider_id" in no_provider.json()[0]["message"]
        other_provider = client.post("Services", json={"customer_id": CUSTOMER_A, "provider_id": 1})
        assert other_provider.status_code == 400
        sid = new_service(client, "15550002")
        wrong_owner = client.post(
            "ServiceProduct", json={"service_id": sid, "product_id": 101, "customer_id": CUSTOMER_B}
        )
        assert wrong_owner.status_code == 400 and "does not own" in wrong_owner.json()[0]["message"]
        bad_product = client.post("ServiceProduct", json={"service_id": sid, "product_id": 999})
        assert bad_product.status_code == 400
    assert revio_sim.simulator.stats()["applied_total"] == 1


def test_paging_and_search(revio_sim) -> None:
    sim = revio_sim.simulator
    for i in range(25):
        seed_service(sim, f"1666{i:04d}", CUSTOMER_B)
    seed_service(sim, "16660000", CUSTOMER_A, status="DISCONNECTED")
    with api(revio_sim) as client:
        first = client.get("Services", params={"search.customer_id": CUSTOMER_B, "search.page_size": 10}).json()
        assert (first["has_more"], first["record_count"], len(first["records"])) == (True, 10, 10)
        last = client.get(
            "Services", params={"search.customer_id": CUSTOMER_B, "search.page_size": 10, "search.page": 3}
        ).json()
        assert (last["has_more"], len(last["records"])) == (False, 5)
        default = client.get("Services").json()
        assert len(default["records"]) == 10  # default page size
        active = client.get("Services", params={"search.number": "16660000", "search.status": "ACTIVE"}).json()
        assert [r["customer_id"] for r in active["records"]] == [CUSTOMER_B]
        lower = client.get("Services", params={"search.number": "16660000", "search.status": "active"}).json()
        assert lower["records"] == []  # exact compare: no source says Rev.io ignores case
        assert client.get("Services", params={"search.page_size": 501}).status_code == 400
        assert client.get("Services", params={"search.colour": "red"}).status_code == 400


def test_json_patch_on_service_product(revio_sim) -> None:
    with api(revio_sim) as client:
        sid = new_service(client, "15550003")
        r = client.post(
            "ServiceProduct", json={"service_id": sid, "product_id": 102, "customer_id": CUSTOMER_A, "quantity": 1}
        )
        spid = r.json()["id"]
        ops = [
            {"op": "test", "path": "/quantity", "value": 1},
            {"op": "replace", "path": "/quantity", "value": 3},
            {"op": "replace", "path": "/status", "value": "DISCONNECTED"},
        ]
        as_json = client.patch(f"ServiceProduct/{spid}", json=ops)
        assert as_json.status_code == 415  # JSON Patch has its own media type
        patched = client.patch(
            f"ServiceProduct/{spid}",
            content=httpx.Request("PATCH", "x", json=ops).content,
            headers={"Content-Type": PATCH_TYPE},
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["quantity"], patched.json()["status"]) == (3, "DISCONNECTED")

        def patch(ops: list) -> httpx.Response:
            return client.patch(
                f"ServiceProduct/{spid}",
                content=httpx.Request("PATCH", "x", json=ops).content,
                headers={"Content-Type": PATCH_TYPE},
            )

        assert patch([{"op": "test", "path": "/quantity", "value": 1}]).status_code == 409
        assert patch([{"op": "replace", "path": "/status", "value": "GONE"}]).status_code == 400
        assert patch([{"op": "replace", "path": "/service_id", "value": 1}]).status_code == 400
        assert patch([{"op": "replace", "path": "/quantity", "value": -1}]).status_code == 400
        # A refused document changes nothing, even when its first op was valid.
        assert (
            patch([{"op": "replace", "path": "/quantity", "value": 7}, {"op": "move", "path": "/rate"}]).status_code
            == 400
        )
        assert client.get(f"ServiceProduct/{spid}").json()["quantity"] == 3


def test_rate_limit_answers_apim_429_with_the_wait(revio_sim) -> None:
    sim = revio_sim.simulator
    sim.configure(calls_per_minute=180)  # 3 per one-second window
    with api(revio_sim) as client:
        answers = [client.get("Customers") for _ in range(8)]  # spans at most two windows
    assert [a.status_code for a in answers].count(200) <= 6
    limited = [a.json() for a in answers if a.status_code == 429]
    assert limited and limited[0] == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}
    assert "retry-after" not in {k.lower() for a in answers for k in a.headers}
    sim.configure(whole_second_waits=False)
    assert 0 < sim.wait_seconds() <= 1.0 and sim.wait_seconds() == round(sim.wait_seconds(), 2)
    sim.configure(retry_after_seconds=0.25)
    with api(revio_sim) as client:
        answers = [client.get("Customers") for _ in range(8)]
    limited = [a.json()["message"] for a in answers if a.status_code == 429]
    assert limited and limited[0] == "Rate limit is exceeded. Try again in 0.25 seconds."
    assert sim.stats()["over_limit_answers"] >= 2


def test_daily_quota_answers_403(revio_sim) -> None:
    revio_sim.simulator.configure(daily_quota=3)
    with api(revio_sim) as client:
        codes = [client.get("Customers").status_code for _ in range(3)]
        over = client.get("Customers")
    assert codes == [200, 200, 200]
    assert over.status_code == 403
    assert over.json()["message"].startswith("Out of call volume quota. Quota will be replenished in")
    assert revio_sim.simulator.stats()["quota_refusals"] == 1


def test_fault_injection_5xx_and_burst(revio_sim) -> None:
    sim = revio_sim.simulator
    sim.configure(error_rate=1.0)
    with api(revio_sim) as client:
        r = client.post("Services", json={"customer_id": CUSTOMER_A, "provider_id": 14, "number": "15550004"})
        assert r.status_code == 500
        sim.configure(error_rate=0.0, burst_rate=1.0, burst_length=2, retry_after_seconds=2)
        burst = [client.get("Customers") for _ in range(2)]
    assert [b.status_code for b in burst] == [429, 429]
    assert "Try again in 2 seconds" in burst[0].json()["message"]
    assert sim.applied_counts["15550004"] == 0  # a 5xx is refused before anything is applied
    assert sim.stats()["injected"]["error_5xx"] == 1


def test_inventory_assign_service(revio_sim) -> None:
    sim = revio_sim.simulator
    sim.seed_devices([{"type": "inventory_item", "inventory_item_id": 77, "identifier": "8901"}])
    with api(revio_sim) as client:
        sid = new_service(client, "15550005")
        item = client.get("InventoryItem", params={"search.identifier": "8901"}).json()
        assert item["records"][0]["status"] == "AVAILABLE"
        r = client.post("InventoryItem/assignService", json={"inventory_item_id": 77, "service_id": sid})
        assert r.status_code == 200 and r.json()["status"] == "ASSIGNED"
        linked = client.get("ServiceInventory", params={"search.service_id": sid}).json()
        assert [x["inventory_item_id"] for x in linked["records"]] == [77]


def test_admin_endpoints(revio_sim) -> None:
    root = revio_sim.root_url
    seeded = httpx.post(
        root + "/_sim/devices",
        json={
            "devices": [
                {"type": "customer", "customer_id": 3003},
                {"number": "15559999", "customer_id": 3003, "provider_id": REVIO_PROVIDER_ID},
            ]
        },
    )
    assert seeded.status_code == 200 and seeded.json()["seeded"] == 2
    view = httpx.get(root + "/_sim/devices/15559999").json()
    assert view["applied"] == 0 and view["device"]["services"][0]["customer_id"] == 3003
    assert httpx.post(root + "/_sim/config", json={"calls_per_minut": 1}).status_code == 400
    assert httpx.post(root + "/_sim/config", json={"daily_quota": 10}).json()["daily_quota"] == 10
    with api(revio_sim) as client:
        client.get("Customers")
    stats = httpx.get(root + "/_sim/stats").json()
    assert list(stats["accounts"]) == ["sub1"]  # subscriptions are named, never shown
    assert REVIO_SUBSCRIPTION_KEY not in str(stats) + str(httpx.get(root + "/_sim/config").json())
    assert httpx.post(root + "/_sim/reset").status_code == 200


def test_wait_seconds_is_the_rest_of_the_window() -> None:
    sim = RevioSimulator(calls_per_minute=30, whole_second_waits=False)  # 2 s windows
    start = time.monotonic()
    wait = sim.wait_seconds()
    expected = 2.0 - (start % 2.0)
    assert abs(wait - expected) < 0.05
    assert RevioSimulator(calls_per_minute=30).wait_seconds() in (1.0, 2.0)


@pytest.mark.parametrize(
    "record",
    [
        {"type": "customer", "customer_id": "R-9"},  # no create could use a text id
        {"type": "customer", "customer_id": "2003"},  # int32 as a JSON number, not text
        {"type": "customer", "customer_id": 2_147_483_648},
        {"type": "customer", "customer_id": True},
        {"type": "customer", "customer_id": 2003, "status": "active"},  # exact spelling
        {"type": "service", "number": "1", "customer_id": CUSTOMER_A, "provider_id": 14, "status": "active"},
        {"type": "service", "number": "1", "customer_id": str(CUSTOMER_A), "provider_id": 14},
        {"type": "service", "number": "1", "customer_id": CUSTOMER_A, "provider_id": "14"},
        {"type": "inventory_item", "identifier": "8901", "status": "available"},
    ],
)
def test_seeds_are_held_to_the_api_rules(revio_sim, record) -> None:
    sim = revio_sim.simulator
    before = (dict(sim.book.customers), dict(sim.book.services), dict(sim.book.inventory))
    with pytest.raises(ValueError):
        sim.seed_devices([record])
    assert (sim.book.customers, sim.book.services, sim.book.inventory) == before


def test_seeded_customer_is_found_by_its_int_id(revio_sim) -> None:
    revio_sim.simulator.seed_devices([{"type": "customer", "customer_id": 2_147_483_647, "status": "CLOSED"}])
    with api(revio_sim) as client:
        got = client.get("Customers/2147483647")
        assert got.status_code == 200 and got.json()["status"] == "CLOSED"
        assert client.get("Customers/%202147483647").status_code == 404  # one spelling of an id
        closed = client.post("Services", json={"customer_id": 2_147_483_647, "provider_id": REVIO_PROVIDER_ID})
        assert closed.status_code == 400 and "closed" in closed.json()[0]["message"]


class _NoServe:
    """Stands in for uvicorn.Server so the CLI can be run to the point where it would serve."""

    def __init__(self, config: object) -> None:
        self.config = config

    def run(self) -> None:
        return None


@pytest.mark.parametrize("customer", ["R-9", "0", "2147483648", "12.5"])
def test_cli_refuses_a_customer_id_that_is_not_int32(monkeypatch, customer) -> None:
    monkeypatch.setattr(sim_cli.uvicorn, "Server", _NoServe)
    result = CliRunner().invoke(sim_cli.cli, ["revio", "--port", "0", "--customer", customer])
    assert result.exit_code == 2, result.output
    assert "--customer" in result.output


def test_cli_seeds_int32_customers(monkeypatch) -> None:
    monkeypatch.setattr(sim_cli.uvicorn, "Server", _NoServe)
    result = CliRunner().invoke(sim_cli.cli, ["revio", "--port", "0", "--customer", "2001", "--customer", "2147483647"])
    assert result.exit_code == 0, result.output
    assert "2 customers" in result.output
