"""Schemathesis against the app's own OpenAPI document (issue 6, "Done when").

Every operation that ``/openapi.json`` lists is exercised by schemathesis with generated requests,
positive (data the document allows) and negative (data it does not), against the real app from
``create_app`` over a real, migrated SQLite database seeded with the demo tenant, with a valid API
key. Every response must be no 5xx, carry a documented status code and content type, and have a
body and headers that match what the document promises.

Random data mostly meets "not found" and "invalid", so part of the generated requests are aimed at
the tenant's real data: path ids of bulk changes that exist (new, scheduled, processed with
failures), and bodies and CSV uploads that name the tenant's own service providers, known change
types, payload fields and real devices, with generated values. Validation, storage, idempotency,
cancel and retry then run for real. Each test prints how many responses it saw per status code.

The carrier callback routes are in the document too (issue 15 §4: they are open to anyone), and
are aimed the same way: ThingSpace bodies with the demo account's callback credentials naming
request ids that were sent (on ThingSpace, on another carrier) or not, Teal callbacks naming them.
Besides the response checks, no request may log a traceback (a record with ``exc_info``, at any
logger and level), and no answer may be a 5xx but one: Teal's documented 503 (with Retry-After) for
a well-formed request id not recorded yet, which asks Teal to deliver the callback again.

``BULKCHANGE_SCHEMA_EXAMPLES`` sets the examples per operation and generation mode (default 60);
by default they are the same on every run (derandomized), ``BULKCHANGE_SCHEMA_RANDOM=1`` explores
new ones (e.g. ``BULKCHANGE_SCHEMA_RANDOM=1 BULKCHANGE_SCHEMA_EXAMPLES=1000`` for a long hunt).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bulkchange_pipeline.domain import PAYLOAD_KEYS, BulkChangeStatus, ChangeType, DeviceChangeStatus
from bulkchange_pipeline.domain.requests import FIELD_ALIASES, TARGET_MODELS
from bulkchange_pipeline.intake import callback_auth
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store import migrate
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import set_bulk_status
from bulkchange_pipeline.store.db import make_engine, shared_engine
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.schema import device_change
from bulkchange_pipeline.store.seed import DemoSeed, seed_demo

from .test_callback_hostile import CB_PASSWORD, CB_USER, TEAL_REQUEST, TS_REQUEST, sent_request
from .xml_inputs import to_xml

XML_MEDIA_TYPES = ["application/xml", "text/xml"]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
RETRY_LATER_CHECKS = [c for c in CHECKS if c is not not_a_server_error]  # Teal's documented 503, see _retry_later
MAX_EXAMPLES = int(os.environ.get("BULKCHANGE_SCHEMA_EXAMPLES", "60"))
RANDOMIZE = os.environ.get("BULKCHANGE_SCHEMA_RANDOM", "") not in ("", "0")  # default: the same examples every run

# Bugs this test found and that were fixed stay as the deterministic regression tests at the end
# (an empty idempotency key was once stored as '' and the second submission answered 500).
KNOWN_BUG_TRIGGERS: dict[tuple[str, str], Any] = {}


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation in the app's document. Building the document touches no
    database, so this runs at collection time; the test itself loads the document over HTTP."""
    doc = create_app("sqlite://").openapi()
    return [(method.upper(), path) for path, methods in doc["paths"].items() for method in methods]


OPERATIONS = _operations()


@dataclass
class SchemaRun:
    schema: Any  # schemathesis OpenApiSchema loaded from the real app's /openapi.json
    seed: DemoSeed
    headers: dict[str, str]
    bulk_change_ids: list[int]


@dataclass
class Seeded:
    path: Path  # a seeded SQLite file, copied for each test
    seed: DemoSeed
    headers: dict[str, str]
    bulk_change_ids: list[int]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Demo tenant, an API key, and bulk changes that are new, scheduled and processed with failures."""
    path: Path = tmp_path_factory.mktemp("schema") / "bulkchange.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    engine = make_engine(url)
    seed = seed_demo(engine, devices_per_carrier=20)
    headers = {"Authorization": f"Bearer {create_api_key(engine, seed.tenant_id, 'schemathesis')}"}
    app = create_app(url)
    jasper = seed.service_providers["jasper"]
    iccids = seed.sample_iccids["jasper"]
    base = {"serviceProviderId": jasper, "changeType": 1, "statusUpdate": {"targetStatus": "DEACTIVATED"}}
    with TestClient(app) as client:

        def submit(body: dict[str, Any]) -> int:
            r = client.post("/bulk-changes", json=body, headers=headers)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        new_id = submit({**base, "devices": iccids[:3]})
        failed_id = submit({**base, "devices": iccids[3:6]})
        scheduled_id = submit({**base, "devices": iccids[6:8], "effectiveDate": "2999-01-01T00:00:00Z"})
    # One bulk change processed with failures, so retry-failed has rows to requeue.
    with engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(device_change.c.id)
                .where(device_change.c.bulk_change_id == failed_id)
                .order_by(device_change.c.id)
            )
            .scalars()
            .all()
        )
    claim(engine, ids)
    record_results(
        engine,
        tenant_id=seed.tenant_id,
        bulk_change_id=failed_id,
        process_by="test",
        results=[
            RowResult(ids[0], DeviceChangeStatus.PROCESSED, "ok"),
            RowResult(ids[1], DeviceChangeStatus.API_FAILED, "refused: rate plan locked", carrier_request_id="x-1"),
            RowResult(ids[2], DeviceChangeStatus.API_FAILED, "retries ran out"),
        ],
    )
    set_bulk_status(engine, failed_id, BulkChangeStatus.PROCESSED)
    sent_request(engine, seed, "teal", TEAL_REQUEST)  # what aimed callbacks name
    sent_request(engine, seed, "thingspace", TS_REQUEST)
    engine.dispose()
    shared_engine(url).dispose()  # the app's
    return Seeded(path, seed, headers, [new_id, failed_id, scheduled_id])


@pytest.fixture
def schema_run(seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaRun]:
    """The app on a fresh copy of the seeded database (no state carried between operations), and
    the schema that schemathesis loads from its /openapi.json. The demo ThingSpace account has
    callback credentials, which aimed callbacks send."""
    _callback_credentials(monkeypatch)
    path = tmp_path / "bulkchange.db"
    with closing(sqlite3.connect(seeded.path)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)  # committed data, WAL included
    app = create_app(f"sqlite:///{path}")
    yield SchemaRun(
        schemathesis.openapi.from_asgi("/openapi.json", app), seeded.seed, seeded.headers, seeded.bulk_change_ids
    )
    shared_engine(f"sqlite:///{path}").dispose()


def _callback_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_USERNAME", CB_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_PASSWORD", CB_PASSWORD)
    monkeypatch.setattr(callback_auth, "_accounts_cache", {})  # re-read the accounts of this database


# --- data aimed at the tenant's own records ---------------------------------------------------------

DATES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["2999-01-01T00:00:00Z", "2000-01-01", "2030-06-30T12:00:00+02:00", "tomorrow", ""]),
)


# A small pool, so that keys repeat (the idempotent replay path) as well as new ones.
REPEATED_KEYS = st.sampled_from(["", " ", "k-1", "k-2"])
IDEMPOTENCY_KEYS = st.one_of(REPEATED_KEYS, REPEATED_KEYS, st.text(max_size=20))


def _values(seed: DemoSeed) -> st.SearchStrategy[Any]:
    known = [
        "ACTIVATED",
        "DEACTIVATED",
        "RETIRED",
        "INVENTORY",
        "active",
        "suspend",
        "CP-Basic",
        "12345",
        *[p for plans in seed.carrier_rate_plans.values() for p in plans],
    ]
    ids = [*seed.customers.values(), *seed.customer_rate_plans.values(), *seed.pools.values()]
    return st.one_of(
        st.sampled_from(known),
        st.sampled_from(ids),
        DATES,
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63),
        st.text(max_size=20),
        st.lists(st.sampled_from(ids), max_size=3),
    )


def _field_names(change_type: ChangeType) -> st.SearchStrategy[str]:
    """Mostly the change type's own fields (snake_case or wire names), sometimes any known field."""
    own = sorted(TARGET_MODELS[change_type].model_fields)
    wire = sorted(k for k, v in FIELD_ALIASES.items() if v in own)
    return st.one_of(st.sampled_from(own), st.sampled_from(wire or own), st.sampled_from(sorted(FIELD_ALIASES)))


def _payload(seed: DemoSeed, change_type: ChangeType) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(_field_names(change_type), _values(seed), max_size=4)


def _devices(seed: DemoSeed) -> st.SearchStrategy[str]:
    real = [d for ds in seed.sample_iccids.values() for d in ds] + seed.other_iccids[:3]
    return st.one_of(st.sampled_from(real), st.text(max_size=22))


CHANGE_TYPES = st.sampled_from(list(PAYLOAD_KEYS))


def _json_bodies(seed: DemoSeed) -> st.SearchStrategy[dict[str, Any]]:
    """Valid per the document's request schema; aimed at the tenant's providers, the change type's
    fields and the tenant's devices."""

    def for_type(ct: ChangeType) -> st.SearchStrategy[dict[str, Any]]:
        device = st.one_of(
            _devices(seed),
            st.tuples(st.sampled_from(["iccid", "device", "msisdn"]), _devices(seed), _payload(seed, ct)).map(
                lambda t: {t[0]: t[1], **t[2]}
            ),
        )
        return st.fixed_dictionaries(
            {
                "serviceProviderId": st.sampled_from(sorted(seed.service_providers.values())),
                "changeType": st.sampled_from([int(ct), ct.label]),
                PAYLOAD_KEYS[ct]: _payload(seed, ct),
                "devices": st.lists(device, min_size=1, max_size=5),
                "idempotencyKey": st.one_of(st.none(), IDEMPOTENCY_KEYS),
            },
            optional={"effectiveDate": DATES, "processChanges": st.booleans()},
        )

    return CHANGE_TYPES.flatmap(for_type)


def _csv_forms(seed: DemoSeed) -> st.SearchStrategy[dict[str, Any]]:
    """A UTF-8 CSV with an identifier column, value columns of the change type (mostly) with
    generated values, and real or made-up devices."""
    cell = st.one_of(
        st.sampled_from(["ACTIVATED", "DEACTIVATED", "IOT-1GB", "CP-Basic", "2999-01-01", "2000-01-01", "1"]),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12),
    )

    def for_type(ct: ChangeType) -> st.SearchStrategy[dict[str, Any]]:
        def build(t: tuple[Any, ...]) -> dict[str, Any]:
            sp, change_type, id_column, cols, rows, extra = t
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow([id_column, *cols])
            for dev, values in rows:
                writer.writerow([dev, *values[: len(cols)]])
            return {"file": buf.getvalue().encode(), "changeType": change_type, "serviceProviderId": str(sp), **extra}

        rows = st.lists(
            st.tuples(_devices(seed).filter(lambda d: "\x00" not in d), st.lists(cell, min_size=3, max_size=3)),
            min_size=1,
            max_size=5,
        )
        extra = st.fixed_dictionaries(
            {}, optional={"idempotencyKey": IDEMPOTENCY_KEYS.filter(lambda k: "\x00" not in k)}
        )
        return st.tuples(
            st.sampled_from(sorted(seed.service_providers.values())),
            st.sampled_from([str(int(ct)), ct.label]),
            st.sampled_from(["iccid", "device", "msisdn", "imei"]),
            st.lists(_field_names(ct), max_size=3, unique=True),
            rows,
            extra,
        ).map(build)

    return CHANGE_TYPES.flatmap(for_type)


# Request ids a callback may name: sent on Teal or ThingSpace (each route's own one first and most often, so
# that callbacks are stored, then repeated), on Jasper (the seeded failed row), never sent, anything.
def _request_ids(own: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(own),
        st.just(own),
        st.sampled_from([TS_REQUEST, TEAL_REQUEST, "x-1", "never-sent-1"]),
        st.text(min_size=1, max_size=100),
    )


def _thingspace_bodies(seed: DemoSeed) -> st.SearchStrategy[dict[str, Any]]:
    """CarrierService messages, mostly with the demo account's callback credentials: successes of
    each action, faults (the "already in that state" ones too), ids of the account's devices."""
    text = st.text(max_size=12)
    device = st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["iccid", "imei", "mdn", "ICCID", ""]),
            "id": st.one_of(st.sampled_from(seed.sample_iccids["thingspace"][:3]), st.text(max_size=64)),
        }
    )
    action = st.sampled_from(
        [
            "activateResponse",
            "suspendResponse",
            "restoreResponse",
            "deactivateResponse",
            "changeServicePlanResponse",
            "changeDeviceIdResponse",
            "otherResponse",
        ]
    )
    detail = st.fixed_dictionaries({}, optional={"deviceIds": st.lists(device, max_size=2), "servicePlan": text})
    fault = st.fixed_dictionaries(
        {},
        optional={
            "faultcode": st.one_of(
                st.sampled_from(
                    [
                        "REQUEST_FAILED.DeviceAlreadyActive",
                        "ns:REQUEST_FAILED.DeviceAlreadySuspended",
                        "REQUEST_FAILED.UnexpectedError",
                    ]
                ),
                text,
            ),
            "faultstring": text,
        },
    )
    return st.fixed_dictionaries(
        {
            "username": st.sampled_from([CB_USER, CB_USER, CB_USER, "someone"]),
            "password": st.sampled_from([CB_PASSWORD, CB_PASSWORD, CB_PASSWORD, "wrong"]),
            "requestId": _request_ids(TS_REQUEST),
            "deviceIds": st.lists(device, max_size=3),
            "status": st.sampled_from(["Success", "Failed", "failed", ""]),
        },
        optional={
            "deviceResponse": st.tuples(action, detail).map(lambda t: {t[0]: t[1]}),
            "faultResponse": fault,
            "callbackCount": st.integers(0, 5),
        },
    )


def _teal_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "requestId": _request_ids(TEAL_REQUEST),
            "status": st.sampled_from(["SUCCESS", "FAILED"]),
            "entries": st.lists(st.fixed_dictionaries({"eid": st.text(max_size=32)}), max_size=2),
        },
    )


def _callback_strategy(run: SchemaRun, operation: Any, mode: GenerationMode) -> st.SearchStrategy:
    """Callbacks aimed at the request ids that were sent, with the account's credentials."""
    if operation.path == "/callbacks/thingspace":
        return _thingspace_bodies(run.seed).flatmap(lambda b: operation.as_strategy(generation_mode=mode, body=b))
    aimed = _request_ids(TEAL_REQUEST).flatmap(
        lambda rid: operation.as_strategy(generation_mode=mode, query={"requestId": rid})
    )
    if operation.method.upper() != "POST":
        return aimed
    return st.one_of(
        aimed,
        st.tuples(_request_ids(TEAL_REQUEST), _teal_bodies()).flatmap(
            lambda t: operation.as_strategy(generation_mode=mode, query={"requestId": t[0]}, body=t[1])
        ),
    )


def _strategy(run: SchemaRun, operation: Any, mode: GenerationMode) -> st.SearchStrategy:
    """The operation's own schemathesis strategy, and the same with aimed ids or bodies."""
    options = [operation.as_strategy(generation_mode=mode)]
    if mode is GenerationMode.POSITIVE and operation.path.startswith("/callbacks/"):
        options += [
            _callback_strategy(run, operation, mode)
        ] * 2  # random ids are refused (503, 401) long before storage
    if "bulk_change_id" in operation.path:
        options.append(
            st.sampled_from(run.bulk_change_ids).flatmap(
                lambda i: operation.as_strategy(generation_mode=mode, path_parameters={"bulk_change_id": i})
            )
        )
    if mode is GenerationMode.POSITIVE and operation.method.upper() == "POST":
        bodies = {"/bulk-changes": _json_bodies, "/bulk-changes:dry-run": _json_bodies, "/bulk-changes/csv": _csv_forms}
        if operation.path in bodies:
            header = (
                st.sampled_from([None, "", "k-1", "k-2"])
                if "Idempotency-Key" in _header_names(operation)
                else st.none()
            )
            csv = operation.path.endswith("/csv")
            options.append(
                st.tuples(bodies[operation.path](run.seed), header).flatmap(
                    lambda t: operation.as_strategy(
                        generation_mode=mode,
                        body=t[0],
                        headers=None if t[1] is None else {"Idempotency-Key": t[1]},
                        media_type="multipart/form-data" if csv else "application/json",
                    )
                )
            )
            if not csv:  # the same bodies as XML documents (issue 19)
                options.append(
                    st.tuples(bodies[operation.path](run.seed), header, st.sampled_from(XML_MEDIA_TYPES)).flatmap(
                        lambda t: operation.as_strategy(
                            generation_mode=mode,
                            body=to_xml(t[0]).encode("utf-8", "surrogatepass"),
                            headers=None if t[1] is None else {"Idempotency-Key": t[1]},
                            media_type=t[2],
                        )
                    )
                )
    return st.one_of(options)


def _header_names(operation: Any) -> set[str]:
    return {p.name for p in operation.headers}


def _modes(operation: Any) -> list[GenerationMode]:
    has_input = bool(operation.path_parameters or operation.query or operation.headers or operation.body)
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_input else [GenerationMode.POSITIVE]


class Tracebacks(logging.Handler):
    """Every log record that carries a traceback (``exc_info``, or its text in the message)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback (most recent call last)" in record.getMessage():
            self.records.append(record)

    def take(self) -> list[str]:
        found = [
            f"{r.name}: {r.getMessage()[:200]} ({r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else 'text'})"
            for r in self.records
        ]
        self.records.clear()
        return found


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    """Catches tracebacks logged at any logger and any level: the root logger at DEBUG, and the
    handler on the root and on every logger that does not propagate to it."""
    handler = Tracebacks()
    root = logging.getLogger()
    loggers = [
        root,
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger) and not lg.propagate),
    ]
    level = root.level
    root.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)
    root.setLevel(level)


def _retry_later(operation: Any, response: Any) -> bool:
    """Teal's documented 503 for a well-formed request id not recorded yet (the callback may beat
    our own write; Teal delivers it again): by design, the one 5xx allowed."""
    if not (
        operation.path == "/callbacks/teal" and response.status_code == 503 and response.headers.get("retry-after")
    ):
        return False
    return "unknown request id" in str(response.json().get("detail"))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_its_documented_schema(
    schema_run: SchemaRun, tracebacks: Tracebacks, method: str, path: str
) -> None:
    _check_operation(schema_run, tracebacks, method, path)


CALLBACK_OPERATIONS = [(m, p) for m, p in OPERATIONS if p.startswith("/callbacks/")]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("method", "path"), CALLBACK_OPERATIONS, ids=[f"{m} {p}" for m, p in CALLBACK_OPERATIONS])
def test_callback_operation_conforms_on_postgresql(
    db_url: str, engine: sa.Engine, tracebacks: Tracebacks, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    """The callback routes again, on PostgreSQL: it refuses what SQLite stores (a NUL, an id longer
    than its column), and these routes are open to anyone."""
    seed = seed_demo(engine, devices_per_carrier=20)
    sent_request(engine, seed, "teal", TEAL_REQUEST)
    sent_request(engine, seed, "thingspace", TS_REQUEST)
    _callback_credentials(monkeypatch)
    try:
        run = SchemaRun(schemathesis.openapi.from_asgi("/openapi.json", create_app(db_url)), seed, {}, [])
        _check_operation(run, tracebacks, method, path)
    finally:
        shared_engine(db_url).dispose()


def _check_operation(schema_run: SchemaRun, tracebacks: Tracebacks, method: str, path: str) -> None:
    operation = schema_run.schema[path][method]
    known_bug = KNOWN_BUG_TRIGGERS.get((method, path), lambda case: False)
    seen: Counter[int] = Counter()
    for mode in _modes(operation):

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=not RANDOMIZE,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_strategy(schema_run, operation, mode))
        def check(case: Any) -> None:
            # Always the valid key: drop any generated Authorization / X-API-Key value.
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "x-api-key")
            }
            assume(not known_bug(case))
            response = case.call(headers=schema_run.headers)
            seen[response.status_code] += 1
            logged = tracebacks.take()
            assert not logged, f"{method} {path} answered {response.status_code} and logged a traceback: {logged}"
            checks = RETRY_LATER_CHECKS if _retry_later(operation, response) else CHECKS
            case.validate_response(response, checks=checks, headers=schema_run.headers)

        try:
            check()
        finally:
            print(f"\n{method} {path} ({mode.value}): responses by status {dict(sorted(seen.items()))}")
        seen.clear()


def test_every_documented_operation_is_covered(schema_run: SchemaRun) -> None:
    """The operations tested above are exactly those in the served document."""
    served = {(op.method.upper(), op.path) for op in (r.ok() for r in schema_run.schema.get_all_operations())}
    assert served == set(OPERATIONS)
    assert len(served) >= 11
    assert {("POST", "/callbacks/thingspace"), ("GET", "/callbacks/teal"), ("POST", "/callbacks/teal")} <= served
    for method, path in (("POST", "/callbacks/thingspace"), ("GET", "/callbacks/teal"), ("POST", "/callbacks/teal")):
        operation = schema_run.schema[path][method]
        assert operation.body or operation.query, f"{method} {path} documents no input: schemathesis would send nothing"


# --- regression tests of the bugs found -------------------------------------------------------------


def _call(schema_run: SchemaRun, path: str, **case_kwargs: Any) -> Any:
    """One request built by schemathesis from the document, sent and checked like the generated ones."""
    case = schema_run.schema[path]["POST"].Case(**case_kwargs)
    response = case.call(headers=schema_run.headers)
    case.validate_response(response, checks=CHECKS, headers=schema_run.headers)
    return response


def test_empty_idempotency_key_in_a_json_body_means_no_key(schema_run: SchemaRun) -> None:
    jasper, iccids = schema_run.seed.service_providers["jasper"], schema_run.seed.sample_iccids["jasper"]
    devices = iccids[8:10]  # not in the seeded bulk changes
    assert len(devices) == 2
    for device in devices:
        body = {
            "serviceProviderId": jasper,
            "changeType": 1,
            "statusUpdate": {"targetStatus": "DEACTIVATED"},
            "devices": [device],
            "idempotencyKey": "",
        }
        status = _call(schema_run, "/bulk-changes", body=body, media_type="application/json").status_code
        assert status == 201  # blank means no key: both are new bulk changes


def test_empty_idempotency_key_header_on_a_csv_upload_means_no_key(schema_run: SchemaRun) -> None:
    jasper, iccids = schema_run.seed.service_providers["jasper"], schema_run.seed.sample_iccids["jasper"]
    devices = iccids[8:10]
    assert len(devices) == 2
    for device in devices:
        form = {
            "file": f"iccid,targetStatus\n{device},DEACTIVATED\n".encode(),
            "changeType": "1",
            "serviceProviderId": str(jasper),
        }
        status = _call(
            schema_run,
            "/bulk-changes/csv",
            body=form,
            media_type="multipart/form-data",
            headers={"Idempotency-Key": ""},
        ).status_code
        assert status == 201  # blank means no key: both are new bulk changes
