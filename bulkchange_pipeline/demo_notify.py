"""The demo's completion notification: a webhook receiver on loopback that verifies each message
with the ``standardwebhooks`` library, subscribed for the demo tenant, and the delivery passes
(``notification_sensor`` -> ``deliver_notifications_job``) run in this process like the demo's
other sensors.

Used by ``bulkchange demo`` (``make demo``)::

    with demo_webhook(engine, seed.tenant_id) as hook:
        ...                                   # process the bulk changes as before
        deliver(instance, defs)               # the delivery passes
        for line in hook.lines(): console.print(line)

The receiver listens on 127.0.0.1, so the demo allows private webhook addresses
(``BULKCHANGE_WEBHOOK_ALLOW_PRIVATE=1``) for its process, as the tests do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from . import settings
from .defs.local_runner import QUIET, tick_and_run
from .domain.notifications import NotificationEvent
from .engine.notify import check_webhook_url, derive_secret, new_nonce
from .store.notifications import create_subscription, delete_subscription

__all__ = ["DemoWebhook", "deliver", "demo_webhook"]

NOTIFY_SENSOR = "notification_sensor"


@dataclass
class DemoWebhook:
    """What the demo receiver got: each message verified (or why not)."""

    url: str
    subscription_id: int
    verified: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"webhook {m['type']} for bulk change {m['data']['id']}: {m['data']['outcome']}, "
            f"{m['data']['devices']} devices (signature verified with standardwebhooks)"
            for m in self.verified
        ]
        return out + [f"webhook refused by the receiver: {reason}" for reason in self.refused]


@contextmanager
def demo_webhook(engine: sa.Engine, tenant_id: int) -> Iterator[DemoWebhook]:
    """A verifying receiver on a free loopback port, subscribed to every event of the tenant for
    the block (the subscription is deleted after it)."""
    os.environ[settings.WEBHOOK_ALLOW_PRIVATE_ENV] = "1"
    nonce = new_nonce()
    verifier = Webhook(derive_secret(settings.webhook_signing_key(), nonce).get_secret_value())
    hook = DemoWebhook(url="", subscription_id=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                hook.verified.append(verifier.verify(body, dict(self.headers.items())))
                self.send_response(204)
            except WebhookVerificationError as exc:
                hook.refused.append(str(exc))
                self.send_response(400)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/demo-webhook"
    thread = threading.Thread(target=server.serve_forever, name="demo-webhook", daemon=True)
    thread.start()
    try:
        target = check_webhook_url(hook.url, allow_private=True)
        sub = create_subscription(
            engine,
            tenant_id,
            url=target.url,
            events=list(NotificationEvent),
            secret_nonce=nonce,
            created_by="demo",
            description="bulkchange demo receiver",
        )
        hook.subscription_id = sub.id
        yield hook
    finally:
        if hook.subscription_id:
            delete_subscription(engine, tenant_id, hook.subscription_id)
        server.shutdown()
        server.server_close()


def deliver(instance: dg.DagsterInstance, defs: dg.Definitions, passes: int = 3) -> list[dg.ExecuteInProcessResult]:
    """``notification_sensor`` ticks and the delivery runs they request, until nothing is due."""
    runs: list[dg.ExecuteInProcessResult] = []
    for _ in range(passes):
        result, new = tick_and_run(instance, defs, run_config=QUIET, sensor_name=NOTIFY_SENSOR)
        runs += new
        if not result.run_requests:
            break
    return runs
