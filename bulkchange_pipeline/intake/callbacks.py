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
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..carriers import parse_callback
from ..carriers.redaction import redact_json
from ..engine.accounts import credential_env_key, sent_by
from ..store.callbacks import AUTHENTICATED_AS, credentials_names, request_owner, store_callback
from .api_models import PROBLEM_JSON, PROBLEMS, CallbackStored, Problem

MAX_CALLBACK_BYTES = 1_000_000


def callbacks_router(engine_for_request) -> APIRouter:
    """Routes under /callbacks; ``engine_for_request()`` returns the business database engine."""
    router = APIRouter(prefix="/callbacks", tags=["carrier callbacks"])

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
