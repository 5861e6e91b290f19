"""The demo's notification helper: its receiver verifies what the delivery job sends (both backends)."""

from __future__ import annotations

from bulkchange_pipeline.defs import build_definitions
from bulkchange_pipeline.demo_notify import deliver, demo_webhook
from bulkchange_pipeline.store.notifications import list_subscriptions

from .conftest import settle


def test_demo_webhook_receives_a_verified_event(engine, dagster_instance, notify_env, monkeypatch):
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_ALLOW_PRIVATE", "0")  # the helper allows loopback itself
    ids, _ = settle(engine, "demo", 0)
    with demo_webhook(engine, ids["tenant_id"]) as hook:
        _, bc_id = settle(engine, "demo", 4, failed=1)
        runs = deliver(dagster_instance, build_definitions())
        assert [r.success for r in runs] == [True]
    assert hook.refused == []
    assert [(m["type"], m["data"]["id"]) for m in hook.verified] == [("bulk_change.failed", bc_id)]
    assert hook.lines() == [
        f"webhook bulk_change.failed for bulk change {bc_id}: done_with_failures, 4 devices "
        "(signature verified with standardwebhooks)"
    ]
    assert list_subscriptions(engine, ids["tenant_id"]) == []  # the demo's subscription is removed after
