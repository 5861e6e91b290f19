"""Rev.io's billing records and rules as the simulator keeps them: customers, services, service
products, the product catalog and inventory items, with search/paging, JSON Patch and the checks a
create must pass.

Pure state and rules, no HTTP, so they can be read (and unit-tested) on their own; `revio.py` puts
the wire format, auth, limits and faults around them.

Documented (reference/carriers.md section 6; developers.rev.io/docs/paging, /docs/collections,
/docs/patch, /reference/postv1_services-6, /reference/putv1_serviceproduct_id): `search.<field>`
filters, `search.page_size` 1-500 (default 10) and `search.page` (default 1), list bodies `{ok,
has_more, record_count, records}` where `record_count` is the number of records *on this page*
(docs/paging: "doesn't tell you ... how many items are in the entire collection"), single objects
flat with `ok: true`, creates `{ok: true, id}`, JSON Patch on PATCH, custom fields patched at
`/fields/<index>/value`, service-product statuses PENDING/ACTIVE/DENIED/DISCONNECTED. Request
bodies are checked field by field in `revio_fields` (`check_fields`: undescribed fields refused,
required ones never filled in, int32 ids as JSON numbers only, values spelt exactly);
`generate_proration` required on PUT, DISCONNECTED refused on PUT ("Status of disconnect is not
allowed") and rate/quantity changes refused together with a status change.

Where the sources are silent, the choices [I]: pages are 1-based; a query parameter that is neither
a known `search.<field>` nor paging is refused with 400 (rather than ignored, so a misspelt filter
cannot silently widen a search) and a search value is compared exactly (no source says Rev.io
ignores case); a POST ServiceProduct (reference page not public in our sources) takes the replace
body's fields with `generate_proration` optional, `customer_id` derived from the service when
absent (it is optional on the replace body too) and `quantity` 1 when absent; service statuses
ACTIVE/PENDING/DISCONNECTED (a created service starts ACTIVE; the create body has none); customer
statuses ACTIVE/PENDING/CLOSED with none given meaning none stored; the error body `[{ok: false,
error, message}]` (the shape AMOP parses); the field names of records beyond the documented ones; a
service's custom fields as `fields: [{field_id, label, value}]`, one per field the Rev tenant
defines (`service_fields`, default a "Cost Center" field, as AMOP's username/cost-center edit looks
them up by label).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .revio_fields import (
    ASSIGN_SERVICE,
    CUSTOMER_CREATE,
    CUSTOMER_STATUSES,
    INVENTORY_STATUSES,
    PATCHABLE,
    PRODUCT_CREATE,
    PRODUCT_REPLACE,
    PRODUCT_STATUSES,
    SERVICE_CREATE,
    SERVICE_STATUSES,
    Refusal,
    apply_json_patch,
    check_fields,
    int32_id,
    is_int32_id,
    page_of,
    search,
)

__all__ = [
    "ASSIGN_SERVICE",
    "CUSTOMER_CREATE",
    "PRODUCT_CREATE",
    "PRODUCT_REPLACE",
    "PRODUCT_STATUSES",
    "SERVICE_CREATE",
    "RevBook",
    "Refusal",
    "apply_json_patch",
    "check_fields",
    "make_numbers",
    "page_of",
    "rev_time",
    "search",
]

# Custom fields every service of the simulated Rev tenant carries [I] (labels; values start empty).
DEFAULT_SERVICE_FIELDS = ("Cost Center",)
DEFAULT_PRODUCTS: tuple[dict[str, Any], ...] = (
    {"product_id": 101, "description": "IoT line access", "rate": 4.0},
    {"product_id": 102, "description": "IoT data 1 GB", "rate": 9.5},
    {"product_id": 103, "description": "Static IP", "rate": 2.0},
)


def rev_time(when: dt.datetime) -> str:
    """Rev.io's date-time text [I]: ISO 8601 without offset, UTC."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class RevBook:
    """All records of one simulated Rev.io tenant. Ids are integers from one counter per kind;
    `applied_counts[number]` counts services created per number (the exactly-once proof). `now` is
    the simulator's clock (aware UTC), which dates the records."""

    SERVICE_FIELDS = frozenset(
        {"service_id", "customer_id", "provider_id", "service_type_id", "number", "number2", "status", "package_id"}
    )
    PRODUCT_FIELDS = frozenset(
        {"service_product_id", "service_id", "product_id", "customer_id", "status", "package_id"}
    )
    CUSTOMER_FIELDS = frozenset({"customer_id", "parent_customer_id", "status", "agent_id", "name"})
    INVENTORY_FIELDS = frozenset(
        {"inventory_item_id", "identifier", "inventory_type_id", "status", "service_id", "customer_id"}
    )

    def __init__(
        self, products: Iterable[Mapping[str, Any]] = DEFAULT_PRODUCTS, *, now: Callable[[], dt.datetime]
    ) -> None:
        self.now = now
        self.customers: dict[int, dict[str, Any]] = {}
        self.services: dict[int, dict[str, Any]] = {}
        self.service_products: dict[int, dict[str, Any]] = {}
        self.inventory: dict[int, dict[str, Any]] = {}
        self.products: dict[int, dict[str, Any]] = {int(p["product_id"]): dict(p) for p in products}
        self.providers: frozenset[int] | None = None  # None: any provider id is accepted
        self.service_types: frozenset[int] | None = None
        self.product_status_on_create = "ACTIVE"
        self.service_fields: tuple[str, ...] = DEFAULT_SERVICE_FIELDS
        # Indexes for the searches a client makes per device (by number, by service).
        self.by_number: dict[str, list[int]] = {}
        self.by_service: dict[int, list[int]] = {}
        self.applied_counts: Counter[str] = Counter()
        self.products_created: Counter[str] = Counter()
        self._ids = {
            k: itertools.count(start)
            for k, start in (("customer", 5000), ("service", 11000), ("service_product", 30000), ("inventory", 70000))
        }

    # -- customers --------------------------------------------------------------------------------

    def add_customer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a customer from a body that passed `CUSTOMER_CREATE` (the API path), or seed one
        with its own `customer_id`: an int32 number, as every create that names it must send it.
        The status is the one given, spelt exactly, or none: no public source gives a default."""
        cid = body.get("customer_id")
        cid = next(self._ids["customer"]) if cid is None else int32_id(cid, "customer_id")
        status = body.get("status")
        if status is not None and (not isinstance(status, str) or status not in CUSTOMER_STATUSES):
            raise Refusal(400, "BadRequest", f"invalid customer status {status!r}")
        record = {
            "customer_id": cid,
            "parent_customer_id": body.get("parent_customer_id"),
            "status": status,
            "activated_date": body.get("activated_date") or rev_time(self.now()),
            "close_date": body.get("close_date"),
            "agent_id": body.get("agent_id"),
            "name": body.get("name"),
        }
        self.customers[cid] = record
        return record

    def _customer(self, cid: Any) -> dict[str, Any]:
        record = self.customers.get(int32_id(cid, "customer_id"))
        if record is None:
            raise Refusal(400, "BadRequest", f"customer_id {cid} does not exist")
        return record

    # -- services ---------------------------------------------------------------------------------

    def add_service(self, body: Any, *, seeded: bool = False) -> dict[str, Any]:
        """Validate and create a service (`POST /v1/Services`); counted per number unless seeded."""
        if not isinstance(body, dict):
            raise Refusal(400, "BadRequest", "body must be a JSON object")
        customer = self._customer(body.get("customer_id"))
        if customer["status"] == "CLOSED" and not seeded:
            raise Refusal(400, "BadRequest", f"customer {customer['customer_id']} is closed")
        provider = int32_id(body.get("provider_id"), "provider_id")
        if self.providers is not None and provider not in self.providers:
            raise Refusal(400, "BadRequest", f"provider_id {provider} does not exist")
        stype = body.get("service_type_id")
        if stype is not None and not is_int32_id(stype, 0):
            raise Refusal(400, "BadRequest", f"service_type_id is not a valid int32: {stype!r}")
        if stype is not None and self.service_types is not None and stype not in self.service_types:
            raise Refusal(400, "BadRequest", f"service_type_id {stype} does not exist")
        # The create body has no status (reference/postv1_services-6): a new service is ACTIVE [I],
        # as AMOP searches status=ACTIVE right after creating one; a seed may name its own.
        status = body.get("status", "ACTIVE")
        if not isinstance(status, str) or status not in SERVICE_STATUSES:
            raise Refusal(400, "BadRequest", f"invalid service status {status!r}")
        given = body.get("service_id") if seeded else None
        sid = next(self._ids["service"]) if given is None else int32_id(given, "service_id")
        now = rev_time(self.now())
        record = {
            "service_id": sid,
            "customer_id": customer["customer_id"],
            "provider_id": provider,
            "service_type_id": stype,
            "number": _text(body.get("number")),
            "number2": _text(body.get("number2")),
            "status": status,
            "effective_date": body.get("effective_date") or now,
            "activated_date": body.get("activated_date") or now,
            "disconnected_date": None,
            "usage_plan_group_id": body.get("usage_plan_group_id"),
            "package_id": body.get("package_id"),
            "description": body.get("description"),
            "fields": self._custom_fields(body.get("fields")),
            "created_date": now,
        }
        self.services[sid] = record
        self.by_number.setdefault(record["number"] or "", []).append(sid)
        if not seeded:
            self.applied_counts[record["number"] or f"service:{sid}"] += 1
        return record

    def _custom_fields(self, given: Any) -> list[dict[str, Any]]:
        """One `{field_id, label, value}` per field the tenant defines, valued from `given`
        ([{label, value}], matched by label, case-insensitive); Refusal for an undefined label."""
        values: dict[str, Any] = {}
        for item in given or []:
            label = str(item.get("label") if isinstance(item, dict) else item).strip().lower()
            if label not in {f.lower() for f in self.service_fields}:
                raise Refusal(400, "BadRequest", f"no custom field {label!r} is defined for services")
            values[label] = item.get("value") if isinstance(item, dict) else None
        return [
            {"field_id": i, "label": label, "value": values.get(label.lower())}
            for i, label in enumerate(self.service_fields, start=1)
        ]

    def patch_service(self, sid: int, ops: Any) -> dict[str, Any]:
        record = self._get(self.services, sid, "service")

        def check(name: str, value: Any) -> None:
            if name == "status" and value not in SERVICE_STATUSES:
                raise Refusal(400, "BadRequest", f"invalid service status {value!r}")

        updated = apply_json_patch(record, ops, PATCHABLE["service"], check)
        if updated["status"] == "DISCONNECTED" and record["status"] != "DISCONNECTED":
            updated["disconnected_date"] = updated.get("disconnected_date") or rev_time(self.now())
        if updated["number"] != record["number"]:
            self.by_number[record["number"] or ""].remove(record["service_id"])
            self.by_number.setdefault(updated["number"] or "", []).append(record["service_id"])
        record.update(updated)
        return record

    # -- service products -------------------------------------------------------------------------

    def _check_product_value(self, name: str, value: Any) -> None:
        if name == "quantity" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise Refusal(400, "BadRequest", "quantity must be a non-negative integer")
        if name == "rate" and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Refusal(400, "BadRequest", "rate must be a number")
        if name == "status" and value not in PRODUCT_STATUSES:
            raise Refusal(400, "BadRequest", f"invalid service product status {value!r}")

    def _product_fields(self, body: Any, old: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Refusal(400, "BadRequest", "body must be a JSON object")
        sid = int32_id(body.get("service_id"), "service_id")
        service = self.services.get(sid)
        if service is None:
            raise Refusal(400, "BadRequest", f"service_id {sid} does not exist")
        pid = int32_id(body.get("product_id"), "product_id")
        product = self.products.get(pid)
        if product is None:
            raise Refusal(400, "BadRequest", f"product_id {pid} does not exist")
        cid = service["customer_id"] if body.get("customer_id") is None else body["customer_id"]
        if cid != service["customer_id"]:
            raise Refusal(
                400, "BadRequest", f"customer_id {cid} does not own service {sid} (customer {service['customer_id']})"
            )
        quantity = body.get("quantity", 1)
        rate = body.get("rate", product.get("rate"))
        status = body.get("status", (old or {}).get("status", self.product_status_on_create))
        for name, value in (("quantity", quantity), ("rate", rate), ("status", status)):
            self._check_product_value(name, value)
        return {
            "service_id": sid,
            "product_id": pid,
            "customer_id": service["customer_id"],
            "quantity": quantity,
            "rate": rate,
            "status": status,
            "effective_date": body.get("effective_date") or rev_time(self.now()),
            "package_id": body.get("package_id"),
            "description": body.get("description") or product.get("description"),
        }

    def add_service_product(self, body: Any, *, seeded: bool = False) -> dict[str, Any]:
        """Validate and create a service product (`POST /v1/ServiceProduct`)."""
        fields = self._product_fields(body)
        spid = next(self._ids["service_product"])
        record = {"service_product_id": spid, **fields, "created_date": rev_time(self.now())}
        self.service_products[spid] = record
        self.by_service.setdefault(fields["service_id"], []).append(spid)
        if not seeded:
            number = self.services[fields["service_id"]]["number"] or ""
            self.products_created[f"{number}:{fields['product_id']}"] += 1
        return record

    def put_service_product(self, spid: int, body: Any) -> dict[str, Any]:
        """Replace a service product (`PUT /v1/ServiceProduct/{id}`); its service stays."""
        record = self._get(self.service_products, spid, "service product")
        body = check_fields(body, PRODUCT_REPLACE)
        if body["service_id"] != record["service_id"]:
            raise Refusal(400, "BadRequest", "service_id of a service product cannot change")
        if body.get("status") == "DISCONNECTED":
            raise Refusal(400, "BadRequest", "Status of disconnect is not allowed")
        fields = self._product_fields(body, record)
        if fields["status"] != record["status"] and (
            fields["rate"] != record["rate"] or fields["quantity"] != record["quantity"]
        ):
            raise Refusal(400, "BadRequest", "Rate and Quantity cannot be changed while status is changed")
        record.update(fields)
        return record

    def patch_service_product(self, spid: int, ops: Any) -> dict[str, Any]:
        record = self._get(self.service_products, spid, "service product")
        record.update(apply_json_patch(record, ops, PATCHABLE["service_product"], self._check_product_value))
        return record

    # -- inventory --------------------------------------------------------------------------------

    def add_inventory_item(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Seed an inventory item (the API surface has no create). Its status is the one given,
        spelt exactly, else what its `service_id` makes it: ASSIGNED or AVAILABLE [I]."""
        given = body.get("inventory_item_id")
        iid = next(self._ids["inventory"]) if given is None else int32_id(given, "inventory_item_id")
        status = body.get("status", "AVAILABLE" if body.get("service_id") is None else "ASSIGNED")
        if not isinstance(status, str) or status not in INVENTORY_STATUSES:
            raise Refusal(400, "BadRequest", f"invalid inventory item status {status!r}")
        record = {
            "inventory_item_id": iid,
            "identifier": _text(body.get("identifier")),
            "inventory_type_id": body.get("inventory_type_id"),
            "status": status,
            "service_id": body.get("service_id"),
            "customer_id": body.get("customer_id"),
        }
        self.inventory[iid] = record
        return record

    def assign_inventory(self, body: Any) -> dict[str, Any]:
        """`POST /v1/InventoryItem/assignService` {inventory_item_id, service_id} [I], both int32
        numbers (`ASSIGN_SERVICE`: "70000" is refused, not converted)."""
        body = check_fields(body, ASSIGN_SERVICE)
        item = self._get(self.inventory, body["inventory_item_id"], "inventory item", status=400)
        service = self._get(self.services, body["service_id"], "service", status=400)
        if item["service_id"] not in (None, service["service_id"]):
            raise Refusal(
                400,
                "BadRequest",
                f"inventory item {item['inventory_item_id']} is assigned to service {item['service_id']}",
            )
        item.update(service_id=service["service_id"], customer_id=service["customer_id"], status="ASSIGNED")
        return item

    def candidates(self, table: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """The records of `table` a search can match, narrowed by an index where the query
        names an indexed field (so a 100,000-service book answers a per-device search in O(1))."""
        if table == "services" and "search.number" in query:
            ids = self.by_number.get(query["search.number"], [])
            return [self.services[i] for i in ids]
        if table == "service_products" and "search.service_id" in query:
            try:
                ids = self.by_service.get(int(query["search.service_id"]), [])
            except ValueError:
                return []
            return [self.service_products[i] for i in ids]
        if table == "service_inventory":
            return self.service_inventory()
        return list(getattr(self, table).values())

    def service_inventory(self) -> list[dict[str, Any]]:
        return [
            {
                "service_id": i["service_id"],
                "inventory_item_id": i["inventory_item_id"],
                "identifier": i["identifier"],
                "customer_id": i["customer_id"],
            }
            for i in self.inventory.values()
            if i["service_id"] is not None
        ]

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _get(table: Mapping[int, dict[str, Any]], key: Any, what: str, status: int = 404) -> dict[str, Any]:
        """The record with id `key`: an int, or a path segment of ASCII digits in canonical form
        (one spelling of an id: " 12", "+12" and "012" find nothing)."""
        if isinstance(key, str) and key.isascii() and key.isdigit() and str(int(key)) == key:
            key = int(key)
        record = table.get(key) if is_int32_id(key) else None
        if record is None:
            raise Refusal(status, "NotFound", f"{what} {key} does not exist")
        return record

    def number_view(self, number: str) -> dict[str, Any] | None:
        """Every service of a number with its service products (for `/_sim/devices/{number}`)."""
        services = [s for s in self.services.values() if s["number"] == number]
        if not services:
            return None
        ids = {s["service_id"] for s in services}
        products = [p for p in self.service_products.values() if p["service_id"] in ids]
        return {"number": number, "services": services, "service_products": products}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def make_numbers(count: int, start: int = 0, prefix: str = "1555") -> list[str]:
    """`count` distinct 11-digit MSISDNs, for seeding tests and benchmarks."""
    return [prefix + str(n).zfill(11 - len(prefix)) for n in range(start, start + count)]
