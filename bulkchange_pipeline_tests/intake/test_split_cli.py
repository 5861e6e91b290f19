"""The CLI of a request split by service provider (issue 21): ``bulkchange submit`` / ``dry-run``
of a file without a service provider print the split, and ``bulkchange submission`` shows, exports,
cancels, retries, approves and rejects the submission as one. Through click's CliRunner against a
real SQLite file and PostgreSQL, on the demo seed (one service provider per carrier)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.store.db import make_engine
from bulkchange_pipeline.store.schema import bulk_change, submission
from bulkchange_pipeline.store.seed import demo_iccid

NOT_IN_INVENTORY = demo_iccid(1, 0, 999)  # a valid ICCID no service provider of the tenant holds
SUBMISSION_COMMANDS = ("show", "cancel", "retry-failed", "approve")


@pytest.fixture
def run(db_url: str):
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    assert invoke("seed-demo", "--devices-per-carrier", "5").exit_code == 0
    return invoke


def _request(tmp_path: Path, **extra) -> Path:
    """A StatusUpdate of a Jasper device (DEACTIVATED) and a ThingSpace one (its own status word,
    per device), plus one device in no inventory; no serviceProviderId."""
    body = {
        "changeType": "StatusUpdate",
        "devices": [
            demo_iccid(1, 0, 1),
            {"iccid": demo_iccid(2, 0, 1), "targetStatus": "deactive"},
            demo_iccid(1, 0, 2),
            NOT_IN_INVENTORY,
        ],
        "statusUpdate": {"targetStatus": "DEACTIVATED"},
        **extra,
    }
    path = tmp_path / "split.json"
    path.write_text(json.dumps(body))
    return path


def _counts(db_url: str) -> tuple[int, int]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(submission)).scalar_one()
        m = conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one()
    engine.dispose()
    return n, m


def test_dry_run_prints_the_split_and_stores_nothing(run, db_url: str, tmp_path: Path) -> None:
    result = run("dry-run", str(_request(tmp_path)))
    assert result.exit_code == 1, result.output  # one device not placed
    out = result.output
    assert "split by service provider: 2 bulk changes for 3 devices, 1 not placed" in out
    assert re.search(r"AT&T Control Center \(POD19\).*jasper.*dry run.*2 .*0", out)
    assert re.search(r"Verizon ThingSpace.*thingspace.*dry run.*1 .*0", out)
    assert f"no device with ICCID {NOT_IN_INVENTORY} in this tenant's inventory" in out
    assert "dry run: nothing stored" in out
    assert _counts(db_url) == (0, 0)

    placed = tmp_path / "placed.csv"  # a CSV without --service-provider: split as well; all accepted
    placed.write_text(f"iccid,targetStatus\n{demo_iccid(1, 0, 1)},DEACTIVATED\n{demo_iccid(1, 0, 3)},DEACTIVATED\n")
    ok = run("dry-run", str(placed), "--change-type", "StatusUpdate")
    assert ok.exit_code == 0, ok.output
    assert "split by service provider: 1 bulk change for 2 devices" in ok.output


def test_submit_show_results_and_operations_of_a_submission(run, db_url: str, tmp_path: Path) -> None:
    request = _request(tmp_path, idempotencyKey="split-cli-1")
    sub = run("submit", str(request))
    assert sub.exit_code == 0, sub.output
    sid = int(re.search(r"\(submission (\d+)\)", sub.output).group(1))
    assert f"follow it with: bulkchange submission show {sid} --watch" in sub.output
    assert _counts(db_url) == (1, 2)
    again = run("submit", str(request))  # the same key: the same submission, nothing new
    assert again.exit_code == 0 and f"submission {sid}" in again.output and _counts(db_url) == (1, 2)
    one_carrier = tmp_path / "one.csv"  # the key is the submission's: a bulk change cannot take it
    one_carrier.write_text(f"iccid,targetStatus\n{demo_iccid(1, 0, 4)},DEACTIVATED\n")
    taken = run("submit", str(one_carrier), "--change-type", "1", "--service-provider", "jasper",
                "--idempotency-key", "split-cli-1")  # fmt: skip
    assert taken.exit_code == 1 and f"already used for submission {sid}" in taken.output
    assert _counts(db_url) == (1, 2)

    shown = run("submission", "show", str(sid))
    assert shown.exit_code == 0, shown.output
    assert f"submission {sid}: StatusUpdate across 2 service providers, status NEW, 4 devices" in shown.output
    assert "progress: 1 of 4 device rows final" in shown.output and "NEW 3, ERROR 1" in shown.output
    children = [int(n) for n in re.findall(r"│\s+(\d+) │ (?:AT&T|Verizon)", shown.output)]
    assert len(children) == 2
    child = run("status", str(children[1]))
    assert child.exit_code == 0 and f"one of the bulk changes of submission {sid}" in child.output
    follow = run("submission", "show", str(sid), "--watch", "--interval", "0.05", "--timeout", "0.2")
    assert follow.exit_code == 1 and f"submission {sid} is still NEW: gave up after 0.2 s" in follow.output

    exported = run("submission", "results", str(sid), "--out", "-")
    rows = list(csv.DictReader(io.StringIO(exported.output)))
    assert exported.exit_code == 0 and len(rows) == 4
    assert [r["bulkChangeId"] for r in rows] == [str(children[0])] * 2 + [str(children[1]), ""]
    assert rows[-1]["iccid"] == NOT_IN_INVENTORY and rows[-1]["status"] == "ERROR"
    as_json = tmp_path / "all.json"
    assert run("submission", "results", str(sid), "--out", str(as_json), "--format", "json").exit_code == 0
    assert [i["status"] for i in json.loads(as_json.read_text())["items"]] == ["NEW", "NEW", "NEW", "ERROR"]
    as_xml = run("submission", "results", str(sid), "--out", "-", "--format", "xml")
    root = etree.fromstring(as_xml.output.encode())
    assert root.findtext("{urn:bulkchange:results:1}submissionId") == str(sid)
    assert len(root.findall("{urn:bulkchange:results:1}deviceResult")) == 4

    nothing = run("submission", "retry-failed", str(sid))
    assert nothing.exit_code == 1 and f"nothing to retry in submission {sid}" in nothing.output
    assert "Traceback" not in nothing.output
    not_waiting = run("submission", "approve", str(sid), "--as", "someone-else")
    assert not_waiting.exit_code == 1 and f"nothing to approve in submission {sid}" in not_waiting.output

    cancelled = run("submission", "cancel", str(sid))
    assert cancelled.exit_code == 0, cancelled.output
    assert f"submission {sid}: cancel reached 2 of 2 bulk changes; status CANCELLED" in cancelled.output
    assert f"bulk change {children[0]}: cancelled 2 device rows" in cancelled.output


def test_approval_is_asked_once_for_the_whole_submission(run, db_url: str, tmp_path: Path) -> None:
    # 3 devices over 2 carriers: under a limit of 2 per carrier, over it for the whole submission.
    assert run("approval-policy", "set", "--max-devices", "2").exit_code == 0
    sub = run("submit", str(_request(tmp_path)), "--created-by", "alice")
    sid = int(re.search(r"\(submission (\d+)\)", sub.output).group(1))
    assert "AWAITING_APPROVAL" in run("submission", "show", str(sid)).output
    own = run("submission", "approve", str(sid), "--as", "alice")
    assert own.exit_code == 1 and "cli:alice submitted bulk change" in own.output and "Traceback" not in own.output
    rejected = run("submission", "reject", str(sid), "--reason", "not this week", "--as", "bob")
    assert rejected.exit_code == 0, rejected.output
    assert "reject reached 2 of 2 bulk changes; status CANCELLED" in rejected.output
    blank = run("submission", "reject", str(sid), "--reason", "  ", "--as", "bob")
    assert blank.exit_code == 1 and "--reason must not be blank" in blank.output


def test_another_tenants_or_a_missing_submission_is_not_found(run, tmp_path: Path) -> None:
    sid = int(re.search(r"\(submission (\d+)\)", run("submit", str(_request(tmp_path))).output).group(1))
    for command in (*SUBMISSION_COMMANDS, "results"):
        extra = ["--out", "-"] if command == "results" else []
        other = run("submission", command, str(sid), "--tenant", "other", *extra)
        assert other.exit_code == 1 and f"no submission {sid} in this tenant" in other.output, (command, other.output)
        missing = run("submission", command, str(sid + 1000), *extra)
        assert missing.exit_code == 1 and f"no submission {sid + 1000} in this tenant" in missing.output
    unwritable = run("submission", "results", str(sid), "--out", str(tmp_path / "no" / "such" / "dir.csv"))
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.output


_VALUES = st.one_of(
    st.text(min_size=1, max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["٣", "1_0", "0", "+1", " 1", "1e3", "9223372036854775808", "\udcff", "S1"]),
)


_EXTRA = {"results": ["--out", "-"], "reject": ["--reason", "no"], "approve": ["--as", "someone"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from([*SUBMISSION_COMMANDS, "results", "reject"]), value=_VALUES)
def test_any_submission_id_is_refused_in_one_line_never_a_traceback(db_url: str, run, command: str, value: str) -> None:
    before = _counts(db_url)
    args = ["submission", command, *_EXTRA.get(command, []), "--database-url", db_url, "--", value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), result.output  # nothing is stored to find
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and _counts(db_url) == before


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(max_size=40), actor=st.text(min_size=1, max_size=20))
def test_any_reject_reason_or_actor_is_stored_or_refused_in_one_line(
    db_url: str, run, tmp_path_factory, reason: str, actor: str
) -> None:
    """Unicode, blanks, lone surrogates (an undecodable argv byte) and NUL: a one-line refusal, or
    the reason reaches every waiting child."""
    assert run("approval-policy", "set", "--max-devices", "0").exit_code == 0
    sub = run("submit", str(_request(tmp_path_factory.mktemp("r"))))
    sid = int(re.search(r"\(submission (\d+)\)", sub.output).group(1))
    result = CliRunner().invoke(
        main, ["submission", "reject", str(sid), "--reason", reason, "--as", actor, "--database-url", db_url]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 0:  # (a later example's ThingSpace child may be refused by Verizon's daily limit)
        assert re.search(r"reject reached [12] of 2 bulk changes; status CANCELLED", result.output), result.output
    else:
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert result.exit_code in (1, 2) and len(errors) == 1, result.output
