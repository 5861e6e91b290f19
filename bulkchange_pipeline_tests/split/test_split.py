"""The split as plain modules (``intake.split``, ``store.submissions``) on both backends: grouping
by service provider in request order, refusals with their reason, a change type one carrier cannot
do, idempotency across submissions and bulk changes, one transaction, the approval policy over the
whole submission, and the parent's derived status."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bulkchange_pipeline.domain import BulkChangeRequest, DeviceChangeStatus
from bulkchange_pipeline.domain.approval import ApprovalPolicy
from bulkchange_pipeline.intake.csv_file import parse_csv
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.store import reference as ref
from bulkchange_pipeline.store.approvals import Actor, SelfApprovalRefused, set_policy
from bulkchange_pipeline.store.bulk_changes import NewBulkChange
from bulkchange_pipeline.store.device_rows import NewDeviceChange
from bulkchange_pipeline.store.idempotency import IdempotencyConflict
from bulkchange_pipeline.store.schema import bulk_change, bulk_change_approval, device_change, submission_refused
from bulkchange_pipeline.store.seed import DemoSeed
from bulkchange_pipeline.store.submission_ops import approve_submission
from bulkchange_pipeline.store.submissions import (
    ChildView,
    NewSubmission,
    RefusedRow,
    create_submission,
    get_submission,
    iter_submission_results,
    submission_state,
)

from .conftest import UNKNOWN_ICCID, edit_body, stored_counts


def _request(body: dict) -> BulkChangeRequest:
    return BulkChangeRequest.model_validate(body)


def _split(engine: sa.Engine, seed: DemoSeed, body: dict, **kw):
    return submit(engine, seed.tenant_id, _request(body), "split-test", **kw)


def test_devices_are_split_by_service_provider_in_request_order(engine: sa.Engine, seed: DemoSeed) -> None:
    j, t, p = (seed.sample_iccids[i] for i in ("jasper", "telegence", "pond"))
    out = _split(engine, seed, edit_body([t[0], j[0], t[1], UNKNOWN_ICCID, p[0], j[1]]))

    assert out.created and out.submission_id is not None and out.bulk_change_id is None
    assert [c.integration for c in out.children] == ["telegence", "jasper", "pond"]  # first appearance
    assert [c.counts for c in out.children] == [{"NEW": 2}, {"NEW": 2}, {"NEW": 1}]
    assert [(e.row, e.identifier) for e in out.refused] == [(4, UNKNOWN_ICCID)]
    assert out.refused[0].reason == f"no device with ICCID {UNKNOWN_ICCID} in this tenant's inventory"
    assert out.status == "NEW" and out.counts == {"NEW": 5, "ERROR": 1}

    view = get_submission(engine, out.submission_id, seed.tenant_id)
    assert view is not None and view.status == "NEW" and view.total == 6
    assert [c.bulk_change_id for c in view.children] == [c.bulk_change_id for c in out.children]
    with engine.connect() as conn:
        heads = conn.execute(
            sa.select(bulk_change.c.service_provider_id, bulk_change.c.idempotency_key, bulk_change.c.request)
            .where(bulk_change.c.submission_id == out.submission_id)
            .order_by(bulk_change.c.id)
        ).all()
    assert [h.service_provider_id for h in heads] == [
        seed.service_providers[i] for i in ("telegence", "jasper", "pond")
    ]
    assert all(h.idempotency_key is None for h in heads)
    assert [h.request["deviceCount"] for h in heads] == [2, 2, 1]
    assert all(h.request["serviceProviderId"] == h.service_provider_id for h in heads)
    # One results file: every device of every child, then the refused one.
    rows = list(iter_submission_results(engine, out.submission_id, seed.tenant_id))
    assert [r["iccid"] for r in rows] == [t[0], t[1], j[0], j[1], p[0], UNKNOWN_ICCID]
    assert [r["serviceProvider"] is None for r in rows] == [False] * 5 + [True]
    assert get_submission(engine, out.submission_id, seed.other_tenant_id) is None
    assert list(iter_submission_results(engine, out.submission_id, seed.other_tenant_id)) == []


def test_unknown_ambiguous_and_invalid_devices_are_refused_with_their_reason(engine: sa.Engine, seed: DemoSeed) -> None:
    j, p = seed.sample_iccids["jasper"], seed.sample_iccids["pond"]
    ref.insert_devices(engine, seed.tenant_id, seed.service_providers["pond"], [{"iccid": j[2], "status": "ACTIVATED"}])
    foreign = seed.other_iccids[0]  # another tenant's device: the same words as an unknown one
    out = _split(engine, seed, edit_body([j[0], j[2], foreign, "12ab", p[1]]))

    reasons = {e.row: e.reason for e in out.refused}
    assert set(reasons) == {2, 3, 4}
    assert "is in the inventory of 2 service providers" in reasons[2] and "serviceProviderId" in reasons[2]
    assert reasons[3] == f"no device with ICCID {foreign} in this tenant's inventory"
    assert reasons[4]  # not an identifier: the identifier check's own reason
    assert [c.integration for c in out.children] == ["jasper", "pond"]
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(submission_refused.c.row_number, submission_refused.c.reason)
            .where(submission_refused.c.submission_id == out.submission_id)
            .order_by(submission_refused.c.row_number)
        ).all()
    assert {r.row_number: r.reason for r in stored} == reasons


def test_placement_hands_its_lookups_to_validation_so_each_device_is_read_once(
    engine: sa.Engine, seed: DemoSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placement reads every device to find its service provider; each child's validation reuses
    that read instead of looking the same devices up again (a 100,000-device split read them twice).
    The result is the one a fresh lookup gives: the same children, rows and refusals."""
    j, t, p = (seed.sample_iccids[i] for i in ("jasper", "telegence", "pond"))
    body = edit_body([t[0], j[0], t[1], UNKNOWN_ICCID, p[0], j[1]])
    fresh = _split(engine, seed, body, dry_run=True)

    looked_up: list[str] = []
    real = ref.find_devices

    def counting(engine: sa.Engine, tenant_id: int, kind, values):  # type: ignore[no-untyped-def]
        looked_up.extend(values)
        return real(engine, tenant_id, kind, values)

    monkeypatch.setattr(ref, "find_devices", counting)
    out = _split(engine, seed, body, dry_run=True)

    assert sorted(looked_up) == sorted({t[0], j[0], t[1], UNKNOWN_ICCID, p[0], j[1]})  # each once
    assert [(c.integration, c.counts) for c in out.children] == [(c.integration, c.counts) for c in fresh.children]
    assert [(e.row, e.reason) for e in out.refused] == [(e.row, e.reason) for e in fresh.refused]
    rows = [[(r.iccid, r.status, r.status_details) for r in c.report.rows] for c in out.children if c.report]
    assert rows == [[(r.iccid, r.status, r.status_details) for r in c.report.rows] for c in fresh.children if c.report]


def test_csv_rows_that_did_not_parse_are_refused_before_placement(engine: sa.Engine, seed: DemoSeed) -> None:
    j = seed.sample_iccids["jasper"]
    data = f"iccid,costCenter\n{j[0]},CC-1\n{j[1]},CC-2,extra\n".encode()
    parsed = parse_csv(data, change_type=10)
    assert parsed.request.service_provider_id is None
    out = submit(
        engine, seed.tenant_id, parsed.request, "t", row_errors=parsed.row_errors, row_numbers=parsed.row_numbers
    )
    assert [(e.row, e.reason) for e in out.refused] == [(3, parsed.row_errors[1])]
    [child] = out.children
    assert child.counts == {"NEW": 1} and child.report is not None and child.report.row_numbers == [2]


def test_a_change_type_one_carrier_cannot_do_refuses_only_its_rows(engine: sa.Engine, seed: DemoSeed) -> None:
    j, r = seed.sample_iccids["jasper"], seed.sample_iccids["revio"]
    out = _split(engine, seed, edit_body([j[0], r[0], j[1], r[1]]))

    by = {c.integration: c for c in out.children}
    assert by["jasper"].counts == {"NEW": 2} and by["jasper"].status == "NEW"
    assert by["revio"].counts == {"ERROR": 2} and by["revio"].status == "ERROR"
    assert by["revio"].report is not None
    assert [e.row for e in by["revio"].report.errors] == [2, 4]  # the original request's positions
    assert all("Rev.io" in e.reason or "revio" in e.reason.lower() for e in by["revio"].report.errors)
    assert out.status == "NEW"  # the Jasper child still runs


def test_same_key_and_request_is_the_same_submission(engine: sa.Engine, seed: DemoSeed) -> None:
    j, t = seed.sample_iccids["jasper"], seed.sample_iccids["telegence"]
    body = edit_body([j[0], t[0]], idempotencyKey="split-1")
    first = _split(engine, seed, body)
    before = stored_counts(engine)
    again = _split(engine, seed, body)
    assert (again.submission_id, again.created) == (first.submission_id, False)
    assert "nothing new created" in again.message
    assert [c.bulk_change_id for c in again.children] == [c.bulk_change_id for c in first.children]
    assert stored_counts(engine) == before

    with pytest.raises(IdempotencyConflict, match=f"submission {first.submission_id}"):
        _split(engine, seed, edit_body([j[1], t[0]], idempotencyKey="split-1"))
    with pytest.raises(IdempotencyConflict, match=f"submission {first.submission_id}"):  # not a bulk change too
        _split(engine, seed, {**body, "serviceProviderId": seed.service_providers["jasper"], "devices": [j[0]]})
    assert stored_counts(engine) == before


def test_a_key_held_by_a_bulk_change_is_a_conflict_for_a_split(engine: sa.Engine, seed: DemoSeed) -> None:
    j = seed.sample_iccids["jasper"]
    single = _split(
        engine, seed, edit_body([j[0]], serviceProviderId=seed.service_providers["jasper"], idempotencyKey="k")
    )
    assert single.bulk_change_id is not None and not single.split
    before = stored_counts(engine)
    for dry_run in (True, False):
        with pytest.raises(IdempotencyConflict, match=f"bulk change {single.bulk_change_id}"):
            _split(engine, seed, edit_body([j[0]], idempotencyKey="k"), dry_run=dry_run)
    assert stored_counts(engine) == before


def test_a_dry_run_shows_the_split_and_stores_nothing(engine: sa.Engine, seed: DemoSeed) -> None:
    j, p = seed.sample_iccids["jasper"], seed.sample_iccids["pond"]
    before = stored_counts(engine)
    out = _split(engine, seed, edit_body([j[0], p[0], UNKNOWN_ICCID]), dry_run=True)
    assert out.submission_id is None and not out.created and out.split
    assert [(c.integration, c.bulk_change_id, c.accepted) for c in out.children] == [
        ("jasper", None, 1),
        ("pond", None, 1),
    ]
    assert "dry run: nothing stored" in out.message and len(out.refused) == 1
    assert stored_counts(engine) == before


def test_everything_is_one_transaction(engine: sa.Engine, seed: DemoSeed) -> None:
    """A child whose insert fails (here a service provider that does not exist: a real foreign key
    violation) leaves nothing: no parent, no other child, no refused row."""

    def child(sp_id: int) -> NewBulkChange:
        row = NewDeviceChange(change_request={"cost_center": "CC"}, status=DeviceChangeStatus.NEW)
        return NewBulkChange(seed.tenant_id, sp_id, 10, 0, True, {"changeType": 10}, "t", [row])

    before = stored_counts(engine)
    new = NewSubmission(
        tenant_id=seed.tenant_id,
        change_type=10,
        request={"changeType": 10, "deviceCount": 3},
        created_by="t",
        children=[child(seed.service_providers["jasper"]), child(987_654)],
        refused=[RefusedRow(3, UNKNOWN_ICCID, "no device")],
    )
    with pytest.raises(sa.exc.IntegrityError):
        create_submission(engine, new)
    assert stored_counts(engine) == before


def test_approval_is_judged_over_the_whole_submission(engine: sa.Engine, seed: DemoSeed) -> None:
    """max 4 devices; three carriers with 2 each: no child is over the limit, the submission is."""
    set_policy(engine, seed.tenant_id, ApprovalPolicy(max_devices=4))
    devices = [seed.sample_iccids[i][k] for i in ("jasper", "telegence", "pond") for k in range(2)]
    submitter = Actor("key:alice", "key:1")
    out = submit(engine, seed.tenant_id, _request(edit_body([*devices, UNKNOWN_ICCID])), "alice", actor=submitter)

    assert out.status == "AWAITING_APPROVAL" and "6 devices is more than the policy's 4" in out.message
    assert [c.status for c in out.children] == ["AWAITING_APPROVAL"] * 3
    with engine.connect() as conn:
        reasons = (
            conn.execute(
                sa.select(bulk_change_approval.c.needed_because).where(
                    bulk_change_approval.c.bulk_change_id.in_([c.bulk_change_id for c in out.children])
                )
            )
            .scalars()
            .all()
        )
    assert len(reasons) == 3 and all(f"submission {out.submission_id} needs approval" in r for r in reasons)

    with pytest.raises(SelfApprovalRefused):
        approve_submission(engine, seed.tenant_id, out.submission_id, by=Actor("key:alice", "key:1"))
    done = approve_submission(engine, seed.tenant_id, out.submission_id, by=Actor("key:bob", "key:2"))
    assert done.done == 3 and done.status == "NEW"
    # Each child alone (2 devices) would not have needed it.
    single = submit(
        engine,
        seed.tenant_id,
        _request(edit_body(devices[:2], serviceProviderId=seed.service_providers["jasper"])),
        "alice",
        dry_run=True,
    )
    assert "await approval" not in single.message


def _kid(status: str, counts: dict[str, int], *, held: bool = False) -> ChildView:
    return ChildView(1, 1, "sp", "jasper", status, counts, held=held)


@pytest.mark.parametrize(
    "children,refused,attempted,expected,outcome",
    [
        # fresh: refusals do not make it run
        ([_kid("NEW", {"NEW": 2}), _kid("ERROR", {"ERROR": 1})], 1, 0, "NEW", "in_progress"),
        ([_kid("PROCESSED", {"PROCESSED": 2}), _kid("NEW", {"NEW": 1})], 1, 2, "PROCESSING", "in_progress"),
        (
            [_kid("PROCESSED", {"PROCESSED": 2}), _kid("PROCESSED", {"PROCESSED": 1, "API_FAILED": 1})],
            3,
            4,
            "PROCESSED",
            "done_with_failures",
        ),
        ([_kid("PROCESSED", {"PROCESSED": 2})], 0, 2, "PROCESSED", "done"),
        (
            [_kid("CANCELLED", {"CANCELLED": 2}), _kid("CANCELLED", {"CANCELLED": 1, "ERROR": 1})],
            1,
            0,
            "CANCELLED",
            "cancelled",
        ),
        (
            [_kid("AWAITING_APPROVAL", {"NEW": 2}), _kid("NEW", {"NEW": 1})],
            0,
            0,
            "AWAITING_APPROVAL",
            "awaiting_approval",
        ),
        ([_kid("ERROR", {"ERROR": 2})], 1, 0, "ERROR", "done_with_failures"),  # every device refused: nothing sent
        ([], 3, 0, "ERROR", "done_with_failures"),
        (
            [_kid("PENDING", {"PROCESSING": 1}), _kid("PROCESSED", {"PROCESSED": 1})],
            0,
            2,
            "PENDING",
            "waiting_on_carrier",
        ),
        # a child's run crashed (header ERROR, rows left), the other child done: final, resume it
        (
            [_kid("ERROR", {"PROCESSING": 2}), _kid("PROCESSED", {"PROCESSED": 2})],
            0,
            4,
            "ERROR",
            "unfinished",
        ),
        (
            [_kid("ERROR", {"NEW": 1, "PROCESSED": 1}), _kid("CANCELLED", {"CANCELLED": 2})],
            1,
            1,
            "ERROR",
            "unfinished",
        ),
        # a crashed child while another still runs: still in progress (not final yet)
        (
            [_kid("ERROR", {"PROCESSING": 2}), _kid("PROCESSING", {"PROCESSING": 1, "NEW": 1})],
            0,
            3,
            "PROCESSING",
            "in_progress",
        ),
        # one child cancelled alone, the other queued: the queued one still runs
        ([_kid("CANCELLED", {"CANCELLED": 2}), _kid("NEW", {"NEW": 2})], 0, 0, "NEW", "in_progress"),
        # one child cancelled, the other held (processChanges=false): nothing runs until released
        (
            [_kid("CANCELLED", {"CANCELLED": 2}), _kid("NEW", {"NEW": 2}, held=True)],
            0,
            0,
            "NEW",
            "held",
        ),
        # a held split
        ([_kid("NEW", {"NEW": 2}, held=True), _kid("NEW", {"NEW": 1}, held=True)], 1, 0, "NEW", "held"),
        (
            [_kid("SCHEDULED", {"SCHEDULED": 2}, held=True), _kid("NEW", {"NEW": 1}, held=True)],
            0,
            0,
            "NEW",
            "held",
        ),
        # held and a released one running: in progress
        (
            [_kid("NEW", {"NEW": 2}, held=True), _kid("PROCESSING", {"PROCESSING": 1})],
            0,
            1,
            "PROCESSING",
            "in_progress",
        ),
        # rejected (every row CANCELLED) next to a child with nothing to send: cancelled
        ([_kid("CANCELLED", {"CANCELLED": 2}), _kid("ERROR", {"ERROR": 2})], 0, 0, "CANCELLED", "cancelled"),
        # a child's rows are final but its header has not caught up: not final yet
        (
            [_kid("PROCESSING", {"PROCESSED": 2}), _kid("PROCESSED", {"PROCESSED": 1})],
            0,
            3,
            "PROCESSING",
            "in_progress",
        ),
    ],
)
def test_the_parent_status_is_derived_from_its_children(children, refused, attempted, expected, outcome) -> None:
    state = submission_state(children, refused, attempted)
    assert (state.status, state.outcome.value) == (expected, outcome)
    assert sum(state.counts.values()) == sum(sum(c.counts.values()) for c in children) + refused
    # final exactly when every child's header is (what the drop outbox waits for)
    assert state.final == all(c.status in ("PROCESSED", "ERROR", "CANCELLED") for c in children)


def test_every_device_refused_is_still_stored_as_the_audit_trail(engine: sa.Engine, seed: DemoSeed) -> None:
    out = _split(engine, seed, edit_body([UNKNOWN_ICCID, seed.other_iccids[0]]))
    assert out.submission_id is not None and out.children == [] and out.status == "ERROR"
    view = get_submission(engine, out.submission_id, seed.tenant_id)
    assert view is not None and view.status == "ERROR" and [r.row for r in view.refused] == [1, 2]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(device_change)).scalar_one() == 0
