"""The ``bulkchange`` CLI through click's CliRunner, against a real SQLite file and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.store.seed import demo_iccid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def run(db_url: str):
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        result = runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)
        return result

    return invoke


def test_end_to_end(run, tmp_path: Path) -> None:
    assert run("init-db").exit_code == 0
    seeded = run("seed-demo", "--devices-per-carrier", "20")
    assert (
        seeded.exit_code == 0
        and "seeded the demo tenant" in seeded.output
        and "AT&T Control Center (POD19)" in seeded.output
    )
    assert "nothing changed" in run("seed-demo", "--devices-per-carrier", "20").output

    dry = run("dry-run", str(EXAMPLES / "customer_rate_plan_change.json"))
    assert dry.exit_code == 0 and "4 accepted" in dry.output

    sub = run("submit", str(EXAMPLES / "customer_rate_plan_change.json"), "--idempotency-key", "cli-1")
    assert sub.exit_code == 0, sub.output
    bc_id = int(re.search(r"created bulk change (\d+)", sub.output).group(1))
    again = run("submit", str(EXAMPLES / "customer_rate_plan_change.json"), "--idempotency-key", "cli-1")
    assert f"already submitted as bulk change {bc_id}; nothing new created" in again.output

    csv_sub = run(
        "submit",
        str(EXAMPLES / "status_update.csv"),
        "--csv-change-type",
        "StatusUpdate",
        "--service-provider",
        "jasper",
    )
    assert csv_sub.exit_code == 0 and "7 of 7 devices accepted" in csv_sub.output

    status = run("status", str(bc_id))
    assert (
        status.exit_code == 0 and "CustomerRatePlanChange" in status.output and re.search(r"NEW\s*│\s*4", status.output)
    )
    watch = run("status", str(bc_id), "--watch", "--interval", "0.05", "--timeout", "0.2")
    assert watch.exit_code == 1 and "still NEW" in watch.output

    exported = run("results", str(bc_id), "--csv", "-")
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.output)))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"NEW"} and rows[0]["iccid"] == demo_iccid(1, 0, 0)
    out_file = tmp_path / "results.csv"
    assert run("results", str(bc_id), "--csv", str(out_file)).exit_code == 0
    assert len(list(csv.DictReader(out_file.open(newline="")))) == 4

    hist = run("history", demo_iccid(1, 0, 0))
    assert hist.exit_code == 0 and "no recorded changes" in hist.output


def test_dry_run_exit_codes_and_messages(run, tmp_path: Path) -> None:
    run("seed-demo", "--devices-per-carrier", "20")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"iccid,targetStatus\n{demo_iccid(1, 0, 1)},DEACTIVATED\n{demo_iccid(1, 1, 0)},DEACTIVATED\n")
    result = run("dry-run", str(bad), "--change-type", "1", "--service-provider", "1")
    assert result.exit_code == 1
    assert f"no device with ICCID {demo_iccid(1, 1, 0)} in this tenant's inventory" in result.output
    assert "1 accepted" in result.output and "1 refused" in result.output

    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("iccid,targetStatus\n1,Désactivé\n".encode("latin-1"))
    result = run("dry-run", str(not_utf8), "--change-type", "1", "--service-provider", "1")
    assert result.exit_code == 2 and "not UTF-8: byte 0xE9" in result.output and "Traceback" not in result.output

    no_id = tmp_path / "noid.csv"
    no_id.write_text("targetStatus\nACTIVATED\n")
    assert run("dry-run", str(no_id), "--change-type", "1", "--service-provider", "1").exit_code == 2

    other_sp = run("dry-run", str(bad), "--change-type", "1", "--service-provider", "7")
    assert other_sp.exit_code == 2 and "no service provider with id 7 in this tenant" in other_sp.output

    assert "no tenant named 'nobody'" in run("status", "1", "--tenant", "nobody").output
    assert "no bulk change 999 in this tenant" in run("status", "999").output
    assert "unknown" in run("dry-run", str(bad), "--change-type", "1", "--service-provider", "nope").output


def test_uninitialised_database_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "1", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert result.exit_code == 1 and "run `bulkchange init-db` first" in result.output


def test_init_db_creates_a_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = CliRunner().invoke(main, ["init-db", "--database-url", url])
    assert result.exit_code == 0 and (tmp_path / "new.db").exists()
