"""Subscriptions and deliveries over the HTTP API and the CLI: the secret shown once, tenant scope
(another tenant's ids answer 404), refusals with a reason and nothing stored, re-send of a dead
delivery from both. Hypothesis drives the subscription body. Both backends."""

from __future__ import annotations

import json
import string

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.engine.notify import DeliveryPolicy, deliver_due, masked_url
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.schema import webhook_subscription

from .conftest import settle
from .receiver import run_receiver

ONE_TRY = DeliveryPolicy(schedule=(), timeout_seconds=3)


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(webhook_subscription)).scalar_one()


def test_subscriptions_and_deliveries_over_api_and_cli(engine, db_url, notify_env, clock):
    a, _ = settle(engine, "acme", 0)
    b, _ = settle(engine, "other", 0)
    key_a = {"Authorization": f"Bearer {create_api_key(engine, a['tenant_id'], 'ops')}"}
    key_b = {"X-API-Key": create_api_key(engine, b["tenant_id"], "ops")}
    runner = CliRunner()

    def cli(*args: str):
        return runner.invoke(main, [*args, "--database-url", db_url, "--tenant", "acme"], catch_exceptions=False)

    with run_receiver([500]) as receiver, TestClient(create_app(db_url)) as client:
        made = client.post(
            "/notifications/subscriptions",
            headers=key_a,
            json={"url": receiver.url, "events": ["failed", "completed"], "description": "ERP"},
        )
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["secret"].startswith("whsec_") and sub["events"] == ["completed", "failed"]
        assert made.headers["location"] == f"/notifications/subscriptions/{sub['id']}"
        listed = client.get("/notifications/subscriptions", headers=key_a).json()["items"]
        assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
        assert client.get("/notifications/subscriptions", headers=key_b).json()["items"] == []
        assert client.get(f"/notifications/subscriptions/{sub['id']}", headers=key_b).status_code == 404
        assert client.delete(f"/notifications/subscriptions/{sub['id']}", headers=key_b).status_code == 404

        _, bc_id = settle(engine, "acme", 2)
        assert deliver_due(engine, ONE_TRY, clock=clock).dead == 1  # one attempt only: 500, dead
        page = client.get("/notifications/deliveries", headers=key_a, params={"status": "dead"}).json()
        [delivery] = page["items"]
        assert (delivery["bulkChangeId"], delivery["type"], delivery["status"]) == (
            bc_id,
            "bulk_change.completed",
            "dead",
        )
        assert [(x["attempt"], x["responseCode"], x["ok"]) for x in delivery["attempts"]] == [(1, 500, False)]
        assert client.get("/notifications/deliveries", headers=key_b).json()["total"] == 0
        assert client.get(f"/notifications/deliveries/{delivery['id']}", headers=key_b).status_code == 404
        assert client.post(f"/notifications/deliveries/{delivery['id']}/resend", headers=key_b).status_code == 404
        assert client.get("/notifications/deliveries", headers=key_a, params={"stauts": "dead"}).status_code == 422

        # Re-send from the API: pending again; a second re-send while pending is refused (409).
        resent = client.post(f"/notifications/deliveries/{delivery['id']}/resend", headers=key_a)
        assert resent.status_code == 200 and resent.json()["status"] == "pending"
        again = client.post(f"/notifications/deliveries/{delivery['id']}/resend", headers=key_a)
        assert again.status_code == 409 and "pending" in again.json()["detail"]
        deliver_due(engine, ONE_TRY, clock=clock)
        # ... and from the CLI, once the receiver is back.
        receiver.script[:] = [200]
        shown = cli("notifications", "deliveries")
        assert shown.exit_code == 0 and "#2" in shown.output and " 500 " in shown.output
        out = cli("notifications", "resend", str(delivery["id"]))
        assert out.exit_code == 0 and "pending again" in out.output, out.output
        assert deliver_due(engine, ONE_TRY, clock=clock).delivered == 1
        final = client.get(f"/notifications/deliveries/{delivery['id']}", headers=key_a).json()
        assert final["status"] == "delivered"
        assert [x["responseCode"] for x in final["attempts"]] == [500, 500, 200]
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        other = runner.invoke(
            main, ["notifications", "resend", str(delivery["id"]), "--database-url", db_url, "--tenant", "other"]
        )
        assert other.exit_code == 1 and "no notification delivery" in other.output

        # The CLI's subscribe prints the secret once; unsubscribe; the API's delete.
        made_cli = cli("notifications", "subscribe", receiver.url, "--event", "failed", "--device-results")
        assert made_cli.exit_code == 0 and "signing secret (shown once): whsec_" in made_cli.output
        assert "events: failed, device results" in cli("notifications", "subscriptions").output
        assert client.delete(f"/notifications/subscriptions/{sub['id']}", headers=key_a).status_code == 204
        assert client.delete(f"/notifications/subscriptions/{sub['id']}", headers=key_a).status_code == 404
        cli_id = made_cli.output.split()[1].rstrip(":")
        assert cli("notifications", "unsubscribe", cli_id).exit_code == 0
        assert client.get("/notifications/subscriptions", headers=key_a).json()["items"] == []


def test_refusals_store_nothing(engine, db_url, notify_env, monkeypatch):
    a, _ = settle(engine, "acme", 0)
    key = {"Authorization": f"Bearer {create_api_key(engine, a['tenant_id'], 'ops')}"}
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_ALLOW_PRIVATE", "0")
    with TestClient(create_app(db_url)) as client:
        for body, words in [
            ({"url": "http://127.0.0.1:8080/h"}, "loopback"),
            ({"url": "http://localhost/h"}, "resolves to"),
            ({"url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
            ({"url": "http://0x7f000001/"}, "loopback"),
            ({"url": "ftp://example.com/"}, "only http and https"),
            ({"url": "https://user:pw@example.com/"}, "user info"),
            ({"url": "https://8.8.8.8/", "events": ["exploded"]}, "unknown event"),
            ({"url": "https://8.8.8.8/", "pageSize": 5}, "pageSize"),
            ({"url": "https://8.8.8.8/", "secret": "mine"}, "secret"),
            ({"url": "https://8.8.8.8/", "deviceResults": "yes"}, "deviceResults"),
        ]:
            r = client.post("/notifications/subscriptions", headers=key, json=body)
            assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
        assert client.post("/notifications/subscriptions", headers=key, content=b"url=x").status_code == 415
        big = {"url": "https://8.8.8.8/", "description": "x" * 20_000}
        assert client.post("/notifications/subscriptions", headers=key, json=big).status_code == 413
        assert client.post("/notifications/subscriptions", json={"url": "https://8.8.8.8/"}).status_code == 401
    assert _count(engine) == 0
    out = CliRunner().invoke(
        main, ["notifications", "subscribe", "http://[::1]:9/", "--database-url", db_url, "--tenant", "acme"]
    )
    assert out.exit_code == 1 and "webhook URL refused" in out.output and "loopback" in out.output
    assert _count(engine) == 0


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", "\x00", "a\x1bb", "\ud800"])
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(
            st.sampled_from(
                ["https://8.8.8.8/hook", "http://1.1.1.1:8080/x?y=1", "http://127.0.0.1/", "https://[::1]/"]
            ),
            st.builds(lambda h: f"http://{h}/", st.text(string.ascii_letters + string.digits + ".-:[]%@", max_size=20)),
            _TEXT,
            st.integers(),
        ),
        "events": st.one_of(
            st.lists(st.sampled_from(["completed", "failed", "needs_attention", "x"]), max_size=4), _TEXT
        ),
        "deviceResults": st.one_of(st.booleans(), st.integers(0, 1), _TEXT),
        "pageSize": st.one_of(st.integers(-5, 2000), _TEXT),
        "description": _TEXT,
        "extra": st.integers(),
    },
)


def test_subscription_body_property(engine, db_url, notify_env, monkeypatch):
    """Any body: 201 and read back exactly as stored, or a 4xx problem with a reason and nothing
    stored; never a 5xx."""
    a, _ = settle(engine, "acme", 0)
    key = {"Authorization": f"Bearer {create_api_key(engine, a['tenant_id'], 'ops')}"}
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_ALLOW_PRIVATE", "0")
    seen: set[int] = set()
    with TestClient(create_app(db_url)) as client:

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(body=_BODY)
        def check(body):
            before = _count(engine)
            # ensure_ascii: a lone surrogate goes as its JSON escape, as a hostile client would send it
            data = json.dumps(body).encode()
            r = client.post(
                "/notifications/subscriptions", headers={**key, "content-type": "application/json"}, content=data
            )
            assert r.status_code < 500, r.text
            seen.add(r.status_code)
            if r.status_code == 201:
                made = r.json()
                got = client.get(f"/notifications/subscriptions/{made['id']}", headers=key).json()
                assert got == {k: v for k, v in made.items() if k != "secret"}
                assert got["url"] == masked_url(body["url"]) and got["description"] == body.get("description", "")
                with engine.connect() as conn:  # the real URL is kept for sending
                    stored = conn.execute(
                        sa.select(webhook_subscription.c.url).where(webhook_subscription.c.id == made["id"])
                    ).scalar_one()
                assert stored == body["url"]
                assert _count(engine) == before + 1
            else:
                assert 400 <= r.status_code < 500 and r.json()["detail"]
                assert r.headers["content-type"].startswith("application/problem+json")
                assert _count(engine) == before

        check()
    assert {201, 422} <= seen, seen  # both ways were taken


def test_query_string_tokens_are_masked_in_every_output_and_sent_as_given(engine, db_url, notify_env, clock):
    """Review of issue 20: a receiver's ``?token=`` was stored and printed; now it is only sent."""
    a, _ = settle(engine, "acme", 0)
    key = {"Authorization": f"Bearer {create_api_key(engine, a['tenant_id'], 'ops')}"}
    token = "tok-5f1c9e2a7b"
    runner = CliRunner()
    with run_receiver([200]) as receiver, TestClient(create_app(db_url)) as client:
        url = f"{receiver.url}?token={token}&v=2"
        made = client.post("/notifications/subscriptions", headers=key, json={"url": url, "events": ["failed"]})
        assert made.status_code == 201 and made.json()["url"] == f"{receiver.url}?token=***&v=***"
        listed = client.get("/notifications/subscriptions", headers=key).text
        cli_add = runner.invoke(
            main,
            ["notifications", "subscribe", url, "--database-url", db_url, "--tenant", "acme"],
            catch_exceptions=False,
        )
        cli_list = runner.invoke(
            main,
            ["notifications", "subscriptions", "--database-url", db_url, "--tenant", "acme"],
            catch_exceptions=False,
        )
        settle(engine, "acme", 3, failed=1)
        deliver_due(engine, DeliveryPolicy(schedule=(5,), timeout_seconds=5), clock=clock)
        deliveries = client.get("/notifications/deliveries", headers=key).text
        cli_deliveries = runner.invoke(
            main, ["notifications", "deliveries", "--database-url", db_url, "--tenant", "acme"], catch_exceptions=False
        )
        assert receiver.received and all(r.path.endswith(f"?token={token}&v=2") for r in receiver.received)
    for shown in (made.text, listed, cli_add.output, cli_list.output, deliveries, cli_deliveries.output):
        assert token not in shown
    assert "token=***" in cli_list.output and "token=***" in cli_add.output


def test_masked_url_keeps_names_and_hides_values():
    assert masked_url("https://h.example/p?a=1&b&c=x=y#frag") == "https://h.example/p?a=***&***&c=***#***"
    assert masked_url("https://h.example/p") == "https://h.example/p"


def test_a_postgresql_deployment_without_a_signing_key_answers_503_and_stores_nothing(
    engine, db_url, notify_env, monkeypatch
):
    """With a PostgreSQL database the key must come from the environment (several hosts would each
    make their own key file): creating a subscription then says what to set, never a 500."""
    a, _ = settle(engine, "acme", 0)
    key = {"Authorization": f"Bearer {create_api_key(engine, a['tenant_id'], 'ops')}"}
    monkeypatch.delenv("BULKCHANGE_WEBHOOK_SIGNING_KEY")
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with TestClient(create_app(db_url)) as client:
        r = client.post("/notifications/subscriptions", headers=key, json={"url": "https://8.8.8.8/h"})
        assert r.status_code == 503 and "BULKCHANGE_WEBHOOK_SIGNING_KEY" in r.json()["detail"], r.text
        assert client.get("/notifications/subscriptions", headers=key).json()["items"] == []
