"""Rev.io conformance (issue 17): (a) the simulator driven over HTTP with requests built from the
public description in `revio.yaml` (developers.rev.io docs), never from our client, answers in the
described shapes and refuses what the real API refuses; (b) every request our `RevioClient` puts
on the wire, recorded by `recording.serve_recorded`, is a described operation whose body and query
match the description field by field."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bulkchange_pipeline.carriers.revio import RevioClient
from bulkchange_pipeline.simulators.revio import RevioSimulator
from bulkchange_pipeline.simulators.server import ServerHandle
from bulkchange_pipeline_tests.contracts.contract import Contract, load_contract
from bulkchange_pipeline_tests.contracts.recording import RecordingApp, serve_recorded
from bulkchange_pipeline_tests.simulators.revio_fixtures import (
    CUSTOMER_A,
    REVIO_PASSWORD,
    REVIO_PROVIDER_ID,
    REVIO_SERVICE_TYPE_ID,
    REVIO_SUBSCRIPTION_KEY,
    REVIO_USER,
    assignment,
    revio_account,
    revio_sim,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.timeout(60)

PATCH_TYPE = "application/json-patch+json"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract("revio")


def auth_headers(user: str = REVIO_USER, key: str | None = REVIO_SUBSCRIPTION_KEY) -> dict[str, str]:
    """Basic `user@clientCode:password` plus the subscription key, as docs/faq and the changelog
    describe them."""
    out = {"Authorization": "Basic " + base64.b64encode(f"{user}:{REVIO_PASSWORD}".encode()).decode()}
    if key is not None:
        out["Ocp-Apim-Subscription-Key"] = key
    return out


@pytest.fixture
def http(revio_sim: ServerHandle) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=revio_sim.root_url, headers=auth_headers(), timeout=5) as client:
        yield client


def fill(example: Any, **values: Any) -> Any:
    """The example with every "{name}" text replaced by values[name] (kept as its own type)."""
    if isinstance(example, dict):
        return {k: fill(v, **values) for k, v in example.items()}
    if isinstance(example, list):
        return [fill(v, **values) for v in example]
    if isinstance(example, str) and example.startswith("{") and example.endswith("}"):
        return values[example[1:-1]]
    return example


def send(contract: Contract, http: httpx.Client, name: str, example: Any, **path: Any) -> httpx.Response:
    """Send one described operation: GET examples are queries, others bodies; PATCH with the
    JSON Patch media type the description names."""
    op = contract.operation(name)
    url = op.url(**{k: str(v) for k, v in path.items()})
    if op.method == "GET":
        return http.get(url, params={k: str(v) for k, v in (example or {}).items()})
    headers = {"Content-Type": op.spec.get("content_type", "application/json")}
    return http.request(op.method, url, json=example, headers=headers)


def assert_conforms(contract: Contract, name: str, response: httpx.Response, status: int) -> Any:
    body = response.json()
    assert response.status_code == status, (name, response.status_code, body)
    assert contract.operation(name).response_errors(response.status_code, body) == [], (name, body)
    return body


# -- (a) the simulator against the description ----------------------------------------------------


def test_every_described_example_is_answered_in_the_described_shape(contract, http) -> None:
    ops = contract.operations
    created = send(contract, http, "create_service", ops["create_service"].examples[0])
    body = assert_conforms(contract, "create_service", created, 201)
    service_id = body["id"]
    assert created.headers["Location"].endswith(f"/v1/Services/{service_id}")  # [status-codes]
    ids = {"service_id": service_id}

    product = send(contract, http, "create_service_product", fill(ops["create_service_product"].examples[0], **ids))
    product_id = assert_conforms(contract, "create_service_product", product, 201)["id"]
    assert product.headers["Location"].endswith(f"/v1/ServiceProduct/{product_id}")
    ids["service_product_id"] = product_id

    by_id = {"Services": service_id, "ServiceProduct": product_id, "Customers": CUSTOMER_A}
    for name, op in ops.items():
        if name in ("create_service", "create_service_product", "assign_inventory_item", "get_inventory_item"):
            continue
        if "{id}" in op.path:
            resource = op.path.split("/")[2]
            for example in op.examples or [None]:
                status = 200 if op.method != "POST" else 201
                r = send(contract, http, name, fill(example, **ids), id=by_id[resource])
                assert_conforms(contract, name, r, status)
            continue
        for example in op.examples:
            status = 201 if op.method == "POST" else 200
            assert_conforms(contract, name, send(contract, http, name, fill(example, **ids)), status)


def test_record_count_is_the_records_on_the_page(contract, http) -> None:
    for n in range(3):
        send(contract, http, "create_service", {"customer_id": CUSTOMER_A, "provider_id": 14, "number": f"1555020{n}"})
    first = assert_conforms(contract, "list_services", http.get("/v1/Services", params={"search.page_size": "2"}), 200)
    assert (first["has_more"], first["record_count"], len(first["records"])) == (True, 2, 2)
    last = http.get("/v1/Services", params={"search.page_size": "2", "search.page": "2"}).json()
    assert (last["has_more"], last["record_count"]) == (False, 1)


@pytest.mark.parametrize("size", ["0", "501", "", "ten", "+5", "05", " 5", "\u0665"])
def test_page_size_outside_1_to_500_is_refused(contract, http, size) -> None:
    r = http.get("/v1/Services", params={"search.page_size": size})
    assert r.status_code == 400
    assert contract.operation("list_services").response_errors(400, r.json()) == []


def test_undescribed_query_parameters_are_refused(http) -> None:
    assert http.get("/v1/Services", params={"page_size": "5"}).status_code == 400  # only search.page_size
    assert http.get("/v1/Services", params={"search.colour": "red"}).status_code == 400


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


def test_missing_required_fields_are_refused_not_filled_in(contract, http, revio_sim) -> None:  # noqa: F811
    sim = revio_sim.simulator
    service = contract.operation("create_service").examples[0]
    for name in contract.operation("create_service").spec["request"]["required"]:
        r = http.post("/v1/Services", json=_without(service, name))
        assert r.status_code == 400 and name in r.json()[0]["message"], (name, r.text)
        assert contract.operation("create_service").response_errors(400, r.json()) == []
    service_id = http.post("/v1/Services", json=service).json()["id"]
    product = fill(contract.operation("create_service_product").examples[0], service_id=service_id)
    for name in contract.operation("create_service_product").spec["request"]["required"]:
        r = http.post("/v1/ServiceProduct", json=_without(product, name))
        assert r.status_code == 400 and name in r.json()[0]["message"], (name, r.text)
    spid = http.post("/v1/ServiceProduct", json=product).json()["id"]
    replace = fill(contract.operation("replace_service_product").examples[0], service_id=service_id)
    for name in contract.operation("replace_service_product").spec["request"]["required"]:
        r = http.put(f"/v1/ServiceProduct/{spid}", json=_without(replace, name))
        assert r.status_code == 400 and name in r.json()[0]["message"], (name, r.text)
    assert sim.book.service_products[spid]["quantity"] == 1  # nothing was replaced
    assert http.put(f"/v1/ServiceProduct/{spid}", json=replace).status_code == 200


def test_invalid_values_are_refused(http) -> None:
    base = {"customer_id": CUSTOMER_A, "provider_id": REVIO_PROVIDER_ID}
    bad_services = [
        {**base, "customer_id": str(CUSTOMER_A)},  # int32, not text
        {**base, "provider_id": 14.5},
        {**base, "service_id": 5},  # "Do not include when creating a new service"
        {**base, "number": "1" * 256},
        {**base, "description": "d" * 1001},
        {**base, "effective_date": "next tuesday"},
    ]
    for body in bad_services:
        assert http.post("/v1/Services", json=body).status_code == 400, body
    service_id = http.post("/v1/Services", json=base).json()["id"]
    product = {"service_id": service_id, "product_id": 101}
    for body in ({**product, "rate": -1}, {**product, "status": "GONE"}, {**product, "product_id": "101"}):
        assert http.post("/v1/ServiceProduct", json=body).status_code == 400, body
    spid = http.post("/v1/ServiceProduct", json=product).json()["id"]
    replace = {**product, "generate_proration": False}
    disconnect = http.put(f"/v1/ServiceProduct/{spid}", json={**replace, "status": "DISCONNECTED"})
    assert disconnect.status_code == 400 and "disconnect" in disconnect.json()[0]["message"]
    both = http.put(f"/v1/ServiceProduct/{spid}", json={**replace, "status": "PENDING", "quantity": 3})
    assert both.status_code == 400  # "Rate and Quantity cannot be changed while status is changed"


def test_patch_needs_the_json_patch_media_type(contract, http) -> None:
    service_id = http.post("/v1/Services", json={"customer_id": CUSTOMER_A, "provider_id": 14}).json()["id"]
    ops = contract.operation("patch_service").examples[0][:1]
    wrong = http.patch(f"/v1/Services/{service_id}", json=ops)  # httpx sends application/json
    assert wrong.status_code == 415
    assert contract.operation("patch_service").response_errors(415, wrong.json()) == []
    right = http.patch(f"/v1/Services/{service_id}", json=ops, headers={"Content-Type": PATCH_TYPE})
    assert right.status_code == 200 and right.json()["description"] == "Line 7"


def test_auth_as_the_faq_and_changelog_describe(contract, revio_sim) -> None:  # noqa: F811
    url = revio_sim.root_url + "/v1/Customers"
    email_user = "jane@acme.com"
    revio_sim.simulator.configure(accounts={REVIO_USER: REVIO_PASSWORD, email_user: REVIO_PASSWORD})
    as_email = httpx.get(url, headers=auth_headers(user=email_user))
    assert as_email.status_code == 401  # "Ensure your username is not an email address"
    no_key = httpx.get(url, headers=auth_headers(key=None))
    assert no_key.status_code == 401
    assert contract.operation("list_customers").response_errors(401, no_key.json()) == []
    assert set(no_key.json()) == {"statusCode", "message"}
    assert httpx.get(url, headers=auth_headers()).status_code == 200


def test_over_the_limit_answer_is_the_documented_429(contract, revio_sim) -> None:  # noqa: F811
    revio_sim.simulator.configure(calls_per_minute=60, retry_after_seconds=3)
    with httpx.Client(base_url=revio_sim.root_url, headers=auth_headers(), timeout=5) as http:
        answers = [http.get("/v1/Customers") for _ in range(4)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited
    assert limited[0].json() == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 3 seconds."}
    assert contract.operation("list_customers").response_errors(429, limited[0].json()) == []


# -- (b) our client's requests against the description --------------------------------------------


def recorded_sim() -> RevioSimulator:
    sim = RevioSimulator({REVIO_USER: REVIO_PASSWORD}, [REVIO_SUBSCRIPTION_KEY], calls_per_minute=0)
    sim.seed_devices([{"type": "customer", "customer_id": CUSTOMER_A, "name": "Acme"}])
    sim.configure(providers=[REVIO_PROVIDER_ID], service_types=[REVIO_SERVICE_TYPE_ID])
    return sim


def drive_client(handle: ServerHandle) -> None:
    """Every call our client makes: assignment (look-ups, service and product creates),
    already-applied, JSON Patch of a service product and of a line's services, a paged search."""

    async def go() -> None:
        client = RevioClient(revio_account(handle))
        try:
            changes = [assignment(1, "15550301", effective_date="2024-05-01"), assignment(2, "15550302")]
            results = await client.apply(changes)
            assert [r.status.name for r in results] == ["PROCESSED", "PROCESSED"], [r.detail for r in results]
            await client.already_applied(changes)
            products = await client.list_all("ServiceProduct", service_id=int(results[0].carrier_request_id or 0))
            await client.patch_service_product(
                int(products[0]["service_product_id"]), [{"op": "replace", "path": "/quantity", "value": 2}]
            )
            await client.edit_line_services("15550301", description="truck-17", cost_center="CC-42", log=[])
        finally:
            await client.aclose()

    asyncio.run(go())


def check_recorded(contract: Contract, recorder: RecordingApp) -> list[str]:
    """Every way a recorded request departs from the description (empty: all conform)."""
    problems: list[str] = []
    for r in recorder.requests:
        op = contract.find(r.method, r.path)
        if op is None:
            problems.append(f"{r.method} {r.path}: not a described operation")
            continue
        body = None if not r.raw_body else r.body
        problems += [f"{op.name} body {e}" for e in op.request_errors(body)]
        problems += [f"{op.name} query {e}" for e in op.query_errors(r.query)]
        token = r.headers.get("authorization", "")
        user = base64.b64decode(token.removeprefix("Basic ")).decode().partition(":")[0] if token else ""
        if user.count("@") != 1 or "." in user.split("@")[1]:
            problems.append(f"{op.name}: Basic user {user!r} is not user@clientCode")
        if not r.headers.get("ocp-apim-subscription-key"):
            problems.append(f"{op.name}: no Ocp-Apim-Subscription-Key")
        wanted = op.spec.get("content_type")
        if wanted and r.headers.get("content-type", "").split(";")[0] != wanted:
            problems.append(f"{op.name}: Content-Type {r.headers.get('content-type')!r}, described {wanted}")
    return problems


def test_client_requests_match_the_description_field_by_field(contract) -> None:
    with serve_recorded(recorded_sim()) as (handle, recorder):
        drive_client(handle)
    names = {contract.find(r.method, r.path).name for r in recorder.requests if contract.find(r.method, r.path)}
    assert {"list_services", "create_service", "create_service_product", "list_service_products"} <= names
    assert {"patch_service_product", "patch_service"} <= names
    assert all(200 <= r.status < 300 for r in recorder.requests), [
        (r.method, r.path, r.status) for r in recorder.requests
    ]
    assert check_recorded(contract, recorder) == []


def test_the_field_by_field_check_catches_an_undescribed_field(contract) -> None:
    """The check above is not vacuous: a create carrying a field Rev.io does not describe, or a
    page size over 500, is reported."""
    with (
        serve_recorded(recorded_sim()) as (handle, recorder),
        httpx.Client(base_url=handle.root_url, headers=auth_headers(), timeout=5) as http,
    ):
        http.post("/v1/Services", json={"customer_id": CUSTOMER_A, "provider_id": 14, "msisdn": "1555"})
        http.get("/v1/Services", params={"search.page_size": "600"})
    problems = check_recorded(contract, recorder)
    assert any("msisdn" in p for p in problems) and any("search.page_size" in p for p in problems)


# -- paths, fields and values the description does not name (issue 17 review) ---------------------

APIM_NOT_FOUND = {"statusCode": 404, "message": "Resource not found"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/Devices"),  # no such resource
        ("GET", "/v1/services"),  # one spelling of each path
        ("GET", "/v2/Services"),
        ("DELETE", "/v1/Services/1"),  # wrong method on a described path
        ("PUT", "/v1/Services"),
        ("POST", "/v1/Customers/5"),
    ],
)
def test_unknown_path_and_wrong_method_answer_apim_json_404(contract, http, method, path) -> None:
    """APIM answers a call that matches no operation, path or method, with its JSON 404 (as it
    does its 401/429), never the web framework's plain text; nothing reaches Rev.io."""
    r = http.request(method, path, json={} if method in ("PUT", "POST") else None)
    assert r.status_code == 404, (method, path, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json() == APIM_NOT_FOUND
    assert contract.operation("list_services").response_errors(404, r.json()) == []


def test_a_missing_record_is_a_rev_io_404_in_the_error_array(contract, http) -> None:
    r = http.get("/v1/Services/999999")
    assert r.status_code == 404 and r.json()[0]["ok"] is False
    assert contract.operation("get_service").response_errors(404, r.json()) == []


@pytest.mark.parametrize(
    "operation,rules",
    [
        ("create_customer", "CUSTOMER_CREATE"),
        ("create_service", "SERVICE_CREATE"),
        ("create_service_product", "PRODUCT_CREATE"),
        ("replace_service_product", "PRODUCT_REPLACE"),
        ("assign_inventory_item", "ASSIGN_SERVICE"),
    ],
)
def test_the_simulator_checks_exactly_the_described_fields(contract, operation, rules) -> None:
    from bulkchange_pipeline.simulators import revio_fields

    schema = contract.operation(operation).spec["request"]
    checked: dict[str, Any] = getattr(revio_fields, rules)
    assert set(checked) == set(schema["properties"])
    assert {n for n, (_, required, _) in checked.items() if required} == set(schema.get("required", []))


def test_create_customer_is_checked_against_the_description(contract, http, revio_sim) -> None:  # noqa: F811
    op = contract.operation("create_customer")
    good = op.examples[0]
    assert op.request_errors(good) == []
    bad = [
        {**good, "customer_id": 777},  # the API assigns ids; it is not silently dropped
        {**good, "msisdn": "15550100"},  # not a described field
        {**good, "status": "active"},  # values exactly as spelt
        {**good, "parent_customer_id": "12"},  # int32, not text
        {**good, "activated_date": "yesterday"},
        [good],
    ]
    before = len(revio_sim.simulator.book.customers)
    for body in bad:
        r = http.post("/v1/Customers", json=body)
        assert r.status_code == 400, (body, r.text)
        assert op.response_errors(400, r.json()) == []
    assert 777 not in revio_sim.simulator.book.customers and len(revio_sim.simulator.book.customers) == before
    created = http.post("/v1/Customers", json=good)
    customer_id = assert_conforms(contract, "create_customer", created, 201)["id"]
    got = assert_conforms(contract, "get_customer", http.get(f"/v1/Customers/{customer_id}"), 200)
    assert (got["name"], got["status"]) == (good["name"], "ACTIVE")
    bare = assert_conforms(contract, "create_customer", http.post("/v1/Customers", json={}), 201)["id"]
    assert http.get(f"/v1/Customers/{bare}").json()["status"] is None  # no status is filled in


def test_undescribed_fields_and_text_ids_are_refused(http) -> None:
    base = {"customer_id": CUSTOMER_A, "provider_id": REVIO_PROVIDER_ID}
    r = http.post("/v1/Services", json={**base, "msisdn": "15550100"})
    assert r.status_code == 400 and "msisdn" in r.json()[0]["message"]
    assert http.post("/v1/Services", json={**base, "status": "ACTIVE"}).status_code == 400  # not in the create body
    service_id = http.post("/v1/Services", json=base).json()["id"]
    product = {"service_id": service_id, "product_id": 101}
    for body in ({**product, "qty": 2}, {**product, "status": "active"}, {**product, "service_id": str(service_id)}):
        assert http.post("/v1/ServiceProduct", json=body).status_code == 400, body
    spid = http.post("/v1/ServiceProduct", json=product).json()["id"]
    replace = {**product, "generate_proration": False}
    assert http.put(f"/v1/ServiceProduct/{spid}", json={**replace, "msisdn": "1"}).status_code == 400


def test_assign_service_takes_int32_ids_only(http, revio_sim) -> None:  # noqa: F811
    revio_sim.simulator.seed_devices([{"type": "inventory_item", "inventory_item_id": 70000, "identifier": "8901"}])
    service_id = http.post("/v1/Services", json={"customer_id": CUSTOMER_A, "provider_id": REVIO_PROVIDER_ID}).json()[
        "id"
    ]
    bad = [
        {"inventory_item_id": "70000", "service_id": service_id},
        {"inventory_item_id": 70000, "service_id": str(service_id)},
        {"inventory_item_id": 70000.0, "service_id": service_id},
        {"inventory_item_id": 70000, "service_id": service_id, "note": "x"},
        {"inventory_item_id": 70000},
    ]
    for body in bad:
        r = http.post("/v1/InventoryItem/assignService", json=body)
        assert r.status_code == 400, (body, r.text)
    assert revio_sim.simulator.book.inventory[70000]["service_id"] is None
    ok = http.post("/v1/InventoryItem/assignService", json={"inventory_item_id": 70000, "service_id": service_id})
    assert ok.status_code == 200 and ok.json()["service_id"] == service_id


def test_search_compares_exactly(http) -> None:
    http.post("/v1/Services", json={"customer_id": CUSTOMER_A, "provider_id": REVIO_PROVIDER_ID, "number": "1555X1"})
    found = http.get("/v1/Services", params={"search.number": "1555X1", "search.status": "ACTIVE"}).json()
    assert found["record_count"] == 1
    for params in ({"search.number": "1555x1"}, {"search.number": "1555X1", "search.status": "active"}):
        assert http.get("/v1/Services", params=params).json()["record_count"] == 0, params
