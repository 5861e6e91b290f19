"""A loopback simulator of the Rev.io REST API (`/v1/Customers`, `/v1/Services`,
`/v1/ServiceProduct`, `/v1/InventoryItem`, `/v1/ServiceInventory`).

Wire format (reference/carriers.md section 6): HTTP Basic `user@clientCode:password` plus the
`Ocp-Apim-Subscription-Key` header (401 if either is wrong); lists `{ok, has_more, record_count,
records}` paged by `search.page_size` (1-500) / `search.page`; creates answer 201 with `Location`
and `{ok: true, id}`; PATCH takes JSON Patch as `application/json-patch+json` (415 otherwise),
including a service's custom fields at `/fields/<index>/value` (`revio_fields.apply_json_patch`).
As strict as the documentation (issue 17; description in bulkchange_pipeline_tests/contracts/
revio.yaml): an e-mail-style username is refused even if configured (docs/faq), create/replace
bodies are checked field by field (`revio_fields.check_fields`: a field the description does not
name is refused, required fields are never filled in, ids are int32 numbers only, values are spelt
exactly, `service_id` may not be sent on a service create nor `customer_id` on a customer create),
searches compare exactly, and a list's
`record_count` is the records on the page (docs/paging). A call that matches no operation (unknown
path, or a described path with another method) gets APIM's JSON 404 `{"statusCode": 404,
"message": "Resource not found"}` [I], not the web framework's plain text.

Limits as Azure API Management enforces them in front of Rev.io: `calls_per_minute` (default 500)
per subscription, counted by `AccountGate`, answered 429 with the APIM body
`{"statusCode":429,"message":"Rate limit is exceeded. Try again in N seconds."}` where N is the
time until the limit window ends (whole seconds, as APIM writes it; `whole_second_waits=False`
writes hundredths so tests run fast; `retry_after_seconds` fixes N); and `daily_quota` (default
150,000) calls per subscription per day, answered 403 "Out of call volume quota. Quota will be
replenished in HH:MM:SS." [I: APIM's wording]. No Retry-After header is sent [I], so a client must
read the wait from the body as AMOP did.

Counters: `applied_counts[number]` = services created for that number (the exactly-once proof),
`book.products_created["number:product_id"]`, and `stats()`.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed records, see
`seed_devices`), `GET /_sim/devices/{number}`, `GET /_sim/stats`, `GET|POST /_sim/config`,
`POST /_sim/reset`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import revio_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock
from .faults import FaultConfig
from .server import ServerHandle

API_PREFIX = "/v1"
DEFAULT_ACCOUNTS = {"demo@DEMO": "demo-password"}
DEFAULT_SUBSCRIPTION_KEYS = ("demo-subscription-key",)
_PATCH_TYPE = "application/json-patch+json"
# `username@clientCode`: one @, no dot in the client code (an e-mail address is refused) [D: faq].
_API_USER = re.compile(r"^[^@\s:]+@[^@\s:.]+$")
MSG_NO_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription "
    "key when making requests to an API."
)
MSG_BAD_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)


class RevioSimulator(SimulatorBase):
    """In-memory Rev.io tenant behind a Starlette app (`.app`). `accounts` maps
    `user@clientCode` to password; `subscription_keys` are the valid APIM keys."""

    API_PREFIX = API_PREFIX
    RATE_KEY = "calls_per_minute"
    RATE_SCALE = 60.0

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        subscription_keys: Iterable[str] | None = None,
        *,
        calls_per_minute: float = 500,
        daily_quota: int = 150_000,
        max_concurrency: int = 0,
        faults: FaultConfig | None = None,
        retry_after_seconds: float | None = None,
        whole_second_waits: bool = True,
        book: rules.RevBook | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(calls_per_minute, max_concurrency, faults, clock)
        self.accounts: dict[str, str] = dict(accounts or DEFAULT_ACCOUNTS)
        self.subscriptions: dict[str, str] = {}
        self._set_keys(subscription_keys or DEFAULT_SUBSCRIPTION_KEYS)
        self.daily_quota = daily_quota
        self.retry_after_seconds = retry_after_seconds
        self.whole_second_waits = whole_second_waits
        self.book = book or rules.RevBook(now=self.clock.now)
        self._quota_used: dict[tuple[str, int], int] = {}
        self.reset_counters()
        self.app = self._build_app()

    def _set_keys(self, keys: Iterable[str]) -> None:
        # Subscriptions are named sub1, sub2... in stats so a key never appears in an answer.
        self.subscriptions = {k: f"sub{i}" for i, k in enumerate(keys, 1)}

    @property
    def applied_counts(self) -> Counter[str]:
        """Services created per number (seeded services are not counted)."""
        return self.book.applied_counts

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter and the quota (records are kept)."""
        self._reset_base_counters()
        self.book.applied_counts.clear()
        self.book.products_created.clear()
        self.calls_by_route: Counter[str] = Counter()
        self.quota_refusals = 0
        self._quota_used.clear()

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add records: each item has `type` customer | service | service_product |
        inventory_item | product (default: service if it has a `number`, else customer), and the
        record's Rev field names. Seeded services are not counted in `applied_counts`."""
        n = 0
        for item in devices:
            kind = item.get("type") or ("service" if "number" in item else "customer")
            body = {k: v for k, v in item.items() if k != "type"}
            try:
                if kind == "customer":
                    self.book.add_customer(body)
                elif kind == "service":
                    self.book.add_service(body, seeded=True)
                elif kind == "service_product":
                    self.book.add_service_product(body, seeded=True)
                elif kind == "inventory_item":
                    self.book.add_inventory_item(body)
                elif kind == "product":
                    self.book.products[int(body["product_id"])] = dict(body)
                else:
                    raise ValueError(f"unknown record type {kind!r}")
            except rules.Refusal as exc:
                raise ValueError(exc.message) from exc
            n += 1
        return n

    def device(self, number: str) -> dict[str, Any] | None:
        """Services and service products of one number."""
        return self.book.number_view(number)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change `calls_per_minute`, `daily_quota`, `max_concurrency`, `retry_after_seconds`,
        `whole_second_waits`, `accounts` ({user@client: password}), `subscription_keys` (list),
        `providers` / `service_types` (lists of ids; None accepts any),
        `product_status_on_create`, `service_fields` (labels of the custom fields services created
        from then on carry), or faults (FaultConfig fields)."""
        for key, value in changes.items():
            if key == "daily_quota":
                self.daily_quota = int(value)
            elif key == "retry_after_seconds":
                self.retry_after_seconds = None if value is None else float(value)
            elif key == "whole_second_waits":
                self.whole_second_waits = bool(value)
            elif key == "accounts":
                self.accounts = dict(value)
            elif key == "subscription_keys":
                self._set_keys(value)
            elif key in ("providers", "service_types"):
                setattr(self.book, key, None if value is None else frozenset(int(v) for v in value))
            elif key == "service_fields":
                self.book.service_fields = tuple(str(v) for v in value)
            elif key == "product_status_on_create":
                if value not in rules.PRODUCT_STATUSES:
                    raise ValueError(f"product_status_on_create must be one of {sorted(rules.PRODUCT_STATUSES)}")
                self.book.product_status_on_create = value
            else:
                self._configure_base(key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "daily_quota": self.daily_quota,
            "retry_after_seconds": self.retry_after_seconds,
            "whole_second_waits": self.whole_second_waits,
            "accounts": sorted(self.accounts),
            "service_fields": list(self.book.service_fields),
            "subscriptions": len(self.subscriptions),
            **self.faults.config.as_dict(),
        }

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks (no overall `peak_concurrency`: APIM limits calls,
        not overlap)."""
        return {
            "total_calls": self.total_calls,
            "calls_by_route": dict(self.calls_by_route),
            "over_limit_answers": self.over_limit_answers,
            "quota_refusals": self.quota_refusals,
            "auth_failures": self.auth_failures,
            "business_refusals": self.business_refusals,
            "injected": dict(self.faults.counts),
            "accounts": self._account_stats(("calls", "rate_refusals", "peak_concurrency")),
            "devices": len({s["number"] for s in self.book.services.values()}),
            "customers": len(self.book.customers),
            "services": len(self.book.services),
            "service_products": len(self.book.service_products),
            **self._applied_stats(self.book.applied_counts),
            "products_more_than_once": sum(1 for c in self.book.products_created.values() if c > 1),
        }

    # -- limits -----------------------------------------------------------------------------------

    def wait_seconds(self) -> float:
        """N for "Try again in N seconds": the rest of the current limit window (AccountGate's
        fixed windows), unless `retry_after_seconds` fixes it."""
        if self.retry_after_seconds is not None:
            return self.retry_after_seconds
        rate = self.gate.rate_per_second
        length = 1.0 if rate >= 1 or rate <= 0 else 1.0 / rate
        now = self.clock.monotonic()
        remaining = (math.floor(now / length) + 1) * length - now
        if self.whole_second_waits:
            return float(max(1, math.ceil(remaining)))
        return max(0.01, math.ceil(remaining * 100) / 100)

    def _over_limit(self) -> Response:
        self.over_limit_answers += 1
        wait = self.wait_seconds()
        text = f"{int(wait)}" if wait == int(wait) else f"{wait:g}"
        return _json(429, {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {text} seconds."})

    def _quota_refused(self, label: str) -> Response | None:
        """403 once the subscription used its daily calls; else count this call."""
        if self.daily_quota <= 0:
            return None
        now = self.clock.now().timestamp()
        day = int(now // 86400)
        used = self._quota_used.get((label, day), 0)
        if used >= self.daily_quota:
            self.quota_refusals += 1
            left = int((day + 1) * 86400 - now)
            return _json(
                403,
                {
                    "statusCode": 403,
                    "message": "Out of call volume quota. Quota will be replenished in "
                    f"{left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}.",
                },
            )
        self._quota_used[(label, day)] = used + 1
        return None

    # -- request plumbing -------------------------------------------------------------------------

    def _basic_ok(self, header: str | None) -> bool:
        """Basic `username@clientCode:password` (docs/faq). A username that is an e-mail address
        fails validation ("The additional @ symbol will cause validation to fail"), so it is
        refused even when the account table holds it."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not _API_USER.match(user):
            return False
        return user in self.accounts and self.accounts[user] == password

    async def _guarded(self, request: Request, handler: Any, route: str) -> Response:
        """APIM (subscription key, rate limit, quota), then Rev.io's Basic auth, faults, handler."""
        self.total_calls += 1
        self.calls_by_route[f"{request.method} {route}"] += 1
        key = request.headers.get("ocp-apim-subscription-key")
        label = self.subscriptions.get(key or "")
        if label is None:
            self.auth_failures += 1
            return _json(401, {"statusCode": 401, "message": MSG_BAD_KEY if key else MSG_NO_KEY})
        state, refused = self.gate.enter(label)
        early = self._apim_refused(refused, label, request.headers.get("authorization"))
        if early is not None:
            self.gate.leave(state)
            return early
        return await self._faulted(
            label,
            state,
            lambda: handler(request),
            over_limit=self._over_limit,
            server_error=lambda: _json(500, rules.Refusal(500, "InternalServerError", "An error has occurred.").body()),
            malformed_status=None,
            refusals=(rules.Refusal,),
            refused=self._business_refusal,
        )

    def _apim_refused(self, refused: str | None, label: str, authorization: str | None) -> Response | None:
        """The answer for a call the gate refused, over its daily quota or with bad Basic
        credentials (in APIM's order: limits before Rev.io sees the call), else None."""
        if refused == "rate":
            return self._over_limit()
        if refused == "concurrency":
            return _json(429, {"statusCode": 429, "message": "Too many concurrent calls."})
        quota = self._quota_refused(label)
        if quota is not None:
            return quota
        if not self._basic_ok(authorization):
            self.auth_failures += 1
            return _json(
                401,
                rules.Refusal(401, "Unauthorized", "Authorization has been denied for this request.").body(),
                {"WWW-Authenticate": 'Basic realm="Rev.io"'},
            )
        return None

    def _business_refusal(self, refusal: rules.Refusal) -> Response:
        self.business_refusals += 1
        return _json(refusal.status, refusal.body())

    @staticmethod
    async def _body(request: Request, patch: bool = False) -> Any:
        if patch:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != _PATCH_TYPE:
                raise rules.Refusal(
                    415, "UnsupportedMediaType", f"PATCH requires Content-Type {_PATCH_TYPE}, got {ctype!r}"
                )
        try:
            return json.loads(await request.body())
        except ValueError:
            raise rules.Refusal(400, "BadRequest", "body is not valid JSON") from None

    @staticmethod
    def _created(request: Request, resource: str, new_id: int) -> Response:
        return _json(201, {"ok": True, "id": new_id}, {"Location": f"{request.base_url}v1/{resource}/{new_id}"})

    # -- API handlers -----------------------------------------------------------------------------

    def _lister(self, table: str, fields: frozenset[str]) -> Any:
        async def handler(request: Request) -> Response:
            query = request.query_params
            found = rules.search(self.book.candidates(table, query), query, fields)
            return _json(200, rules.page_of(found, request.query_params))

        return handler

    def _getter(self, table: str, what: str) -> Any:
        async def handler(request: Request) -> Response:
            record = self.book._get(getattr(self.book, table), request.path_params["id"], what)
            return _json(200, {"ok": True, **record})

        return handler

    async def _post_customer(self, request: Request) -> Response:
        # The API assigns customer ids: one sent is refused, never silently dropped.
        body = rules.check_fields(await self._body(request), rules.CUSTOMER_CREATE, refused=("customer_id",))
        return self._created(request, "Customers", self.book.add_customer(body)["customer_id"])

    async def _post_service(self, request: Request) -> Response:
        body = rules.check_fields(await self._body(request), rules.SERVICE_CREATE, refused=("service_id",))
        return self._created(request, "Services", self.book.add_service(body)["service_id"])

    async def _patch_service(self, request: Request) -> Response:
        record = self.book.patch_service(request.path_params["id"], await self._body(request, patch=True))
        return _json(200, {"ok": True, **record})

    async def _post_product(self, request: Request) -> Response:
        body = rules.check_fields(await self._body(request), rules.PRODUCT_CREATE, refused=("service_product_id",))
        record = self.book.add_service_product(body)
        return self._created(request, "ServiceProduct", record["service_product_id"])

    async def _put_product(self, request: Request) -> Response:
        record = self.book.put_service_product(request.path_params["id"], await self._body(request))
        return _json(200, {"ok": True, **record})

    async def _patch_product(self, request: Request) -> Response:
        record = self.book.patch_service_product(request.path_params["id"], await self._body(request, patch=True))
        return _json(200, {"ok": True, **record})

    async def _assign_inventory(self, request: Request) -> Response:
        record = self.book.assign_inventory(await self._body(request))
        return _json(200, {"ok": True, **record})

    def _build_app(self) -> Starlette:
        book = rules.RevBook

        def api(path: str, handler: Any, method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler, path)

            return Route(API_PREFIX + path, endpoint, methods=[method])

        routes = [
            api("/Customers", self._lister("customers", book.CUSTOMER_FIELDS), "GET"),
            api("/Customers", self._post_customer, "POST"),
            api("/Customers/{id}", self._getter("customers", "customer"), "GET"),
            api("/Services", self._lister("services", book.SERVICE_FIELDS), "GET"),
            api("/Services", self._post_service, "POST"),
            api("/Services/{id}", self._getter("services", "service"), "GET"),
            api("/Services/{id}", self._patch_service, "PATCH"),
            api("/ServiceProduct", self._lister("service_products", book.PRODUCT_FIELDS), "GET"),
            api("/ServiceProduct", self._post_product, "POST"),
            api("/ServiceProduct/{id}", self._getter("service_products", "service product"), "GET"),
            api("/ServiceProduct/{id}", self._put_product, "PUT"),
            api("/ServiceProduct/{id}", self._patch_product, "PATCH"),
            api("/InventoryItem", self._lister("inventory", book.INVENTORY_FIELDS), "GET"),
            api("/InventoryItem/assignService", self._assign_inventory, "POST"),
            api("/InventoryItem/{id}", self._getter("inventory", "inventory item"), "GET"),
            api(
                "/ServiceInventory",
                self._lister(
                    "service_inventory", frozenset({"service_id", "inventory_item_id", "identifier", "customer_id"})
                ),
                "GET",
            ),
            *admin_routes(self),
        ]
        return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})


async def _not_found(request: Request, exc: Exception) -> Response:
    """APIM's answer to a call that matches no operation of the API, whether the path is unknown
    or only the method is wrong: JSON 404 "Resource not found" [I: APIM's body, as its 401/429 are
    imitated above; that a method mismatch is a 404, not a 405, is APIM's documented-by-users
    behaviour, e.g. chunliu.me/2020/05/01/return-http-405-when-http-method-not-match-in-apim].
    Nothing reaches Rev.io, so there is no Rev.io error array and no auth check."""
    return _json(404, {"statusCode": 404, "message": "Resource not found"})


def run_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, simulator: RevioSimulator | None = None, **kwargs: Any
) -> ServerHandle:
    """Start a Rev.io simulator (a new one from `kwargs` unless `simulator` is given) in a
    background thread; `.simulator` is the RevioSimulator, `.base_url` the API base (…/v1)."""
    sim = simulator or RevioSimulator(**kwargs)
    return sim.run_in_thread(host, port)
