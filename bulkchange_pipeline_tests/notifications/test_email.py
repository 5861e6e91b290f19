"""E-mail notifications reach a real SMTP server (aiosmtpd on loopback) that requires AUTH, with the
password taken from the environment; a refused login is a recorded, retried attempt. Both backends."""

from __future__ import annotations

import email

import sqlalchemy as sa

from bulkchange_pipeline.engine.notify import DeliveryPolicy, deliver_due
from bulkchange_pipeline.store.notification_deliveries import list_deliveries
from bulkchange_pipeline.store.notifications import EmailSettings, set_email_settings

from .conftest import SMTP_PASSWORD, SMTP_USER, settle

POLICY = DeliveryPolicy(schedule=(5,), timeout_seconds=5)


def _email_settings(tenant_id: int, box, credentials: str | None = "TEST_SMTP") -> EmailSettings:
    return EmailSettings(
        tenant_id=tenant_id,
        recipients=["ops@example.com", "noc@example.com"],
        events=["completed", "failed", "needs_attention"],
        sender="bulkchange@example.com",
        smtp_host=box.host,
        smtp_port=box.port,
        smtp_security="none",
        smtp_credentials_name=credentials,
    )


def test_email_reaches_smtp_server(engine, notify_env, smtp_server, clock, monkeypatch):
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_SMTP_USERNAME", SMTP_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_SMTP_SECRET", SMTP_PASSWORD)
    ids, _ = settle(engine, "acme", 0)
    set_email_settings(engine, _email_settings(ids["tenant_id"], smtp_server))
    _, bc_id = settle(engine, "acme", 5, failed=2)

    summary = deliver_due(engine, POLICY, clock=clock, base_url="https://bulk.example.com/")
    assert summary.delivered == 1, summary
    assert smtp_server.logins == [SMTP_USER]
    [envelope] = smtp_server.messages
    assert envelope.mail_from == "bulkchange@example.com"
    assert sorted(envelope.rcpt_tos) == ["noc@example.com", "ops@example.com"]
    message = email.message_from_bytes(envelope.original_content)
    assert message["Subject"] == f"Bulk change {bc_id} ended with failures: done_with_failures (5 devices)"
    assert message["X-Bulkchange-Event"] == "bulk_change.failed"
    text = message.get_payload(decode=True).decode()
    assert "Devices: 5   Failed: 2" in text and "API_FAILED: 2" in text
    assert f"https://bulk.example.com/bulk-changes/{bc_id}/devices" in text
    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert delivery.channel == "email" and delivery.status == "delivered"
    assert [(a.response_code, a.ok) for a in delivery.attempts] == [(250, True)]


def test_refused_login_and_missing_credentials_are_recorded_and_retried(
    engine, notify_env, smtp_server, clock, monkeypatch
):
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_SMTP_USERNAME", SMTP_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_SMTP_SECRET", "not-the-password")
    ids, _ = settle(engine, "acme", 0)
    set_email_settings(engine, _email_settings(ids["tenant_id"], smtp_server))
    settle(engine, "acme", 1)
    assert deliver_due(engine, POLICY, clock=clock).retrying == 1
    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert delivery.attempts[0].response_code == 535 and delivery.last_error.startswith("SMTP 535")

    monkeypatch.delenv("BULKCHANGE_CRED_TEST_SMTP_SECRET")
    clock.advance(5)
    assert deliver_due(engine, POLICY, clock=clock).dead == 1  # the schedule's last attempt
    [delivery] = list_deliveries(engine, ids["tenant_id"]).items
    assert "BULKCHANGE_CRED_TEST_SMTP_SECRET" in delivery.last_error and delivery.status == "dead"
    assert smtp_server.messages == []
    with engine.connect() as conn:  # the wrong password is no more stored than the right one
        dump = repr(conn.execute(sa.text("SELECT * FROM notification_attempt")).all())
    assert "not-the-password" not in dump and SMTP_PASSWORD not in dump
