"""The CLI side of the API work: ``api-key create`` (key printed once, usable over HTTP),
``cancel`` and ``retry-failed`` (both backends)."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.api_keys import tenant_for_key
from bulkchange_pipeline.store.seed import seed_demo


def test_api_key_cancel_and_retry_commands(engine: sa.Engine, db_url: str) -> None:
    seed = seed_demo(engine, devices_per_carrier=10)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    created = run("api-key", "create", "--tenant", "demo", "--name", "ops")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("bc_") and tenant_for_key(engine, key) == seed.tenant_id
    assert "cannot be shown again" in created.stderr
    listed = run("api-key", "list")
    assert "ops" in listed.output and key not in listed.output
    assert run("api-key", "create", "--tenant", "nobody", "--name", "x").exit_code == 1

    with TestClient(create_app(db_url)) as client:
        body = {
            "serviceProviderId": seed.service_providers["jasper"],
            "changeType": 1,
            "devices": seed.sample_iccids["jasper"][:3],
            "statusUpdate": {"status": "RETIRED"},
        }
        bc_id = client.post("/bulk-changes", json=body, headers={"Authorization": f"Bearer {key}"}).json()["id"]

    cancelled = run("cancel", str(bc_id))
    assert (
        cancelled.exit_code == 0
        and f"bulk change {bc_id}: cancelled 3 device rows; status CANCELLED" in cancelled.output
    )
    again = run("cancel", str(bc_id))
    assert again.exit_code == 1 and "nothing to cancel" in again.output
    retried = run("retry-failed", str(bc_id))
    assert retried.exit_code == 1 and "nothing to retry" in retried.output
    other = run("cancel", str(bc_id), "--tenant", "other")
    assert other.exit_code == 1 and f"no bulk change {bc_id} in this tenant" in other.output
