"""Carriers' published provisioning rules, checked at validation before anything is sent.

Why: a carrier refuses a change that breaks its timing rules only when it is sent, often hours
later and device by device (ThingSpace answers a 6th status change of a line in a day with a
fault in its callback). Checking the same rules at validation turns that into a refusal a person
can act on at once ("5 provisioning actions today; Verizon allows 5 per line per day"), or, when
the request asks for it (``deferIfLimited``), into a row that waits in SCHEDULED until the first
moment the rule allows.

``CARRIER_RULES`` is the table, one ``CarrierRule`` per published rule, each with its source and
an evidence tag (``D`` documented by the carrier, ``I`` inferred). Where no public source was
found the carrier has an ``UNKNOWN`` row saying so: an unknown is never guessed into a limit.
Some rows are recorded but enforced elsewhere or not at all (``checked_here`` False): Jasper's
180-day effective date lives in ``capabilities.CarrierDates`` (``JASPER_DATES``), and Verizon's
90-suspended-days rule is applied by Verizon itself (it restores the line), so nothing at
submission can break it.

``check_row`` is pure: the caller passes what the store recorded about the line (``LineHistory``,
already including rows waiting in other bulk changes) and gets None or a ``Refusal``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .capabilities import JASPER_DATES
from .enums import ChangeType, Integration

__all__ = [
    "CARRIER_RULES",
    "THINGSPACE_RULES_URL",
    "CarrierRule",
    "LineHistory",
    "Refusal",
    "RuleKind",
    "check_row",
    "next_day",
    "next_month",
    "rules_for",
]

THINGSPACE_RULES_URL = (
    "https://thingspace.verizon.com/resources/documentation/connectivity/Working_with_Verizon_Wireless/"
    "Service_Provisioning_Rules/"
)
_THINGSPACE_TITLE = "ThingSpace: Service Provisioning Rules"
_JASPER_URL = "https://docs.jasper.com/ (Control Center REST API: Edit Device Details, effectiveDate)"
_UNKNOWN = "no published per-line limit found (searched the carrier's public API documentation)"
SUSPENDED = "suspend"  # ThingSpace's status value for a suspended line (domain/transitions.py)


class RuleKind(str, enum.Enum):
    PER_DAY = "per_day"  # at most ``limit`` of the change types per line per UTC day
    PER_MONTH = "per_month"  # at most ``limit`` per line per UTC calendar month
    NOT_WHILE_SUSPENDED = "not_while_suspended"  # refused while the line is suspended
    MAX_SUSPENDED_DAYS = "max_suspended_days"  # the carrier restores a line suspended this long
    MAX_DAYS_AHEAD = "max_days_ahead"  # an effective date at most ``limit`` days ahead
    UNKNOWN = "unknown"  # nothing published found: recorded, never guessed


@dataclass(frozen=True)
class CarrierRule:
    """One published rule. ``what`` names what is counted ("provisioning actions")."""

    integration: Integration
    kind: RuleKind
    change_types: frozenset[ChangeType]
    limit: int | None
    what: str
    source: str
    evidence: str  # "D" documented, "I" inferred
    checked_here: bool = True  # False: recorded for people, enforced elsewhere or by the carrier
    note: str = ""

    @property
    def carrier(self) -> str:
        return {Integration.THINGSPACE: "Verizon", Integration.REVIO: "Rev.io"}.get(
            self.integration, self.integration.value.title()
        )

    @property
    def text(self) -> str:
        """The rule as a sentence, for refusals and the README table."""
        if self.kind is RuleKind.PER_DAY:
            return f"{self.carrier} allows {self.limit} {self.what} per line per day"
        if self.kind is RuleKind.PER_MONTH:
            return f"{self.carrier} allows {self.limit} {self.what} per line per month"
        if self.kind is RuleKind.NOT_WHILE_SUSPENDED:
            return f"{self.carrier} allows no {self.what} while the line is suspended"
        if self.kind is RuleKind.MAX_SUSPENDED_DAYS:
            return f"{self.carrier} allows at most {self.limit} days suspended in a row"
        if self.kind is RuleKind.MAX_DAYS_AHEAD:
            return f"{self.carrier} takes an effective date at most {self.limit} days ahead"
        return f"{self.carrier}: {_UNKNOWN}"


@dataclass(frozen=True)
class LineHistory:
    """What is recorded about one line, counting rows waiting in other bulk changes.

    ``actions_today``: provisioning actions (status changes) done today (UTC) or waiting to be
    sent; ``plan_changes_this_month``: carrier plan changes this calendar month, done or waiting;
    ``status``: the line's current status and ``status_since`` when it took it (None: unknown).
    """

    actions_today: int = 0
    plan_changes_this_month: int = 0
    status: str | None = None
    status_since: datetime | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a row is refused, and ``allowed_at``: the first moment the rule allows it (None: waiting
    does not help, e.g. a plan change while suspended)."""

    rule: CarrierRule
    reason: str
    allowed_at: datetime | None


_STATUS = frozenset({ChangeType.STATUS_UPDATE})
_PLAN = frozenset({ChangeType.CARRIER_RATE_PLAN_CHANGE})
_ANY = frozenset(ChangeType)

CARRIER_RULES: tuple[CarrierRule, ...] = (
    # Verizon ThingSpace, "Service Provisioning Rules": Activate, Suspend, Restore and Deactivate
    # are the provisioning actions; "most accounts" get 5 (25 suspend/restore with IoT Order Flow,
    # which no account here has). The day boundary is not published: UTC midnight is [I].
    CarrierRule(
        Integration.THINGSPACE,
        RuleKind.PER_DAY,
        _STATUS,
        5,
        "provisioning actions",
        f"{_THINGSPACE_TITLE}, {THINGSPACE_RULES_URL}",
        "D",
        note="day boundary UTC midnight [I]",
    ),
    CarrierRule(
        Integration.THINGSPACE,
        RuleKind.PER_MONTH,
        _PLAN,
        4,
        "plan changes",
        f"{_THINGSPACE_TITLE}, {THINGSPACE_RULES_URL}",
        "D",
        note="month boundary UTC [I]",
    ),
    CarrierRule(
        Integration.THINGSPACE,
        RuleKind.NOT_WHILE_SUSPENDED,
        _PLAN,
        None,
        "plan changes",
        f"{_THINGSPACE_TITLE}, {THINGSPACE_RULES_URL}",
        "D",
    ),
    CarrierRule(
        Integration.THINGSPACE,
        RuleKind.MAX_SUSPENDED_DAYS,
        _STATUS,
        90,
        "suspended days",
        f"{_THINGSPACE_TITLE}, {THINGSPACE_RULES_URL}",
        "D",
        checked_here=False,
        note="also 180 suspended days per year; Verizon restores the line itself, nothing to refuse",
    ),
    CarrierRule(
        Integration.JASPER,
        RuleKind.MAX_DAYS_AHEAD,
        _ANY,
        JASPER_DATES.max_days_ahead,
        "days ahead",
        _JASPER_URL,
        "D",
        checked_here=False,
        note="enforced by capabilities.JASPER_DATES (CarrierDates): a later date waits in SCHEDULED",
    ),
    CarrierRule(
        Integration.JASPER,
        RuleKind.UNKNOWN,
        _ANY,
        None,
        "per-line actions",
        "Control Center API docs: only ~5 calls/s per account (a rate limit, not a line rule)",
        "D",
        checked_here=False,
    ),
    *(
        CarrierRule(integ, RuleKind.UNKNOWN, _ANY, None, "per-line actions", _UNKNOWN, "D", checked_here=False)
        for integ in (Integration.TELEGENCE, Integration.TEAL, Integration.POND, Integration.REVIO)
    ),
)


def rules_for(rules: Sequence[CarrierRule], integration: Integration, change_type: ChangeType) -> list[CarrierRule]:
    """The rules of ``rules`` this module checks for one carrier and change type."""
    return [r for r in rules if r.checked_here and r.integration is integration and change_type in r.change_types]


def next_day(now: datetime) -> datetime:
    """The next UTC midnight after ``now`` (same tz-awareness as ``now``)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    """The first instant of the next UTC calendar month after ``now``."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


def _plural(n: int, what: str) -> str:
    return f"{n} {what[:-1] if n == 1 and what.endswith('s') else what}"


def check_row(
    rules: Sequence[CarrierRule],
    integration: Integration,
    change_type: ChangeType,
    history: LineHistory,
    now: datetime,
) -> Refusal | None:
    """The first rule the row would break, or None. Counts in ``history`` are the line's before
    this row: a row is refused when the count is already at (or over) the limit."""
    for rule in rules_for(rules, integration, change_type):
        source = f"(source: {rule.source}, {rule.evidence})"
        if rule.kind is RuleKind.PER_DAY and rule.limit is not None and history.actions_today >= rule.limit:
            return Refusal(
                rule,
                f"{_plural(history.actions_today, rule.what)} today; {rule.text} {source}",
                next_day(now),
            )
        if rule.kind is RuleKind.PER_MONTH and rule.limit is not None and history.plan_changes_this_month >= rule.limit:
            return Refusal(
                rule,
                f"{_plural(history.plan_changes_this_month, rule.what)} this month; {rule.text} {source}",
                next_month(now),
            )
        if rule.kind is RuleKind.NOT_WHILE_SUSPENDED and (history.status or "").strip().lower() == SUSPENDED:
            since = f" since {history.status_since:%Y-%m-%d}" if history.status_since else ""
            return Refusal(rule, f"the line is suspended{since}; {rule.text} {source}", None)
    return None
