"""Delivering webhooks without Dagster: signatures a Standard Webhooks receiver verifies, retries on
the schedule with every attempt recorded, dead after the last attempt, re-send, and one slow
receiver never holding up another tenant's delivery. Real receivers on loopback, both backends."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from bulkchange_pipeline.domain.notifications import NotificationEvent
from bulkchange_pipeline.engine.notify import DeliveryPolicy, deliver_due, derive_secret, new_nonce
from bulkchange_pipeline.store.notification_deliveries import get_delivery, list_deliveries, resend_delivery
from bulkchange_pipeline.store.notifications import create_subscription
from bulkchange_pipeline.store.schema import notification_attempt, notification_delivery

from .conftest import SIGNING_KEY, settle
from .receiver import run_receiver

ALL = list(NotificationEvent)
FAST = DeliveryPolicy(schedule=(5, 30), timeout_seconds=3)


def subscribe(engine, tenant_id: int, url: str, **kw):
    nonce = new_nonce()
    sub = create_subscription(engine, tenant_id, url=url, events=ALL, secret_nonce=nonce, created_by="test", **kw)
    return sub, derive_secret(SecretStr(SIGNING_KEY), nonce).get_secret_value()


def attempts_of(engine, delivery_id: int) -> list[tuple[int, int | None, bool]]:
    with engine.connect() as conn:
        return [
            (r.attempt, r.response_code, r.ok)
            for r in conn.execute(
                sa.select(notification_attempt)
                .where(notification_attempt.c.delivery_id == delivery_id)
                .order_by(notification_attempt.c.attempt)
            )
        ]


def test_signed_webhook_verified_after_two_500s(engine, notify_env, clock):
    with run_receiver([500, 500, 200]) as receiver:
        ids, _ = settle(engine, "acme", 1)  # settled before anyone subscribed: nothing to send
        sub, secret = subscribe(engine, ids["tenant_id"], receiver.url)
        _, bc_id = settle(engine, "acme", 3, failed=1, start=10)

        first = deliver_due(engine, FAST, clock=clock)
        assert (first.claimed, first.retrying) == (1, 1)
        assert deliver_due(engine, FAST, clock=clock).claimed == 0  # not before the schedule's 5 s
        clock.advance(5)
        assert deliver_due(engine, FAST, clock=clock).retrying == 1
        clock.advance(29)
        assert deliver_due(engine, FAST, clock=clock).claimed == 0  # 30 s after the second attempt
        clock.advance(1)
        assert deliver_due(engine, FAST, clock=clock).delivered == 1

        assert len(receiver.received) == 3
        bodies = [r.verify(secret) for r in receiver.received]  # raises unless signed with the secret
        ids_sent = {r.headers["webhook-id"] for r in receiver.received}
        assert len(ids_sent) == 1  # the same message id on every attempt: receivers dedupe on it
        assert receiver.received[0].path == "/hooks/bulk"
    body = bodies[-1]
    assert body["type"] == "bulk_change.failed"
    data = body["data"]
    assert (data["id"], data["tenantId"], data["outcome"], data["status"]) == (
        bc_id,
        ids["tenant_id"],
        "done_with_failures",
        "PROCESSED",
    )
    assert data["counts"] == {"API_FAILED": 1, "PROCESSED": 2} and data["failedDevices"] == 1
    assert data["links"]["devices"] == f"/bulk-changes/{bc_id}/devices"
    with pytest.raises(Exception, match="signature"):
        receiver.received[0].verify(derive_secret(SecretStr(SIGNING_KEY), new_nonce()).get_secret_value())

    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert delivery.status == "delivered" and delivery.subscription_id == sub.id
    assert attempts_of(engine, delivery.id) == [(1, 500, False), (2, 500, False), (3, 200, True)]


def test_dead_after_last_attempt_then_resend(engine, notify_env, clock):
    with run_receiver([500, 500, 500, 200]) as receiver:
        ids, _ = settle(engine, "acme", 0)
        subscribe(engine, ids["tenant_id"], receiver.url)
        settle(engine, "acme", 2, start=10)
        for wait in (0, 5, 30):
            clock.advance(wait)
            deliver_due(engine, FAST, clock=clock)
        [delivery] = list_deliveries(engine, ids["tenant_id"]).items
        assert delivery.status == "dead" and delivery.attempt_count == 3 and delivery.next_attempt_at is None
        assert delivery.last_error == "answered 500"
        clock.advance(100_000)
        assert deliver_due(engine, FAST, clock=clock).claimed == 0  # dead stays dead

        again = resend_delivery(engine, ids["tenant_id"], delivery.id, clock.now())
        assert again.status == "pending"
        assert deliver_due(engine, FAST, clock=clock).delivered == 1
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    final = get_delivery(engine, ids["tenant_id"], delivery.id)
    assert final.status == "delivered"
    assert [(a.attempt, a.response_code) for a in final.attempts] == [(1, 500), (2, 500), (3, 500), (4, 200)]


def test_slow_receiver_costs_only_its_own_attempt(engine, notify_env, clock):
    """Tenant A's receiver never answers; tenant B's delivery in the same pass arrives at once and
    is recorded delivered; A's attempts end at the deadline and wait for their retry. A's backlog
    takes at most ``per_target`` places of the pass."""
    policy = DeliveryPolicy(schedule=(5, 30), timeout_seconds=3, per_target=2)
    with run_receiver(["sleep"]) as slow, run_receiver([200]) as fast:
        a, _ = settle(engine, "slowpoke", 0)
        subscribe(engine, a["tenant_id"], slow.url)
        for i in range(3):
            settle(engine, "slowpoke", 1, start=10 + i)
        b, _ = settle(engine, "brisk", 0, start=100)
        subscribe(engine, b["tenant_id"], fast.url)
        settle(engine, "brisk", 1, start=110)

        started = time.monotonic()
        summary = deliver_due(engine, policy, clock=clock)
        took = time.monotonic() - started
        assert summary.claimed == 3  # two of A's three (per_target) and B's one
        assert summary.delivered == 1 and summary.retrying == 2
        assert len(fast.received) == 1 and fast.received[0].at - started < 1.5  # not behind A's 3 s
        assert 2.5 < took < 10
        assert len(slow.received) == 2
    [b_delivery] = list_deliveries(engine, b["tenant_id"]).items
    assert b_delivery.status == "delivered"
    a_deliveries = list_deliveries(engine, a["tenant_id"]).items
    tried = [d for d in a_deliveries if d.attempt_count]
    assert len(tried) == 2 and all(d.last_error == "no answer within 3 s" for d in tried)
    assert all(d.status == "pending" for d in a_deliveries)


def test_device_results_pages(engine, notify_env, clock):
    with run_receiver([200]) as receiver:
        ids, _ = settle(engine, "acme", 0)
        sub, secret = subscribe(engine, ids["tenant_id"], receiver.url, device_results=True, page_size=10)
        _, bc_id = settle(engine, "acme", 25, failed=3, start=10)
        summary = deliver_due(engine, FAST, clock=clock)
        assert summary.delivered == 4  # the event and three pages
        bodies = [r.verify(secret) for r in receiver.received]
    pages = sorted((b for b in bodies if b["type"] == "bulk_change.device_results"), key=lambda b: b["data"]["page"])
    assert [(p["data"]["page"], p["data"]["pages"], len(p["data"]["devices"])) for p in pages] == [
        (1, 3, 10),
        (2, 3, 10),
        (3, 3, 5),
    ]
    devices = [d for p in pages for d in p["data"]["devices"]]
    assert len({d["iccid"] for d in devices}) == 25
    assert sum(d["status"] == "API_FAILED" for d in devices) == 3
    assert all(p["data"]["id"] == bc_id and p["data"]["event"] == "bulk_change.failed" for p in pages)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(notification_delivery)).scalar() == 4


def test_refused_at_send_time_when_private_no_longer_allowed(engine, notify_env, clock, monkeypatch):
    """A subscription made while loopback was allowed (or a name that now resolves to loopback:
    DNS rebinding) is checked again before every attempt: refused, nothing sent, retried later."""
    with run_receiver([200]) as receiver:
        ids, _ = settle(engine, "acme", 0)
        subscribe(engine, ids["tenant_id"], receiver.url.replace("127.0.0.1", "localhost"))
        settle(engine, "acme", 1, start=10)
        monkeypatch.setenv("BULKCHANGE_WEBHOOK_ALLOW_PRIVATE", "0")
        summary = deliver_due(engine, FAST, clock=clock)
        assert summary.retrying == 1 and not receiver.received
    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert delivery.last_error.startswith("refused: localhost resolves to")
    assert "loopback" in delivery.last_error
    assert delivery.attempts[0].response_code is None
