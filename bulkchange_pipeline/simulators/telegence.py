"""A loopback simulator of the AT&T Telegence mobility APIs: line configuration (sync PATCH),
subscriber detail and list, and service activation (async, polled).

Subscriber list (telegence.yaml `subscriber_list`): request headers `current-page` and `page-size`
are both required (AMOP's TelegenceCommon always sends both [C]) and must be whole numbers in
range; no query parameter is accepted (the APEX overview names filters, but not their spelling);
the answer is a JSON array of `{subscriberNumber, subscriberNumberStatus, billingAccountNumber,
foundationAccountNumber}` (AMOP's TelegenceDeviceResponse fields [C], camelCase [I]) without
cancelled lines (AMOP: "Device List Api not return status C" [C]), with response headers
`page-total` and `refresh-timestamp` [C]. Its path, the lineconfig path without a number, is [I].

A path it does not serve (any method), or a method a served path does not take, answers after
the `app-id`/`app-secret` check like any call (the gateway authenticates first [I]): 404, or 405
with `Allow`, as JSON `{responseCode, responseMessage}` (one of Telegence's error shapes; which
one the real gateway sends there is [I]), never Starlette's plain text.

Paths, bodies and their sources: carriers/telegence_wire.py and
bulkchange_pipeline_tests/contracts/telegence.yaml; the rules (at least as strict as the real API,
one spelling per field, nothing filled in) are in `telegence_rules.py`.

It keeps lines by subscriber number, authenticates `app-id`/`app-secret`, refuses business errors
in Telegence's inconsistent shapes (rotating through `responseMessage`, `errorDescription`,
`Description` and plain text on purpose, so clients must read them all), answers eSIM lines'
SIM swaps with the vague NotFound `{"id", "description": "/service/"}`, and injects seeded faults
(latency, 5xx including the transient "A Resource Required By Service Is Not Available", timeouts,
malformed bodies, 429 bursts). Every state change is counted per subscriber number (line PATCH) or
ICCID (activation) in `applied_counts`, so tests can prove nothing was applied twice.

Activations: `POST .../serviceactivation` a JSON array of at most 200 lines (else 400); each line
gets a status id. The status GET answers `pending` for `activation_polls` polls, then `active`
with a new subscriber number (the line then exists), or `rejected` with an error for configured
ICCIDs/IMEIs, an unknown plan or a SIM already in use; configured "pending forever" ICCIDs/IMEIs
never leave pending. A line re-submitted while its SIM has an activation not (yet) reported
rejected gets that id back (idempotent replay [I]), so a client retry after a lost answer does not
activate twice.

Admin endpoints (no auth, loopback only): `POST /_sim/devices` (seed lines), `GET /_sim/devices/{msisdn
or iccid}`, `GET /_sim/stats`, `GET|POST /_sim/config`, `POST /_sim/reset`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import telegence_rules as rules
from .admin import admin_routes
from .base import SimulatorBase
from .base import json_response as _json
from .clock import Clock
from .faults import Fault, FaultConfig
from .server import ServerHandle

API_PREFIX = ""  # paths are sp/mobility/... under the host, as on apsapi.att.com:8082
LINE_PATH = "/sp/mobility/lineconfig/api/v1/service"
ACTIVATION_PATH = "/sp/mobilityactivations/api/v1/serviceactivation"  # [C] Itential AT&T Mobility adapter
DEFAULT_PLANS = frozenset({"IOTSOC1GB", "IOTSOC5GB"})
MAX_PAGE_SIZE = 500
_SET_KEYS = ("reject_iccids", "reject_imeis", "pending_iccids", "pending_imeis")


class TelegenceSimulator(SimulatorBase):
    """In-memory Telegence app account(s) behind a Starlette app (`.app`)."""

    API_PREFIX = API_PREFIX

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        *,
        rate_per_second: float = 0.0,
        max_concurrency: int = 0,
        faults: FaultConfig | None = None,
        activation_polls: int = 2,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(rate_per_second, max_concurrency, faults, clock)
        self.accounts: dict[str, str] = dict(accounts or {"demo-app": "demo-app-secret"})
        self.lines: dict[str, dict[str, Any]] = {}
        self.by_sim: dict[str, str] = {}
        self.scheduled: dict[str, list[tuple[dt.date, dict[str, str]]]] = {}
        self.activations: dict[str, rules.Activation] = {}
        self.activation_by_sim: dict[str, str] = {}
        self.activation_polls = activation_polls
        self.plans: frozenset[str] | None = DEFAULT_PLANS
        self.bans: frozenset[str] | None = None
        self.reject_iccids: set[str] = set()
        self.reject_imeis: set[str] = set()
        self.pending_iccids: set[str] = set()
        self.pending_imeis: set[str] = set()
        self.rejection_reason = "Equipment is not eligible for activation"
        self._numbers = itertools.count(0)
        self._shapes = itertools.cycle(rules.ERROR_SHAPES)
        self.reset_counters()
        self.app = self._build_app()

    # -- state ------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (line and activation state is kept)."""
        self._reset_base_counters()
        self.applied_counts: Counter[str] = Counter()
        self.calls_by_method: Counter[str] = Counter()
        self.activation_requests = 0
        self.activation_replays = 0
        self.status_polls = 0

    def seed_devices(self, devices: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace lines (see `telegence_rules.line_record` for the accepted names)."""
        today = self.clock.now().date()
        n = 0
        for seed in devices:
            record = rules.line_record(seed, today)
            self.lines[record["subscriberNumber"]] = record
            if record["sim"]:
                self.by_sim[record["sim"]] = record["subscriberNumber"]
            n += 1
        return n

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change limits (`rate_per_second`, `max_concurrency`), faults (FaultConfig fields),
        `accounts` ({app_id: secret}), `plans`/`bans` (lists; None accepts any),
        `activation_polls`, `rejection_reason`, or the ICCID/IMEI sets `reject_iccids`,
        `reject_imeis`, `pending_iccids`, `pending_imeis` (pending = never completes)."""
        for key, value in changes.items():
            if key == "accounts":
                self.accounts = dict(value)
            elif key in ("plans", "bans"):
                setattr(self, key, None if value is None else frozenset(map(str, value)))
            elif key == "activation_polls":
                self.activation_polls = int(value)
            elif key == "rejection_reason":
                self.rejection_reason = str(value)
            elif key in _SET_KEYS:
                setattr(self, key, set(map(str, value)))
            else:
                self._configure_base(key, value)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {
            **self._limits_config(),
            "accounts": sorted(self.accounts),
            "plans": None if self.plans is None else sorted(self.plans),
            "bans": None if self.bans is None else sorted(self.bans),
            "activation_polls": self.activation_polls,
            "rejection_reason": self.rejection_reason,
            **{k: sorted(getattr(self, k)) for k in _SET_KEYS},
            **self.faults.config.as_dict(),
        }

    def device(self, key: str) -> dict[str, Any] | None:
        """A line by subscriber number or ICCID (due scheduled changes applied first)."""
        number = key if key in self.lines else self.by_sim.get(key)
        if number is None:
            return None
        self._apply_due(number)
        return self.lines.get(number)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks."""
        states = Counter(self._state(a) for a in self.activations.values())
        return {
            **self._base_stats(),
            "calls_by_method": dict(self.calls_by_method),
            "activation_requests": self.activation_requests,
            "activation_replays": self.activation_replays,
            "status_polls": self.status_polls,
            "activations": dict(states),
            "devices": len(self.lines),
            **self._applied_stats(self.applied_counts),
        }

    # -- request plumbing -------------------------------------------------------------------------

    def _refuse(self, refusal: rules.Refusal) -> Response:
        """A business refusal in the next of Telegence's error shapes (or its fixed body)."""
        self.business_refusals += 1
        if refusal.body is not None:
            return _json(refusal.status, refusal.body)
        content, media = rules.error_body(next(self._shapes), refusal.message, refusal.status)
        return Response(content, refusal.status, media_type=media)

    def _server_error(self) -> Response:
        """An injected 5xx: Telegence's "resource" message or a plain gateway error, alternately."""
        if self.faults.counts.get(Fault.ERROR_5XX.value, 0) % 2:
            content, media = rules.error_body("responseMessage", rules.RESOURCE_UNAVAILABLE, 503)
            return Response(content, 503, media_type=media)
        return Response("Internal Server Error", 500, media_type="text/plain")

    async def _guarded(self, request: Request, handler: Any) -> Response:
        """Auth, limits and faults around one API call, then the handler."""
        self.total_calls += 1
        self.calls_by_method[request.method] += 1
        app_id = request.headers.get("app-id")
        secret = request.headers.get("app-secret")
        if not app_id or not secret:
            self.auth_failures += 1
            return _json(401, {"responseMessage": "app-id and app-secret headers are required"})
        if self.accounts.get(app_id) != secret:
            self.auth_failures += 1
            return _json(401, {"errorDescription": "Invalid app-id or app-secret"})
        state, refused = self.gate.enter(app_id)
        if refused:
            self.gate.leave(state)
            return self._over_limit({"Retry-After": "1"})
        return await self._faulted(
            app_id, state, lambda: handler(request), over_limit=self._over_limit, server_error=self._server_error
        )

    def _over_limit(self, headers: Mapping[str, str] | None = None) -> Response:
        """429; only the gate's own refusal states a wait (an injected burst states none unless
        `burst_retry_after_seconds` is set)."""
        self.over_limit_answers += 1
        return _json(429, {"responseMessage": "Too many requests"}, headers)

    def _apply_due(self, number: str) -> None:
        pending = self.scheduled.get(number)
        if not pending:
            return
        today = self.clock.now().date()
        self.scheduled[number] = [(w, e) for w, e in pending if w > today]
        for when, edits in pending:
            if when <= today:
                self._set(number, edits)

    def _set(self, number: str, edits: Mapping[str, str]) -> bool:
        """Write edits to a line; True if anything changed."""
        record = self.lines[number]
        changed = {k: v for k, v in edits.items() if record.get(k) != v}
        if not changed:
            return False
        if "sim" in changed:
            self.by_sim.pop(str(record.get("sim") or ""), None)
            self.by_sim[changed["sim"]] = number
        if "subscriberStatus" in changed:
            record["statusEffectiveDate"] = self.clock.now().date().isoformat()
        record.update(changed)
        return True

    # -- line configuration -----------------------------------------------------------------------

    async def _get_line(self, request: Request) -> Response:
        number = request.path_params["number"]
        record = self.device(number) if number in self.lines else None
        if record is None:
            return self._refuse(rules.Refusal(404, f"Subscriber {number} not found"))
        return _json(200, rules.detail(record))

    async def _patch_line(self, request: Request) -> Response:
        number = request.path_params["number"]
        record = self.device(number) if number in self.lines else None
        if record is None:
            return self._refuse(rules.Refusal(404, f"Subscriber {number} not found"))
        body = await self._body(request)
        today = self.clock.now().date()
        try:
            edits, when = rules.validate_patch(body, record, plans=self.plans, today=today, sim_in_use=self._sim_in_use)
        except rules.Refusal as refusal:
            return self._refuse(refusal)
        if when is None:
            if self._set(number, edits):
                self.applied_counts[number] += 1
        else:
            pending = self.scheduled.setdefault(number, [])
            if (when, edits) not in pending:
                pending.append((when, edits))
                self.applied_counts[number] += 1
        return _json(200, rules.detail(record))

    async def _list_lines(self, request: Request) -> Response:
        """Subscriber list (module docstring): both paging headers required, no query."""
        try:
            page, size = rules.list_paging(request.headers, request.query_params, MAX_PAGE_SIZE)
        except rules.Refusal as refusal:
            return self._refuse(refusal)
        for number in [n for n, due in self.scheduled.items() if due]:
            self._apply_due(number)  # a suspension that took effect shows
        numbers = sorted(n for n, r in self.lines.items() if r["subscriberStatus"] != "C")
        chunk = numbers[(page - 1) * size : page * size]
        total = max(1, -(-len(numbers) // size))
        headers = {"page-total": str(total), "refresh-timestamp": self.clock.now().isoformat()}
        return _json(200, [rules.list_item(self.lines[n]) for n in chunk], headers)

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """A path or method not served: Telegence's JSON error after auth (module docstring).
        Under /_sim: the admin endpoints' JSON."""
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        allow = {"Allow": exc.headers["Allow"]} if isinstance(exc, HTTPException) and exc.headers else None
        if request.url.path.startswith("/_sim"):
            return _json(status, {"error": f"no admin endpoint {request.method} {request.url.path}"}, allow)

        async def answer(req: Request) -> Response:
            what = "Method not allowed" if status == 405 else "Resource not found"
            content, media = rules.error_body("responseMessage", f"{what}: {req.method} {req.url.path}", status)
            return Response(content, status, allow, media)

        return await self._guarded(request, answer)

    def _sim_in_use(self, sim: str) -> bool:
        act = self.activations.get(self.activation_by_sim.get(sim, ""))
        return sim in self.by_sim or (act is not None and self._state(act) != "rejected")

    # -- activation -------------------------------------------------------------------------------

    def _state(self, act: rules.Activation) -> str:
        if act.outcome == "forever" or act.polls <= self.activation_polls:
            return "pending"
        return "active" if act.outcome == "active" else "rejected"

    def _new_activation(self, chars: dict[str, str]) -> rules.Activation:
        sim, imei = chars["sim"], chars["IMEI"]
        act = rules.Activation(str(uuid.uuid4()), chars, "active")
        if sim in self.reject_iccids or imei in self.reject_imeis:
            act.outcome, act.reason = "rejected", self.rejection_reason
        elif self.plans is not None and chars["singleUserCode"] not in self.plans:
            act.outcome, act.reason = "rejected", f"Invalid singleUserCode {chars['singleUserCode']}"
        elif sim in self.by_sim:
            act.outcome, act.reason = "rejected", f"sim {sim} is already in use on a subscriber"
        elif sim in self.pending_iccids or imei in self.pending_imeis:
            act.outcome = "forever"
        self.activations[act.id] = act
        self.activation_by_sim[sim] = act.id
        self.applied_counts[sim] += 1
        return act

    async def _post_activation(self, request: Request) -> Response:
        self.activation_requests += 1
        try:
            lines = rules.validate_activation_request(await self._body(request), self.bans)
        except rules.Refusal as refusal:
            return self._refuse(refusal)
        answer = []
        for chars in lines:
            replay = self.activations.get(self.activation_by_sim.get(chars["sim"], ""))
            if replay is None or self._state(replay) == "rejected":
                act = self._new_activation(chars)  # a rejected line may be submitted again
            else:
                act = replay
                self.activation_replays += 1
            answer.append({"id": act.id, "href": f"{ACTIVATION_PATH}/{act.id}", "interactionStatus": "Received"})
        return _json(200, answer)

    async def _get_activation(self, request: Request) -> Response:
        act = self.activations.get(request.path_params["id"])
        if act is None:
            return self._refuse(rules.Refusal(404, f"Activation {request.path_params['id']} not found"))
        self.status_polls += 1
        act.polls += 1
        state = self._state(act)
        if state == "active" and act.subscriber_number is None:
            act.subscriber_number = self._activate_line(act)
        return _json(200, rules.activation_status(act, state))

    def _activate_line(self, act: rules.Activation) -> str:
        """Create the line an activation brings into service, with a fresh subscriber number."""
        while True:
            number = rules.make_subscriber_numbers(1, next(self._numbers), prefix="469777")[0]
            if number not in self.lines:
                break
        self.seed_devices(
            [
                {
                    "subscriberNumber": number,
                    "sim": act.chars["sim"],
                    "BLIMEI": act.chars["IMEI"],
                    "singleUserCode": act.chars["singleUserCode"],
                    "serviceZipCode": act.chars["serviceZipCode"],
                    "ban": act.chars["ban"],
                }
            ]
        )
        return number

    def _build_app(self) -> Starlette:
        def api(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                return await self._guarded(request, handler)

            return endpoint

        routes = [
            Route(LINE_PATH, api(self._list_lines), methods=["GET"]),
            Route(LINE_PATH + "/{number}", api(self._get_line), methods=["GET"]),
            Route(LINE_PATH + "/{number}", api(self._patch_line), methods=["PATCH"]),
            Route(ACTIVATION_PATH, api(self._post_activation), methods=["POST"]),
            Route(ACTIVATION_PATH + "/{id}", api(self._get_activation), methods=["GET"]),
            *admin_routes(self),
        ]
        return Starlette(routes=routes, exception_handlers={404: self._no_route, 405: self._no_route})


def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: TelegenceSimulator | None = None,
    accounts: Mapping[str, str] | None = None,
    faults: FaultConfig | None = None,
) -> ServerHandle:
    """Start a Telegence simulator (a new one unless `simulator` is given) in a background thread.
    The handle's `.simulator` is the TelegenceSimulator, `.base_url` the host root."""
    sim = simulator or TelegenceSimulator(accounts, faults=faults)
    return sim.run_in_thread(host, port)
