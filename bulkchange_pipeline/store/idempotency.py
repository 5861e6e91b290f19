"""One idempotency key, one thing: a tenant's key is held by ONE bulk change or ONE submission.

Both create paths (``bulk_changes.insert_bulk_change`` for a bulk change sent with a key,
``submissions.create_submission`` for a split) claim the key in the ``idempotency_key`` table
inside their own transaction, and the table's unique constraint on (tenant, key) decides who has
it. So two concurrent requests with one key can never both commit, whatever their kinds: on
PostgreSQL the second claim waits for the first transaction and then fails, on SQLite writers
are serialised. The loser reads the holder (``holder_for``): the same request (fingerprint) gets
the stored answer, anything else is an ``IdempotencyConflict`` naming the holder (DESIGN R7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from .schema import bulk_change, idempotency_key, submission

__all__ = ["IdempotencyConflict", "KeyHolder", "claim_key", "holder_for", "key_holder"]

Kind = Literal["bulk_change", "submission"]


class IdempotencyConflict(Exception):
    """An idempotency key this tenant already used for a different request (Stripe's semantics).

    Answering the old bulk change would tell the caller that a request it never sent was accepted;
    so the submission is refused and the message names what holds the key: a bulk change
    (``bulk_change_id``) or a submission (``submission_id``; ``bulk_change_id`` is then None).
    """

    def __init__(self, key: str, bulk_change_id: int | None, *, submission_id: int | None = None) -> None:
        self.key, self.bulk_change_id, self.submission_id = key, bulk_change_id, submission_id
        what = f"submission {submission_id}" if submission_id is not None else f"bulk change {bulk_change_id}"
        super().__init__(
            f"idempotency key {key[:80]!r} was already used for {what} with a different request "
            "(devices, values, change type, service provider or processChanges differ): send this request with a new "
            f"key, or resend {what}'s request unchanged to get it back"
        )


@dataclass(frozen=True)
class KeyHolder:
    kind: Kind
    id: int
    fingerprint: str | None  # of the request stored with the key (None: stored before revision 0007)


def claim_key(
    conn: sa.Connection,
    tenant_id: int,
    key: str,
    *,
    bulk_change_id: int | None = None,
    submission_id: int | None = None,
) -> None:
    """Claim ``key`` for the bulk change or submission being inserted, in the caller's transaction.
    Raises ``IntegrityError`` when the key is already held (or being claimed by a concurrent
    transaction that then commits): the caller answers with ``holder_for``."""
    assert (bulk_change_id is None) != (submission_id is None), "a key is claimed by exactly one thing"
    conn.execute(
        sa.insert(idempotency_key).values(
            tenant_id=tenant_id, key=key, bulk_change_id=bulk_change_id, submission_id=submission_id
        )
    )


def key_holder(conn: sa.Connection, tenant_id: int, key: str) -> KeyHolder | None:
    """What holds this tenant's ``key`` (with its request fingerprint), or None when it is free."""
    row = conn.execute(
        sa.select(
            idempotency_key.c.bulk_change_id,
            idempotency_key.c.submission_id,
            bulk_change.c.request_fingerprint.label("bc_fp"),
            submission.c.request_fingerprint.label("sub_fp"),
        )
        .select_from(
            idempotency_key.outerjoin(bulk_change, bulk_change.c.id == idempotency_key.c.bulk_change_id).outerjoin(
                submission, submission.c.id == idempotency_key.c.submission_id
            )
        )
        .where(idempotency_key.c.tenant_id == tenant_id, idempotency_key.c.key == key)
    ).first()
    if row is None:
        return None
    if row.submission_id is not None:
        return KeyHolder("submission", int(row.submission_id), row.sub_fp)
    return KeyHolder("bulk_change", int(row.bulk_change_id), row.bc_fp)


def holder_for(
    engine: sa.Engine | sa.Connection, tenant_id: int, key: str, fingerprint: str | None, kind: Kind
) -> int | None:
    """The id of the ``kind`` (bulk change or submission) holding ``key`` for the same request, or
    None when the key is free. ``IdempotencyConflict`` naming the holder when it is the other kind,
    or the same kind stored for another request (fingerprint). One stored without a fingerprint, or
    a caller without one, has nothing to compare and is answered as the same request."""

    def look(conn: sa.Connection) -> int | None:
        holder = key_holder(conn, tenant_id, key)
        if holder is None:
            return None
        other = holder.kind != kind
        if other or (fingerprint and holder.fingerprint and holder.fingerprint != fingerprint):
            if holder.kind == "submission":
                raise IdempotencyConflict(key, None, submission_id=holder.id)
            raise IdempotencyConflict(key, holder.id)
        return holder.id

    if isinstance(engine, sa.Connection):
        return look(engine)
    with engine.connect() as conn:
        return look(conn)
