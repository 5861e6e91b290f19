"""Issue 15 §5, "smaller things seen on the way", on both backends:

(a) a bulk change whose every device is refused at validation ends ERROR, not PROCESSED, and says
    "nothing was sent: all N devices were refused at validation" in the submit answer, the API
    status, the CLI status; retry-failed, resume and cancel refuse it with that reason; the sensor,
    a run's finalize, rebuild-status, the asset check and the archive agree with it;
(b) the device list takes ``pageSize`` (the name its answer uses; ``page_size`` still works), and
    every intake route refuses a query parameter it does not declare, naming it and the accepted ones;
(c) reasons an operator can act on: a semicolon- (or tab-) separated CSV, an ICCID Excel shortened
    to scientific notation, Excel's apostrophe text marker and a SIM's trailing F, on every way in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.defs.local_runner import QUIET, tick_and_run
from bulkchange_pipeline.domain import BulkChangeRequest, BulkChangeStatus
from bulkchange_pipeline.engine.bulk_change import finalize, load_bulk_change
from bulkchange_pipeline.intake.csv_file import parse_csv
from bulkchange_pipeline.intake.parsing import IntakeError
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store.archive import archivable
from bulkchange_pipeline.store.bulk_changes import get_bulk_change, list_due_scheduled, list_waiting, set_bulk_status
from bulkchange_pipeline.store.db import utcnow
from bulkchange_pipeline.store.health import status_disagreements
from bulkchange_pipeline.store.operations import OperationRefused, cancel_bulk_change, resume_bulk_change, retry_failed
from bulkchange_pipeline.store.rebuild import plan_rebuild, rebuild_status
from bulkchange_pipeline.store.seed import DemoSeed

from ..defs.harness import fast_definitions
from .test_api import BAD_ICCID, Api, make_api

NOTHING_SENT = "nothing was sent: all 3 devices were refused at validation"


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=12)


def _refused_devices(seed: DemoSeed) -> list[str]:
    """Three devices validation refuses: a wrong check digit, another tenant's, a shortened ICCID."""
    return [BAD_ICCID, seed.other_iccids[0], "8.9011E+18"]


def _status_request(seed: DemoSeed, devices: list) -> BulkChangeRequest:
    return BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 1,
            "devices": devices,
            "statusUpdate": {"status": "RETIRED"},
        }
    )


# --- (a) every device refused: ERROR, "nothing was sent" ------------------------------------------


def test_all_refused_submission_is_error_and_says_nothing_was_sent(engine: sa.Engine, seed: DemoSeed) -> None:
    outcome = submit(engine, seed.tenant_id, _status_request(seed, _refused_devices(seed)), "test")
    assert (outcome.created, outcome.status, outcome.counts) == (True, "ERROR", {"ERROR": 3})
    assert outcome.message.endswith(f"0 of 3 devices accepted, 3 refused; {NOTHING_SENT}")
    head = get_bulk_change(engine, outcome.bulk_change_id, seed.tenant_id)
    assert (head["status"], head["status_detail"]) == ("ERROR", NOTHING_SENT)
    # The sensor starts NEW and due SCHEDULED bulk changes only: never this one.
    assert outcome.bulk_change_id not in [bc.id for bc in list_waiting(engine, 0, 100)]
    assert outcome.bulk_change_id not in [
        bc.id for bc in list_due_scheduled(engine, utcnow() + timedelta(days=999), 100)
    ]

    one = submit(engine, seed.tenant_id, _status_request(seed, [BAD_ICCID]), "test")
    assert one.status == "ERROR" and one.message.endswith("nothing was sent: its one device was refused at validation")

    # Some accepted: unchanged (NEW, no detail), the refusals ride along as ERROR rows.
    mixed = submit(engine, seed.tenant_id, _status_request(seed, [seed.sample_iccids["jasper"][0], BAD_ICCID]), "test")
    assert (mixed.status, mixed.counts) == ("NEW", {"NEW": 1, "ERROR": 1}) and "nothing was sent" not in mixed.message
    assert get_bulk_change(engine, mixed.bulk_change_id, seed.tenant_id)["status_detail"] is None


def test_retry_resume_and_cancel_refuse_it_with_the_reason(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = submit(engine, seed.tenant_id, _status_request(seed, _refused_devices(seed)), "test").bulk_change_id
    for action, verb in ((retry_failed, "retry"), (resume_bulk_change, "resume"), (cancel_bulk_change, "cancel")):
        with pytest.raises(OperationRefused, match=f"nothing to {verb}: bulk change {bc_id} is ERROR, {NOTHING_SENT}"):
            action(engine, seed.tenant_id, bc_id, by="ops")
    head = get_bulk_change(engine, bc_id, seed.tenant_id)
    assert (head["status"], head["attempt"]) == ("ERROR", 0)  # nothing queued


def test_a_run_rebuild_check_and_archive_agree_that_it_is_error(engine: sa.Engine, seed: DemoSeed) -> None:
    bc_id = submit(engine, seed.tenant_id, _status_request(seed, _refused_devices(seed)), "test").bulk_change_id
    # A run started anyway (the launchpad) finalizes it as its rows say: still ERROR, not PROCESSED.
    assert finalize(engine, load_bulk_change(engine, bc_id), []).status.value == "ERROR"
    # rebuild-status and the bulk_status_matches_rows check read the rows the same way.
    assert [(r.status, r.changed) for r in plan_rebuild(engine, ids=[bc_id])] == [("ERROR", False)]
    assert bc_id not in [d.bulk_change_id for d in status_disagreements(engine, now=utcnow() + timedelta(days=1))]
    # A header stored PROCESSED before this change is what the check flags and a rebuild mends.
    set_bulk_status(engine, bc_id, BulkChangeStatus.PROCESSED, counts={"ERROR": 3})
    assert [d.rows_say for d in status_disagreements(engine) if d.bulk_change_id == bc_id] == ["ERROR"]
    assert [(r.old_status, r.status) for r in rebuild_status(engine, ids=[bc_id])] == [("PROCESSED", "ERROR")]
    assert get_bulk_change(engine, bc_id)["status_detail"] == NOTHING_SENT
    # It is finished: archived like a PROCESSED one once old enough (an ERROR a run left is not).
    assert bc_id in [i for i, _, _ in archivable(engine, utcnow() + timedelta(days=400))]
    failed_run = submit(
        engine, seed.tenant_id, _status_request(seed, seed.sample_iccids["jasper"][:1]), "test"
    ).bulk_change_id
    set_bulk_status(engine, failed_run, BulkChangeStatus.ERROR)
    assert failed_run not in [i for i, _, _ in archivable(engine, utcnow() + timedelta(days=400))]


def test_api_submit_status_and_actions_say_nothing_was_sent(api: Api) -> None:
    r = api.client.post("/bulk-changes", json=api.status_body(_refused_devices(api.seed)), headers=api.demo)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["statusDetail"], body["counts"]) == ("ERROR", NOTHING_SENT, {"ERROR": 3})
    assert body["message"].endswith(NOTHING_SENT)
    bc_id = body["id"]
    status = api.client.get(f"/bulk-changes/{bc_id}", headers=api.demo).json()
    assert (status["status"], status["statusDetail"]) == ("ERROR", NOTHING_SENT)
    for action in ("retry-failed", "resume", "cancel"):
        refused = api.client.post(f"/bulk-changes/{bc_id}/{action}", headers=api.demo)
        assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json", (
            refused.text
        )
        assert NOTHING_SENT in refused.json()["detail"]
    # A bulk change with accepted rows says nothing more than before.
    ok = api.client.get(f"/bulk-changes/{api.submit(api.seed.sample_iccids['jasper'][:2])}", headers=api.demo).json()
    assert (ok["status"], ok["statusDetail"]) == ("NEW", None)


def test_the_sensor_starts_no_run_for_it(api: Api, dagster_instance) -> None:
    r = api.client.post("/bulk-changes", json=api.status_body(_refused_devices(api.seed)), headers=api.demo)
    assert r.json()["status"] == "ERROR"
    result, runs = tick_and_run(dagster_instance, fast_definitions(), run_config=QUIET)
    assert runs == [] and not result.run_requests


def test_cli_status_and_retry_say_nothing_was_sent(engine: sa.Engine, db_url: str, seed: DemoSeed) -> None:
    bc_id = submit(engine, seed.tenant_id, _status_request(seed, _refused_devices(seed)), "test").bulk_change_id
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    status = run("status", str(bc_id))
    assert status.exit_code == 0 and "status ERROR" in status.output and NOTHING_SENT in status.output
    for command in ("retry-failed", "resume"):
        refused = run(command, str(bc_id))
        assert refused.exit_code == 1 and NOTHING_SENT in " ".join(refused.output.split()), refused.output


# --- (b) query parameters: pageSize, and unknown ones refused -------------------------------------


def test_device_list_takes_page_size_by_its_documented_name(api: Api) -> None:
    bc_id = api.submit([*api.seed.sample_iccids["jasper"][:7], BAD_ICCID])
    url = f"/bulk-changes/{bc_id}/devices"
    body = api.client.get(url, params={"pageSize": 3}, headers=api.demo).json()
    assert (len(body["items"]), body["pageSize"], body["nextPage"], body["total"]) == (3, 3, 2, 8)
    legacy = api.client.get(
        url, params={"page": 3, "page_size": 3}, headers=api.demo
    ).json()  # the earlier name still works
    assert (len(legacy["items"]), legacy["pageSize"], legacy["nextPage"]) == (2, 3, None)
    assert api.client.get(url, params={"pageSize": 3, "page_size": 3}, headers=api.demo).status_code == 200
    differ = api.client.get(url, params={"pageSize": 3, "page_size": 4}, headers=api.demo)
    assert differ.status_code == 422 and "send pageSize only" in differ.json()["detail"]
    assert api.client.get(url, headers=api.demo).json()["pageSize"] == 100
    bad = api.client.get(url, params={"pageSize": 0}, headers=api.demo)
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["errors"]] == [["query", "pageSize"]]
    params = {
        p["name"]: p
        for p in api.client.get("/openapi.json").json()["paths"]["/bulk-changes/{bulk_change_id}/devices"]["get"][
            "parameters"
        ]
    }
    assert "pageSize" in params and params["page_size"].get("deprecated") is True


@pytest.mark.parametrize(
    "method,path,query,accepted",
    [
        ("get", "/bulk-changes/{id}/devices", "pagesize=3", "status, page, pageSize, page_size, format"),
        ("get", "/bulk-changes/{id}/devices", "stauts=ERROR", "status, page, pageSize, page_size, format"),
        ("get", "/bulk-changes/{id}", "verbose=1", "no query parameters"),
        ("post", "/bulk-changes/{id}/cancel", "force=true", "no query parameters"),
        ("post", "/bulk-changes/csv", "dry_run=true", "dryRun"),
    ],
)
def test_every_route_refuses_unknown_query_parameters(
    api: Api, method: str, path: str, query: str, accepted: str
) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:2])
    name = query.split("=")[0]
    r = api.client.request(method.upper(), f"{path.format(id=bc_id)}?{query}", headers=api.demo)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    problem = r.json()
    assert problem["title"] == "Unknown query parameter"
    assert f"unknown query parameter {name!r}" in problem["detail"] and problem["detail"].endswith(
        f"accepts {accepted}"
    )
    assert problem["errors"] == [{"loc": ["query", name], "msg": f"unknown query parameter; accepted: {accepted}"}]
    assert get_bulk_change(api.engine, bc_id)["status"] == "NEW"  # nothing was done
    # Without a valid key the answer is 401 as before: the parameter names are no reason to talk to it.
    assert api.client.request(method.upper(), f"{path.format(id=bc_id)}?{query}").status_code == 401


def test_known_query_parameters_still_work_on_every_route(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:2])
    assert (
        api.client.get(f"/bulk-changes/{bc_id}/devices?status=NEW&page=1&format=json", headers=api.demo).status_code
        == 200
    )
    upload = api.client.post(
        "/bulk-changes/csv?dryRun=true",
        headers=api.demo,
        files={"file": ("d.csv", f"iccid\n{api.seed.sample_iccids['jasper'][2]}\n".encode(), "text/csv")},
        data={"changeType": "StatusUpdate", "serviceProviderId": str(api.jasper)},
    )
    assert upload.status_code == 200 and upload.json()["stored"] is False, upload.text


# --- (c) reasons an operator can act on -----------------------------------------------------------


def test_semicolon_and_tab_separated_csv_say_so() -> None:
    with pytest.raises(
        IntakeError,
        match=r"^the file looks semicolon-separated \(header 'iccid;targetStatus'\): "
        r"separate the columns with commas",
    ):
        parse_csv(b"iccid;targetStatus\n8901100000000000018;ACTIVATED\n", change_type=1, service_provider_id=1)
    with pytest.raises(IntakeError, match="the file looks tab-separated"):
        parse_csv(
            b"\xef\xbb\xbficcid\ttargetStatus\n8901100000000000018\tACTIVATED\n", change_type=1, service_provider_id=1
        )
    with pytest.raises(IntakeError, match=r"^unknown column\(s\): 'foo;bar'"):  # no known column inside: as before
        parse_csv(b"foo;bar\n1;2\n", change_type=1, service_provider_id=1)


def test_semicolon_csv_upload_over_http_says_so(api: Api) -> None:
    r = api.client.post(
        "/bulk-changes/csv",
        headers=api.demo,
        files={
            "file": (
                "d.csv",
                f"iccid;targetStatus\n{api.seed.sample_iccids['jasper'][0]};ACTIVATED\n".encode(),
                "text/csv",
            )
        },
        data={"changeType": "StatusUpdate", "serviceProviderId": str(api.jasper)},
    )
    assert r.status_code == 422 and "the file looks semicolon-separated" in r.json()["detail"], r.text


def _spreadsheet_devices(seed: DemoSeed) -> tuple[list[str], str]:
    good = seed.sample_iccids["jasper"][0]
    return [good, "8.9011E+18", f"'{seed.sample_iccids['jasper'][1]}", f"{seed.sample_iccids['jasper'][2]}F"], good


def _expected_reasons(seed: DemoSeed, label: str) -> list[str]:
    second, third = seed.sample_iccids["jasper"][1], seed.sample_iccids["jasper"][2]
    return [
        (
            f"{label} '8.9011E+18' looks like a number Excel shortened (scientific notation): its last digits are lost; "
            f"format the column as text and paste the full {label}s again"
        ),
        (
            f"{label} \"'{second}\" must contain digits only: it starts with an apostrophe, Excel's text marker; "
            f"remove it and send {second}"
        ),
        (
            f"ICCID '{third}F' must contain digits only: the trailing F is the filler a SIM stores after a 19-digit ICCID "
            f"(read from the SIM or printed on its pack); remove it and send {third}"
        ),
    ]


def test_spreadsheet_identifier_reasons_in_json_and_csv(engine: sa.Engine, seed: DemoSeed) -> None:
    devices, good = _spreadsheet_devices(seed)
    # JSON: bare identifiers (classified), and the same values under "iccid" (checked as ICCIDs).
    bare = submit(engine, seed.tenant_id, _status_request(seed, devices), "t", dry_run=True).report
    assert [e.reason for e in bare.errors] == _expected_reasons(seed, "device identifier")
    keyed = submit(
        engine, seed.tenant_id, _status_request(seed, [{"iccid": d} for d in devices]), "t", dry_run=True
    ).report
    assert [e.reason for e in keyed.errors] == _expected_reasons(seed, "ICCID")
    # CSV: the same check (one for every way in); the quoted cell keeps the apostrophe as sent.
    text = "iccid,targetStatus\n" + "".join(f"{d},DEACTIVATED\n" for d in devices)
    parsed = parse_csv(text.encode(), change_type=1, service_provider_id=seed.service_providers["jasper"])
    report = submit(engine, seed.tenant_id, parsed.request, "t", dry_run=True, row_numbers=parsed.row_numbers).report
    assert [(e.row, e.reason) for e in report.errors] == list(
        zip([3, 4, 5], _expected_reasons(seed, "ICCID"), strict=True)
    )
    assert report.accepted == 1 and report.identifiers[0] == good


def test_corrected_values_are_accepted(engine: sa.Engine, seed: DemoSeed) -> None:
    """The values the reasons say to send are the tenant's devices, accepted as they are."""
    devices, _ = _spreadsheet_devices(seed)
    reasons = submit(engine, seed.tenant_id, _status_request(seed, devices), "t", dry_run=True).report.errors
    sent = [m.group(1) for e in reasons if (m := re.search(r"send (\d+)$", e.reason))]
    assert sent == seed.sample_iccids["jasper"][1:3]
    assert submit(engine, seed.tenant_id, _status_request(seed, sent), "t", dry_run=True).report.ok


def test_new_iccid_of_an_identifier_swap_gets_the_same_reason(engine: sa.Engine, seed: DemoSeed) -> None:
    iccid = seed.sample_iccids["thingspace"][3]
    req = BulkChangeRequest.model_validate(
        {
            "serviceProviderId": seed.service_providers["thingspace"],
            "changeType": 9,
            "devices": [seed.sample_iccids["thingspace"][0]],
            "iccidImeiChange": {"newIccid": f"{iccid}F"},
        }
    )
    [error] = submit(engine, seed.tenant_id, req, "t", dry_run=True).report.errors
    assert error.reason.endswith(
        f"ICCID '{iccid}F' must contain digits only: the trailing F is the filler a SIM stores after a "
        f"19-digit ICCID (read from the SIM or printed on its pack); remove it and send {iccid}"
    )
