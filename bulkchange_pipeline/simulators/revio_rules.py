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
`/fields/<index>/value`, service-product statuses PENDING/ACTIVE/DENIED/DISCONNECTED. Create and
replace bodies are checked field by field (`check_fields` with `SERVICE_CREATE`, `PRODUCT_CREATE`,
`PRODUCT_REPLACE`): int32 ids in their documented ranges (no text or fractional ids: a lenient JSON
binder might coerce "14", a strict one refuses it, so the simulator refuses), documented string
lengths, date-times, `service_id` refused on a service create ("Do not include when creating"),
`generate_proration` required on PUT, DISCONNECTED refused on PUT ("Status of disconnect is not
allowed") and rate/quantity changes refused together with a status change.

Where the sources are silent, the choices [I]: pages are 1-based; a query parameter that is neither
a known `search.<field>` nor paging is refused with 400 (rather than ignored, so a misspelt filter
cannot silently widen a search); a POST ServiceProduct (reference page not public in our sources)
takes the replace body's fields with `generate_proration` optional, `customer_id` derived from the
service when absent (it is optional on the replace body too) and `quantity` 1 when absent; service
statuses ACTIVE/PENDING/DISCONNECTED; the error body `[{ok: false, error, message}]` (the shape AMOP
parses); the field names of records beyond the documented ones; a service's custom fields as
`fields: [{field_id, label, value}]`, one per field the Rev tenant defines (`service_fields`,
default a "Cost Center" field, as AMOP's username/cost-center edit looks them up by label).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 500
SERVICE_STATUSES = frozenset({"ACTIVE", "PENDING", "DISCONNECTED"})  # [I]
PRODUCT_STATUSES = frozenset({"PENDING", "ACTIVE", "DENIED", "DISCONNECTED"})
CUSTOMER_STATUSES = frozenset({"ACTIVE", "PENDING", "CLOSED"})  # [I]
# Fields a JSON Patch may change; the ids that tie a record to others are fixed.
PATCHABLE = {
    "service_product": frozenset({"quantity", "rate", "status", "description", "effective_date", "package_id"}),
    "service": frozenset(
        {
            "status",
            "number",
            "number2",
            "description",
            "effective_date",
            "usage_plan_group_id",
            "package_id",
            "disconnected_date",
            "fields",
        }
    ),
}
# Custom fields every service of the simulated Rev tenant carries [I] (labels; values start empty).
DEFAULT_SERVICE_FIELDS = ("Cost Center",)
DEFAULT_PRODUCTS: tuple[dict[str, Any], ...] = (
    {"product_id": 101, "description": "IoT line access", "rate": 4.0},
    {"product_id": 102, "description": "IoT data 1 GB", "rate": 9.5},
    {"product_id": 103, "description": "Static IP", "rate": 2.0},
)


class Refusal(Exception):
    """A refusal the API answers with `[{ok: false, error, message}]` and an HTTP status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def body(self) -> list[dict[str, Any]]:
        return [{"ok": False, "error": self.error, "message": self.message}]


def rev_time(when: dt.datetime) -> str:
    """Rev.io's date-time text [I]: ISO 8601 without offset, UTC."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def page_of(records: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of `records` as the list body (`record_count`: records on this page, as
    docs/paging defines it); Refusal for a page size outside 1..500 or a page below 1 (an empty
    value is not a number, so it is refused too rather than read as the default)."""
    try:
        size = int(query.get("search.page_size", DEFAULT_PAGE_SIZE))
        page = int(query.get("search.page", 1))
    except ValueError:
        raise Refusal(400, "BadRequest", "search.page_size and search.page must be integers") from None
    if not 1 <= size <= MAX_PAGE_SIZE or page < 1:
        raise Refusal(400, "BadRequest", f"search.page_size must be 1..{MAX_PAGE_SIZE} and search.page >= 1")
    chunk = records[(page - 1) * size : page * size]
    return {"ok": True, "has_more": page * size < len(records), "record_count": len(chunk), "records": chunk}


def search(records: Iterable[dict[str, Any]], query: Mapping[str, str], fields: frozenset[str]) -> list[dict[str, Any]]:
    """Records matching every `search.<field>=value` (case-insensitive text compare)."""
    wanted: dict[str, str] = {}
    for key, value in query.items():
        if key in ("search.page", "search.page_size"):
            continue
        if not key.startswith("search."):
            raise Refusal(400, "BadRequest", f"unknown query parameter {key!r}")
        name = key[len("search.") :]
        if name not in fields:
            raise Refusal(400, "BadRequest", f"unknown search field {name!r}")
        wanted[name] = value.lower()
    return [
        r for r in records if all(str(r.get(k) if r.get(k) is not None else "").lower() == v for k, v in wanted.items())
    ]


INT32_MAX = 2_147_483_647
# Field rules of the documented bodies: name -> (kind, required, bound). Kinds: "id" (int32 in
# bound..INT32_MAX), "str" (text of at most `bound` characters), "date" (ISO 8601 date-time),
# "num" (number >= bound), "bool", "qty" (integer >= 0) [I], "status" (service-product status).
FieldRules = Mapping[str, tuple[str, bool, int]]
SERVICE_CREATE: FieldRules = {  # reference/postv1_services-6
    "customer_id": ("id", True, 1),
    "provider_id": ("id", True, 1),
    "service_type_id": ("id", False, 0),
    "package_id": ("id", False, 0),
    "provider_account_id": ("id", False, 0),
    "usage_plan_group_id": ("id", False, 0),
    "address_id": ("id", False, 0),
    "addressz_id": ("id", False, 0),
    "number": ("str", False, 255),
    "number2": ("str", False, 255),
    "pic": ("str", False, 10),
    "lpic": ("str", False, 10),
    "description": ("str", False, 1000),
    "effective_date": ("date", False, 0),
    "activated_date": ("date", False, 0),
    "disconnected_date": ("date", False, 0),
}
PRODUCT_REPLACE: FieldRules = {  # reference/putv1_serviceproduct_id
    "generate_proration": ("bool", True, 0),
    "service_product_id": ("id", False, 1),
    "customer_id": ("id", False, 1),
    "product_id": ("id", True, 1),
    "service_id": ("id", True, 1),
    "package_id": ("id", False, 0),
    "description": ("str", False, 500),
    "code_1": ("str", False, 500),
    "code_2": ("str", False, 500),
    "rate": ("num", False, 0),
    "quantity": ("qty", False, 0),
    "status": ("status", False, 0),
    "effective_date": ("date", False, 0),
    "activated_date": ("date", False, 0),
}
PRODUCT_CREATE: FieldRules = {**PRODUCT_REPLACE, "generate_proration": ("bool", False, 0)}  # [I]


def check_fields(body: Any, rules: FieldRules, *, refused: Iterable[str] = ()) -> dict[str, Any]:
    """`body` if it is an object whose fields keep `rules` (required ones present and not null);
    Refusal naming the first field that does not. `refused` fields may not appear at all."""
    if not isinstance(body, dict):
        raise Refusal(400, "BadRequest", "body must be a JSON object")
    for name in refused:
        if name in body:
            raise Refusal(400, "BadRequest", f"{name} must not be included in this request")
    for name, (kind, required, bound) in rules.items():
        value = body.get(name)
        if value is None:
            if required:
                raise Refusal(400, "BadRequest", f"{name} is required")
            continue
        if not _kind_ok(kind, value, bound):
            raise Refusal(400, "BadRequest", f"{name} is not a valid {_KIND_TEXT[kind].format(bound)}: {value!r}")
    return body


_KIND_TEXT = {
    "id": "int32 of at least {}",
    "str": "string of at most {} characters",
    "date": "date-time",
    "num": "number of at least {}",
    "bool": "boolean",
    "qty": "non-negative integer",
    "status": "service product status",
}


def _kind_ok(kind: str, value: Any, bound: int) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind in ("id", "qty"):
        return isinstance(value, int) and bound <= value <= INT32_MAX
    if kind == "num":
        return isinstance(value, (int, float)) and value >= bound
    if kind == "str":
        return isinstance(value, str) and len(value) <= bound
    if kind == "status":
        return value in PRODUCT_STATUSES
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _patch_target(path: Any) -> tuple[str, int | None, str | None]:
    """(field, list index, item key) of a JSON Pointer: `/name`, or `/fields/<index>/<key>` for an
    item of a list field (custom fields). Refusal for anything deeper or malformed."""
    parts = path[1:].split("/") if isinstance(path, str) and path.startswith("/") else []
    if len(parts) == 1 and parts[0]:
        return parts[0], None, None
    if len(parts) == 3 and parts[1].isdigit() and parts[0] and parts[2]:
        return parts[0], int(parts[1]), parts[2]
    raise Refusal(400, "BadRequest", f"unsupported JSON Patch path {path!r}")


def apply_json_patch(
    record: dict[str, Any], ops: Any, patchable: frozenset[str], check: Callable[[str, Any], None]
) -> dict[str, Any]:
    """The record after RFC 6902 operations on top-level paths (`/quantity`, ...) and on the
    `value` of a custom field (`/fields/<index>/value`); `test` ops must hold (on any of those,
    or a custom field's `/label`). Raises Refusal for a malformed document, a fixed field or a bad
    value; the record is not changed unless every op succeeds."""
    if not isinstance(ops, list) or not ops:
        raise Refusal(400, "BadRequest", "body must be a non-empty JSON Patch array")
    out = dict(record)
    if isinstance(out.get("fields"), list):
        out["fields"] = [dict(f) for f in out["fields"]]  # copies: a refused document changes nothing
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("replace", "add", "remove", "test"):
            raise Refusal(400, "BadRequest", f"unsupported JSON Patch operation {op!r}")
        path = op.get("path")
        name, index, key = _patch_target(path)
        if op["op"] != "remove" and "value" not in op:
            raise Refusal(400, "BadRequest", f"{op['op']} of {path} needs a value")
        if index is not None:
            items = out.get(name)
            if not isinstance(items, list) or index >= len(items):
                raise Refusal(400, "BadRequest", f"{path} does not exist")
            if op["op"] == "test":
                if items[index].get(key) != op["value"]:
                    raise Refusal(409, "Conflict", f"test failed for {path}")
                continue
            if name not in patchable or key != "value":
                raise Refusal(400, "BadRequest", f"{path} cannot be changed")
            items[index]["value"] = None if op["op"] == "remove" else op["value"]
            continue
        if op["op"] == "test":
            if out.get(name) != op["value"]:
                raise Refusal(409, "Conflict", f"test failed for {path}")
            continue
        if name not in patchable or name == "fields":
            raise Refusal(400, "BadRequest", f"{path} cannot be changed")
        if op["op"] == "remove":
            out[name] = None
            continue
        check(name, op["value"])
        out[name] = op["value"]
    return out


def _int(value: Any, name: str, *, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or value is None:
        raise Refusal(400, "BadRequest", f"{name} is required and must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Refusal(400, "BadRequest", f"{name} must be an integer, got {value!r}") from None


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
        self.customers: dict[str, dict[str, Any]] = {}
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
        """Create a customer (an explicit `customer_id` may be an int or a text id)."""
        cid = body.get("customer_id")
        cid = next(self._ids["customer"]) if cid is None else cid
        status = str(body.get("status") or "ACTIVE").upper()
        if status not in CUSTOMER_STATUSES:
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
        self.customers[str(cid)] = record
        return record

    def _customer(self, cid: Any) -> dict[str, Any]:
        record = self.customers.get(str(cid))
        if record is None:
            raise Refusal(400, "BadRequest", f"customer_id {cid} does not exist")
        return record

    # -- services ---------------------------------------------------------------------------------

    def add_service(self, body: Any, *, seeded: bool = False) -> dict[str, Any]:
        """Validate and create a service (`POST /v1/Services`); counted per number unless seeded."""
        if not isinstance(body, dict):
            raise Refusal(400, "BadRequest", "body must be a JSON object")
        if body.get("customer_id") is None:
            raise Refusal(400, "BadRequest", "customer_id is required")
        customer = self._customer(body["customer_id"])
        if customer["status"] == "CLOSED" and not seeded:
            raise Refusal(400, "BadRequest", f"customer {customer['customer_id']} is closed")
        provider = _int(body.get("provider_id"), "provider_id")
        if self.providers is not None and provider not in self.providers:
            raise Refusal(400, "BadRequest", f"provider_id {provider} does not exist")
        stype = _int(body.get("service_type_id"), "service_type_id", required=False)
        if stype is not None and self.service_types is not None and stype not in self.service_types:
            raise Refusal(400, "BadRequest", f"service_type_id {stype} does not exist")
        status = str(body.get("status") or "ACTIVE").upper()
        if status not in SERVICE_STATUSES:
            raise Refusal(400, "BadRequest", f"invalid service status {status!r}")
        sid = int(body["service_id"]) if seeded and body.get("service_id") else next(self._ids["service"])
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
        sid = _int(body.get("service_id"), "service_id")
        service = self.services.get(sid)  # type: ignore[arg-type]
        if service is None:
            raise Refusal(400, "BadRequest", f"service_id {sid} does not exist")
        pid = _int(body.get("product_id"), "product_id")
        product = self.products.get(pid)  # type: ignore[arg-type]
        if product is None:
            raise Refusal(400, "BadRequest", f"product_id {pid} does not exist")
        cid = body.get("customer_id", service["customer_id"])
        if str(cid) != str(service["customer_id"]):
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
        iid = int(body.get("inventory_item_id") or next(self._ids["inventory"]))
        record = {
            "inventory_item_id": iid,
            "identifier": _text(body.get("identifier")),
            "inventory_type_id": body.get("inventory_type_id"),
            "status": str(body.get("status") or "AVAILABLE").upper(),
            "service_id": body.get("service_id"),
            "customer_id": body.get("customer_id"),
        }
        self.inventory[iid] = record
        return record

    def assign_inventory(self, body: Any) -> dict[str, Any]:
        """`POST /v1/InventoryItem/assignService` {inventory_item_id, service_id} [I]."""
        if not isinstance(body, dict):
            raise Refusal(400, "BadRequest", "body must be a JSON object")
        item = self._get(
            self.inventory, _int(body.get("inventory_item_id"), "inventory_item_id"), "inventory item", status=400
        )
        service = self._get(self.services, _int(body.get("service_id"), "service_id"), "service", status=400)
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
        try:
            record = table.get(int(key))
        except (TypeError, ValueError):
            record = None
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
