"""End to end through Dagster: a bulk change submitted over the API is processed by the job against
the Jasper simulator; its finalize enqueues the event; ``notification_sensor`` requests a
``deliver_notifications_job`` run that signs and sends it to a real receiver (which answers 500
twice first) and e-mails it through a real SMTP server. Then no secret (the signing key, the
subscription secret, the SMTP password, the carrier key, the API key) is anywhere: not in any table
of the business database, not in any run's config, tags or event log, not in the log records.
Both backends."""

from __future__ import annotations

import logging
from datetime import timedelta

import dagster as dg
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bulkchange_pipeline.defs import NotificationsResource, build_definitions
from bulkchange_pipeline.defs import clock as defs_clock
from bulkchange_pipeline.defs.local_runner import evaluate_sensor, tick_and_run
from bulkchange_pipeline.domain.clock import SYSTEM_CLOCK, ManualClock
from bulkchange_pipeline.engine.notify import DeliveryPolicy
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.jasper import JasperSimulator
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.notification_deliveries import list_deliveries
from bulkchange_pipeline.store.notification_sending import claim_due
from bulkchange_pipeline.store.notifications import EmailSettings, create_subscription, set_email_settings

from ..defs.harness import FAST_CARRIERS
from ..factories import JASPER_KEY, JASPER_USER, make_account, make_devices
from .conftest import SIGNING_KEY, SMTP_PASSWORD, SMTP_USER, settle
from .receiver import run_receiver

NOTIFY = "notification_sensor"


def test_processed_bulk_change_is_notified_by_dagster(
    engine, db_url, dagster_instance, notify_env, smtp_server, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_USERNAME", JASPER_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_TEST_JASPER_SECRET", JASPER_KEY)
    monkeypatch.setenv("BULKCHANGE_CRED_MAIL_USERNAME", SMTP_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_MAIL_SECRET", SMTP_PASSWORD)
    # No waits between attempts: the sensor's next tick finds the retry due.
    defs = build_definitions(
        carriers=FAST_CARRIERS, notifications=NotificationsResource(retry_schedule_seconds=[0, 0], timeout_seconds=5)
    )
    sim = JasperSimulator({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=8)
    with sim.run_in_thread() as handle, run_receiver([500, 500, 200]) as receiver:
        ids = make_account(engine, handle.base_url)
        devices = make_devices(engine, ids, 30)
        sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices)
        set_email_settings(
            engine,
            EmailSettings(
                ids["tenant_id"],
                ["ops@example.com"],
                ["completed"],
                "bulk@example.com",
                smtp_server.host,
                smtp_server.port,
                "none",
                "MAIL",
            ),
        )
        api_key = create_api_key(engine, ids["tenant_id"], "ops")
        auth = {"Authorization": f"Bearer {api_key}"}
        with TestClient(create_app(db_url)) as client:
            made = client.post("/notifications/subscriptions", headers=auth, json={"url": receiver.url})
            assert made.status_code == 201, made.text
            secret = made.json()["secret"]
            submitted = client.post(
                "/bulk-changes",
                headers=auth,
                json={
                    "serviceProviderId": ids["service_provider_id"],
                    "changeType": 1,
                    "devices": [d["iccid"] for d in devices],
                    "statusUpdate": {"status": "DEACTIVATED"},
                },
            )
            assert submitted.status_code == 201, submitted.text
        bc_id = submitted.json()["id"]

        assert not evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests  # nothing settled yet
        _, runs = tick_and_run(dagster_instance, defs)
        assert [r.success for r in runs] == [True]

        delivery_runs = []
        for _ in range(3):  # 500, 500, then 200 (and the e-mail in the first pass)
            result, new = tick_and_run(dagster_instance, defs, sensor_name=NOTIFY)
            assert len(new) == 1 and new[0].success
            delivery_runs += new
        assert not evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests  # all done

        assert [r.verify(secret)["type"] for r in receiver.received] == ["bulk_change.completed"] * 3
        data = receiver.received[-1].verify(secret)["data"]
        assert (data["id"], data["outcome"], data["counts"]) == (bc_id, "done", {"PROCESSED": 30})
    webhook, mail = sorted(list_deliveries(engine, ids["tenant_id"]).items, key=lambda d: d.channel != "webhook")
    assert [(a.attempt, a.response_code) for a in webhook.attempts] == [(1, 500), (2, 500), (3, 200)]
    assert webhook.status == "delivered" and mail.status == "delivered"
    assert len(smtp_server.messages) == 1 and smtp_server.logins == [SMTP_USER]
    run = dagster_instance.get_run_by_id(delivery_runs[0].run_id)
    assert run.job_name == "deliver_notifications_job" and run.tags["dagster/run_key"].startswith("notify-")

    needles = {
        "signing key": SIGNING_KEY,
        "subscription secret": secret,
        "secret without prefix": secret.removeprefix("whsec_"),
        "smtp password": SMTP_PASSWORD,
        "jasper key": JASPER_KEY,
        "api key": api_key,
    }
    found: list[str] = []
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            dump = "\n".join(repr(tuple(row)) for row in conn.execute(sa.select(table)))
            found += [f"table {table.name}: {name}" for name, value in needles.items() if value in dump]
    assert {"webhook_subscription", "notification_attempt", "notification_event"} <= set(tables.tables)
    records = dagster_instance.get_run_records()
    assert len(records) == 1 + len(delivery_runs)
    for rec in records:
        r = rec.dagster_run
        dump = (
            repr(r.run_config)
            + repr(r.tags)
            + "\n".join(dg.serialize_value(e) for e in dagster_instance.all_logs(r.run_id))
        )
        found += [f"run {r.job_name}: {name}" for name, value in needles.items() if value in dump]
    logged = "\n".join(f"{rec.getMessage()} {rec.args!r}" for rec in caplog.records)
    found += [f"log: {name}" for name, value in needles.items() if value in logged]
    assert not found, found
    assert "deliveries attempted" in "\n".join(
        e.user_message for rec in records for e in dagster_instance.all_logs(rec.dagster_run.run_id)
    )


def test_sensor_keys_runs_by_delivery_and_claims(engine, dagster_instance, notify_env, monkeypatch):
    """A run is keyed on the oldest due delivery and its claims: while a pass holds it nothing
    more is asked; when that pass died, its lease runs out and a new key brings a new pass."""
    clock = ManualClock(SYSTEM_CLOCK.now() + timedelta(seconds=1))
    monkeypatch.setattr(defs_clock, "CLOCK", clock)
    defs = build_definitions()
    ids, _ = settle(engine, "acme", 0)
    create_subscription(
        engine, ids["tenant_id"], url="http://127.0.0.1:9/h", events=["completed"], secret_nonce="n", created_by="t"
    )
    assert not evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests
    settle(engine, "acme", 1)
    [first] = evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests
    assert first.run_key.startswith("notify-") and first.run_key.endswith("-0")

    policy = DeliveryPolicy()
    [held] = claim_due(engine, clock.now(), lease=policy.lease, limit=10, per_target=4)  # a pass that then dies
    assert not evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests
    clock.advance(policy.lease + timedelta(seconds=1))
    [again] = evaluate_sensor(dagster_instance, defs, sensor_name=NOTIFY).run_requests
    assert again.run_key == f"notify-{held.id}-1"
