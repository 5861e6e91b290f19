"""Carrier callback endpoints: authenticate, redact, store once, answer 2xx fast.

Nothing is applied here: a reconcile run (``async_results_sensor`` -> ``reconcile_async_job``)
applies stored callbacks to device rows. Keeping the endpoint to "check and store" makes it fast
and lets the carrier's duplicates, late and out-of-order deliveries be settled in one place.

Authentication:
- ThingSpace echoes the username/password registered with the callback in every body; they must
  match ``BULKCHANGE_CRED_<NAME>_CALLBACK_USERNAME`` / ``_CALLBACK_PASSWORD`` of one of the
  ThingSpace service providers. They are removed from the payload before it is stored. A callback
  speaks only for the account(s) whose credentials it carries: one naming a request id recorded
  for another account is refused (403), and the names of the accounts it authenticated as are
  stored with it (``_authenticated_as``), so reconcile ignores it for any other account's bulk
  change. The callback may arrive before its request id is recorded, so ownership cannot always
  be checked here; reconcile checks it then.
- Teal's callback only names a request id; it is accepted only for a request id we issued. One
  not known yet (the callback beat our own write) is answered 503 so Teal delivers it again; the
  operation-result poll is the fallback either way.

Hostile input: the routes are open to anyone, so whatever they read (the body, Teal's query) goes
through the intake's own JSON loading and value check (``parsing.load_json``, ``check_values``:
nesting, NUL, lone surrogates, numbers no column holds) before anything uses it, and request ids
and device ids longer than the columns are refused. Malformed input is answered 4xx with a problem
document and logged as one line (``_refusals_logged``), never a 500 with a traceback. Reading
the body and query is ``callback_body``; matching ThingSpace's credentials is ``callback_auth``.

Receiver starts: the router's lifespan records each start of the app serving these routes
(``store.callbacks.record_receiver_start``) before it serves, and its clean stop. Callbacks sent
while the receiver was down are refused or lost, so ``async_results_sensor`` polls the rows sent
before its latest start once, right away, instead of after ``poll_after_seconds``. If the
database cannot be written at startup the app still starts (it answers 5xx to callbacks until the
database is back, and carriers deliver again) and the start is recorded, with its original time,
as soon as the database accepts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import settings
from ..carriers import AsyncOutcome
from ..carriers.redaction import redact_json
from ..store.callbacks import (
    AUTHENTICATED_AS,
    MAX_DEVICE_KEY,
    MAX_REQUEST_ID,
    record_receiver_start,
    record_receiver_stop,
    request_owner,
    store_callback,
)
from ..store.db import utcnow
from .api_models import PROBLEM_JSON, PROBLEMS, ApiProblem, CallbackStored, Problem
from .callback_auth import thingspace_senders
from .callback_body import MALFORMED, NO_BODY, callback_outcomes, check_thingspace_ids, check_value, json_body
from .parsing import shown

START_RECORD_RETRY_SECONDS = 5.0
log = logging.getLogger(__name__)


def receiver_lifespan(engine_for_request):
    """Lifespan of any app that includes ``callbacks_router``: record this receiver's start (and
    its clean stop) in the business database. The start time is taken before the first callback
    can be served; rows sent before it may have lost their callbacks and are polled once."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        started_at = utcnow()
        process = f"{socket.gethostname()}:{os.getpid()}"
        recorded: list[int] = []

        async def record() -> bool:
            try:
                start = await run_in_threadpool(record_receiver_start, engine_for_request(), process, started_at)
            except Exception as exc:  # noqa: BLE001 - the receiver serves anyway; the start is retried
                log.warning(
                    "callback receiver start not recorded yet (%s); retrying in %.0f s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    START_RECORD_RETRY_SECONDS,
                )
                return False
            recorded.append(start.id)
            return True

        async def retry_until_recorded() -> None:
            while True:
                await asyncio.sleep(START_RECORD_RETRY_SECONDS)
                if await record():
                    return

        retry = None if await record() else asyncio.create_task(retry_until_recorded())
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
            if recorded:
                try:
                    await run_in_threadpool(record_receiver_stop, engine_for_request(), recorded[0])
                except Exception as exc:  # noqa: BLE001 - only informative
                    log.warning("callback receiver stop not recorded: %s", exc)

    return lifespan


def callbacks_router(engine_for_request) -> APIRouter:
    """Routes under /callbacks; ``engine_for_request()`` returns the business database engine."""
    router = APIRouter(prefix="/callbacks", tags=["carrier callbacks"], lifespan=receiver_lifespan(engine_for_request))

    @router.post(
        "/thingspace",
        summary="ThingSpace CarrierService callback (one per device)",
        response_model=CallbackStored,
        openapi_extra=_json_body_doc(THINGSPACE_BODY, required=True),
        responses={
            **{k: PROBLEMS[k] for k in (400, 401, 413, 415)},
            403: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Forbidden"},
        },
    )
    async def thingspace(request: Request) -> JSONResponse:
        return await _refusals_logged("thingspace", _thingspace(request, engine_for_request))

    def teal_doc(method: str) -> dict[str, Any]:
        statuses = (400, 413, 415) if method == "POST" else (400,)
        extra: dict[str, Any] = {"parameters": [TEAL_REQUEST_ID]}
        if method == "POST":
            extra.update(_json_body_doc(TEAL_BODY, required=False))
        return {
            "summary": "Teal operation-result callback (?requestId=...)",
            "response_model": CallbackStored,
            "operation_id": f"teal_callback_{method.lower()}",
            "openapi_extra": extra,
            "responses": {**{k: PROBLEMS[k] for k in statuses}, 503: RETRY_LATER},
        }

    @router.get("/teal", **teal_doc("GET"))
    @router.post("/teal", **teal_doc("POST"))
    async def teal(request: Request) -> JSONResponse:
        return await _refusals_logged("teal", _teal(request, engine_for_request))

    return router


# --- what the routes document (OpenAPI) -----------------------------------------------------------

THINGSPACE_BODY: dict[str, Any] = {
    "type": "object",
    "description": "A CarrierService message for one device, with the username/password registered with the callback "
    "(they are checked and removed before it is stored). Other fields are kept as sent.",
    "required": ["username", "password", "requestId"],
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "requestId": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID},
        "deviceIds": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"kind": {"type": "string"}, "id": {"type": "string", "maxLength": MAX_DEVICE_KEY}},
            },
        },
        "status": {"type": "string"},
        "deviceResponse": {"type": "object", "description": "Success: one <action>Response object"},
        "faultResponse": {
            "type": "object",
            "properties": {"faultcode": {"type": "string"}, "faultstring": {"type": "string"}},
        },
    },
}
TEAL_BODY: dict[str, Any] = {
    "type": "object",
    "description": "Optional: Teal's callback names its request id in the query; a requestId here is read too.",
    "properties": {"requestId": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID}},
}
TEAL_REQUEST_ID: dict[str, Any] = {
    "name": "requestId",
    "in": "query",
    "required": False,
    "description": "The request id Teal announces a result for",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID},
}
RETRY_LATER: dict[str, Any] = {
    "model": Problem,
    "content": {PROBLEM_JSON: {}},
    "description": "Unknown request id (the callback may have beaten our own write): deliver it again later",
    "headers": {"Retry-After": {"required": True, "description": "Seconds to wait", "schema": {"type": "string"}}},
}


def _json_body_doc(schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


# --- the routes -----------------------------------------------------------------------------------


async def _refusals_logged(integration: str, answer: Awaitable[JSONResponse]) -> JSONResponse:
    """The route's answer; a refusal (4xx, or 503 for a request id not known yet) is logged as one
    line, and answered as a problem document by the app's handlers, never with a traceback. The
    routes are open to anyone: the detail is logged with ``%r`` so that no sent text (line breaks,
    lone surrogates) can break or forge log lines."""
    try:
        return await answer
    except (ApiProblem, HTTPException) as exc:
        status = exc.status if isinstance(exc, ApiProblem) else exc.status_code
        log.log(
            logging.INFO if status == 503 else logging.WARNING,
            "%s callback refused (%s): %r",
            integration,
            status,
            str(exc.detail),
        )
        raise


async def _thingspace(request: Request, engine_for_request: Callable[[], sa.Engine]) -> JSONResponse:
    if request.query_params:  # ThingSpace posts a body and nothing else; a query would be ignored unseen
        raise ApiProblem(400, "the ThingSpace callback takes no query parameters", title=MALFORMED)
    payload = await json_body(request)
    if payload is NO_BODY:
        raise ApiProblem(400, "the callback body is empty: ThingSpace sends a JSON object", title=MALFORMED)
    if not isinstance(payload, dict):
        raise ApiProblem(400, "the callback body must be a JSON object", title=MALFORMED)
    check_thingspace_ids(payload)
    engine: sa.Engine = engine_for_request()
    senders = await run_in_threadpool(thingspace_senders, engine, payload)
    if not senders:
        raise ApiProblem(401, "callback username/password do not match a ThingSpace account")
    outcomes = callback_outcomes("thingspace", payload)
    for request_id in sorted({o.request_id for o in outcomes}):
        owner = await run_in_threadpool(request_owner, engine, request_id)
        if owner is not None and not settings.same_account(senders, owner.credentials_name):
            raise ApiProblem(
                403, f"request {request_id} was not sent with the account these callback credentials belong to"
            )
    return await run_in_threadpool(_store, engine, "thingspace", payload, outcomes, senders)


async def _teal(request: Request, engine_for_request: Callable[[], sa.Engine]) -> JSONResponse:
    payload: dict[str, Any] = {}
    if request.method == "POST":
        body = await json_body(request)
        if body is not NO_BODY:
            payload = body if isinstance(body, dict) else {"body": body}
    query = dict(request.query_params)
    if repeated := [k for k in query if len(request.query_params.getlist(k)) > 1]:  # the last would win silently
        raise ApiProblem(
            400, f"the query parameter {shown(repeated[0], 40)!r} is given more than once", title=MALFORMED
        )
    check_value(query, "the query")
    payload = {**payload, "query": query}
    outcomes = callback_outcomes("teal", payload)
    engine: sa.Engine = engine_for_request()
    owner = await run_in_threadpool(request_owner, engine, outcomes[0].request_id)
    if owner is None or owner.integration != "teal":
        raise HTTPException(
            status_code=503,
            detail="unknown request id (not recorded yet?); deliver it again later",
            headers={"Retry-After": "5"},
        )
    return await run_in_threadpool(_store, engine, "teal", payload, outcomes)


def _store(
    engine: sa.Engine,
    integration: str,
    payload: dict[str, Any],
    outcomes: list[AsyncOutcome],
    senders: list[str] | None = None,
) -> JSONResponse:
    clean = {k: v for k, v in redact_json(payload).items() if k != AUTHENTICATED_AS}  # never the sender's word
    if senders is not None:
        clean[AUTHENTICATED_AS] = senders
    keys = sorted({(o.request_id, o.device_key) for o in outcomes})
    stored = sum(store_callback(engine, integration, request_id, device_key, clean) for request_id, device_key in keys)
    return JSONResponse({"stored": stored, "duplicates": len(keys) - stored})
