"""Every notification route but the create (``test_api_cli``'s body property) under hostile input:
path ids and query parameters of any shape, with a valid, a bogus or no API key. Each answer is a
problem document with a reason (401 without a valid key, 404 for an id that is not the tenant's,
422 for an unknown or invalid parameter) or a 200 that says what was asked; never a 5xx, and a GET
stores nothing. SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from bulkchange_pipeline.engine.notify import DeliveryPolicy, deliver_due
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.schema import notification_attempt, notification_delivery, webhook_subscription

from .conftest import settle
from .receiver import run_receiver

# The GET routes this module covers (``intake/test_hostile_properties`` checks every GET route of
# the document is covered by a property).
NOTIFICATION_GET_ROUTES = {
    "/notifications/subscriptions",
    "/notifications/subscriptions/{subscription_id}",
    "/notifications/deliveries",
    "/notifications/deliveries/{delivery_id}",
}
VALID = {"status": ["pending", "delivered", "dead"], "page": ["1", "2"], "pageSize": ["1", "50", "200"]}
HOSTILE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["0", "-1", "1e3", " 1", "01", "1.0", str(2**63), "%00", "DEAD", "x" * 300]
)


def _stored(engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (webhook_subscription, notification_delivery, notification_attempt)
        )


@st.composite
def requests(draw: st.DrawFn, own: dict[str, str], foreign: dict[str, str]) -> tuple[str, str, str, str, str]:
    route = draw(st.sampled_from(sorted(NOTIFICATION_GET_ROUTES) + ["resend"]))
    kind = "subscription" if "subscription" in route else "delivery"
    id_text = draw(st.sampled_from([own[kind], foreign[kind]]) | HOSTILE)
    path = {
        "resend": f"/notifications/deliveries/{quote(id_text, safe='')}/resend",
        "/notifications/subscriptions/{subscription_id}": f"/notifications/subscriptions/{quote(id_text, safe='')}",
        "/notifications/deliveries/{delivery_id}": f"/notifications/deliveries/{quote(id_text, safe='')}",
    }.get(route, route)
    key = st.sampled_from([*VALID, "bulkChangeId", "stauts", "page_size"]) | HOSTILE
    value = st.sampled_from([v for vs in VALID.values() for v in vs]) | HOSTILE
    params = draw(st.lists(st.tuples(key, value), max_size=3))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    return route, path, id_text, query, draw(st.sampled_from(["valid", "valid", "valid", "none", "bogus"]))


def test_notification_routes_refuse_clearly_or_answer(engine, db_url, notify_env, clock):
    mine, _ = settle(engine, "acme", 0)
    theirs, _ = settle(engine, "other", 0)
    keys = {t: create_api_key(engine, ids["tenant_id"], "ops") for t, ids in (("acme", mine), ("other", theirs))}
    with run_receiver([500]) as receiver, TestClient(create_app(db_url)) as client:
        subs = {
            t: client.post("/notifications/subscriptions", headers={"X-API-Key": k}, json={"url": receiver.url}).json()[
                "id"
            ]
            for t, k in keys.items()
        }
        settle(engine, "acme", 1)
        settle(engine, "other", 1)
        deliver_due(engine, DeliveryPolicy(schedule=()), clock=clock)  # both dead: resend has work to do
        deliveries = {
            t: client.get("/notifications/deliveries", headers={"X-API-Key": k}).json()["items"][0]["id"]
            for t, k in keys.items()
        }
        own = {"subscription": str(subs["acme"]), "delivery": str(deliveries["acme"])}
        foreign = {"subscription": str(subs["other"]), "delivery": str(deliveries["other"])}
        seen: set[int] = set()

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(req=requests(own, foreign))
        def run(req):
            route, path, id_text, query, auth = req
            url = path + (f"?{query}" if query else "")
            note(f"{url} ({auth})")
            headers = {"valid": {"X-API-Key": keys["acme"]}, "none": {}, "bogus": {"X-API-Key": "bc_nope"}}[auth]
            before = _stored(engine)
            r = client.post(url, headers=headers) if route == "resend" else client.get(url, headers=headers)
            seen.add(r.status_code)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                assert r.headers["content-type"].startswith("application/problem+json") and r.json()["detail"]
            if route != "resend":
                assert _stored(engine) == before
            if auth != "valid":
                assert r.status_code in (401, 404, 405), r.status_code  # 404/405: a path no route matches
                return
            names = [k for k, _ in parse_qsl(query, keep_blank_values=True)]
            accepted = {"status", "page", "pageSize", "bulkChangeId"} if route == "/notifications/deliveries" else set()
            if any(n not in accepted for n in names):
                assert r.status_code in (404, 405, 422), r.status_code
                return
            if "{" in route or route == "resend":
                if id_text == foreign["subscription" if "subscription" in route else "delivery"]:
                    assert r.status_code == 404, "another tenant's id must answer 404"
                if r.status_code == 200 and route == "resend":
                    deliver_due(engine, DeliveryPolicy(schedule=()), clock=clock)  # dead again for the next one
                return
            if r.status_code == 200 and route == "/notifications/deliveries":
                sent = dict(parse_qsl(query))
                statuses = {i["status"] for i in r.json()["items"]}
                assert statuses <= ({sent["status"]} if "status" in sent else {"pending", "delivered", "dead"})
                assert all(i["bulkChangeId"] for i in r.json()["items"])

        run()
    assert {200, 401, 404, 422} <= seen, seen
