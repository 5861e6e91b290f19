"""API-key authentication for the intake API: ``Authorization: Bearer <key>`` or ``X-API-Key``.

The key resolves to one tenant, and every handler works inside that tenant only. Declared with
FastAPI's security classes so the OpenAPI document lists both schemes and the docs page offers
an "Authorize" button.

Roles (``domain.approval.Role``): every route that changes something takes ``submitter_caller``
or ``approver_caller`` instead of ``authenticated_caller``; a key without the role is answered
403 with the rule. ``ROLE_CHECKS`` lists them, so a test can walk the app's routes and fail on a
mutating route that has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..domain.approval import Role
from ..store.api_keys import ApiKeyIdentity, identify_key
from ..store.approvals import Actor
from .deps import request_engine

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key> (bulkchange api-key create)")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key in an X-API-Key header")


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its tenant, a label for audit fields (created_by, logs), its roles."""

    tenant_id: int
    key_id: int
    label: str
    roles: frozenset[Role] = frozenset()

    @property
    def actor(self) -> Actor:
        """Who it is for the four-eyes rule: the key by its id (two keys named alike are two people)."""
        return Actor(self.label, f"api-key#{self.key_id}")


def caller_of(identity: ApiKeyIdentity) -> Caller:
    """The Caller a live key is (the API's and the console's one label for audit fields)."""
    return Caller(identity.tenant_id, identity.key_id, f"api-key:{identity.name}", identity.roles)


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


_ROLE_DOES = {
    Role.SUBMITTER: "submit bulk changes and cancel, retry, resume or release them, or change notification subscriptions",
    Role.APPROVER: "approve or reject bulk changes awaiting approval",
}


def role_refusal(caller: Caller, role: Role) -> str | None:
    """Why this caller may not act in ``role`` (the 403's detail), or None."""
    if role in caller.roles:
        return None
    has = ", ".join(sorted(r.value for r in caller.roles)) or "no role"
    return (
        f"this API key has the role {has}; to {_ROLE_DOES[role]} it needs the {role.value} role "
        f"(`bulkchange api-key create --role {role.value}`)"
    )


def _require(caller: Caller, role: Role) -> Caller:
    if reason := role_refusal(caller, role):
        raise HTTPException(status_code=403, detail=reason)
    return caller


async def submitter_caller(caller: Caller = Depends(authenticated_caller)) -> Caller:
    """The dependency of every route that submits or changes a bulk change or a subscription."""
    return _require(caller, Role.SUBMITTER)


async def approver_caller(caller: Caller = Depends(authenticated_caller)) -> Caller:
    """The dependency of approve and reject (the four-eyes rule itself is checked by the store)."""
    return _require(caller, Role.APPROVER)


ROLE_CHECKS = (submitter_caller, approver_caller)

__all__ = [
    "ROLE_CHECKS",
    "Caller",
    "approver_caller",
    "authenticated_caller",
    "bearer_scheme",
    "caller_of",
    "header_scheme",
    "identify_caller",
    "role_refusal",
    "submitter_caller",
]
