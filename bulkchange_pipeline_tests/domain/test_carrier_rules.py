"""The carrier rules table and its pure checker (``domain.carrier_rules``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bulkchange_pipeline.domain import BulkChangeRequest, ChangeType, Integration
from bulkchange_pipeline.domain.capabilities import JASPER_DATES
from bulkchange_pipeline.domain.carrier_rules import (
    CARRIER_RULES,
    THINGSPACE_RULES_URL,
    LineHistory,
    RuleKind,
    check_row,
    next_day,
    next_month,
)

CT, I = ChangeType, Integration
NOON = datetime(2026, 12, 5, 12, 30)


def test_every_rule_has_a_source_and_an_evidence_tag_and_every_carrier_a_row() -> None:
    assert all(r.source and r.evidence in ("D", "I") for r in CARRIER_RULES)
    assert {r.integration for r in CARRIER_RULES} == set(Integration)  # unknowns recorded, not missing
    ts = {(r.kind, r.limit) for r in CARRIER_RULES if r.integration is I.THINGSPACE}
    assert ts >= {
        (RuleKind.PER_DAY, 5),
        (RuleKind.PER_MONTH, 4),
        (RuleKind.NOT_WHILE_SUSPENDED, None),
        (RuleKind.MAX_SUSPENDED_DAYS, 90),
    }
    jasper = next(r for r in CARRIER_RULES if r.kind is RuleKind.MAX_DAYS_AHEAD)
    assert jasper.limit == JASPER_DATES.max_days_ahead == 180  # one number, kept in CarrierDates


def test_sixth_thingspace_status_change_of_a_day_is_refused_with_rule_source_and_count() -> None:
    assert check_row(CARRIER_RULES, I.THINGSPACE, CT.STATUS_UPDATE, LineHistory(actions_today=4), NOON) is None
    refusal = check_row(CARRIER_RULES, I.THINGSPACE, CT.STATUS_UPDATE, LineHistory(actions_today=5), NOON)
    assert refusal is not None
    assert refusal.reason.startswith(
        "5 provisioning actions today; Verizon allows 5 provisioning actions per line per day (source: "
    )
    assert THINGSPACE_RULES_URL in refusal.reason
    assert refusal.allowed_at == datetime(2026, 12, 6)


def test_plan_changes_per_month_and_while_suspended() -> None:
    r = check_row(
        CARRIER_RULES, I.THINGSPACE, CT.CARRIER_RATE_PLAN_CHANGE, LineHistory(plan_changes_this_month=4), NOON
    )
    assert r is not None and r.reason.startswith(
        "4 plan changes this month; Verizon allows 4 plan changes per line per month"
    )
    assert r.allowed_at == datetime(2027, 1, 1)
    r = check_row(CARRIER_RULES, I.THINGSPACE, CT.CARRIER_RATE_PLAN_CHANGE, LineHistory(status="suspend"), NOON)
    assert r is not None and "suspended" in r.reason and r.allowed_at is None  # waiting does not help
    # Other carriers and change types: no rule checked here.
    busy = LineHistory(actions_today=99, plan_changes_this_month=99, status="suspend")
    assert check_row(CARRIER_RULES, I.JASPER, CT.STATUS_UPDATE, busy, NOON) is None
    assert check_row(CARRIER_RULES, I.THINGSPACE, CT.CUSTOMER_ASSIGNMENT, busy, NOON) is None


@given(
    actions=st.integers(min_value=0, max_value=10_000),
    plans=st.integers(min_value=0, max_value=10_000),
    status=st.sampled_from([None, "active", "suspend", "deactive", " SUSPEND ", ""]),
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31)),
    integration=st.sampled_from(list(Integration)),
    change_type=st.sampled_from(list(ChangeType)),
)
def test_refused_exactly_when_over_a_limit_and_allowed_at_is_later(
    actions: int, plans: int, status: str | None, now: datetime, integration: Integration, change_type: ChangeType
) -> None:
    history = LineHistory(actions_today=actions, plan_changes_this_month=plans, status=status)
    refusal = check_row(CARRIER_RULES, integration, change_type, history, now)
    ts = integration is I.THINGSPACE
    over = ts and (
        (change_type is CT.STATUS_UPDATE and actions >= 5)
        or (change_type is CT.CARRIER_RATE_PLAN_CHANGE and (plans >= 4 or (status or "").strip().lower() == "suspend"))
    )
    assert (refusal is not None) == over
    if refusal is not None:
        assert refusal.reason and "source: " in refusal.reason
        if refusal.allowed_at is not None:
            assert now < refusal.allowed_at <= now + timedelta(days=31)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31)))
def test_next_day_and_month_are_the_next_boundaries(now: datetime) -> None:
    day, month = next_day(now), next_month(now)
    assert day - now <= timedelta(days=1) and day > now and (day.hour, day.minute, day.second) == (0, 0, 0)
    assert month > now and month.day == 1 and (month - now) <= timedelta(days=31)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(value=_JSON)
def test_defer_if_limited_is_a_boolean_or_a_clear_refusal(value: object) -> None:
    """The way in: any JSON value is either taken as a boolean or refused with a reason naming the
    field (the API turns that into a 422), never a crash."""
    body = {
        "serviceProviderId": 1,
        "changeType": 1,
        "devices": ["89012600000000000001"],
        "statusUpdate": {"status": "suspend"},
        "deferIfLimited": value,
    }
    try:
        request = BulkChangeRequest.model_validate(body)
    except ValidationError as exc:
        assert "deferIfLimited" in str(exc)
        return
    assert request.defer_if_limited in ((None,) if value is None else (True, False))  # null: as if absent
    assert request.model_dump(by_alias=True)["deferIfLimited"] is request.defer_if_limited
