"""A delivery pass: take the due deliveries, attempt each one concurrently, record every attempt.

Why one receiver costs nothing but its own retries:
- every claimed delivery is attempted at once (no queue inside a pass: the claim's size is the
  pass's concurrency), each under its own deadline, so a receiver that sleeps holds only its own
  attempt while every other delivery of the pass completes and is recorded;
- a claim takes at most ``per_target`` deliveries of one target, so a receiver with a backlog
  cannot fill a pass;
- a failure is recorded with its next time from the retry schedule (``domain.notifications``):
  the receiver is not tried again before then, and the delivery is dead after the last attempt.

Blocking work (DNS, SMTP, the database) runs on the pass's own thread pool, never the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from ... import settings
from ...domain.clock import SYSTEM_CLOCK, Clock
from ...domain.notifications import DEFAULT_RETRY_SCHEDULE, Channel, DeliveryStatus
from ...store.db import utcnow
from ...store.notification_sending import AttemptRecord, DueDelivery, claim_due, record_attempt
from ...store.operations import BulkChangeNotFound
from .messages import email_message, encode, message_body
from .send import send_email, send_webhook
from .signing import derive_secret, signed_headers

T = TypeVar("T")

__all__ = ["DeliveryPolicy", "DeliverySummary", "deliver_due", "deliver_due_async"]


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are attempted (the Dagster resource's fields, with bounds there)."""

    schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    timeout_seconds: float = 10.0
    claim_limit: int = 64
    per_target: int = 4

    @property
    def lease(self) -> timedelta:
        """How long a pass holds what it claimed: past every attempt's deadline, with room."""
        return timedelta(seconds=2 * self.timeout_seconds + 60)


@dataclass
class DeliverySummary:
    """What one pass did (the op's output metadata; no URL, no secret)."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # first words of each failed attempt's error

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Sender:
    engine: sa.Engine
    policy: DeliveryPolicy
    clock: Clock
    signing_key: SecretStr
    allow_private: bool
    base_url: str | None
    client: httpx.AsyncClient
    executor: Executor

    async def blocking(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the pass's thread pool (DNS, SMTP and the database block)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def attempt(self, due: DueDelivery) -> AttemptRecord:
        if due.channel is Channel.EMAIL:
            return await self._email(due)
        assert due.url is not None and due.secret_nonce is not None
        try:
            body = encode(await self.blocking(lambda: message_body(self.engine, due, self.base_url)))
        except BulkChangeNotFound:
            return _failed(f"bulk change {due.bulk_change_id} was archived: its device results are in the archive")
        secret = derive_secret(self.signing_key, due.secret_nonce)
        headers = signed_headers(secret, due.message_id, body, utcnow())  # receivers check it against their wall clock
        return await send_webhook(
            self.client,
            due.url,
            body,
            headers,
            allow_private=self.allow_private,
            timeout=self.policy.timeout_seconds,
            executor=self.executor,
        )

    async def _email(self, due: DueDelivery) -> AttemptRecord:
        if due.email is None:
            return _failed("the tenant has no e-mail settings now")
        name = due.email["smtp_credentials_name"]
        credentials = None
        if name:
            try:
                found = settings.carrier_credentials(name, f"SMTP of tenant {due.tenant_id}")
            except settings.MissingCredentials as exc:
                return _failed(str(exc))
            credentials = (found.username, found.secret)
        message = email_message(due, self.base_url)
        return await self.blocking(
            lambda: send_email(message, due.email or {}, credentials, timeout=self.policy.timeout_seconds)
        )

    async def deliver(self, due: DueDelivery) -> tuple[DeliveryStatus, AttemptRecord]:
        try:
            record = await self.attempt(due)
        except Exception as exc:  # noqa: BLE001 - one delivery's bug must not lose the pass's other records
            record = _failed(f"internal error: {type(exc).__name__}")
        status = await self.blocking(
            lambda: record_attempt(self.engine, due.id, record, schedule=self.policy.schedule, now=self.clock.now())
        )
        return status, record


def _failed(error: str) -> AttemptRecord:
    return AttemptRecord(utcnow(), 0.0, False, None, error[:500])


async def deliver_due_async(
    engine: sa.Engine,
    policy: DeliveryPolicy = DeliveryPolicy(),
    *,
    clock: Clock = SYSTEM_CLOCK,
    signing_key: SecretStr | None = None,
    allow_private: bool | None = None,
    base_url: str | None = None,
) -> DeliverySummary:
    """One pass (see the module docstring). Unset arguments come from ``settings``."""
    t0 = time.perf_counter()
    claimed = claim_due(engine, clock.now(), lease=policy.lease, limit=policy.claim_limit, per_target=policy.per_target)
    summary = DeliverySummary(claimed=len(claimed))
    if not claimed:
        return summary
    key = signing_key or settings.webhook_signing_key()
    private = settings.webhook_allow_private() if allow_private is None else allow_private
    base = base_url if base_url is not None else settings.current().callback_base_url
    executor = ThreadPoolExecutor(max_workers=len(claimed) + 2, thread_name_prefix="bulkchange-notify")
    limits = httpx.Limits(max_connections=len(claimed), max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=policy.timeout_seconds, limits=limits
        ) as client:
            sender = _Sender(engine, policy, clock, key, private, base, client, executor)
            # Every delivery's attempt is recorded before a failure to record one is raised.
            outcomes = await asyncio.gather(*(sender.deliver(d) for d in claimed), return_exceptions=True)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise failures[0]  # its delivery's lease runs out and a later pass attempts it again
    errors: Counter[str] = Counter()
    for outcome in outcomes:
        assert not isinstance(outcome, BaseException)
        status, record = outcome
        if status is DeliveryStatus.DELIVERED:
            summary.delivered += 1
        elif status is DeliveryStatus.DEAD:
            summary.dead += 1
        else:
            summary.retrying += 1
        if not record.ok and record.error:
            errors[record.error.split(":")[0][:60]] += 1
    summary.errors = dict(errors.most_common(10))
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def deliver_due(
    engine: sa.Engine,
    policy: DeliveryPolicy = DeliveryPolicy(),
    *,
    clock: Clock = SYSTEM_CLOCK,
    signing_key: SecretStr | None = None,
    allow_private: bool | None = None,
    base_url: str | None = None,
) -> DeliverySummary:
    """``deliver_due_async`` from synchronous code (a Dagster op, tests)."""
    return asyncio.run(
        deliver_due_async(
            engine, policy, clock=clock, signing_key=signing_key, allow_private=allow_private, base_url=base_url
        )
    )
