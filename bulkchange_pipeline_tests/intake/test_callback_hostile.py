"""Issue 15 §4: the unauthenticated callback routes answer hostile input with a 4xx problem document
and one log line, on SQLite and PostgreSQL alike, and store nothing.

Before the fix, deeply nested JSON (RecursionError), a NUL in Teal's ``requestId`` query (PostgreSQL
refuses it in a bound parameter), a lone surrogate (it cannot be encoded for either database), a
non-ASCII callback username (``hmac.compare_digest`` refuses non-ASCII str), a field of an
unexpected type (the ThingSpace parser iterated an int) and ids longer than the callback columns
(PostgreSQL refuses them) were 500s with a logged traceback per request; an empty ThingSpace body
was taken for "no credentials", a ``requestId`` of 1.0 was stored as the id "1.0", and a Teal
request id longer than any we send was answered 503 (so Teal would send it again and again).

Every case checks the status, the problem document, that no callback was stored, and the log: one
line from the app, no record with a traceback (``exc_info``) and no "Traceback" text anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake import callback_auth
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.db import shared_engine
from bulkchange_pipeline.store.reference import create_service_provider
from bulkchange_pipeline.store.schema import carrier_callback, device, device_change
from bulkchange_pipeline.store.seed import DemoSeed

from ..factories import make_bulk_change

CB_USER, CB_PASSWORD = "cb-demo-listener", "cb-demo-PASSWORD-41f"
TEAL_REQUEST = "teal-req-0001"
TS_REQUEST = "ts-req-0001"


def sent_request(engine: sa.Engine, seed: DemoSeed, integration: str, request_id: str) -> str:
    """A bulk change on the demo tenant's ``integration`` provider whose one device row was sent
    with ``request_id`` (what a callback must name); returns the device's ICCID."""
    iccid = seed.sample_iccids[integration][0]
    with engine.connect() as conn:
        dev_id = conn.execute(sa.select(device.c.id).where(device.c.iccid == iccid)).scalar_one()
    ids = {"tenant_id": seed.tenant_id, "service_provider_id": seed.service_providers[integration]}
    bc_id = make_bulk_change(
        engine, ids, [{"id": dev_id, "iccid": iccid}], ChangeType.STATUS_UPDATE, {"status": "suspend"}
    )
    with engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == bc_id)
            .values(status="PROCESSING", carrier_request_id=request_id)
        )
    return iccid


@dataclass
class Receiver:
    client: TestClient
    engine: sa.Engine
    ts_iccid: str

    def stored(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(carrier_callback)).scalar_one()

    def thingspace(self, **fields: Any) -> dict[str, Any]:
        """A well-formed, authenticated ThingSpace success callback for the sent request, with ``fields`` changed."""
        return {
            "username": CB_USER,
            "password": CB_PASSWORD,
            "requestId": TS_REQUEST,
            "deviceIds": [{"kind": "iccid", "id": self.ts_iccid}],
            "status": "Success",
            "deviceResponse": {"suspendResponse": {"deviceIds": []}},
            **fields,
        }


@pytest.fixture
def receiver(engine: sa.Engine, db_url: str, seed: DemoSeed, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """The app on the test database (demo seed), a Teal and a ThingSpace request sent, and the
    demo ThingSpace account's callback credentials configured."""
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_USERNAME", CB_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_PASSWORD", CB_PASSWORD)
    monkeypatch.setattr(callback_auth, "_accounts_cache", {})  # PostgreSQL tests share one URL
    sent_request(engine, seed, "teal", TEAL_REQUEST)
    ts_iccid = sent_request(engine, seed, "thingspace", TS_REQUEST)
    with TestClient(create_app(db_url), raise_server_exceptions=False) as client:
        yield Receiver(client, engine, ts_iccid)
    shared_engine(db_url).dispose()


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


JSON = {"content-type": "application/json"}
TS, TEAL = "/callbacks/thingspace", "/callbacks/teal"

# id -> (method, path, request keyword arguments (or a function of the Receiver giving them), status, words of the detail)
HOSTILE: dict[str, tuple[str, str, Any, int, str]] = {
    # Unauthenticated: whatever anyone can send.
    "ts-nested-array-beyond-recursion": (
        "POST",
        TS,
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON},
        400,
        "nested too deeply",
    ),
    "ts-nested-object-beyond-recursion": (
        "POST",
        TS,
        {"content": nested(5_000), "headers": JSON},
        400,
        "nested too deeply",
    ),
    "ts-nested-object-beyond-max-depth": (
        "POST",
        TS,
        {"content": nested(60), "headers": JSON},
        400,
        "nested too deeply",
    ),
    "ts-nul-in-username": ("POST", TS, {"json": {"username": "a\x00b", "password": "x", "requestId": "r"}}, 400, "NUL"),
    "ts-nul-in-key": ("POST", TS, {"json": {"user\x00name": "a", "requestId": "r"}}, 400, "NUL"),
    "ts-lone-surrogate": (
        "POST",
        TS,
        {"content": b'{"username": "\\ud800", "password": "x"}', "headers": JSON},
        400,
        "surrogate",
    ),
    "ts-huge-int": ("POST", TS, {"json": {"requestId": 10**30}}, 400, "too large"),
    "ts-int-over-4300-digits": (
        "POST",
        TS,
        {"content": b'{"requestId": ' + b"9" * 5000 + b"}", "headers": JSON},
        400,
        "4300 digits",
    ),
    "ts-nan": ("POST", TS, {"content": b'{"requestId": NaN}', "headers": JSON}, 400, "not a number"),
    "ts-infinite-float": ("POST", TS, {"content": b'{"requestId": 1e400}', "headers": JSON}, 400, "not a number"),
    "ts-not-utf8": ("POST", TS, {"content": b'{"username": "\xff"}', "headers": JSON}, 400, "not UTF-8"),
    "ts-not-json": ("POST", TS, {"content": b"username=a&password=b", "headers": JSON}, 400, "not valid JSON"),
    "ts-empty-body": ("POST", TS, {"content": b"", "headers": JSON}, 400, "empty"),
    "ts-array-body": ("POST", TS, {"json": [1, 2]}, 400, "JSON object"),
    "ts-null-body": ("POST", TS, {"content": b"null", "headers": JSON}, 400, "JSON object"),
    "ts-form-content-type": ("POST", TS, {"data": {"username": "a"}}, 415, "application/json"),
    "ts-text-content-type": (
        "POST",
        TS,
        {"content": b'{"a": 1}', "headers": {"content-type": "text/plain"}},
        415,
        "application/json",
    ),
    "ts-too-large": ("POST", TS, {"content": b'{"a": "' + b"x" * 1_000_001 + b'"}', "headers": JSON}, 413, "over"),
    "ts-non-ascii-username": (
        "POST",
        TS,
        {"json": {"username": "jos\u00e9", "password": "\u00e9", "requestId": "r"}},
        401,
        "do not match",
    ),
    # Authenticated, but malformed: the parser and the columns.
    "ts-device-ids-not-a-list": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(deviceIds=5)},
        400,
        "deviceIds must be a list",
    ),
    "ts-device-id-an-object": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(deviceIds=[{"kind": "iccid", "id": {"a": 1}}])},
        400,
        "deviceIds must be a list",
    ),
    "ts-request-id-a-float": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(requestId=1.0)},
        400,
        "requestId must be a string",
    ),
    "ts-request-id-a-boolean": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(requestId=True)},
        400,
        "requestId must be a string",
    ),
    "ts-request-id-an-object": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(requestId={"id": TS_REQUEST})},
        400,
        "requestId must be a string",
    ),
    "ts-sub-device-ids-not-a-list": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(deviceResponse={"activateResponse": {"deviceIds": 7}})},
        400,
        "not a thingspace callback",
    ),
    "ts-request-id-too-long": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(requestId="r" * 101)},
        400,
        "101 characters",
    ),
    "ts-device-id-too-long": (
        "POST",
        TS,
        lambda r: {"json": r.thingspace(deviceIds=[{"kind": "iccid", "id": "8" * 65}])},
        400,
        "65 characters",
    ),
    # Teal: the query and the optional body.
    "teal-nul-in-request-id-query": ("GET", TEAL + "?requestId=a%00b", {}, 400, "NUL"),
    "teal-nul-in-request-id-query-post": ("POST", TEAL + "?requestId=a%00b", {}, 400, "NUL"),
    "teal-nul-in-other-query-key": ("GET", TEAL + f"?requestId={TEAL_REQUEST}&x%00=1", {}, 400, "NUL"),
    "teal-nul-in-other-query-value": ("GET", TEAL + f"?requestId={TEAL_REQUEST}&tenant=7%00", {}, 400, "NUL"),
    "teal-request-id-too-long": ("GET", TEAL + "?requestId=" + "r" * 101, {}, 400, "101 characters"),
    "teal-no-request-id": ("GET", TEAL + "?tenant=7", {}, 400, "no requestId"),
    "teal-blank-request-id": ("GET", TEAL + "?requestId=%20", {}, 400, "no requestId"),
    "teal-nul-in-body": ("POST", TEAL, {"json": {"requestId": "a\x00b"}}, 400, "NUL"),
    "teal-lone-surrogate-in-body": (
        "POST",
        TEAL,
        {"content": b'{"requestId": "\\udc80"}', "headers": JSON},
        400,
        "surrogate",
    ),
    "teal-nested-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON},
        400,
        "nested too deeply",
    ),
    "teal-nan-in-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b'{"n": NaN}', "headers": JSON},
        400,
        "not a number",
    ),
    "teal-huge-int-in-body": ("POST", TEAL + f"?requestId={TEAL_REQUEST}", {"json": {"n": -(2**70)}}, 400, "too large"),
    "teal-not-utf8-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b"\xfe\xff", "headers": JSON},
        400,
        "not UTF-8",
    ),
    "teal-not-json-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b"{", "headers": JSON},
        400,
        "not valid JSON",
    ),
    "teal-text-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "application/json",
    ),
    "teal-too-large-body": (
        "POST",
        TEAL + f"?requestId={TEAL_REQUEST}",
        {"content": b"[" + b"1," * 500_001 + b"1]", "headers": JSON},
        413,
        "over",
    ),
    "teal-garbage-content-length": (
        "POST",
        TEAL,
        {"content": b"x", "headers": {**JSON, "content-length": "abc"}},
        400,
        "not valid JSON",
    ),
}


def app_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # the test client's own


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text


def hostile_failure(receiver: Receiver, caplog: pytest.LogCaptureFixture, case: str) -> str | None:
    """What is wrong with the answer to one HOSTILE case (None: nothing)."""
    method, path, kwargs, status, words = HOSTILE[case]
    kwargs = kwargs(receiver) if callable(kwargs) else kwargs
    caplog.clear()
    before = receiver.stored()
    answer = receiver.client.request(method, path, **kwargs)
    records = app_records(caplog)
    tracebacks = [r.getMessage()[:200] for r in caplog.records if r.exc_info] + (
        ["Traceback"] if "Traceback" in caplog.text else []
    )
    if tracebacks:
        return f"answered {answer.status_code} and logged a traceback: {tracebacks}"
    if answer.status_code != status:
        return f"answered {answer.status_code}, not {status}: {answer.text[:300]}"
    if answer.headers.get("content-type") != "application/problem+json":
        return f"answered {answer.headers.get('content-type')}, not a problem document"
    problem = answer.json()
    if not (
        problem.get("status") == status
        and problem.get("instance") == path.split("?")[0]
        and str(problem.get("type", "")).startswith("/problems/")
        and problem.get("title")
        and words in problem.get("detail", "")
    ):
        return f"problem document {problem} (want {words!r} in its detail)"
    if receiver.stored() != before:
        return f"stored {receiver.stored() - before} callbacks"
    lines = [(r.name, r.levelname, r.getMessage()) for r in records]
    if (
        len(records) != 1
        or records[0].name != "bulkchange_pipeline.intake.callbacks"
        or records[0].levelno != logging.WARNING
    ):
        return f"logged {lines}, not one warning from the callback routes"
    message = records[0].getMessage()
    if "\n" in message or str(status) not in message or message.encode("utf-8", "replace").decode() != message:
        return f"log line {message!r} is not one line naming the status"
    return None


def test_hostile_callbacks_are_4xx_problems_with_one_log_line_and_store_nothing(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Every HOSTILE case in turn (one app and one seeded database for all: a parametrized test
    would seed the database once per case); the failure lists every case that went wrong."""
    with caplog.at_level(logging.DEBUG):
        failures = {case: reason for case in HOSTILE if (reason := hostile_failure(receiver, caplog, case))}
    assert not failures, "\n".join(f"{case}: {reason}" for case, reason in failures.items())
    assert len(HOSTILE) >= 44 and receiver.stored() == 0


def test_refusal_log_line_cannot_be_forged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """A key with line breaks is refused for them (keys hold no control characters), and neither
    the detail nor the log line breaks."""
    with caplog.at_level(logging.DEBUG):
        answer = receiver.client.post(TS, json={"x\nERROR forged line\r\n": "a\x00"})
        records = app_records(caplog)
    detail = answer.json()["detail"]
    assert answer.status_code == 400 and "control character U+000A" in detail and "\n" not in detail
    assert len(records) == 1 and "\n" not in records[0].getMessage() and "\r" not in records[0].getMessage()
    assert receiver.stored() == 0


def test_unknown_teal_request_id_is_answered_503_to_retry_in_one_log_line(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """By design (the callback may beat our own write), not a refusal of malformed input."""
    with caplog.at_level(logging.DEBUG):
        answer = receiver.client.get(TEAL, params={"requestId": "teal-req-not-yet-recorded"})
        records = app_records(caplog)
        assert_no_traceback(caplog)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.headers["content-type"] == "application/problem+json" and answer.json()["status"] == 503
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert receiver.stored() == 0


def test_well_formed_callbacks_are_still_stored_without_a_log_line(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        ts = receiver.client.post(
            TS, json=receiver.thingspace(extra={"note": "caf\u00e9 \u2713", "n": 2**63 - 1, "f": 1.5})
        )
        again = receiver.client.post(TS, json=receiver.thingspace())
        teal_get = receiver.client.get(TEAL, params={"requestId": TEAL_REQUEST, "tenant": "7"})
        teal_post = receiver.client.post(TEAL, params={"requestId": TEAL_REQUEST}, json={"requestId": TEAL_REQUEST})
        teal_empty = receiver.client.post(
            TEAL, params={"requestId": TEAL_REQUEST}, content=b"", headers={"content-type": "text/plain"}
        )
        records = app_records(caplog)
        assert_no_traceback(caplog)
    assert (ts.status_code, ts.json()) == (200, {"stored": 1, "duplicates": 0}), ts.text
    assert (again.status_code, again.json()) == (200, {"stored": 0, "duplicates": 1}), again.text
    assert (teal_get.status_code, teal_get.json()) == (200, {"stored": 1, "duplicates": 0}), teal_get.text
    assert teal_post.json() == {"stored": 0, "duplicates": 1} and teal_empty.json() == {"stored": 0, "duplicates": 1}
    assert records == []
    with receiver.engine.connect() as conn:
        payloads = dict(conn.execute(sa.select(carrier_callback.c.integration, carrier_callback.c.payload)).all())
    assert payloads["thingspace"]["password"] == "***" and payloads["thingspace"]["extra"]["note"] == "caf\u00e9 \u2713"
    assert payloads["teal"]["query"] == {"requestId": TEAL_REQUEST, "tenant": "7"}
    assert receiver.stored() == 2


def test_a_thingspace_account_added_after_the_first_callback_is_not_refused(
    receiver: Receiver, seed: DemoSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver caches the ThingSpace accounts for 30 s; an account added meanwhile must not be
    answered 401 (ThingSpace retries a callback only a few times): a miss re-reads the accounts."""
    first = receiver.client.post(TS, json=receiver.thingspace())
    assert first.status_code == 200, first.text  # the account list is cached now
    monkeypatch.setenv("BULKCHANGE_CRED_LATE_TS_CALLBACK_USERNAME", "late-listener")
    monkeypatch.setenv("BULKCHANGE_CRED_LATE_TS_CALLBACK_PASSWORD", "late-PASSWORD-9")
    create_service_provider(
        receiver.engine,
        seed.tenant_id,
        name="Late ThingSpace",
        integration="thingspace",
        carrier="Verizon",
        base_url="http://127.0.0.1:9",
        credentials_name="LATE_TS",
    )
    late = receiver.client.post(
        TS,
        json=receiver.thingspace(username="late-listener", password="late-PASSWORD-9", requestId="ts-late-0001"),
    )
    assert (late.status_code, late.json()) == (200, {"stored": 1, "duplicates": 0}), late.text
