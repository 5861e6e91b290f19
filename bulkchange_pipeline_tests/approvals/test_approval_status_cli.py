"""``bulkchange status ID`` shows the approval (both backends): why it waits, who submitted it and
when it expires; once decided, who decided, when, and the reason. No approval: no approval lines."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import BulkChangeRequest
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store import approvals

from ..intake.test_api import make_api


def test_status_prints_the_approval(engine: sa.Engine, db_url: str) -> None:
    for api in make_api(engine, db_url, devices_per_carrier=10):
        runner = CliRunner()
        base = ["--tenant", "demo", "--database-url", db_url]
        tenant = api.seed.tenant_id
        request = BulkChangeRequest.model_validate(api.status_body(api.seed.sample_iccids["jasper"][:3]))
        plain = submit(engine, tenant, request, "cli:alice")
        approvals.set_policy(engine, tenant, ApprovalPolicy(max_devices=2))
        waiting = submit(engine, tenant, request.model_copy(update={"idempotency_key": "k2"}), "cli:alice")
        rejected = submit(engine, tenant, request.model_copy(update={"idempotency_key": "k3"}), "cli:alice")
        approvals.reject_bulk_change(
            engine, tenant, rejected.bulk_change_id, by=approvals.cli_actor("bob"), reason="not [bold]now[/]"
        )

        out = runner.invoke(main, ["status", str(plain.bulk_change_id), *base])
        assert out.exit_code == 0 and "approval" not in out.output

        out = runner.invoke(main, ["status", str(waiting.bulk_change_id), *base])
        assert out.exit_code == 0, out.output
        assert "approval pending: needed because 3 devices" in out.output
        assert "submitted by cli:alice at" in out.output and "expires at" in out.output

        out = runner.invoke(main, ["status", str(rejected.bulk_change_id), *base])
        assert out.exit_code == 0, out.output
        assert "approval rejected" in out.output and "rejected by cli:bob at" in out.output
        assert "reason: not [bold]now[/]" in out.output  # shown as typed, not as markup
        assert "expires at" not in out.output
