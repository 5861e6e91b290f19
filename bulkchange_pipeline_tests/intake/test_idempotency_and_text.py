"""Issue 15 §2 and §3, on both backends.

§2 An idempotency key is bound to the request it was first used with (Stripe's semantics): the
same key with the same request answers the original bulk change; with a different request
(devices, values, change type, service provider, processChanges) it is refused with 409 naming the
original (API) or a non-zero exit with that message (CLI), and nothing is stored. Two concurrent
submissions of one key with different requests: one is stored, the other refused.

§3 Text that cannot be stored and answered as sent (a lone UTF-16 surrogate, NUL) is refused at
the one value check before anything is stored, on every way in: JSON body, dry run, CLI submit
and dry-run (file and options).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.intake.submit import request_fingerprint, submit
from bulkchange_pipeline.store.bulk_changes import NewBulkChange, create_bulk_change
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.idempotency import IdempotencyConflict, claim_key
from bulkchange_pipeline.store.schema import bulk_change

from .conftest import table_counts
from .test_api import Api, make_api


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=10)


def _iccids(api: Api, n: int = 3) -> list[str]:
    return api.seed.sample_iccids["jasper"][:n]


# --- §2 idempotency key + request fingerprint -------------------------------------------------


@pytest.mark.parametrize("change", ["devices", "order", "values", "change type", "service provider", "processChanges"])
def test_same_key_with_a_different_request_is_refused_with_409(api: Api, change: str) -> None:
    devices = _iccids(api)
    first = api.client.post("/bulk-changes", json=api.status_body(devices, idempotencyKey="k-409"), headers=api.demo)
    assert first.status_code == 201, first.text
    original = first.json()["id"]
    other = {
        "devices": api.status_body(devices[:2], idempotencyKey="k-409"),
        "order": api.status_body(devices[::-1], idempotencyKey="k-409"),
        "values": {**api.status_body(devices, idempotencyKey="k-409"), "statusUpdate": {"status": "DEACTIVATED"}},
        "change type": {
            "serviceProviderId": api.jasper,
            "changeType": 3,
            "devices": devices,
            "idempotencyKey": "k-409",
            "archival": {},
        },
        "service provider": {
            **api.status_body(api.seed.sample_iccids["thingspace"][:3], idempotencyKey="k-409"),
            "serviceProviderId": api.seed.service_providers["thingspace"],
        },
        "processChanges": api.status_body(devices, idempotencyKey="k-409", processChanges=False),
    }[change]
    before = table_counts(api.engine)
    again = api.client.post("/bulk-changes", json=other, headers=api.demo)
    assert again.status_code == 409, again.text
    problem = again.json()
    assert again.headers["content-type"].startswith("application/problem+json")
    assert problem["bulkChangeId"] == original and f"bulk change {original}" in problem["detail"]
    assert "different request" in problem["detail"] and "k-409" in problem["detail"]
    assert table_counts(api.engine) == before
    # the dry run says so before a real submission would be refused
    dry = api.client.post("/bulk-changes:dry-run", json=other, headers=api.demo)
    assert dry.status_code == 409 and dry.json()["bulkChangeId"] == original


def test_same_key_with_the_same_request_answers_the_original(api: Api) -> None:
    devices = _iccids(api)
    first = api.client.post("/bulk-changes", json=api.status_body(devices, idempotencyKey="k-same"), headers=api.demo)
    assert first.status_code == 201
    before = table_counts(api.engine)
    # the same request as understood: padded values, devices as objects, the key in the header
    same = {
        "statusUpdate": {"status": " RETIRED "},
        "devices": [{"device": f" {d}"} for d in devices],
        "changeType": 1,
        "serviceProviderId": api.jasper,
    }
    again = api.client.post("/bulk-changes", json=same, headers={**api.demo, "Idempotency-Key": "k-same"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert table_counts(api.engine) == before


def test_csv_upload_reusing_a_json_key_for_other_devices_is_refused(api: Api) -> None:
    first = api.client.post(
        "/bulk-changes", json=api.status_body(_iccids(api), idempotencyKey="k-csv"), headers=api.demo
    )
    assert first.status_code == 201
    csv_text = "iccid,status\n" + "".join(f"{d},RETIRED\n" for d in api.seed.sample_iccids["jasper"][5:7])
    before = table_counts(api.engine)
    r = api.client.post(
        "/bulk-changes/csv",
        headers=api.demo,
        files={"file": ("x.csv", csv_text, "text/csv")},
        data={"changeType": "1", "serviceProviderId": str(api.jasper), "idempotencyKey": "k-csv"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["bulkChangeId"] == first.json()["id"]
    assert table_counts(api.engine) == before


def test_cli_exits_non_zero_naming_the_original(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    assert run("seed-demo", "--devices-per-carrier", "5").exit_code == 0
    from bulkchange_pipeline.store.seed import demo_iccid

    def write(name: str, devices: list[str]) -> str:
        path = tmp_path / name
        path.write_text(
            json.dumps(
                {"serviceProviderId": 1, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": devices}
            )
        )
        return str(path)

    one = write("one.json", [demo_iccid(1, 0, 0)])
    two = write("two.json", [demo_iccid(1, 0, 1)])
    first = run("submit", one, "--idempotency-key", "cli-k")
    assert first.exit_code == 0, first.output
    same = run("submit", one, "--idempotency-key", "cli-k")
    assert same.exit_code == 0 and "nothing new created" in same.output
    before = table_counts(engine)
    other = run("submit", two, "--idempotency-key", "cli-k")
    assert other.exit_code == 1, other.output
    assert "already used for bulk change" in other.output and "different request" in other.output
    assert "Traceback" not in other.output
    assert table_counts(engine) == before


def test_concurrent_submissions_of_one_key_with_different_requests(engine: sa.Engine, db_url: str) -> None:
    """The loser of the unique-constraint race is refused too, not answered with the winner.

    A first transaction inserts the key and stays open; a second submission of the same key with
    a different request finds no committed row, blocks on the insert (PostgreSQL: the unique index;
    SQLite: the write lock), and once the first commits it must raise IdempotencyConflict.
    """
    from bulkchange_pipeline.store.seed import seed_demo

    seed = seed_demo(engine, devices_per_carrier=2)
    sp = seed.service_providers["jasper"]

    def request(devices: list[str]) -> BulkChangeRequest:
        return BulkChangeRequest.model_validate(
            {
                "serviceProviderId": sp,
                "changeType": 1,
                "idempotencyKey": "race",
                "statusUpdate": {"status": "RETIRED"},
                "devices": devices,
            }
        )

    a, b = request(seed.sample_iccids["jasper"][:1]), request(seed.sample_iccids["jasper"][1:2])
    assert request_fingerprint(a) != request_fingerprint(b)
    outcome: dict[str, object] = {}
    holder = engine.connect()
    tx = holder.begin()
    first_id = holder.execute(
        sa.insert(bulk_change)
        .values(
            tenant_id=seed.tenant_id,
            service_provider_id=sp,
            change_type=1,
            portal_type=0,
            process_changes=True,
            status="NEW",
            request={},
            created_by="first",
            created_at=utcnow(),
            idempotency_key="race",
            request_fingerprint=request_fingerprint(a),
        )
        .returning(bulk_change.c.id)
    ).scalar_one()
    claim_key(holder, seed.tenant_id, "race", bulk_change_id=first_id)  # as insert_bulk_change does

    def second() -> None:
        try:
            outcome["result"] = create_bulk_change(
                engine,
                NewBulkChange(
                    tenant_id=seed.tenant_id,
                    service_provider_id=sp,
                    change_type=1,
                    portal_type=0,
                    process_changes=True,
                    request={},
                    created_by="second",
                    rows=[],
                    idempotency_key="race",
                    request_fingerprint=request_fingerprint(b),
                ),
            )
        except Exception as exc:  # noqa: BLE001 - the assertion below names what was raised
            outcome["error"] = exc

    worker = threading.Thread(target=second)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive(), f"the second submission did not wait for the first: {outcome}"
    tx.commit()
    holder.close()
    worker.join(30)
    assert isinstance(outcome.get("error"), IdempotencyConflict), outcome
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one() == 1


def test_a_key_stored_before_fingerprints_is_answered_as_before(engine: sa.Engine) -> None:
    """Bulk changes stored before migration 0007 have no fingerprint: nothing to compare with."""
    from bulkchange_pipeline.store.seed import seed_demo

    seed = seed_demo(engine, devices_per_carrier=2)
    req = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 1,
            "idempotencyKey": "legacy",
            "statusUpdate": {"status": "RETIRED"},
            "devices": seed.sample_iccids["jasper"][:1],
        }
    )
    first = submit(engine, seed.tenant_id, req, "t")
    with engine.begin() as conn:
        conn.execute(sa.update(bulk_change).values(request_fingerprint=None))
    other = req.model_copy(update={"devices": seed.sample_iccids["jasper"][1:2]})
    again = submit(engine, seed.tenant_id, other, "t")
    assert not again.created and again.bulk_change_id == first.bulk_change_id


# --- §3 text that cannot be stored is refused before anything is stored -----------------------

SURROGATE_BODY = (
    '{"serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": ["\\ud800"]}'
)


@pytest.mark.parametrize("where", ["device", "value", "key", "idempotency key", "nested"])
@pytest.mark.parametrize("route", ["/bulk-changes", "/bulk-changes:dry-run"])
def test_lone_surrogate_in_a_json_body_is_a_422_and_nothing_is_stored(api: Api, where: str, route: str) -> None:
    iccid = _iccids(api, 1)[0]
    body = {
        "device": SURROGATE_BODY % api.jasper,
        "value": '{"serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RE\\udfffTIRED"}, "devices": ["%s"]}'
        % (api.jasper, iccid),
        "key": '{"serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": [{"iccid": "%s", "\\udc80x": 1}]}'
        % (api.jasper, iccid),
        "idempotency key": '{"serviceProviderId": %d, "changeType": 1, "idempotencyKey": "a\\ud83d", "statusUpdate": {"status": "RETIRED"}, "devices": ["%s"]}'
        % (api.jasper, iccid),
        "nested": '{"serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": [{"iccid": "%s", "x": [{"y": "\\ud800"}]}]}'
        % (api.jasper, iccid),
    }[where]
    before = table_counts(api.engine)
    r = api.client.post(route, content=body.encode(), headers={**api.demo, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "lone UTF-16 surrogate" in r.json()["detail"]
    assert table_counts(api.engine) == before
    listing = api.client.get("/bulk-changes", headers=api.demo)
    assert listing.status_code in (200, 404, 405)  # whatever the route answers, never a 500


@pytest.mark.parametrize("command", ["submit", "dry-run"])
def test_lone_surrogate_in_a_file_or_an_option_is_a_clean_cli_error(
    engine: sa.Engine, db_url: str, tmp_path: Path, command: str
) -> None:
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    assert run("seed-demo", "--devices-per-carrier", "3").exit_code == 0
    path = tmp_path / "s.json"
    path.write_text(SURROGATE_BODY % 1)
    before = table_counts(engine)
    from_file = run(command, str(path))
    assert from_file.exit_code == 2, from_file.output
    assert "lone UTF-16 surrogate" in from_file.output and "Traceback" not in from_file.output
    good = tmp_path / "g.json"
    good.write_text(
        json.dumps({"serviceProviderId": 1, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": ["x"]})
    )
    # a non-UTF-8 byte in argv reaches Python as a lone surrogate (PEP 383): named as the byte sent
    for option in ("--idempotency-key", "--created-by" if command == "submit" else "--tenant"):
        bad = run(command, str(good), option, "k\udcff")
        assert bad.exit_code == 2, bad.output
        assert "not valid UTF-8 (byte 0xFF)" in bad.output and "Traceback" not in bad.output
        other = run(command, str(good), option, "k\ud800")  # a surrogate no byte decodes to
        assert other.exit_code == 2 and "lone UTF-16 surrogate" in other.output
    assert table_counts(engine) == before


def test_nan_and_infinity_in_json_are_refused(api: Api) -> None:
    iccid = _iccids(api, 1)[0]
    before = table_counts(api.engine)
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = (
            '{"serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, "devices": [{"iccid": "%s", "x": %s}]}'
            % (api.jasper, iccid, literal)
        )
        r = api.client.post(
            "/bulk-changes", content=body.encode(), headers={**api.demo, "Content-Type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert "not a number" in r.json()["detail"]
    assert table_counts(api.engine) == before


@pytest.mark.parametrize("declared", ["\u00b2".encode("latin-1"), b"9" * 5000, b"12 "])
@pytest.mark.parametrize("route", ["/bulk-changes", "/callbacks/thingspace"])
def test_a_content_length_that_is_not_a_plain_number_never_makes_a_500(api: Api, declared: bytes, route: str) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises; 5000 digits exceed int()'s limit. Found in the
    callback routes (issue 15 §4); the intake's body reader had the same line, now one reader serves both."""
    r = api.client.post(
        route, content=b"{}", headers={**api.demo, "Content-Type": "application/json", "Content-Length": declared}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
