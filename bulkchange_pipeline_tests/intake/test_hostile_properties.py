"""Hostile input on every way in (issue 15 §6): property-based tests with hypothesis.

Ways in: the JSON API (``POST /bulk-changes`` and ``/bulk-changes:dry-run``), the CSV upload
(``POST /bulk-changes/csv``), the CLI (``bulkchange submit`` / ``dry-run`` with JSON and CSV files),
the query parameters of every GET route, and the carrier callbacks (``/callbacks/thingspace``,
``/callbacks/teal``). The input is aimed at real fields (see ``hostile_inputs``) and mixes valid
values with arbitrary unicode (lone surrogates as ``\\ud800`` escapes), control and zero-width
characters, whitespace around ``= + - @``, numbers beyond 64 bits, NaN/Infinity literals, 1000-deep
nesting, non-UTF-8 bytes, semicolon CSVs, blank and ragged rows.

The property, for every input:
- either it is refused clearly (API: a 4xx problem document with a non-empty reason; CLI: a
  non-zero exit with a one-line ``Error: ...`` reason and no traceback) and nothing is stored,
- or it is accepted (2xx / exit 0) and round-trips: the stored device rows (read back through
  ``GET /bulk-changes/{id}/devices`` or the database) hold exactly the values sent, after the
  documented normalisation (surrounding whitespace stripped; a status in the carrier's spelling);
  a refused row inside an accepted bulk change carries a non-empty reason.
Never a 5xx, never a log record with a traceback (``exc_info``), never a traceback in CLI output.

Each test builds one app and one database per backend and compares table counts around each
example. Explicit examples (``with_examples``) run first on every run: the inputs these properties
found failing, kept as regressions, and one of each hostile form listed above. ``BULKCHANGE_HOSTILE_EXAMPLES`` sets the examples per test (default 30; derandomized, so
every run tries the same inputs); ``BULKCHANGE_HOSTILE_RANDOM=1`` explores new ones, e.g.
``BULKCHANGE_HOSTILE_RANDOM=1 BULKCHANGE_HOSTILE_EXAMPLES=2000`` for a long hunt.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from bulkchange_pipeline.carriers import parse_callback
from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import PAYLOAD_KEYS, ChangeType, Integration
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.db import shared_engine
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.schema import carrier_callback, device_change
from bulkchange_pipeline.store.seed import DemoSeed, demo_eid, seed_demo

from ..notifications.test_api_properties import NOTIFICATION_GET_ROUTES
from ..split.test_split_properties import SUBMISSION_GET_ROUTES
from . import hostile_inputs as h
from .conftest import table_counts
from .xml_inputs import results_items

MAX_EXAMPLES = int(os.environ.get("BULKCHANGE_HOSTILE_EXAMPLES", "30"))
RANDOMIZE = os.environ.get("BULKCHANGE_HOSTILE_RANDOM", "") not in ("", "0")
HOSTILE = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not RANDOMIZE,
    database=None,
    print_blob=RANDOMIZE,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
PROBLEM_JSON = "application/problem+json"
TS_CALLBACK_USER, TS_CALLBACK_PASSWORD = "ts-callback-user", "ts-callback-PW-1"
TEAL_REQUEST_ID = "teal-req-0001"
# ASCII only: starlette's TestClient re-encodes other header bytes as UTF-8 (a real server would not)
HEADER_KEYS = ["hk-1", " hk-1 ", "k-1", "", " ", "k" * 201, "=cmd", "a\tb", "%ff"]
MAX_KEY = 200  # the documented length limit of an idempotency key (Idempotency-Key header, idempotencyKey field)


# --- the app, its database, and the checks shared by every way in ----------------------------------


@dataclass
class Harness:
    client: TestClient
    engine: sa.Engine
    seed: DemoSeed
    headers: dict[str, str]
    caplog: pytest.LogCaptureFixture
    accepted: int = 0  # examples that were accepted (the tests also prove they are not all refused)
    refused: int = 0
    existing_ids: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = table_counts(self.engine)
        with self.engine.connect() as conn:
            counts["carrier_callback"] = conn.execute(
                sa.select(sa.func.count()).select_from(carrier_callback)
            ).scalar_one()
        return counts

    def start(self) -> dict[str, int]:
        """Before an example: clear the captured logs, return the table counts."""
        self.caplog.clear()
        return self.counts()

    def tracebacks(self) -> list[str]:
        return ["".join(traceback.format_exception(*r.exc_info))[-3000:] for r in self.caplog.records if r.exc_info]

    def check_logs(self, what: str) -> None:
        """No log record with a traceback. The logged exception itself is raised (with a note), so
        that hypothesis tells different causes apart and the report shows where it came from."""
        records = [r for r in self.caplog.records if r.exc_info]
        if records:
            exc = records[0].exc_info[1]
            exc.add_note(
                f"HOSTILE INPUT: {what}: the app logged this traceback ({len(records)} record(s) with exc_info)"
            )
            raise exc

    def check_answer(self, r: Any, what: str) -> None:
        """No 5xx and no logged traceback; a 4xx is a problem document with a reason."""
        self.check_logs(f"{what}: {r.status_code} {r.text[:300]}")
        assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:500]}"
        if r.status_code >= 400:
            assert r.headers.get("content-type", "").startswith(PROBLEM_JSON), (
                f"{what}: {r.status_code} is not a problem document: {r.text[:300]}"
            )
            detail = r.json().get("detail")
            assert isinstance(detail, str) and detail.strip(), (
                f"{what}: {r.status_code} problem without a reason: {r.text[:300]}"
            )

    def device_rows(self, bc_id: int) -> list[dict[str, Any]]:
        r = self.client.get(f"/bulk-changes/{bc_id}/devices", headers=self.headers)
        assert r.status_code == 200, r.text
        return [h.camel_to_snake_row(item) for item in r.json()["items"]]


def with_examples(*examples: dict[str, Any]) -> Any:
    """Explicit examples, tried on every run before the generated ones: the inputs this property
    found failing (kept as regressions once fixed) and one of each hostile form the issue lists."""

    def decorate(f: Any) -> Any:
        for kwargs in reversed(examples):
            f = example(**kwargs)(f)
        return f

    return decorate


def _stored_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.fixture
def harness(
    engine: sa.Engine, db_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_USERNAME", TS_CALLBACK_USER)
    monkeypatch.setenv("BULKCHANGE_CRED_DEMO_THINGSPACE_CALLBACK_PASSWORD", TS_CALLBACK_PASSWORD)
    seed = seed_demo(engine, devices_per_carrier=20)
    headers = {"Authorization": f"Bearer {create_api_key(engine, seed.tenant_id, 'hostile')}"}
    with TestClient(create_app(db_url), raise_server_exceptions=False) as client:
        yield Harness(client, engine, seed, headers, caplog)
    shared_engine(db_url).dispose()


# --- the JSON API ----------------------------------------------------------------------------------


def _json_problems(rows: list[dict[str, Any]], body: dict[str, Any], integration: Integration) -> list[str]:
    """How the stored rows differ from an accepted JSON request (payload values, a top-level
    effectiveDate, per-device values)."""
    payload = body.get(PAYLOAD_KEYS[ChangeType.parse(body["changeType"])])
    devices = body["devices"]
    values = [h.sent_values(payload, d, body.get("effectiveDate")) for d in devices]
    return h.row_problems(rows, [h.sent_identifier(d) for d in devices], values, integration)


def test_json_api_refuses_clearly_or_round_trips(harness: Harness) -> None:
    hz = harness
    integrations = {sp_id: Integration(name) for name, sp_id in hz.seed.service_providers.items()}
    keys_seen: set[str] = set()

    jasper, iccid = hz.seed.service_providers["jasper"], hz.seed.sample_iccids["jasper"]

    def body(
        devices: str, values: str, change_type: int = 10, payload: str = "usernameCostCenterUpdate", extra: str = ""
    ) -> dict[str, Any]:
        raw = f'{{"serviceProviderId": {jasper}, "changeType": {change_type}, "devices": {devices}, "{payload}": {values}{extra}}}'
        return {"raw": raw.encode(), "header_key": None}

    @HOSTILE
    @given(raw=h.json_body_bytes(hz.seed), header_key=h.weighted((6, st.none()), (1, st.sampled_from(HEADER_KEYS))))
    @with_examples(
        body(f'["{iccid[0]}"]', '{"username": " dev-1\\u001c"}'),  # \x1c is str.isspace(): stripped as documented?
        body(f'["{iccid[1]}"]', '{"username": "\\ud800x"}'),  # a lone surrogate, escaped
        body('["\\udfff"]', '{"username": "x"}'),
        body(f'["{iccid[2]}"]', '{"username": "a\\u0000b"}'),  # NUL (PostgreSQL text cannot hold it)
        body(
            f'["\\u200b{iccid[3]}\\u202e", " =1+1", "\\ufeff@{iccid[4]}"]',
            '{"username": "\\u200b=x\\u202e", "costCenter": "\\ufeff"}',
        ),
        body(f'["{iccid[5]}"]', '{"customerRatePlanId": NaN}', 4, "customerRatePlanUpdate"),
        body(f'["{iccid[5]}"]', '{"customerRatePlanId": 1e308}', 4, "customerRatePlanUpdate"),
        body(f'["{iccid[5]}"]', f'{{"customerRatePlanId": {2**64}}}', 4, "customerRatePlanUpdate"),
        body(f'["{iccid[5]}"]', '{"customerRatePlanId": -1, "customerPoolId": 0}', 4, "customerRatePlanUpdate"),
        body(f'["{iccid[5]}"]', '{"customerRatePlanId": Infinity}', 4, "customerRatePlanUpdate"),
        body(f'["{iccid[6]}"]', '{"targetStatus": " \\t=DEACTIVATED"}', 1, "statusUpdate"),
        body(
            f'["{iccid[6]}"]',
            '{"targetStatus": "DEACTIVATED"}',
            1,
            "statusUpdate",
            ', "effectiveDate": "0001-01-01T00:00:00"',
        ),
        body(
            f'["{iccid[7]}"]',
            '{"carrierRatePlan": "\\u00a0iot-1gb\\u3000"}',
            7,
            "carrierRatePlanUpdate",
            ', "idempotencyKey": " k-\\ud800 "',
        ),
        body(
            f'[{{"iccid": "{iccid[8]}", "username": ' + "[" * 1000 + "]" * 1000 + "}]", '{"username": "x"}'
        ),  # 1000 levels
        body(f'["{iccid[8]}"]', "[" * 100_000 + "]" * 100_000),  # deeper than the recursion limit
        body(
            f'["{iccid[9]}"]', '{"username": "x"}', extra=', "serviceProviderId": ' + "9" * 5000
        ),  # a 5000-digit number
        {"raw": b'{"serviceProviderId": 1, "changeType": 10, "devices": ["\xff"]}', "header_key": None},  # not UTF-8
        {
            "raw": h.to_bytes(
                h.dump(
                    {
                        "serviceProviderId": jasper,
                        "changeType": 10,
                        "devices": [iccid[0]],
                        "usernameCostCenterUpdate": {"username": "y"},
                    }
                )
            ),
            "header_key": " hk-1 ",
        },
    )
    def run(raw: bytes, header_key: str | None) -> None:
        note(f"body: {raw[:3000]!r}")
        ok, body = h.decoded(raw)
        before = hz.start()
        dry = hz.client.post(
            "/bulk-changes:dry-run", content=raw, headers={**hz.headers, "Content-Type": "application/json"}
        )
        hz.check_answer(dry, "POST /bulk-changes:dry-run")
        assert hz.counts() == before, f"the dry run stored something: {_stored_delta(before, hz.counts())}"
        if not ok:
            assert dry.status_code == 400, f"a body that is not JSON answered {dry.status_code}: {dry.text[:300]}"

        idem = {"Idempotency-Key": header_key.encode("latin-1")} if header_key is not None else {}
        sub = hz.client.post(
            "/bulk-changes", content=raw, headers={**hz.headers, **idem, "Content-Type": "application/json"}
        )
        hz.check_answer(sub, "POST /bulk-changes")
        after = hz.counts()
        if sub.status_code >= 400:
            hz.refused += 1
            assert after == before, f"refused ({sub.status_code}) but stored {_stored_delta(before, after)}"
            return
        hz.accepted += 1
        assert ok and isinstance(body, dict), f"accepted a body that is not a JSON object: {sub.status_code}"
        answer = sub.json()
        key = h.expected_key(header_key or body.get("idempotencyKey"))
        fresh = key is None or key not in keys_seen
        if key:
            keys_seen.add(key)
        if fresh:
            assert answer["created"] is True and sub.status_code == 201, answer
            assert dry.status_code == 200 or header_key, (
                f"the dry run refused ({dry.status_code}: {dry.text[:200]}) what the submit accepted"
            )
            assert header_key or dry.json()["validation"]["counts"] == answer["validation"]["counts"], (
                "dry run and submit disagree"
            )
            delta = _stored_delta(before, after)
            assert delta.get("bulk_change") == 1 and delta.get("device_change") == len(body["devices"]), delta
            assert "device" not in delta, f"a submit changed the device inventory: {delta}"
        else:
            assert after == before, f"a repeated idempotency key stored {_stored_delta(before, after)}"
        status = hz.client.get(f"/bulk-changes/{answer['id']}", headers=hz.headers)
        assert status.status_code == 200, status.text
        assert len(key or "") <= MAX_KEY, f"accepted an idempotency key of {len(key)} characters"
        assert status.json()["idempotencyKey"] == key, (
            f"idempotency key stored as {status.json()['idempotencyKey']!r}, sent {body.get('idempotencyKey')!r} (body), {header_key!r} (header)"
        )
        problems = _json_problems(hz.device_rows(answer["id"]), body, integrations[int(body["serviceProviderId"])])
        assert not problems, "accepted, but what was stored is not what was sent:\n" + "\n".join(problems)
        export = hz.client.get(f"/bulk-changes/{answer['id']}/devices", params={"format": "csv"}, headers=hz.headers)
        assert export.status_code == 200
        cells = [c for row in list(csv.reader(io.StringIO(export.text, newline="")))[1:] for c in row]
        unsafe = [
            c
            for c in cells
            if c[:1] in ("=", "+", "-", "@", "\t", "\r") and not c.lstrip("+-").replace(".", "", 1).isdigit()
        ]
        assert not unsafe, f"the CSV export has cells a spreadsheet runs as formulas: {unsafe}"

    run()
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"


# --- the CSV upload -------------------------------------------------------------------------------


def _csv_expectations(upload: h.CsvUpload) -> tuple[list[str], list[dict[str, Any]]] | None:
    rows = h.csv_rows_as_sent(upload.data)
    if rows is None or upload.keys is None:
        return None
    id_col = 0
    devices, values = [], []
    for cells in rows:
        devices.append(cells[id_col] if cells else "")
        values.append(
            {
                k: c
                for k, c in zip(upload.keys, cells)
                if k is not None
                and k
                not in ("iccid", "imei", "msisdn", "eid", "device", "changeType", "serviceProviderId", "idempotencyKey")
                and c.strip()
            }
        )
    return devices, values


def _check_csv_round_trip(rows: list[dict[str, Any]], upload: h.CsvUpload) -> None:
    if upload.keys is None:  # columns moved by an unquoted line break or delimiter: only the reasons can be checked
        assert all((r.get("status_details") or "").strip() for r in rows if r["status"] == "ERROR"), (
            "an ERROR row without a reason"
        )
        return
    assert None not in upload.keys, f"accepted a file with a column no field has (header keys {upload.keys})"
    expected = _csv_expectations(upload)
    assert expected is not None, "accepted a file that is not a readable UTF-8 CSV"
    problems = h.row_problems(rows, expected[0], expected[1], Integration(upload.spec.integration))
    assert not problems, "accepted, but what was stored is not what was sent:\n" + "\n".join(problems)


def _check_split_answer(
    hz: Harness, answer: dict[str, Any], before: dict[str, int], after: dict[str, int], dry_run: bool
) -> None:
    """A file without a service provider is split by the devices' service providers (its own
    tests are in ``split/``): a dry run stores nothing; a submission holds every row, each refusal
    with its reason."""
    if dry_run:
        assert after == before, f"dry run but stored {_stored_delta(before, after)}"
        return
    items = hz.client.get(f"/submissions/{answer['submissionId']}/devices", headers=hz.headers).json()["items"]
    assert len(items) == sum(answer["counts"].values())
    assert all((i["statusDetails"] or "").strip() for i in items if i["status"] == "ERROR"), (
        "an ERROR row without a reason"
    )


def test_csv_upload_refuses_clearly_or_round_trips(harness: Harness) -> None:
    hz = harness
    keys_seen: set[str] = set()

    jasper, iccid = str(hz.seed.service_providers["jasper"]), hz.seed.sample_iccids["jasper"]
    spec = next(s for s in h.change_specs(hz.seed) if s.change_type == 10)

    def upload(data: bytes, sp: str | None = jasper, key: str | None = None, dry: bool = False) -> dict[str, Any]:
        return {"upload": h.CsvUpload(data, "10", sp, key, dry, ["iccid", "username"], spec)}

    @HOSTILE
    @given(upload=h.csv_upload(hz.seed))
    @with_examples(
        upload(f"iccid,username\n{iccid[0]},x\n".encode(), key="\udcff"),  # a form field that is not UTF-8
        upload(f"iccid,username\n{iccid[1]},x\n".encode(), sp="\u00b2"),  # '²'.isdigit() but int('²') fails
        upload(f"iccid;username\n{iccid[2]};x\n".encode()),  # semicolons
        upload(f"iccid,username\n{iccid[3]},Ren\u00e9\n".encode("latin-1")),  # not UTF-8
        upload(
            f"iccid,username\n{iccid[4]}, =cmd|' /C calc'!A0\n\n,\n{iccid[5]},\n".encode()
        ),  # formula, blank cells and rows
        upload(f"\ufefficcid,username\r\n {iccid[6]} ,\u00a0dev\u3000\r\n".encode()),  # BOM, whitespace around values
        upload(f"iccid,username\n{iccid[7]},a\x00b\n".encode()),  # NUL
        upload(f"iccid,username\n{iccid[8]},x\n".encode(), dry=True),
    )
    def run(upload: h.CsvUpload) -> None:
        note(f"file: {upload.data[:2000]!r}")
        fields = {
            "changeType": upload.change_type,
            "serviceProviderId": upload.service_provider,
            "idempotencyKey": upload.idempotency_key,
        }
        body, content_type = h.multipart(fields, upload.data)
        before = hz.start()
        r = hz.client.post(
            "/bulk-changes/csv",
            params={"dryRun": "true"} if upload.dry_run else None,
            content=body,
            headers={**hz.headers, "Content-Type": content_type},
        )
        hz.check_answer(r, "POST /bulk-changes/csv")
        after = hz.counts()
        if r.status_code < 400 and "children" in r.json():  # no service provider: split (issue 21, split/)
            hz.accepted += 1
            _check_split_answer(hz, r.json(), before, after, upload.dry_run)
            return
        if r.status_code >= 400 or upload.dry_run:
            hz.refused += r.status_code >= 400
            hz.accepted += r.status_code < 400
            assert after == before, (
                f"{'dry run' if upload.dry_run else f'refused ({r.status_code})'} but stored {_stored_delta(before, after)}"
            )
            if r.status_code < 400:
                _check_csv_report(r.json(), upload)
            return
        hz.accepted += 1
        answer = r.json()
        stored_key = hz.client.get(f"/bulk-changes/{answer['id']}", headers=hz.headers).json()["idempotencyKey"]
        assert len(stored_key or "") <= MAX_KEY, f"accepted an idempotency key of {len(stored_key)} characters"
        if upload.keys is not None and "idempotencyKey" not in upload.keys:
            assert stored_key == h.expected_key(upload.idempotency_key), (
                f"idempotency key stored as {stored_key!r}, sent {upload.idempotency_key!r}"
            )
        if answer["created"]:
            delta = _stored_delta(before, after)
            assert delta.get("bulk_change") == 1 and "device" not in delta, delta
        else:
            assert stored_key in keys_seen and after == before, (
                f"not created, but stored {_stored_delta(before, after)}"
            )
        if stored_key:
            keys_seen.add(stored_key)
        _check_csv_round_trip(hz.device_rows(answer["id"]), upload)

    run()
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"


def _check_csv_report(answer: dict[str, Any], upload: h.CsvUpload) -> None:
    """A dry run of a readable file reports one outcome per device row; refusals have reasons."""
    v = answer["validation"]
    assert all(e["reason"].strip() for e in v["errors"]), v["errors"]
    if upload.keys is None:
        return
    assert None not in upload.keys, f"dry run accepted a file with a column no field has (header keys {upload.keys})"
    expected = _csv_expectations(upload)
    assert expected is not None, "dry run accepted a file that is not a readable UTF-8 CSV"
    assert v["total"] == len(expected[0]), f"{v['total']} rows validated, {len(expected[0])} in the file"


# --- the CLI --------------------------------------------------------------------------------------


def argv_text(text: str | None) -> str | None:
    """What an argv string can hold: no NUL; a lone surrogate only as surrogateescape makes it
    from a byte that is not UTF-8."""
    if text is None:
        return None
    return "".join("\udce9" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text.replace("\x00", ""))


@dataclass
class CliCase:
    command: str
    kind: str  # json or csv
    data: bytes
    options: dict[str, str | None]
    upload: h.CsvUpload | None = None


@st.composite
def cli_case(draw: st.DrawFn, seed: DemoSeed) -> CliCase:
    command = draw(st.sampled_from(["submit", "dry-run"]))
    if draw(st.booleans()):
        raw = draw(h.json_body_bytes(seed))
        key = draw(
            h.weighted(
                (2, st.none()),
                (3, h.HOSTILE_TEXT.map(argv_text)),
                (3, st.sampled_from(["cli-k", " cli-k ", "\tcli-k", " ", "k" * 201, "k" * 200])),
            )
        )
        return CliCase(command, "json", raw, {"--idempotency-key": key})
    upload = draw(h.csv_upload(seed, options_for_cli=True))
    options = {
        "--change-type": argv_text(upload.change_type),
        "--service-provider": argv_text(upload.service_provider),
        "--idempotency-key": argv_text(upload.idempotency_key),
    }
    return CliCase(command, "csv", upload.data, options, upload)


def _check_no_traceback(result: Result) -> None:
    """No exception escaped the command (its cause is chained, so that hypothesis tells different
    causes apart) and no traceback was printed."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        exc.add_note("HOSTILE INPUT: this exception escaped the bulkchange command: the user sees a traceback")
        raise exc
    assert "Traceback" not in result.output, f"a traceback in the output:\n{result.output[-3000:]}"


def test_cli_refuses_clearly_or_round_trips(harness: Harness, db_url: str, tmp_path: Path) -> None:
    hz = harness
    runner = CliRunner()
    integrations = {sp_id: Integration(name) for name, sp_id in hz.seed.service_providers.items()}

    jasper, iccid = str(hz.seed.service_providers["jasper"]), hz.seed.sample_iccids["jasper"]
    spec = next(s for s in h.change_specs(hz.seed) if s.change_type == 10)
    valid = {"serviceProviderId": int(jasper), "changeType": 10, "usernameCostCenterUpdate": {"username": "dev-1"}}

    def json_case(command: str, devices: list[Any], key: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "case": CliCase(
                command, "json", h.to_bytes(h.dump({**valid, "devices": devices, **extra})), {"--idempotency-key": key}
            )
        }

    def csv_case(command: str, data: bytes, sp: str | None = jasper) -> dict[str, Any]:
        options = {"--change-type": "10", "--service-provider": sp, "--idempotency-key": None}
        return {
            "case": CliCase(
                command, "csv", data, options, h.CsvUpload(data, "10", sp, None, False, ["iccid", "username"], spec)
            )
        }

    @HOSTILE
    @given(case=cli_case(hz.seed))
    @with_examples(
        json_case("dry-run", ["[/]", iccid[0]]),  # console markup in a refused identifier
        json_case("dry-run", [iccid[0]], usernameCostCenterUpdate={"username": "[/]"}),  # ... and in an accepted value
        csv_case("submit", b"iccid,username\n\x1b[2J,dev-1\n"),  # a terminal escape in a refused identifier
        json_case("dry-run", [iccid[1]], usernameCostCenterUpdate={"username": "a\x1b]8;;http://evil\x1b\\b"}),
        json_case("submit", [iccid[2]], key="k" * 201),  # longer than any idempotency key
        json_case("submit", [iccid[3]], key=" cli-k "),
        json_case("dry-run", [iccid[4]], **{"a\nb": h.Raw("NaN")}),  # a key with a line break, a NaN
        csv_case("dry-run", f"iccid,username\n{iccid[5]},x\n".encode(), sp=" \x1f" + jasper),  # \x1f: str.isspace()
        csv_case("dry-run", f"iccid,username\n{iccid[5]},x\n".encode(), sp="\u00b2"),
        csv_case("submit", "iccid,username\nRen\u00e9,x\n".encode("latin-1")),  # not UTF-8
        csv_case("submit", f"iccid,username\n{iccid[6]},x\x00\n".encode()),
        # found by a random hunt: a header column's values quoted raw in the reason
        csv_case("submit", f"iccid,username,changeType\n{iccid[7]},dev-1,\x1b\n{iccid[8]},dev-1,10\n".encode()),
    )
    def run(case: CliCase) -> None:
        path = tmp_path / f"request.{case.kind}"
        path.write_bytes(case.data)
        args = [case.command, str(path), "--database-url", db_url]
        for name, value in case.options.items():
            if value is not None:
                args += [name, value]
        note(f"bulkchange {' '.join(repr(a) for a in args[:2] + args[4:])}\nfile: {case.data[:2000]!r}")
        before = hz.start()
        result = runner.invoke(main, args, env={"COLUMNS": "250"}, catch_exceptions=True)
        _check_no_traceback(result)
        hz.check_logs(f"bulkchange {case.command}")
        after = hz.counts()
        usage = ("Usage: ", "Try '")  # click's usage-error lines around the reason
        error_lines = [line for line in result.stderr.split("\n") if line.strip() and not line.startswith(usage)]
        if error_lines or result.exit_code not in (0, 1) or (case.command == "submit" and result.exit_code != 0):
            hz.refused += 1
            assert result.exit_code != 0, f"exit 0 with an error: {result.stderr!r}"
            assert len(error_lines) == 1 and error_lines[0].startswith("Error: ") and error_lines[0][7:].strip(), (
                f"exit {result.exit_code}: not a one-line reason on stderr: stderr={result.stderr[-1500:]!r} stdout={result.stdout[-500:]!r}"
            )
            assert after == before, f"refused (exit {result.exit_code}) but stored {_stored_delta(before, after)}"
            controls = h.control_chars(result.stderr)
            assert not controls, (
                f"the reason writes control characters to the terminal: {controls}\n{result.stderr[-1500:]!r}"
            )
            return
        hz.accepted += 1
        controls = h.control_chars(result.stdout)
        assert not controls, (
            f"the report writes control characters to the terminal: {controls}\n{result.stdout[-1500:]!r}"
        )
        if case.command == "dry-run":
            assert after == before, f"the dry run stored {_stored_delta(before, after)}"
            if result.exit_code == 1:
                assert "refused" in result.stdout, f"dry run exit 1 without refused rows: {result.stdout[-1000:]!r}"
            return
        found = re.search(r"(?:created bulk change|already submitted as bulk change) (\d+)", result.stdout)
        assert found, f"submit exit 0 without a bulk change id: {result.stdout[-1000:]!r}"
        bc_id = int(found.group(1))
        bc = get_bulk_change(hz.engine, bc_id, hz.seed.tenant_id)
        rows = list(iter_device_results(hz.engine, hz.seed.tenant_id, bc_id))
        if "already submitted" in result.stdout:
            assert after == before, f"a repeated idempotency key stored {_stored_delta(before, after)}"
        assert len(bc["idempotency_key"] or "") <= MAX_KEY, (
            f"accepted an idempotency key of {len(bc['idempotency_key'])} characters"
        )
        if case.kind == "json":
            ok, body = h.decoded(case.data)
            assert ok and isinstance(body, dict), "accepted a file that is not a JSON object"
            option_key = case.options["--idempotency-key"]
            assert bc["idempotency_key"] == h.expected_key(option_key or body.get("idempotencyKey")), (
                f"idempotency key stored as {bc['idempotency_key']!r}; sent {option_key!r} (option), {body.get('idempotencyKey')!r} (file)"
            )
            problems = _json_problems(rows, body, integrations[int(body["serviceProviderId"])])
            assert not problems, "accepted, but what was stored is not what was sent:\n" + "\n".join(problems)
        else:
            assert case.upload is not None
            _check_csv_round_trip(rows, case.upload)

    run()
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"


# --- query parameters of every GET route -------------------------------------------------------------

# Valid values of each query parameter the document lists (page_size: pageSize's deprecated earlier name).
DEVICE_PARAMS = {
    "status": ["NEW", "ERROR", "SCHEDULED", "PROCESSED"],
    "page": ["1", "2", "1000000"],
    "pageSize": ["1", "2", "1000"],
    "page_size": ["1", "2", "1000"],
    "format": ["json", "csv", "xml"],
}
GET_ROUTES = [
    "/bulk-changes/{id}",
    "/bulk-changes/{id}/devices",
    "/healthz",
    "/openapi.json",
    "/schemas/bulk-change-request.xsd",
    "/schemas/bulk-change-results.xsd",
    "/schemas/submission-results.xsd",
]


def _get_routes_from_openapi() -> dict[str, set[str]]:
    """GET path -> the names of its query parameters, from the app's OpenAPI document."""
    doc = create_app("sqlite://").openapi()
    return {
        path: {p["name"] for p in methods["get"].get("parameters", []) if p["in"] == "query"}
        for path, methods in doc["paths"].items()
        if "get" in methods
    }


def test_every_get_route_is_covered() -> None:
    """The GET routes and query parameters of the document are the ones the query-parameter
    property exercises (the teal callback's GET is covered by the callback property)."""
    routes = _get_routes_from_openapi()
    covered = {r.replace("{id}", "{bulk_change_id}") for r in GET_ROUTES} | {"/callbacks/teal"}
    covered |= NOTIFICATION_GET_ROUTES  # their own property: notifications/test_api_properties.py
    covered |= SUBMISSION_GET_ROUTES  # their own property: split/test_split_properties.py
    assert set(routes) <= covered
    assert routes["/bulk-changes/{bulk_change_id}/devices"] == set(DEVICE_PARAMS)
    assert routes["/bulk-changes/{bulk_change_id}"] == set()


@st.composite
def get_request(draw: st.DrawFn, ids: list[int]) -> tuple[str, str, str, str]:
    route = draw(st.sampled_from(GET_ROUTES))
    id_text = draw(
        st.one_of(
            st.sampled_from([str(i) for i in ids]),
            st.sampled_from(
                [
                    "0",
                    "-1",
                    "999999",
                    str(2**63 - 1),
                    str(2**63),
                    "1e3",
                    " 1",
                    "01",
                    "1.0",
                    "%00",
                    "%ED%A0%80",
                    "abc",
                    "+1",
                ]
            ),
            h.HOSTILE_TEXT.map(h.percent),
        )
    )
    key = st.one_of(
        st.sampled_from(list(DEVICE_PARAMS)),
        st.sampled_from(["pagesize", "foo", "STATUS", "page ", "dryRun", ""]),
        h.HOSTILE_TEXT,
    )
    value = st.one_of(
        st.sampled_from([v for vs in DEVICE_PARAMS.values() for v in vs]),
        st.sampled_from(["0", "-1", "1001", str(2**64), "1e3", "NaN", " 5", "", "new", "CSV", "1" * 5000]),
        h.HOSTILE_TEXT,
    )
    params = draw(st.lists(st.tuples(key, value), max_size=4))
    query = "&".join(f"{h.percent(k)}={h.percent(v)}" for k, v in params)
    if draw(st.integers(0, 5)) == 1:  # bytes that are not UTF-8, percent-encoded
        query += ("&" if query else "") + "page=" + h.quote_from_bytes(draw(st.binary(min_size=1, max_size=4)), safe="")
    auth = draw(st.sampled_from(["valid"] * 4 + ["none", "bogus"]))
    return route.replace("{id}", id_text), id_text, query, auth


def test_get_query_parameters_refuse_clearly_or_round_trip(harness: Harness) -> None:
    hz = harness
    jasper = hz.seed.service_providers["jasper"]
    iccids = hz.seed.sample_iccids["jasper"]
    for devices, extra in (
        (iccids[:3] + ["8901100000000000999"], {}),
        (iccids[3:5], {"effectiveDate": "2999-01-01T00:00:00Z"}),
    ):
        r = hz.client.post(
            "/bulk-changes",
            json={
                "serviceProviderId": jasper,
                "changeType": 1,
                "devices": devices,
                "statusUpdate": {"targetStatus": "DEACTIVATED"},
                **extra,
            },
            headers=hz.headers,
        )
        assert r.status_code == 201, r.text
        hz.existing_ids.append(r.json()["id"])

    first = str(hz.existing_ids[0])

    def get(path: str, query: str, auth: str = "valid", id_text: str = first) -> dict[str, Any]:
        return {"req": (path.replace("{id}", id_text), id_text, query, auth)}

    @HOSTILE
    @given(req=get_request(hz.existing_ids))
    @with_examples(
        get("/bulk-changes/{id}", "status=NEW"),  # a parameter the route does not take
        get("/bulk-changes/{id}/devices", "pageSize=2"),
        get("/bulk-changes/{id}/devices", "pageSize=2&page_size=3"),
        get("/bulk-changes/{id}/devices", "page=%ED%A0%80&pageSize=" + "9" * 30),
        get("/bulk-changes/{id}/devices", "pageSize=-1&page=0&status=%00&format=CSV"),
        get("/bulk-changes/{id}", "", id_text=str(2**63)),
        get("/bulk-changes/{id}/devices", "", id_text="%ED%A0%80"),
    )
    def run(req: tuple[str, str, str, str]) -> None:
        path, id_text, query, auth = req
        url = path + ("?" + query if query else "")
        note(f"GET {url[:2000]} (auth: {auth})")
        headers = {"valid": hz.headers, "none": {}, "bogus": {"X-API-Key": "not-a-key"}}[auth]
        before = hz.start()
        r = hz.client.get(url, headers=headers)
        hz.check_answer(r, f"GET {path}")
        assert hz.counts() == before, f"a GET stored {_stored_delta(before, hz.counts())}"
        intake = path.startswith("/bulk-changes/")
        exists = id_text in {str(i) for i in hz.existing_ids}
        no_route = (404, 405)  # a path id that matches no GET route (empty, or with a slash in it)
        if intake and auth != "valid":
            assert r.status_code == 401 or (not exists and r.status_code in no_route), (
                f"{auth} API key answered {r.status_code}"
            )
            return
        if not intake:
            return
        names = [k for k, _ in parse_qsl(query, keep_blank_values=True)]
        known = set(DEVICE_PARAMS) if path.endswith("/devices") else set()
        unknown = [n for n in names if n not in known]
        if unknown:
            allowed = (400, 422) if exists else (400, 422, *no_route)
            assert r.status_code in allowed, (
                f"unknown query parameter(s) {unknown} answered {r.status_code}, not refused"
            )
            return
        sent = dict(parse_qsl(query, keep_blank_values=True))
        strict = len(names) == len(set(names)) and all(v in DEVICE_PARAMS[k] for k, v in sent.items())
        if strict and "pageSize" in sent and "page_size" in sent and sent["pageSize"] != sent["page_size"]:
            assert r.status_code in (400, 422, *no_route), (
                f"pageSize and page_size differ ({sent}): answered {r.status_code}"
            )
            return
        if exists and strict:
            assert r.status_code == 200, f"valid query {sent} answered {r.status_code}: {r.text[:300]}"
        if r.status_code >= 400:
            return
        if path.endswith("/devices") and strict:
            if sent.get("format") == "csv":
                assert r.headers["content-type"].startswith("text/csv")
                return
            if sent.get("format") == "xml":
                assert r.headers["content-type"].startswith("application/xml")
                statuses = {i["status"] for i in results_items(r.content)}
                assert statuses <= ({sent["status"]} if "status" in sent else {"NEW", "ERROR", "SCHEDULED"})
                return
            page = r.json()
            assert page["page"] == int(sent.get("page", 1)), f"page={sent.get('page')} answered page {page['page']}"
            size = int(sent.get("pageSize") or sent.get("page_size") or 100)
            assert page["pageSize"] == size, f"{sent} answered pageSize {page['pageSize']}"
            assert len(page["items"]) <= page["pageSize"]
            if "status" in sent:
                assert {i["status"] for i in page["items"]} <= {sent["status"]}

    run()


# --- carrier callbacks ------------------------------------------------------------------------------


@st.composite
def thingspace_callback(draw: st.DrawFn, iccids: list[str]) -> bytes:
    creds = draw(st.sampled_from(["valid"] * 5 + ["wrong", "missing", "hostile"]))
    body: dict[str, Any] = {}
    if creds == "valid":
        body.update(username=TS_CALLBACK_USER, password=TS_CALLBACK_PASSWORD)
    elif creds == "wrong":
        body.update(username=TS_CALLBACK_USER, password="nope")
    elif creds == "hostile":
        body.update(username=draw(h.HOSTILE_VALUE), password=draw(h.HOSTILE_VALUE))
    body["requestId"] = draw(
        st.one_of(
            st.sampled_from(["req-1", "7f3b2c1a-0000-4000-8000-000000000001"]),
            h.HOSTILE_TEXT,
            h.HOSTILE_NUMBER,
            st.just("r" * 150),
            h.HOSTILE_VALUE,
        )
    )
    ident = st.one_of(
        st.sampled_from(iccids), h.padded(st.sampled_from(iccids)), h.HOSTILE_TEXT, st.just("9" * 80), h.HOSTILE_NUMBER
    )
    body["deviceIds"] = draw(
        st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"kind": st.sampled_from(["iccid", "imei", "ICCID"]) | h.HOSTILE_TEXT, "id": ident}
                ),
                max_size=2,
            ),
            h.HOSTILE_VALUE,
        )
    )
    shape = draw(st.sampled_from(["ok", "fault", "failed", "hostile"]))
    if shape == "ok":
        body["deviceResponse"] = {
            draw(
                st.sampled_from(["activateResponse", "suspendResponse", "changeDeviceIdResponse"]) | h.HOSTILE_TEXT
            ): draw(st.one_of(st.just({"servicePlan": "M2M-4G-1GB"}), h.HOSTILE_VALUE))
        }
    elif shape == "fault":
        body["faultResponse"] = {"faultcode": draw(h.HOSTILE_SCALAR), "faultstring": draw(h.HOSTILE_SCALAR)}
    elif shape == "failed":
        body["status"] = "Failed"
    if draw(st.integers(0, 2)) == 1:
        body[draw(h.HOSTILE_TEXT)] = draw(h.HOSTILE_VALUE)
    raw = h.to_bytes(h.dump(body, ascii_only=draw(st.booleans())))
    damage = draw(st.sampled_from(["none"] * 6 + ["not-utf8", "deep", "array", "empty", "nan"]))
    return {
        "none": raw,
        "not-utf8": draw(h.broken_bytes(raw)) if damage == "not-utf8" else b"",
        "deep": h.DEEP[0].text.encode(),
        "array": b"[" + raw + b"]",
        "empty": b"",
        "nan": raw[:-1] + b', "x": NaN}' if raw.endswith(b"}") else raw,
    }[damage]


def test_thingspace_callback_refuses_clearly_or_stores_what_was_sent(harness: Harness) -> None:
    hz = harness
    iccids = hz.seed.sample_iccids["thingspace"]

    creds = f'"username": "{TS_CALLBACK_USER}", "password": "{TS_CALLBACK_PASSWORD}"'

    @HOSTILE
    @given(raw=thingspace_callback(iccids))
    @with_examples(
        {"raw": f'{{{creds}, "requestId": "req-1", "deviceIds": 1, "status": "Failed"}}'.encode()},
        {"raw": f'{{{creds}, "requestId": "req-2", "deviceIds": [], "status": "Failed", "x": NaN}}'.encode()},
        {"raw": f'{{{creds}, "requestId": "{"r" * 150}", "status": "Failed"}}'.encode()},  # longer than the column
        {"raw": f'{{{creds}, "requestId": "req-\\u0000", "status": "Failed"}}'.encode()},
        {"raw": f'{{{creds}, "requestId": "req-\\ud800", "status": "Failed"}}'.encode()},
        {"raw": f'{{{creds}, "requestId": NaN, "status": "Failed"}}'.encode()},
        {"raw": f'{{{creds}, "requestId": "req-3", "x": {"[" * 1000}{"]" * 1000}}}'.encode()},
        {
            "raw": f'{{{creds}, "requestId": "req-3", "x": {"[" * 100_000}{"]" * 100_000}}}'.encode()
        },  # deeper than the recursion limit
        {"raw": f'{{{creds}, "requestId": "req-4", "x": {"9" * 5000}}}'.encode()},
        {"raw": f'{{{creds}, "requestId": "req-5", "x": "\xff"}}'.encode("latin-1")},
    )
    def run(raw: bytes) -> None:
        note(f"body: {raw[:3000]!r}")
        before = hz.start()
        r = hz.client.post("/callbacks/thingspace", content=raw, headers={"Content-Type": "application/json"})
        hz.check_answer(r, "POST /callbacks/thingspace")
        after = hz.counts()
        if r.status_code >= 400:
            hz.refused += 1
            assert after == before, f"refused ({r.status_code}) but stored {_stored_delta(before, after)}"
            return
        hz.accepted += 1
        ok, body = h.decoded(raw)
        assert ok and isinstance(body, dict), (
            f"accepted a callback that is not a JSON object: {r.status_code} {r.text[:200]}"
        )
        assert body.get("username") == TS_CALLBACK_USER and body.get("password") == TS_CALLBACK_PASSWORD, (
            "accepted without the credentials"
        )
        answer = r.json()
        assert _stored_delta(before, after).get("carrier_callback", 0) == answer["stored"], (
            answer,
            _stored_delta(before, after),
        )
        rid = body["requestId"]
        assert isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)), (
            f"accepted requestId {rid!r} ({type(rid).__name__})"
        )
        with hz.engine.connect() as conn:
            stored = conn.execute(
                sa.select(carrier_callback.c.request_id, carrier_callback.c.payload)
                .order_by(carrier_callback.c.id.desc())
                .limit(1)
            ).one()
        if answer["stored"]:
            assert stored.request_id == str(rid), f"request id stored as {stored.request_id!r}, sent {rid!r}"
            assert TS_CALLBACK_PASSWORD not in json.dumps(stored.payload), "the callback password was stored"

    run()
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"


@st.composite
def teal_callback(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    method = draw(st.sampled_from(["GET", "POST"]))
    rid = st.one_of(
        st.just(TEAL_REQUEST_ID),
        h.padded(st.just(TEAL_REQUEST_ID)),
        st.just("unknown-req"),
        h.HOSTILE_TEXT,
        st.just("r" * 150),
    )
    params = draw(
        st.lists(st.tuples(st.sampled_from(["requestId", "request_id", "status"]) | h.HOSTILE_TEXT, rid), max_size=3)
    )
    query = "&".join(f"{h.percent(k)}={h.percent(v)}" for k, v in params)
    body = None
    if method == "POST" and draw(st.booleans()):
        value = draw(
            st.one_of(
                st.fixed_dictionaries({"requestId": rid}),
                st.dictionaries(h.HOSTILE_TEXT, h.HOSTILE_VALUE, max_size=2),
                h.HOSTILE_VALUE,
            )
        )
        body = h.to_bytes(h.dump(value, ascii_only=draw(st.booleans())))
        if draw(st.integers(0, 4)) == 1:
            body = draw(st.sampled_from([h.DEEP[0].text.encode(), b"{", b'{"requestId": NaN}', b'{"a": "\\u0000"}']))
    return method, query, body


def test_teal_callback_refuses_clearly_or_stores_what_was_sent(harness: Harness) -> None:
    hz = harness
    teal = hz.seed.service_providers["teal"]
    r = hz.client.post(
        "/bulk-changes",
        json={
            "serviceProviderId": teal,
            "changeType": 1,
            "devices": [demo_eid(4, 0, 0)],
            "statusUpdate": {"targetStatus": "stopped"},
        },
        headers=hz.headers,
    )
    assert r.status_code == 201 and r.json()["counts"] == {"NEW": 1}, r.text
    with hz.engine.begin() as conn:
        conn.execute(
            sa.update(device_change)
            .where(device_change.c.bulk_change_id == r.json()["id"])
            .values(carrier_request_id=TEAL_REQUEST_ID)
        )

    @HOSTILE
    @given(req=teal_callback())
    @with_examples(
        {"req": ("POST", f"requestId={TEAL_REQUEST_ID}", h.DEEP[0].text.encode())},
        {"req": ("POST", f"requestId={TEAL_REQUEST_ID}", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")},
        {"req": ("POST", f"requestId={TEAL_REQUEST_ID}", b'{"x": NaN}')},
        {"req": ("POST", f"requestId={TEAL_REQUEST_ID}", b'{"x": "\\u0000"}')},
        {"req": ("POST", f"requestId={TEAL_REQUEST_ID}", b'{"x": "\\ud800"}')},
        {"req": ("GET", "requestId=%00", None)},
        {"req": ("GET", "requestId=%ED%A0%80", None)},
        {"req": ("GET", "requestId=" + "r" * 150, None)},
        {"req": ("GET", f"requestId=%20{TEAL_REQUEST_ID}%0A&x=%FF", None)},
    )
    def run(req: tuple[str, str, bytes | None]) -> None:
        method, query, body = req
        note(f"{method} /callbacks/teal?{query[:1000]} body={body[:2000] if body else body!r}")
        before = hz.start()
        url = "/callbacks/teal" + ("?" + query if query else "")
        r = (
            hz.client.get(url)
            if method == "GET"
            else hz.client.post(url, content=body or b"", headers={"Content-Type": "application/json"})
        )
        parsed: Any = {}
        readable = True
        if body:
            readable, parsed = h.decoded(body)
        payload = parsed if isinstance(parsed, dict) else {"body": parsed}
        payload = {**payload, "query": dict(parse_qsl(query, keep_blank_values=True))}
        outcomes = parse_callback("teal", payload) if readable else []
        after = hz.counts()
        if (
            r.status_code == 503
            and readable
            and outcomes
            and outcomes[0].request_id != TEAL_REQUEST_ID
            and not hz.tracebacks()
        ):
            # documented: a request id not (yet) ours is answered 503 + Retry-After, so that Teal delivers it again
            assert r.headers.get("retry-after") and r.json().get("detail"), (
                f"503 without Retry-After or reason: {r.text[:300]}"
            )
            assert after == before, f"answered 503 but stored {_stored_delta(before, after)}"
            hz.refused += 1
            return
        hz.check_answer(r, f"{method} /callbacks/teal")
        if r.status_code >= 400:
            hz.refused += 1
            assert after == before, f"refused ({r.status_code}) but stored {_stored_delta(before, after)}"
            return
        hz.accepted += 1
        assert readable and outcomes and outcomes[0].request_id == TEAL_REQUEST_ID, (
            f"accepted a callback for {outcomes!r}"
        )
        assert _stored_delta(before, after).get("carrier_callback", 0) == r.json()["stored"]

    run()
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"
