"""Field checks of the Rev.io simulator: the refusal it answers with, the documented values, the
field-by-field rules of each request body and query it takes and the JSON Patch it applies (split
from `revio_rules` so the checks read in one place).

Issue 17: the simulator is at least as strict as the real API. A body is refused, never repaired:
a field the description (bulkchange_pipeline_tests/contracts/revio.yaml) does not name is refused,
a required field is never filled in, ids are int32 JSON numbers only (no text "70000": a lenient
JSON binder might coerce it, a strict one refuses it, so the simulator refuses), and enumerated
values are compared exactly as spelt (no upper-casing).

Sources (reference/carriers.md section 6): `SERVICE_CREATE` is developers.rev.io/reference/
postv1_services-6; `PRODUCT_REPLACE` is /reference/putv1_serviceproduct_id; the service-product
statuses PENDING/ACTIVE/DENIED/DISCONNECTED are documented [D]. Inferred [I]: `PRODUCT_CREATE`
(the create reference is not in our sources: the replace body with `generate_proration` optional),
`CUSTOMER_CREATE` (the fields AMOP reads, as revio.yaml lists them), `ASSIGN_SERVICE` (AMOP's
`{inventory_item_id, service_id}`), and the customer, service and inventory-item status values,
which no public page lists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "ASSIGN_SERVICE",
    "CUSTOMER_CREATE",
    "CUSTOMER_STATUSES",
    "INT32_MAX",
    "INVENTORY_STATUSES",
    "PATCHABLE",
    "PRODUCT_CREATE",
    "PRODUCT_REPLACE",
    "PRODUCT_STATUSES",
    "SERVICE_CREATE",
    "SERVICE_STATUSES",
    "FieldRules",
    "Refusal",
    "apply_json_patch",
    "check_fields",
    "int32_id",
    "is_int32_id",
    "page_of",
    "search",
]

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 500
INT32_MAX = 2_147_483_647
PRODUCT_STATUSES = frozenset({"PENDING", "ACTIVE", "DENIED", "DISCONNECTED"})  # [D]
SERVICE_STATUSES = frozenset({"ACTIVE", "PENDING", "DISCONNECTED"})  # [I]
CUSTOMER_STATUSES = frozenset({"ACTIVE", "PENDING", "CLOSED"})  # [I]
INVENTORY_STATUSES = frozenset({"AVAILABLE", "ASSIGNED"})  # [I]
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


class Refusal(Exception):
    """A refusal the API answers with `[{ok: false, error, message}]` and an HTTP status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def body(self) -> list[dict[str, Any]]:
        return [{"ok": False, "error": self.error, "message": self.message}]


# Field rules of the documented bodies: name -> (kind, required, bound). Kinds: "id" (int32 in
# bound..INT32_MAX), "str" (text of at most `bound` characters), "text" (any text: no length is
# documented), "date" (ISO 8601 date-time), "num" (number >= bound), "bool", "qty" (integer >= 0)
# [I], "status" (service-product status), "customer_status".
FieldRules = Mapping[str, tuple[str, bool, int]]
CUSTOMER_CREATE: FieldRules = {  # [I] revio.yaml create_customer; ids are assigned by the API
    "parent_customer_id": ("id", False, 1),
    "status": ("customer_status", False, 0),
    "activated_date": ("date", False, 0),
    "close_date": ("date", False, 0),
    "agent_id": ("id", False, 1),
    "name": ("text", False, 0),
}
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
ASSIGN_SERVICE: FieldRules = {"inventory_item_id": ("id", True, 1), "service_id": ("id", True, 1)}  # [I]

_KIND_TEXT = {
    "id": "int32 of at least {}",
    "str": "string of at most {} characters",
    "text": "string",
    "date": "date-time",
    "num": "number of at least {}",
    "bool": "boolean",
    "qty": "non-negative integer",
    "status": "service product status (PENDING, ACTIVE, DENIED or DISCONNECTED)",
    "customer_status": "customer status (ACTIVE, PENDING or CLOSED)",
}


def check_fields(body: Any, rules: FieldRules, *, refused: Iterable[str] = ()) -> dict[str, Any]:
    """`body` if it is an object naming only the fields of `rules`, each keeping its rule, and
    every required one present and not null; else Refusal naming the first field that does not.
    `refused` fields get their own message ("must not be included", e.g. ids the API assigns)."""
    if not isinstance(body, dict):
        raise Refusal(400, "BadRequest", "body must be a JSON object")
    for name in refused:
        if name in body:
            raise Refusal(400, "BadRequest", f"{name} must not be included in this request")
    unknown = [name for name in body if name not in rules]
    if unknown:
        raise Refusal(400, "BadRequest", f"{unknown[0]} is not a field of this request")
    for name, (kind, required, bound) in rules.items():
        value = body.get(name)
        if value is None:
            if required:
                raise Refusal(400, "BadRequest", f"{name} is required")
            continue
        if not _kind_ok(kind, value, bound):
            raise Refusal(400, "BadRequest", f"{name} is not a valid {_KIND_TEXT[kind].format(bound)}: {value!r}")
    return body


def is_int32_id(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is a JSON integer (not a bool, not text) in minimum..INT32_MAX."""
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= INT32_MAX


def int32_id(value: Any, name: str) -> int:
    """`value` if it is an int32 id (>= 1), else Refusal: "70000" or 70000.0 is not converted."""
    if value is None:
        raise Refusal(400, "BadRequest", f"{name} is required")
    if not is_int32_id(value):
        raise Refusal(400, "BadRequest", f"{name} is not a valid {_KIND_TEXT['id'].format(1)}: {value!r}")
    return int(value)


def _kind_ok(kind: str, value: Any, bound: int) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind in ("id", "qty"):
        return is_int32_id(value, bound)
    if kind == "num":
        return isinstance(value, (int, float)) and value >= bound
    if kind == "str":
        return isinstance(value, str) and len(value) <= bound
    if kind == "text":
        return isinstance(value, str)
    if not isinstance(value, str):
        return False
    if kind == "status":
        return value in PRODUCT_STATUSES
    if kind == "customer_status":
        return value in CUSTOMER_STATUSES
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


def page_of(records: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of `records` as the list body (`record_count`: records on this page, as
    docs/paging defines it); Refusal for a page size outside 1..500 or a page below 1 (an empty
    value is not a number, so it is refused too rather than read as the default)."""
    texts = (query.get("search.page_size", str(DEFAULT_PAGE_SIZE)), query.get("search.page", "1"))
    if not all(t.isascii() and t.isdigit() and str(int(t)) == t for t in texts):  # no " 5", "+5", "05"
        raise Refusal(400, "BadRequest", "search.page_size and search.page must be integers")
    size, page = (int(t) for t in texts)
    if not 1 <= size <= MAX_PAGE_SIZE or page < 1:
        raise Refusal(400, "BadRequest", f"search.page_size must be 1..{MAX_PAGE_SIZE} and search.page >= 1")
    chunk = records[(page - 1) * size : page * size]
    return {"ok": True, "has_more": page * size < len(records), "record_count": len(chunk), "records": chunk}


def search(records: Iterable[dict[str, Any]], query: Mapping[str, str], fields: frozenset[str]) -> list[dict[str, Any]]:
    """Records matching every `search.<field>=value`, compared exactly as text (no source says
    Rev.io ignores case, so "active" does not find ACTIVE)."""
    wanted: dict[str, str] = {}
    for key, value in query.items():
        if key in ("search.page", "search.page_size"):
            continue
        if not key.startswith("search."):
            raise Refusal(400, "BadRequest", f"unknown query parameter {key!r}")
        name = key[len("search.") :]
        if name not in fields:
            raise Refusal(400, "BadRequest", f"unknown search field {name!r}")
        wanted[name] = value
    return [r for r in records if all(_search_text(r.get(k)) == v for k, v in wanted.items())]


def _search_text(value: Any) -> str:
    return "" if value is None else str(value)
