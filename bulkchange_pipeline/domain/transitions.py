"""Per-carrier device status values and the transitions our validation allows.

Values are the carrier's own spelling, as stored in ``device.status``. A target status that is not
reachable from the device's current status is refused before anything is sent. Setting a device
to the status it already has is allowed (a no-op the carrier accepts), so a re-run never fails on
devices that an earlier run already changed.
"""

from __future__ import annotations

from .enums import Integration

Transitions = dict[str, frozenset[str]]


def _t(table: dict[str, set[str]]) -> Transitions:
    return {k: frozenset(v) for k, v in table.items()}


# Cisco Control Center (carriers.md section 1). TEST_READY and ACTIVATION_READY also move on by
# themselves on the network; RETIRED is off the network; PURGED and REPLACED are terminal.
JASPER = _t(
    {
        "INVENTORY": {"TEST_READY", "ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"},
        "TEST_READY": {"ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "INVENTORY", "RETIRED"},
        "ACTIVATION_READY": {"ACTIVATED", "DEACTIVATED", "TEST_READY", "INVENTORY", "RETIRED"},
        "ACTIVATED": {"DEACTIVATED", "RETIRED"},
        "DEACTIVATED": {"ACTIVATED", "ACTIVATION_READY", "TEST_READY", "INVENTORY", "RETIRED"},
        "RETIRED": {"PURGED"},
        "PURGED": set(),
        "REPLACED": set(),
    }
)

# Verizon ThingSpace (carriers.md section 2); the API spells states in lowercase.
THINGSPACE = _t(
    {
        "pre-active": {"active"},
        "pending activation": {"active", "deactive"},
        "active": {"deactive", "suspend"},
        "suspend": {"active", "deactive"},
        "deactive": {"active"},
    }
)

# AT&T Telegence subscriberStatus: A active, S suspended, C cancelled (terminal).
TELEGENCE = _t({"A": {"S", "C"}, "S": {"A", "C"}, "C": set()})

# Teal: enable (online/waiting) and disable (stopped).
TEAL = _t({"online": {"stopped"}, "waiting": {"stopped", "online"}, "stopped": {"online"}})

# Pond: all services enabled or disabled.
POND = _t({"ACTIVATED": {"DEACTIVATED"}, "DEACTIVATED": {"ACTIVATED"}})

TRANSITIONS: dict[Integration, Transitions] = {
    Integration.JASPER: JASPER,
    Integration.THINGSPACE: THINGSPACE,
    Integration.TELEGENCE: TELEGENCE,
    Integration.TEAL: TEAL,
    Integration.POND: POND,
}


def canonical_status(integration: Integration, value: str) -> str | None:
    """The carrier's spelling of ``value`` (case-insensitive), or None if it is not a status."""
    table = TRANSITIONS.get(integration, {})
    wanted = value.strip().lower().replace("_", " ") if integration is Integration.THINGSPACE else value.strip()
    for status in table:
        if status.lower() == wanted.lower():
            return status
    return None


def transition_error(integration: Integration, current: str | None, target: str) -> str | None:
    """None when ``current -> target`` is allowed, else a reason a person can act on."""
    table = TRANSITIONS.get(integration)
    if table is None:
        return f"{integration.value} has no device statuses"
    canonical = canonical_status(integration, target)
    if canonical is None:
        return f"unknown {integration.value} status {target!r}; valid: {', '.join(sorted(table))}"
    if current is None or current == canonical:
        return None
    if current not in table:
        return f"device has status {current!r}, which {integration.value} does not know; fix the device first"
    if canonical not in table[current]:
        allowed = ", ".join(sorted(table[current])) or "none (terminal status)"
        return f"cannot change status from {current} to {canonical} on {integration.value}; allowed from {current}: {allowed}"
    return None
