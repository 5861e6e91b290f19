"""The undo route's refusals and the undo plan's rules, without a run: hostile ids and query
parameters are a 4xx with nothing stored, never a 5xx; another tenant's bulk change is 404, an
unfinished one 409, a viewer 403; the plan leaves out rows with no recorded before-value, and
restores per-device values as the numbers they were."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake.undo import idempotency_key_for, plan_undo
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.operations import OperationRefused
from bulkchange_pipeline.store.schema import bulk_change
from bulkchange_pipeline.store.undo import FieldChange, OriginalBulkChange, OriginalRow

from ..intake.test_api import Api, make_api


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url)


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(bulk_change)).scalar_one()


def test_refusals_name_the_reason_and_store_nothing(api: Api) -> None:
    bc_id = api.submit(api.seed.sample_iccids["jasper"][:2], statusUpdate={"status": "DEACTIVATED"})
    stored = _count(api.engine)
    unfinished = api.client.post(f"/bulk-changes/{bc_id}/undo", headers=api.demo)
    assert unfinished.status_code == 409 and "is NEW: undo it once it is finished" in unfinished.json()["detail"]
    other = api.client.post(f"/bulk-changes/{bc_id}/undo", headers=api.other)
    assert other.status_code == 404
    viewer = {"Authorization": f"Bearer {create_api_key(api.engine, api.seed.tenant_id, 'v', ['viewer'])}"}
    refused = api.client.post(f"/bulk-changes/{bc_id}/undo", headers=viewer)
    assert refused.status_code == 403 and "submitter role" in refused.json()["detail"]
    assert api.client.post(f"/bulk-changes/{bc_id}/undo").status_code == 401
    assert _count(api.engine) == stored


_SEGMENTS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(min_size=1, max_size=30),
    st.sampled_from(["0", "-1", "1e3", "9223372036854775808", "%00", "..", "1;DROP TABLE bulk_change", "１"]),
)
_PARAMS = st.dictionaries(
    st.sampled_from(["dryRun", "dryrun", "dry_run", "x", "dryRun "]),
    st.one_of(st.sampled_from(["true", "false", "1", "0", "yes", ""]), st.text(max_size=20)),
    max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=_SEGMENTS, params=_PARAMS)
def test_hostile_ids_and_query_params_are_a_4xx_never_a_5xx(api: Api, segment: str, params: dict[str, str]) -> None:
    stored = _count(api.engine)
    r = api.client.post(f"/bulk-changes/{quote(segment, safe='')}/undo", params=params, headers=api.demo)
    assert 400 <= r.status_code < 500, (segment, params, r.status_code, r.text)
    assert _count(api.engine) == stored


def _row(n: int, status: str = "PROCESSED", **recorded: tuple[str | None, str | None]) -> OriginalRow:
    row = OriginalRow(n, n, f"89010000000000000{n:02d}", status, {})
    row.recorded = {f: FieldChange(100 + n, f, old, new, 7) for f, (old, new) in recorded.items()}
    return row


def _original(ct: ChangeType, rows: list[OriginalRow], status: str = "PROCESSED") -> OriginalBulkChange:
    return OriginalBulkChange(7, 1, 3, "jasper", int(ct), status, None, rows)


def test_the_plan_restores_per_device_numbers_and_leaves_out_what_has_no_before_value() -> None:
    rows = [
        _row(1, customer_rate_plan_id=("11", "20"), data_allocation_mb=("1024", "5120")),
        _row(2, customer_rate_pool_id=(None, "4")),  # no pool before: nothing to go back to
        _row(3, status="API_FAILED"),
    ]
    plan = plan_undo(_original(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, rows))
    assert plan.request is not None and plan.request["idempotencyKey"] == idempotency_key_for(7) == "undo-of-7"
    assert plan.request["changeType"] == 4 and plan.request["customerRatePlanUpdate"] == {}
    assert plan.restored == [{"device": rows[0].identifier, "customer_rate_plan_id": 11, "data_allocation_mb": 1024}]
    reasons = {x.device: x.reason for x in plan.left_out}
    assert "no before-value recorded" in reasons[rows[1].identifier]
    assert "row is API_FAILED, not PROCESSED" in reasons[rows[2].identifier]


def test_irreversible_change_types_and_unfinished_originals_are_refused() -> None:
    swap = plan_undo(_original(ChangeType.CHANGE_ICCID_AND_IMEI, [_row(1, iccid=("8901", "8902"))]))
    assert swap.request is None and "ICCID/IMEI swap" in swap.left_out[0].reason
    archival = plan_undo(_original(ChangeType.ARCHIVAL, [_row(1, archived_at=(None, "2026-01-01"))]))
    assert archival.request is None and "Archival" in archival.left_out[0].reason
    with pytest.raises(OperationRefused, match="PROCESSING"):
        plan_undo(_original(ChangeType.STATUS_UPDATE, [], status="PROCESSING"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(min_size=1, max_size=30), st.integers(min_value=-(2**70), max_value=2**70).map(str)))
def test_any_cli_undo_id_is_refused_in_one_line_or_answered(api: Api, db_url: str, value: str) -> None:
    stored = _count(api.engine)
    result = CliRunner().invoke(main, ["undo", "--dry-run", "--tenant", "demo", "--database-url", db_url, "--", value])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and _count(api.engine) == stored
