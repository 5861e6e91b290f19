"""Per-tenant API keys for the intake HTTP API, stored hashed (DESIGN 9).

A key is shown once, when it is created; the database keeps only its SHA-256 (hex). A key is a
256-bit random token, so a plain (unsalted, fast) hash is enough: there is nothing to guess by
brute force, and looking the key up *by its hash* means the comparison never runs over the secret
itself, so response timing cannot leak how much of a guessed key was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from ..domain.approval import Role, parse_roles
from .db import run_transaction, utcnow
from .schema import api_key, tenant

KEY_PREFIX = "bc_"
KEY_BYTES = 24  # token_urlsafe(24) is 32 characters
MAX_KEY_LENGTH = 128  # anything longer is not one of ours; refused before hashing


@dataclass(frozen=True)
class ApiKeyIdentity:
    """Who a presented key is: its tenant, the key's id and name (for audit fields) and its roles."""

    key_id: int
    tenant_id: int
    name: str
    roles: frozenset[Role] = field(default_factory=frozenset)  # none unless read with the key


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    tenant_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    roles: str = ""  # comma-separated, as stored


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def roles_text(roles: Iterable[Role]) -> str:
    """Roles as stored: comma-separated, in a fixed order."""
    chosen = set(roles)
    return ",".join(r.value for r in Role if r in chosen)


def create_api_key(
    engine: sa.Engine, tenant_id: int, name: str, roles: Iterable[Role | str] = (Role.SUBMITTER,)
) -> str:
    """Create a key for ``tenant_id`` with ``roles`` (default: submitter) and return its plaintext:
    the only time it is available."""
    stored = roles_text(parse_roles(r.value if isinstance(r, Role) else r for r in roles))
    name = name.strip()
    if not name:
        raise ValueError("an API key needs a name (who or what uses it, e.g. 'ops' or 'portal')")
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)

    def work(conn: sa.Connection) -> None:
        if conn.execute(sa.select(tenant.c.id).where(tenant.c.id == tenant_id)).first() is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        conn.execute(
            sa.insert(api_key).values(
                tenant_id=tenant_id, name=name[:200], key_hash=hash_key(key), created_at=utcnow(), roles=stored
            )
        )

    run_transaction(engine, work)
    return key


def identify_key(engine: sa.Engine, key: str | None) -> ApiKeyIdentity | None:
    """The live (not revoked) key matching ``key``, or None for a missing, malformed or unknown one."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
        return None
    digest = hash_key(key)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_key.c.id, api_key.c.tenant_id, api_key.c.name, api_key.c.key_hash, api_key.c.roles).where(
                api_key.c.key_hash == digest, api_key.c.revoked_at.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return ApiKeyIdentity(row.id, row.tenant_id, row.name, stored_roles(row.roles))


def stored_roles(text: str | None) -> frozenset[Role]:
    """The roles of a stored key; an unreadable value grants nothing (read only is the safe side)."""
    try:
        return parse_roles([text or ""])
    except ValueError:
        return frozenset({Role.VIEWER})


def tenant_for_key(engine: sa.Engine, key: str | None) -> int | None:
    """The tenant a presented key belongs to, or None (unknown, malformed or revoked)."""
    identity = identify_key(engine, key)
    return identity.tenant_id if identity else None


def revoke_api_key(engine: sa.Engine, tenant_id: int, key_id: int) -> bool:
    """Revoke one of this tenant's keys; False when it has no such live key."""
    stmt = (
        sa.update(api_key)
        .where(api_key.c.id == key_id, api_key.c.tenant_id == tenant_id, api_key.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return run_transaction(engine, lambda conn: conn.execute(stmt).rowcount) == 1


def list_api_keys(engine: sa.Engine, tenant_id: int) -> list[ApiKeyInfo]:
    """This tenant's keys (never their hashes), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                api_key.c.id,
                api_key.c.tenant_id,
                api_key.c.name,
                api_key.c.created_at,
                api_key.c.revoked_at,
                api_key.c.roles,
            )
            .where(api_key.c.tenant_id == tenant_id)
            .order_by(api_key.c.id)
        )
        return [ApiKeyInfo(*r) for r in rows]
