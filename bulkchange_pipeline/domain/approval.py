"""Four-eyes approval: which bulk changes need a second person, and who may act on them.

Plain rules, no I/O. A tenant's approval policy (``ApprovalPolicy``) names what needs approval:
more than ``max_devices`` accepted devices, and/or (``irreversible``) a change the carrier cannot
undo, or that takes devices off the network so that undoing it later does not give back what was
lost. ``IRREVERSIBLE_STATUS`` and ``IRREVERSIBLE_CHANGE_TYPES`` are that rule as a table, each
entry with its reason and source, so a reviewer can check it against the carrier's documentation.

Roles (``Role``) belong to API keys: a ``viewer`` reads, a ``submitter`` submits and operates
(cancel, retry-failed, resume, release), an ``approver`` approves or rejects bulk changes that wait
for approval, never one it submitted itself (``self_approval_reason``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .enums import ChangeType, Integration

__all__ = [
    "DEFAULT_EXPIRES_AFTER_HOURS",
    "IRREVERSIBLE_CHANGE_TYPES",
    "IRREVERSIBLE_STATUS",
    "MAX_REASON_LENGTH",
    "ApprovalPolicy",
    "ApprovalState",
    "Role",
    "approval_needed",
    "irreversible_reason",
    "parse_roles",
    "self_approval_reason",
]

DEFAULT_EXPIRES_AFTER_HOURS = 72  # three days: a weekend does not expire a Friday submission
MAX_REASON_LENGTH = 2000  # a reject reason: stored and returned whole


class Role(str, enum.Enum):
    """What an API key may do. A key has one or more roles."""

    VIEWER = "viewer"  # read only: status, results, downloads
    SUBMITTER = "submitter"  # submit, cancel, retry-failed, resume, release, notification subscriptions
    APPROVER = "approver"  # approve or reject others' bulk changes awaiting approval


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    """Roles from their names (any case, blanks ignored); ValueError naming the valid ones."""
    roles = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                roles.add(Role(name))
            except ValueError:
                valid = ", ".join(r.value for r in Role)
                raise ValueError(f"unknown role {part.strip()[:40]!r}; valid roles: {valid}") from None
    if not roles:
        raise ValueError("an API key needs at least one role: viewer, submitter or approver")
    return frozenset(roles)


class ApprovalState(str, enum.Enum):
    """Where an approval request stands (``bulk_change_approval.state``)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # the bulk change was cancelled while it waited


@dataclass(frozen=True)
class ApprovalPolicy:
    """A tenant's policy. No policy row: nothing needs approval (the behaviour before approvals)."""

    max_devices: int | None = None  # more accepted devices than this need approval; None: no size rule
    irreversible: bool = False  # changes in the irreversible table need approval
    expires_after_hours: int = DEFAULT_EXPIRES_AFTER_HOURS


# (integration, target status as the carrier spells it) -> why it cannot simply be undone.
# The statuses are the carriers' own spellings (``domain.transitions``); sources in brackets are
# /work/shared/reference/carriers.md sections. Deactivations are listed even where the carrier lets
# the status be set back: the devices are off the network (and on ThingSpace an early termination
# fee is charged) in the meantime, which no later change gives back.
IRREVERSIBLE_STATUS: Mapping[tuple[Integration, str], str] = {
    (Integration.JASPER, "RETIRED"): "Control Center: RETIRED is off the network; its only next status is PURGED "
    "[carriers.md 1, T-Mobile Control Center SIM management page]",
    (Integration.JASPER, "PURGED"): "Control Center: PURGED is terminal [carriers.md 1]",
    (Integration.JASPER, "DEACTIVATED"): "Control Center: deactivation takes the SIMs off the network until "
    "someone activates them again [carriers.md 1]",
    (Integration.THINGSPACE, "deactive"): "ThingSpace: deactivate releases the line and may charge an early "
    "termination fee (the request's etfWaiver field) [carriers.md 2, POST /devices/actions/deactivate]",
    (Integration.TELEGENCE, "C"): "Telegence: C (cancelled) is terminal: no status leads out of it [carriers.md 3]",
    (Integration.TEAL, "stopped"): "Teal: stopped disables the SIM's connectivity [carriers.md 4]",
    (Integration.POND, "DEACTIVATED"): "Pond: deactivation disables every service of the SIM [carriers.md 5]",
}

# Change types that cannot be undone on any carrier, whatever their values.
IRREVERSIBLE_CHANGE_TYPES: Mapping[ChangeType, str] = {
    ChangeType.ARCHIVAL: "Archival retires the devices from the inventory; nothing restores them",
    ChangeType.CHANGE_ICCID_AND_IMEI: "an ICCID/IMEI swap moves the line to another SIM or device; the old SIM "
    "is unusable after the swap [carriers.md 2 change4gOption, 3 ICCID/IMEI swap]",
}


def irreversible_reason(
    change_type: ChangeType, integration: Integration, targets: Iterable[Mapping[str, Any]]
) -> str | None:
    """Why this change cannot be reversed on this carrier (the first reason found), or None.

    ``targets``: the accepted rows' ``change_request`` values (a StatusUpdate's target status is per
    row: one deactivating row is enough)."""
    if change_type in IRREVERSIBLE_CHANGE_TYPES:
        return IRREVERSIBLE_CHANGE_TYPES[change_type]
    if change_type is not ChangeType.STATUS_UPDATE:
        return None
    wanted = {key[1].lower(): reason for key, reason in IRREVERSIBLE_STATUS.items() if key[0] is integration}
    for target in targets:
        status = str(target.get("status") or "").strip().lower()
        if status in wanted:
            return wanted[status]
    return None


def approval_needed(
    policy: ApprovalPolicy,
    accepted: int,
    change_type: ChangeType,
    integration: Integration,
    targets: Iterable[Mapping[str, Any]],
) -> str | None:
    """Why the policy needs an approval for this bulk change, or None. Nothing accepted (every
    device refused) needs none: nothing would be sent."""
    if accepted <= 0:
        return None
    reasons = []
    if policy.max_devices is not None and accepted > policy.max_devices:
        reasons.append(f"{accepted} devices is more than the policy's {policy.max_devices}")
    if policy.irreversible and (why := irreversible_reason(change_type, integration, targets)):
        reasons.append(f"cannot be reversed: {why}")
    return "; ".join(reasons) or None


def self_approval_reason(submitted_by: str, acting: str) -> str | None:
    """The four-eyes rule: the one who submitted a bulk change never approves it. ``submitted_by``
    and ``acting`` are principals (an API key's id, or the CLI's operator name)."""
    if submitted_by == acting:
        return "four-eyes rule: a bulk change is approved by someone other than the one who submitted it"
    return None
