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
import hmac
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..carriers import parse_callback
from ..carriers.redaction import redact_json
from ..engine.accounts import credential_env_key, sent_by
from ..store.callbacks import (
    AUTHENTICATED_AS,
    credentials_names,
    record_receiver_start,
    record_receiver_stop,
    request_owner,
    store_callback,
)
from ..store.db import utcnow
from .api_models import PROBLEM_JSON, PROBLEMS, CallbackStored, Problem

MAX_CALLBACK_BYTES = 1_000_000
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
                log.warning("callback receiver start not recorded yet (%s); retrying in %.0f s",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, START_RECORD_RETRY_SECONDS)
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

    @router.post("/thingspace", summary="ThingSpace CarrierService callback (one per device)",
                 response_model=CallbackStored,
                 responses={**{k: PROBLEMS[k] for k in (400, 401, 413)},
                            403: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Forbidden"}})
    async def thingspace(request: Request) -> JSONResponse:
        payload = await _json_body(request)
        engine: sa.Engine = engine_for_request()
        senders = await run_in_threadpool(_thingspace_senders, engine, payload)
        if not senders:
            raise HTTPException(status_code=401, detail="callback username/password do not match a ThingSpace account")
        for request_id in {o.request_id for o in parse_callback("thingspace", payload)}:
            owner = await run_in_threadpool(request_owner, engine, request_id)
            if owner is not None and not sent_by(senders, owner.credentials_name):
                raise HTTPException(status_code=403, detail=f"request {request_id} was not sent with the account these callback credentials belong to")
        return await run_in_threadpool(_store, engine, "thingspace", payload, senders)

    teal_doc = {"summary": "Teal operation-result callback (?requestId=...)", "response_model": CallbackStored,
                "responses": {k: PROBLEMS[k] for k in (400, 413, 503)}}

    @router.get("/teal", operation_id="teal_callback_get", **teal_doc)
    @router.post("/teal", operation_id="teal_callback_post", **teal_doc)
    async def teal(request: Request) -> JSONResponse:
        payload: dict[str, Any] = {}
        if request.method == "POST" and int(request.headers.get("content-length") or 0) > 0:
            body = await _json_body(request)
            payload = body if isinstance(body, dict) else {"body": body}
        payload = {**payload, "query": dict(request.query_params)}
        engine: sa.Engine = engine_for_request()
        outcomes = parse_callback("teal", payload)
        if not outcomes:
            raise HTTPException(status_code=400, detail="no requestId in the callback")
        owner = await run_in_threadpool(request_owner, engine, outcomes[0].request_id)
        if owner is None or owner.integration != "teal":
            raise HTTPException(status_code=503, detail="unknown request id (not recorded yet?); deliver it again later",
                                headers={"Retry-After": "5"})
        return await run_in_threadpool(_store, engine, "teal", payload)

    return router


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_CALLBACK_BYTES:
        raise HTTPException(status_code=413, detail="callback body too large")
    try:
        import json

        return json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(status_code=400, detail="callback body is not JSON") from None


def _thingspace_senders(engine: sa.Engine, payload: Any) -> list[str]:
    """Credentials names of the ThingSpace accounts whose callback username/password the payload
    carries (several if accounts share them; empty: not authenticated)."""
    if not isinstance(payload, dict):
        return []
    user, password = str(payload.get("username") or ""), str(payload.get("password") or "")
    if not user or not password:
        return []
    senders = []
    for name in _thingspace_accounts(engine):
        key = credential_env_key(name)
        want_user, want_pw = os.environ.get(f"{key}_CALLBACK_USERNAME"), os.environ.get(f"{key}_CALLBACK_PASSWORD")
        if want_user and want_pw and hmac.compare_digest(user, want_user) and hmac.compare_digest(password, want_pw):
            senders.append(name)
    return sorted(senders)


_ACCOUNTS_TTL_SECONDS = 30.0
_accounts_cache: dict[str, tuple[float, list[str]]] = {}


def _thingspace_accounts(engine: sa.Engine) -> list[str]:
    """Credentials names of the ThingSpace accounts, re-read at most every 30 s: a bulk change
    brings one callback per device, and the list changes only when an account is added."""
    key = str(engine.url)
    now = time.monotonic()
    hit = _accounts_cache.get(key)
    if hit is None or now - hit[0] > _ACCOUNTS_TTL_SECONDS:
        hit = (now, credentials_names(engine, "thingspace"))
        _accounts_cache[key] = hit
    return hit[1]


def _store(engine: sa.Engine, integration: str, payload: dict[str, Any], senders: list[str] | None = None) -> JSONResponse:
    outcomes = parse_callback(integration, payload)
    if not outcomes:
        raise HTTPException(status_code=400, detail=f"not a {integration} callback this system understands")
    clean = {k: v for k, v in redact_json(payload).items() if k != AUTHENTICATED_AS}  # never the sender's word
    if senders is not None:
        clean[AUTHENTICATED_AS] = senders
    stored = 0
    for key in sorted({(o.request_id, o.device_key) for o in outcomes}):
        stored += store_callback(engine, integration, key[0], key[1], clean)
    return JSONResponse({"stored": stored, "duplicates": len({(o.request_id, o.device_key) for o in outcomes}) - stored})
