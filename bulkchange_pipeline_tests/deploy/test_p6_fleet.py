"""``bench/p6_fleet.py`` at a small size: several carrier accounts submitted at once through the
API of the production shape (``deploy-local``) all run at the same time, each within its own
limit. The benchmark's figures at full size are in bench/RESULTS.md; here its JSON is checked for
what must hold at any size, so the script keeps working and the deployment keeps running
accounts in parallel. Takes about 90 s. Skipped without PostgreSQL, except under ``CI=true``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from ..conftest import IN_CI, PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS, DEVICES = 3, 40


@pytest.fixture
def postgresql() -> None:
    try:
        with sa.create_engine(PG_ADMIN_URL).connect():
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means PostgreSQL is not usable
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but is not usable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {str(exc).splitlines()[0]}")


def test_small_fleet_runs_every_account_at_once_within_its_limit(postgresql: None, tmp_path: Path) -> None:
    out = tmp_path / "p6.json"
    args = ["--accounts", str(ACCOUNTS), "--devices", str(DEVICES), "--no-record", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "p6_fleet.py", *args, "--timeout", "300"],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["final_s"] is not None, r  # every row final
    assert r["calls"] == ACCOUNTS * DEVICES and r["applied_more_than_once"] == 0, r
    assert r["over_limit"] == 0 and r["refusals"] == 0 and r["peak_concurrency"] == 1, r  # each account's limit held
    assert r["pools"]["carrier_api"] == 8  # sized to the service providers, at least 8
    profile = r["profile"]
    assert len(profile["start"]) == ACCOUNTS
    # All accounts ran at the same time: the last run started before the first one ended.
    assert max(profile["start"]) < min(s + e for s, e in zip(profile["start"], profile["execution"], strict=True))
    assert r["peak_rss_mb"] > 0 and r["cpu_s"] > 0 and "run workers" in r["cpu_by_kind"]
