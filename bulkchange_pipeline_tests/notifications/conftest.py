"""Fixtures of the notification tests: the signing key and private-address setting in the
environment, real webhook receivers and a real SMTP server (aiosmtpd) on loopback, and bulk
changes settled through the store's own header writer."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.domain.clock import SYSTEM_CLOCK, ManualClock
from bulkchange_pipeline.store.headers import finalize_header
from bulkchange_pipeline.store.schema import device_change

from ..factories import make_account, make_bulk_change, make_devices
from ..ports import free_port
from .receiver import Receiver, run_receiver

SIGNING_KEY = "test-webhook-signing-key-7d1c0a9e"
SMTP_USER, SMTP_PASSWORD = "notifier", "smtp-pa55word-e3b0c442"


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_ALLOW_PRIVATE", "1")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as r:
        yield r


@pytest.fixture
def clock() -> ManualClock:
    """The delivery passes' time, a minute ahead of the wall clock the store stamps enqueued
    deliveries with (so they are due at once), stepped by the test through the retry schedule."""
    return ManualClock(SYSTEM_CLOCK.now() + timedelta(minutes=1))


_accounts = itertools.count(1)


def settle(engine: sa.Engine, tenant: str, n: int = 3, *, failed: int = 0, start: int = 0) -> tuple[dict, int]:
    """A tenant (made or found) with a new service provider of ``n`` devices and one bulk change
    over them whose rows ended PROCESSED (``failed`` of them API_FAILED), settled by the store's
    finalize (``start`` is unused: kept for readability of the callers)."""
    ids = make_account(engine, "http://127.0.0.1:9", tenant_name=tenant, name=f"ACC_{next(_accounts)}")
    if n == 0:
        return ids, 0  # only the tenant and its account
    devices = make_devices(engine, ids, n)
    bc_id = make_bulk_change(engine, ids, devices, ChangeType.STATUS_UPDATE, {"status": "DEACTIVATED"})
    finish_rows(engine, bc_id, failed=failed)
    finalize_header(engine, bc_id, async_carrier=False)
    return ids, bc_id


def finish_rows(engine: sa.Engine, bc_id: int, *, failed: int = 0) -> None:
    with engine.begin() as conn:
        ids = (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == bc_id)
                .order_by(device_change.c.id)
            )
            .scalars()
            .all()
        )
        for i, row_id in enumerate(ids):
            status = "API_FAILED" if i < failed else "PROCESSED"
            conn.execute(
                sa.update(device_change)
                .where(device_change.c.id == row_id)
                .values(status=status, attempt_count=1, status_details="refused by carrier" if i < failed else None)
            )


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.box.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that requires AUTH LOGIN/PLAIN with the test
    account (over plain TCP on loopback: ``auth_require_tls=False``)."""
    box = Mailbox("127.0.0.1", free_port())

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            box.logins.append(SMTP_USER)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")  # loopback only
    controller = Controller(
        _Handler(box),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
