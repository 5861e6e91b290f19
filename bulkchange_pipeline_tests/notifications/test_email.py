"""E-mail notifications reach a real SMTP server (aiosmtpd on loopback) that requires AUTH, with the
password taken from the environment; a refused login is a recorded, retried attempt. Both backends."""

from __future__ import annotations

import email
from email.message import EmailMessage

import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import SecretStr

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.engine.notify import DeliveryPolicy, deliver_due
from bulkchange_pipeline.engine.notify.send import send_email
from bulkchange_pipeline.store.notification_deliveries import list_deliveries
from bulkchange_pipeline.store.notifications import EmailSettings, get_email_settings, set_email_settings

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


PLAIN_AUTH = (
    "SMTP login to smtp.example.com without TLS would send the password in clear text: "
    "use --smtp-security starttls or tls (or no --smtp-credentials)"
)


def test_cli_refuses_a_login_without_tls_to_a_remote_server(engine, db_url, notify_env):
    """Review of issue 20: --smtp-security none with --smtp-credentials sent the password in clear."""
    ids, _ = settle(engine, "acme", 0)
    base = ["notifications", "email", "set", "--to", "ops@example.com", "--from", "bc@example.com"]
    tail = ["--smtp-security", "none", "--database-url", db_url, "--tenant", "acme"]
    refused = CliRunner().invoke(main, [*base, "--smtp-host", "smtp.example.com", "--smtp-credentials", "X", *tail])
    assert refused.exit_code != 0 and PLAIN_AUTH in refused.output
    assert get_email_settings(engine, ids["tenant_id"]) is None
    no_login = CliRunner().invoke(main, [*base, "--smtp-host", "smtp.example.com", *tail])
    assert no_login.exit_code == 0, no_login.output  # no password to leak
    loopback = CliRunner().invoke(main, [*base, "--smtp-host", "127.0.0.1", "--smtp-credentials", "X", *tail])
    assert loopback.exit_code == 0, loopback.output  # never leaves the machine


def test_send_email_never_logs_in_over_plain_text_to_a_remote_server():
    smtp = {"smtp_host": "smtp.example.com", "smtp_port": 25, "smtp_security": "none"}
    record = send_email(EmailMessage(), smtp, ("user", SecretStr("pw")), timeout=1)
    assert not record.ok and record.response_code is None and record.error == PLAIN_AUTH
