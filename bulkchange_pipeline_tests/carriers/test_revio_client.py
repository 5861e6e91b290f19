"""RevioClient against a running Rev.io simulator: customer assignment and CreateRevService,
refusals while another customer's line is active, already-applied detection, lost answers on
creates, 429 bursts at scale, the daily quota, config errors and redaction; editing a line's
services (description and cost-center custom field) for a carrier's username/cost-center edit. The simulator's
per-number service counts are the proof that no line is billed twice."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from bulkchange_pipeline.carriers import build_adapter
from bulkchange_pipeline.carriers.base import (
    BusinessCarrierError,
    CarrierAdapter,
    DeviceChange,
    DeviceResult,
    WritesDisabledError,
)
from bulkchange_pipeline.carriers.revio import RevioClient
from bulkchange_pipeline.carriers.revio_wire import (
    RevioConfigError,
    RevioUpdateError,
    classify_revio_response,
    rev_id,
    revio_base_url,
    service_edit_ops,
    service_holds,
)
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.simulators.revio_rules import make_numbers
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.ports import free_port
from bulkchange_pipeline_tests.simulators.revio_fixtures import (
    CUSTOMER_A,
    CUSTOMER_B,
    REVIO_PASSWORD,
    REVIO_PROVIDER_ID,
    REVIO_SERVICE_TYPE_ID,
    REVIO_SUBSCRIPTION_KEY,
    REVIO_USER,
    assignment,
    revio_account,
    seed_service,
)
from bulkchange_pipeline_tests.waiting import wait_for_server

pytestmark = pytest.mark.timeout(90)


def run(client: RevioClient, changes: Sequence[DeviceChange], check: bool = False) -> list[DeviceResult]:
    async def go() -> list:
        try:
            return await (client.already_applied(changes) if check else client.apply(changes))
        finally:
            await client.aclose()

    return asyncio.run(go())


def services_of(sim, number: str) -> list[dict]:
    view = sim.device(number)
    return view["services"] if view else []


def products_of(sim, number: str) -> list[int]:
    view = sim.device(number)
    return sorted(p["product_id"] for p in view["service_products"]) if view else []


# -- configuration and parsing --------------------------------------------------------------------


def test_config_errors_are_clear(revio_sim) -> None:
    with pytest.raises(RevioConfigError, match="e-mail address.*user@clientCode"):
        build_adapter(revio_account(revio_sim, username="ops@acme.com"))
    with pytest.raises(RevioConfigError, match="user@clientCode"):
        RevioClient(revio_account(revio_sim, username="apibot"))
    with pytest.raises(RevioConfigError, match="subscription key"):
        RevioClient(revio_account(revio_sim, extra={"subscription_key": ""}))
    adapter = build_adapter(revio_account(revio_sim))
    assert isinstance(adapter, RevioClient) and isinstance(adapter, CarrierAdapter)
    assert [t for t in range(1, 11) if adapter.supports(t)] == [5, 8]
    assert revio_base_url("http://h:1") == revio_base_url("http://h:1/v1/") == "http://h:1/v1"


def test_classifies_apim_and_rev_error_bodies() -> None:
    def response(status: int, body: object) -> httpx.Response:
        return httpx.Response(status, json=body)

    over = response(429, {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 7 seconds."})
    err = classify_revio_response(over, over.json())
    assert err.over_limit and err.retry_after == 7.0  # read by the shared stated-wait hook
    quota = response(
        403, {"statusCode": 403, "message": "Out of call volume quota. Quota will be replenished in 10:00:00."}
    )
    assert classify_revio_response(quota, quota.json()).code == "QUOTA"
    refusal = response(400, [{"ok": False, "error": "BadRequest", "message": "no such customer"}])
    assert classify_revio_response(refusal, refusal.json()).message == "no such customer"
    assert "credentials" in str(classify_revio_response(response(401, {}), {}))
    assert classify_revio_response(response(201, {"ok": True, "id": 1}), {"ok": True, "id": 1}) is None


# -- the assignment flow --------------------------------------------------------------------------


def test_assignment_creates_service_and_products(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b = make_numbers(2)
    client = RevioClient(revio_account(revio_sim, extra={"product_rates": "101:3.25"}))
    results = run(
        client, [assignment(1, a, customer_id=7), assignment(2, b, str(CUSTOMER_B), customer_id=8, product_ids=[103])]
    )
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED"], [r.detail for r in results]
    assert [r.new_values for r in results] == [
        {"customer_id": 7, "has_active_rev_service": True},
        {"customer_id": 8, "has_active_rev_service": True},
    ]
    (service,) = services_of(sim, a)
    assert (service["customer_id"], service["provider_id"], service["service_type_id"], service["status"]) == (
        CUSTOMER_A,
        REVIO_PROVIDER_ID,
        REVIO_SERVICE_TYPE_ID,
        "ACTIVE",
    )
    assert results[0].carrier_request_id == str(service["service_id"])
    view = sim.device(a)["service_products"]
    assert sorted((p["product_id"], p["quantity"], p["rate"], p["customer_id"]) for p in view) == [
        (101, 1, 3.25, CUSTOMER_A),
        (102, 1, 9.5, CUSTOMER_A),
    ]  # 102: Rev's catalog rate
    assert services_of(sim, b)[0]["customer_id"] == CUSTOMER_B and products_of(sim, b) == [103]
    assert sim.applied_counts[a] == sim.applied_counts[b] == 1
    assert [len(r.log) for r in results] == [4, 3]  # search, service, one POST per product


def test_refused_while_another_customers_line_is_active(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b = make_numbers(2)
    other = seed_service(sim, a, CUSTOMER_B, products=(101,))
    seed_service(sim, b, CUSTOMER_B, status="DISCONNECTED")  # an ended line does not block
    results = run(RevioClient(revio_account(revio_sim)), [assignment(1, a), assignment(2, b)])
    assert results[0].status == "API_FAILED"
    assert results[0].detail == (
        f"active Rev service line exists (service {other} for customer {CUSTOMER_B}); disconnect it first"
    )
    assert results[0].new_values == {} and len(results[0].log) == 1
    assert results[1].status == "PROCESSED"
    assert sim.applied_counts[a] == 0 and sim.applied_counts[b] == 1


def test_same_customer_is_already_applied_without_creating(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b = make_numbers(2)
    full = seed_service(sim, a, CUSTOMER_A, products=(101, 102))
    partial = seed_service(sim, b, CUSTOMER_A, products=(101,))  # e.g. a crash between calls
    before = sim.stats()["service_products"]
    results = run(RevioClient(revio_account(revio_sim)), [assignment(1, a), assignment(2, b)])
    assert [r.status for r in results] == ["PROCESSED", "PROCESSED"]
    assert results[0].detail == f"already applied: active Rev service {full} for customer {CUSTOMER_A}"
    assert results[0].new_values == {"customer_id": 7, "has_active_rev_service": True}
    assert "added missing products [102]" in results[1].detail
    assert results[1].carrier_request_id == str(partial)
    assert sim.stats()["applied_total"] == 0  # no service created
    assert sim.stats()["service_products"] == before + 1
    assert products_of(sim, a) == [101, 102] and products_of(sim, b) == [101, 102]


def test_create_rev_service(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b = make_numbers(2)
    seed_service(sim, b, CUSTOMER_A, products=(101, 102))
    changes = [
        assignment(1, a, change_type=ChangeType.CREATE_REV_SERVICE, product_ids=[102, 103]),
        assignment(2, b, change_type=ChangeType.CREATE_REV_SERVICE),
    ]
    results = run(RevioClient(revio_account(revio_sim)), changes)
    assert results[0].status == "PROCESSED" and results[0].new_values == {"has_active_rev_service": True}
    assert products_of(sim, a) == [102, 103] and sim.applied_counts[a] == 1
    assert results[1].status == "API_FAILED"
    assert "an active Rev service already exists for number" in results[1].detail
    assert sim.applied_counts[b] == 0


def test_device_without_rev_customer_fails_without_calls(revio_sim) -> None:
    (a,) = make_numbers(1)
    results = run(RevioClient(revio_account(revio_sim)), [assignment(1, a, rev_customer=None)])
    assert results[0].status == "API_FAILED" and "no Rev.io customer id" in results[0].detail
    assert revio_sim.simulator.stats()["total_calls"] == 0


@pytest.mark.parametrize("stored", ["R-9", "REV 1", "0", "007", "2147483648", "12.5", " 2001"])
def test_rev_customer_id_that_is_not_int32_is_refused_not_sent(revio_sim, stored) -> None:
    """Rev.io customer ids are int32: a text id is refused here with a reason, never sent as text."""
    (a,) = make_numbers(1)
    results = run(RevioClient(revio_account(revio_sim)), [assignment(1, a, rev_customer=stored)])
    assert results[0].status == "API_FAILED"
    assert repr(stored) in results[0].detail and "2147483647" in results[0].detail
    assert revio_sim.simulator.stats()["total_calls"] == 0


def test_rev_id_takes_int32_only() -> None:
    assert (rev_id(2001), rev_id("2001"), rev_id("2147483647")) == (2001, 2001, 2_147_483_647)
    for bad in ("R-9", "", " 1", "1 ", "+1", "007", "0", "-3", "2147483648", "١٢", "1.0", 1.0, True, None, 0):
        with pytest.raises(ValueError):
            rev_id(bad)


def test_writes_disabled_sends_nothing(revio_sim) -> None:
    client = RevioClient(revio_account(revio_sim, write_enabled=False))
    with pytest.raises(WritesDisabledError):
        run(client, [assignment(1, make_numbers(1)[0])])
    assert revio_sim.simulator.stats()["total_calls"] == 0


def test_already_applied(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b, c, d = make_numbers(4)
    service = seed_service(sim, a, CUSTOMER_A, products=(101, 102))
    seed_service(sim, b, CUSTOMER_A, products=(101,))
    seed_service(sim, c, CUSTOMER_B, products=(101, 102))
    changes = [assignment(i, n) for i, n in enumerate((a, b, c, d))]
    found = run(RevioClient(revio_account(revio_sim)), changes, check=True)
    assert found[0] is not None and found[0].status == "PROCESSED"
    assert found[0].carrier_request_id == str(service) and found[0].new_values == {
        "customer_id": 7,
        "has_active_rev_service": True,
    }
    assert found[1:] == [None, None, None]  # missing product, other customer, nothing
    assert sim.stats()["applied_total"] == 0


def test_lost_answers_on_creates_never_bill_twice(revio_sim) -> None:
    """Timeouts and truncated bodies answer calls the simulator applied: a blind re-POST would
    create a second service. Every device must still end with exactly one service and product."""
    sim = revio_sim.simulator
    # The client's timeout is well above a normal answer's time even on a loaded machine (tests run
    # two at a time), so only the injected holds time out.
    sim.configure(
        error_rate=0.05,
        timeout_rate=0.06,
        timeout_hold_seconds=2.0,
        malformed_rate=0.06,
        burst_rate=0.02,
        burst_length=2,
        retry_after_seconds=0.02,
        seed=5,
    )
    numbers = make_numbers(80)
    client = RevioClient(revio_account(revio_sim, timeout_seconds=1.0, max_concurrency=8))
    results = run(client, [assignment(i, n) for i, n in enumerate(numbers)])
    assert [r.status for r in results] == ["PROCESSED"] * 80, [r.detail for r in results if r.status != "PROCESSED"]
    injected = sim.stats()["injected"]
    assert injected["timeout"] >= 3 and injected["malformed"] >= 3
    # Lost answers to product POSTs were followed by a look-up, not a blind re-send.
    assert sim.stats()["calls_by_route"].get("GET /ServiceProduct", 0) >= 3
    assert all(sim.applied_counts[n] == 1 for n in numbers)
    assert all(products_of(sim, n) == [101, 102] for n in numbers)
    assert sim.stats()["products_more_than_once"] == 0


def test_daily_quota_fails_the_rest_without_calling(revio_sim) -> None:
    sim = revio_sim.simulator
    sim.configure(daily_quota=7)  # two devices (3 calls each), then the quota ends
    numbers = make_numbers(6)
    client = RevioClient(revio_account(revio_sim, max_concurrency=1, extra={"product_ids": "101"}))
    results = run(client, [assignment(i, n) for i, n in enumerate(numbers)])
    assert [r.status for r in results[:2]] == ["PROCESSED", "PROCESSED"]
    assert all(r.status == "API_FAILED" and "quota" in r.detail for r in results[2:])
    assert results[3].detail.startswith("not sent: Rev.io daily call quota exhausted")
    assert sim.stats()["quota_refusals"] == 1  # later devices were not sent


def test_paging_and_json_patch(revio_sim) -> None:
    sim = revio_sim.simulator
    for number in make_numbers(1100, start=100):
        seed_service(sim, number, CUSTOMER_B)
    (a,) = make_numbers(1)
    seed_service(sim, a, CUSTOMER_A, products=(101,))
    spid = sim.device(a)["service_products"][0]["service_product_id"]
    client = RevioClient(revio_account(revio_sim))

    async def go() -> tuple[list, dict]:
        try:
            everything = await client.list_all("Services", customer_id=CUSTOMER_B)
            patched = await client.patch_service_product(spid, [{"op": "replace", "path": "/quantity", "value": 4}])
            return everything, patched.body
        finally:
            await client.aclose()

    everything, patched = asyncio.run(go())
    assert len(everything) == 1100 and len({s["service_id"] for s in everything}) == 1100
    assert sim.stats()["calls_by_route"]["GET /Services"] == 3  # pages of 500
    assert patched["quantity"] == 4 and sim.book.service_products[spid]["quantity"] == 4


def test_secrets_never_reach_the_log(revio_sim) -> None:
    sim = revio_sim.simulator
    a, b = make_numbers(2)
    seed_service(sim, b, CUSTOMER_B)
    sim.configure(burst_rate=0.3, burst_length=1, retry_after_seconds=0.01, seed=3)
    ok = run(RevioClient(revio_account(revio_sim)), [assignment(1, a), assignment(2, b)])
    bad = run(
        RevioClient(revio_account(revio_sim, extra={"subscription_key": "wrong-key-123"})),
        [assignment(3, make_numbers(1, start=50)[0])],
    )
    assert bad[0].status == "API_FAILED" and "credentials" in bad[0].detail
    token = base64.b64encode(f"{REVIO_USER}:{REVIO_PASSWORD}".encode()).decode()
    texts = [e.request_text + e.response_text + e.description + r.detail for r in ok + bad for e in r.log]
    assert len(texts) >= 4 and any("ocp-apim-subscription-key: ***" in t for t in texts)
    for secret in (REVIO_PASSWORD, REVIO_SUBSCRIPTION_KEY, "wrong-key-123", token):
        assert not any(secret in t for t in texts), secret


# -- editing a line's services (the billing half of a carrier's username/cost-center edit) -------


def test_service_edit_ops_find_the_cost_center_field_by_label() -> None:
    service = {
        "description": "old",
        "fields": [
            {"field_id": 1, "label": "Department", "value": "Ops"},
            {"field_id": 2, "label": "Cost Center", "value": "CC-1"},
            {"field_id": 3, "label": "COST CENTER 1", "value": "CC-2"},
        ],
    }
    assert service_edit_ops(service, "truck-17", "CC-42") == [
        {"op": "replace", "path": "/description", "value": "truck-17"},
        {"op": "test", "path": "/fields/2/label", "value": "COST CENTER 1"},  # "Cost Center 1" first
        {"op": "replace", "path": "/fields/2/value", "value": "CC-42"},
    ]
    assert service_edit_ops(service, None, None) == []
    assert service_edit_ops({"fields": []}, "x", None) == [{"op": "replace", "path": "/description", "value": "x"}]
    with pytest.raises(ValueError, match="no cost-center custom field"):
        service_edit_ops({"description": "x", "fields": [{"label": "Department"}]}, "x", "CC-1")
    assert service_holds(service, "old", "CC-2") and not service_holds(service, "old", "CC-1")
    assert not service_holds({"description": "old"}, "old", "CC-2")


def test_edit_line_services_patches_every_active_service_of_the_number(revio_sim) -> None:
    sim = revio_sim.simulator
    sim.configure(service_fields=["Department", "Cost Center"])
    number, other = make_numbers(2)
    first = seed_service(sim, number, CUSTOMER_A)
    second = seed_service(sim, number, CUSTOMER_B)
    gone = seed_service(sim, number, CUSTOMER_A, status="DISCONNECTED")
    untouched = seed_service(sim, other, CUSTOMER_A)
    client = RevioClient(revio_account(revio_sim))
    log: list = []

    async def go() -> tuple[list[int], list[int] | None, list[int] | None]:
        try:
            before = await client.line_services_hold(number, description="truck-17", cost_center="CC-42", log=[])
            edited = await client.edit_line_services(number, description="truck-17", cost_center="CC-42", log=log)
            after = await client.line_services_hold(number, description="truck-17", cost_center="CC-42", log=[])
            return edited, before, after
        finally:
            await client.aclose()

    edited, before, after = asyncio.run(go())
    assert before is None and sorted(edited) == sorted(after or []) == sorted([first, second])
    for sid in (first, second):
        record = sim.book.services[sid]
        assert record["description"] == "truck-17"
        assert [(f["label"], f["value"]) for f in record["fields"]] == [("Department", None), ("Cost Center", "CC-42")]
    for sid in (gone, untouched):
        assert sim.book.services[sid]["description"] is None
    assert sim.stats()["calls_by_route"]["PATCH /Services/{id}"] == 2
    patches = [e for e in log if e.request_text.startswith("PATCH")]
    assert len(patches) == 2 and all("application/json-patch+json" in e.request_text for e in patches)
    assert all(REVIO_SUBSCRIPTION_KEY not in e.request_text for e in log)


def test_edit_line_services_says_what_was_not_done(revio_sim) -> None:
    sim = revio_sim.simulator
    bare, missing, stale = make_numbers(3)
    sim.configure(service_fields=[])
    no_field = seed_service(sim, bare, CUSTOMER_A)
    sim.configure(service_fields=["Cost Center", "Region"])
    reordered = seed_service(sim, stale, CUSTOMER_A)
    client = RevioClient(revio_account(revio_sim))

    async def failure(number: str) -> RevioUpdateError:
        with pytest.raises(RevioUpdateError) as caught:
            await client.edit_line_services(number, description="x", cost_center="CC-1", log=[])
        return caught.value

    async def go() -> tuple[RevioUpdateError, RevioUpdateError, BusinessCarrierError]:
        try:
            no_cost_center, no_service = await failure(bare), await failure(missing)
            # A field list that changed since it was read: the label test refuses the document.
            ops = service_edit_ops({"fields": [{"label": "Region"}, {"label": "Cost Center"}]}, "x", "CC-1")
            with pytest.raises(BusinessCarrierError) as refused:
                await client.http.request("PATCH", f"Services/{reordered}", json_body=ops)
            return no_cost_center, no_service, refused.value
        finally:
            await client.aclose()

    no_cost_center, no_service, refused = asyncio.run(go())
    assert no_cost_center.service_id == no_field and "no cost-center custom field" in no_cost_center.message
    assert no_service.service_id is None and f"no active service for number {missing}" in no_service.message
    assert refused.status == 409 and "test failed for /fields/1/label" in refused.message
    assert sim.book.services[no_field]["description"] is None  # nothing half-applied
    assert sim.book.services[reordered]["description"] is None

    off = RevioClient(revio_account(revio_sim, write_enabled=False))
    with pytest.raises(RevioUpdateError, match="writes are disabled"):
        asyncio.run(off.edit_line_services(bare, description="x", cost_center=None, log=[]))


# -- 429 bursts at scale (simulator in its own process, started through the CLI) -----------------


@pytest.fixture
def revio_cli_sim() -> Iterator[ServerHandle]:
    """`python -m bulkchange_pipeline.simulators revio` in a subprocess (its own GIL, so 6,000
    calls take seconds, not tens of seconds) with a low limit and waits in hundredths."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bulkchange_pipeline.simulators",
        "revio",
        "--port",
        str(port),
        "--calls-per-minute",
        "12000",
        "--precise-waits",
        "--account",
        f"{REVIO_USER}:{REVIO_PASSWORD}",
        "--subscription-key",
        REVIO_SUBSCRIPTION_KEY,
        "--customer",
        str(CUSTOMER_A),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(root + "/_sim/stats", proc)
        handle = ServerHandle.__new__(ServerHandle)
        handle.root_url, handle.base_url, handle.port = root, root + "/v1", port
        yield handle
    finally:
        proc.terminate()
        proc.wait(10)


def test_429_bursts_slow_a_2000_device_assignment_but_fail_nothing(revio_cli_sim) -> None:
    root = revio_cli_sim.root_url
    numbers = make_numbers(2000)
    # The simulator allows 200 calls per one-second window (low enough to be hit on a loaded machine); the client's limiter is set far
    # higher, so it runs into the limit and must wait the N seconds each 429 states. The account
    # asks for a single attempt: Rev.io calls get 5 retries whatever the account says.
    client = RevioClient(
        revio_account(
            revio_cli_sim, rate_per_second=2000, max_concurrency=16, max_attempts=1, extra={"product_ids": "101"}
        )
    )
    started = time.monotonic()
    results = run(client, [assignment(i, n) for i, n in enumerate(numbers)])
    elapsed = time.monotonic() - started
    failed = [r.detail for r in results if r.status != "PROCESSED"]
    assert not failed, failed[:3]
    stats = httpx.get(root + "/_sim/stats").json()
    assert stats["over_limit_answers"] >= 20 and client.http.stats.over_limit >= 20
    assert stats["accounts"]["sub1"]["rate_refusals"] >= 1  # the limit itself, not only faults
    assert stats["applied_total"] == 2000 and stats["applied_devices"] == 2000
    assert stats["applied_more_than_once"] == 0 and stats["products_more_than_once"] == 0
    assert stats["calls_by_route"]["POST /Services"] <= 2000 + stats["over_limit_answers"]
    assert elapsed >= (3 * 2000) / 200 * 0.9  # the limit really paced the run
    assert all(httpx.get(root + f"/_sim/devices/{n}").json()["applied"] == 1 for n in numbers[::250])
