"""Events are enqueued in the transaction that settles a bulk change, once per attempt and event,
by every writer that settles one (finalize, the settle after a failed or stopped run, cancel), and
only for tenants with someone to tell. Both backends."""

from __future__ import annotations

import sqlalchemy as sa

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.domain.notifications import NotificationEvent
from bulkchange_pipeline.engine.notify import new_nonce
from bulkchange_pipeline.store.headers import finalize_header
from bulkchange_pipeline.store.maintenance import purge_bulk_changes
from bulkchange_pipeline.store.notification_deliveries import list_deliveries
from bulkchange_pipeline.store.notifications import (
    EmailSettings,
    create_subscription,
    delete_subscription,
    set_email_settings,
)
from bulkchange_pipeline.store.operations import cancel_bulk_change, retry_failed
from bulkchange_pipeline.store.run_settle import settle_after_run
from bulkchange_pipeline.store.schema import bulk_change, notification_delivery, notification_event

from ..factories import make_account, make_bulk_change, make_devices
from .conftest import finish_rows, settle


def events(engine) -> list[tuple[int, int, str]]:
    with engine.connect() as conn:
        return [
            (r.bulk_change_id, r.attempt, r.event)
            for r in conn.execute(sa.select(notification_event).order_by(notification_event.c.id))
        ]


def _subscribe(engine, tenant_id, events=tuple(NotificationEvent)):
    return create_subscription(
        engine, tenant_id, url="http://127.0.0.1:9/h", events=list(events), secret_nonce=new_nonce(), created_by="t"
    )


def test_nobody_to_tell_enqueues_nothing(engine):
    settle(engine, "quiet", 3)
    assert events(engine) == []


def test_finalize_then_settle_enqueues_once_and_retry_is_a_new_event(engine):
    ids, _ = settle(engine, "acme", 0)
    _subscribe(engine, ids["tenant_id"])
    _, bc_id = settle(engine, "acme", 4, failed=2)
    # The stopped/failure sensors settle the same attempt again: nothing more.
    settle_after_run(engine, bc_id, attempt=0, note="run failed after finalize", by="test")
    finalize_header(engine, bc_id, async_carrier=False)
    assert events(engine) == [(bc_id, 0, "failed")]
    # retry-failed starts attempt 1; when it ends well, that is a new event.
    retry_failed(engine, ids["tenant_id"], bc_id, by="test")
    finish_rows(engine, bc_id)
    finalize_header(engine, bc_id, async_carrier=False)
    assert events(engine) == [(bc_id, 0, "failed"), (bc_id, 1, "completed")]


def test_unfinished_run_needs_attention_and_cancel_is_failed(engine):
    ids = make_account(engine, "http://127.0.0.1:9", tenant_name="acme", name="ACC_X")
    _subscribe(engine, ids["tenant_id"])
    devices = make_devices(engine, ids, 4)
    stopped = make_bulk_change(engine, ids, devices[:2], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    settle_after_run(engine, stopped, attempt=0, note="run failed", by="test")  # rows left NEW
    cancelled = make_bulk_change(engine, ids, devices[2:], ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    cancel_bulk_change(engine, ids["tenant_id"], cancelled, by="test")
    assert events(engine) == [(stopped, 0, "needs_attention"), (cancelled, 0, "failed")]
    with engine.connect() as conn:
        payload = conn.execute(
            sa.select(notification_event.c.payload).where(notification_event.c.bulk_change_id == cancelled)
        ).scalar_one()
    assert payload["outcome"] == "cancelled" and payload["status"] == "CANCELLED"


def test_only_subscribed_events_and_targets(engine):
    ids, _ = settle(engine, "acme", 0)
    _subscribe(engine, ids["tenant_id"], [NotificationEvent.FAILED])
    set_email_settings(
        engine,
        EmailSettings(
            ids["tenant_id"], ["ops@example.com"], ["completed"], "bulk@example.com", "127.0.0.1", 25, "none", None
        ),
    )
    _, ok_id = settle(engine, "acme", 2)
    _, bad_id = settle(engine, "acme", 2, failed=1)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(notification_event.c.bulk_change_id, notification_delivery.c.channel).join(
                notification_event, notification_event.c.id == notification_delivery.c.event_id
            )
        ).all()
    assert sorted(rows) == sorted([(ok_id, "email"), (bad_id, "webhook")])
    other, _ = settle(engine, "other", 0)
    settle(engine, "other", 2)
    assert list_deliveries(engine, other["tenant_id"]).total == 0


def test_deleted_subscription_ends_its_pending_deliveries(engine):
    ids, _ = settle(engine, "acme", 0)
    sub = _subscribe(engine, ids["tenant_id"])
    settle(engine, "acme", 2)
    assert delete_subscription(engine, ids["tenant_id"], sub.id)
    assert not delete_subscription(engine, ids["tenant_id"], sub.id)  # gone: "not found" the second time
    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert (delivery.status, delivery.last_error) == ("dead", "subscription deleted")
    settle(engine, "acme", 2)
    assert list_deliveries(engine, ids["tenant_id"]).total == 1  # no new delivery to a deleted subscription


def test_purge_removes_notifications_with_the_bulk_change(engine):
    ids, _ = settle(engine, "acme", 0)
    _subscribe(engine, ids["tenant_id"])
    _, bc_id = settle(engine, "acme", 2)
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).where(bulk_change.c.id == bc_id).values(deleted_at=sa.func.now()))
    purge_bulk_changes(engine, [bc_id])
    assert events(engine) == [] and list_deliveries(engine, ids["tenant_id"]).total == 0
