"""API-key authentication for the intake API: ``Authorization: Bearer <key>`` or ``X-API-Key``.

The key resolves to one tenant, and every handler works inside that tenant only. Declared with
FastAPI's security classes so the OpenAPI document lists both schemes and the docs page offers
an "Authorize" button.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..store.api_keys import ApiKeyIdentity, identify_key
from .deps import request_engine

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key> (bulkchange api-key create)")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key in an X-API-Key header")


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its tenant, and a label for audit fields (created_by, logs)."""

    tenant_id: int
    key_id: int
    label: str


def caller_of(identity: ApiKeyIdentity) -> Caller:
    """The Caller a live key is (the API's and the console's one label for audit fields)."""
    return Caller(identity.tenant_id, identity.key_id, f"api-key:{identity.name}")


def identify_caller(engine: sa.Engine, key: str) -> Caller | None:
    """The Caller a presented key is, or None (unknown, malformed or revoked): the API's check, and
    the console's sign-in."""
    identity = identify_key(engine, key.strip())
    return None if identity is None else caller_of(identity)


async def authenticated_caller(
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    header_key: str | None = Depends(header_scheme),
    engine: sa.Engine = Depends(request_engine),
) -> Caller:
    """The dependency every intake route has: the presented key resolved to a Caller, or 401."""
    key = bearer.credentials if bearer is not None else header_key
    if not key:
        raise HTTPException(
            status_code=401,
            detail="no API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (create one with `bulkchange api-key create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = await run_in_threadpool(identify_caller, engine, key)
    if caller is None:
        raise HTTPException(
            status_code=401,
            detail="the API key is not valid (unknown or revoked); ask for a new one with `bulkchange api-key create`",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return caller


__all__ = ["Caller", "authenticated_caller", "bearer_scheme", "caller_of", "header_scheme", "identify_caller"]
