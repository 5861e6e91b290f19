"""What an outside tester found by attacking the intake, the callbacks and the CLI (issue 15, after
the properties): each case failed before its fix, on both backends where a database is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.intake.parsing import IntakeError, IntakeLimits
from bulkchange_pipeline.intake.request_file import read_request_file
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.device_rows import iter_device_results

from .conftest import table_counts
from .test_api import Api, make_api


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=10)


def _post_json(api: Api, route: str, text: str):
    return api.client.post(route, content=text.encode(), headers={**api.demo, "Content-Type": "application/json"})


def test_a_repeated_json_key_is_refused_not_last_wins(api: Api) -> None:
    iccid = api.seed.sample_iccids["jasper"][0]
    before = table_counts(api.engine)
    body = (
        '{"serviceProviderId": %d, "serviceProviderId": %d, "changeType": 1, "statusUpdate": {"status": "RETIRED"}, '
        '"devices": ["%s"]}'
    ) % (api.jasper, api.seed.service_providers["thingspace"], iccid)
    for route in ("/bulk-changes", "/bulk-changes:dry-run"):
        r = _post_json(api, route, body)
        assert r.status_code == 400 and "'serviceProviderId' appears twice" in r.json()["detail"], r.text
    assert table_counts(api.engine) == before


def test_csv_upload_takes_process_changes_and_refuses_unknown_or_repeated_fields(api: Api) -> None:
    csv_text = f"iccid,status\n{api.seed.sample_iccids['jasper'][0]},RETIRED\n"
    form = {"changeType": "1", "serviceProviderId": str(api.jasper)}

    def upload(data: dict[str, str | list[str]]):
        return api.client.post(
            "/bulk-changes/csv", headers=api.demo, files={"file": ("x.csv", csv_text, "text/csv")}, data=data
        )

    before = table_counts(api.engine)
    for data, reason in (
        ({**form, "processchanges": "false"}, "unknown form field 'processchanges'"),
        ({**form, "changeType": ["1", "10"]}, "'changeType' is given more than once"),
        ({**form, "processChanges": "no"}, "is not true or false"),
    ):
        r = upload(data)
        assert r.status_code == 422 and reason in r.json()["detail"], r.text
    assert table_counts(api.engine) == before
    stored = upload({**form, "processChanges": "false"})
    assert stored.status_code == 201, stored.text
    assert get_bulk_change(api.engine, stored.json()["id"], api.seed.tenant_id)["process_changes"] is False


def test_repeated_query_parameters_are_refused(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:2])
    for query in ("pageSize=1&pageSize=2", "status=NEW&status=ERROR", "format=csv&format=json"):
        r = api.client.get(f"/bulk-changes/{bc_id}/devices?{query}", headers=api.demo)
        assert r.status_code == 422 and "more than once" in r.json()["detail"], (query, r.text)
    assert api.client.get(f"/bulk-changes/{bc_id}/devices?pageSize=1", headers=api.demo).status_code == 200


def test_callbacks_refuse_a_query_thingspace_never_sends_and_repeated_teal_ids(api: Api) -> None:
    before = table_counts(api.engine)
    ts = api.client.post("/callbacks/thingspace?x=1", json={"requestId": "r"})
    assert ts.status_code == 400 and "no query parameters" in ts.json()["detail"], ts.text
    teal = api.client.post("/callbacks/teal?requestId=zzz&requestId=other")
    assert teal.status_code == 400 and "more than once" in teal.json()["detail"], teal.text
    assert table_counts(api.engine) == before


def test_a_non_ascii_digit_change_type_is_refused(api: Api) -> None:
    body = {
        "serviceProviderId": api.jasper,
        "changeType": "\u0661",
        "statusUpdate": {"status": "RETIRED"},
        "devices": api.seed.sample_iccids["jasper"][:1],
    }
    r = api.client.post("/bulk-changes:dry-run", json=body, headers=api.demo)
    assert r.status_code == 422 and "unknown change type" in r.json()["detail"], r.text


def test_refused_identifiers_are_stored_as_sent_never_cut_or_normalised(api: Api) -> None:
    long_eid = "9" * 45
    body = {
        "serviceProviderId": api.jasper,
        "changeType": 1,
        "statusUpdate": {"status": "RETIRED"},
        "processChanges": False,
        "devices": [{"eid": long_eid}, {"msisdn": "-1+1"}, api.seed.sample_iccids["jasper"][0]],
    }
    r = api.client.post("/bulk-changes", json=body, headers=api.demo)
    assert r.status_code == 201, r.text
    rows = list(iter_device_results(api.engine, api.seed.tenant_id, r.json()["id"]))
    assert (
        rows[0]["eid"] is None and rows[0]["change_request"]["device"] == long_eid
    )  # too long for the column: request only
    assert rows[1]["msisdn"] == "-1+1" and rows[1]["status"] == "ERROR"


def test_client_disconnect_mid_body_is_one_line_not_a_traceback(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """A client that declares more body than it sends, then goes: Starlette raises ClientDisconnect
    from the body stream, which was logged as an unhandled error (with a traceback) by us and again
    by the server. Driven at the ASGI level, where a disconnect can be sent."""
    import asyncio

    from bulkchange_pipeline.intake.app import create_app

    app = create_app(str(api.engine.url.render_as_string(hide_password=False)))
    messages = [{"type": "http.request", "body": b'{"a":', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/bulk-changes:dry-run",
        "raw_path": b"/bulk-changes:dry-run",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "http_version": "1.1",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"500"),
            *[(k.lower().encode(), v.encode()) for k, v in api.demo.items()],
        ],
    }
    with caplog.at_level("INFO"):
        asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert any("disconnected" in r.getMessage() for r in caplog.records)


@pytest.fixture
def cli(db_url: str):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=True)

    assert run("seed-demo", "--devices-per-carrier", "3").exit_code == 0
    return run


@pytest.mark.parametrize("command", ["status", "cancel", "retry-failed", "resume", "release"])
@pytest.mark.parametrize("value", ["99999999999999999999999", "1_0", "\u0661", "0"])
def test_cli_ids_are_ascii_digits_within_64_bits(cli, command: str, value: str) -> None:
    result = cli(command, value)
    assert result.exit_code == 2 and "is not an id" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_reads_a_request_under_the_size_limit_even_from_a_device(tmp_path: Path) -> None:
    """``/dev/zero`` reports size 0 and never ends: it was read until memory ran out."""
    with pytest.raises(IntakeError, match="the limit is 1 MB"):
        read_request_file("/dev/zero", limits=IntakeLimits(max_bytes=1024 * 1024))


def test_cli_prints_identifiers_with_bidi_controls_escaped(cli, tmp_path: Path) -> None:
    path = tmp_path / "rtl.json"
    path.write_text(
        json.dumps(
            {
                "serviceProviderId": 1,
                "changeType": 1,
                "statusUpdate": {"status": "RETIRED"},
                "devices": ["\u202e8901100000000000000"],
            }
        )
    )
    result = cli("dry-run", str(path))
    assert "\u202e" not in result.output and "\\u202e" in result.output, result.output
