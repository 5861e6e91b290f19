"""The carrier-neutral interface between the engine and every carrier client.

The engine only ever sees these types: it builds `DeviceChange` rows, hands a batch to a
`CarrierAdapter`, and stores the `DeviceResult`s and their `LogEntry`s. Keeping this module free of
HTTP and of any one carrier's vocabulary is what lets a new carrier be added without touching the
engine, and lets the engine be tested against any adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

# ChangeType numbers (DESIGN section 4). The domain layer owns the enum; these plain ints keep the
# carriers package importable on its own and match the enum's values one for one.
STATUS_UPDATE = 1
ACTIVATE_NEW_SERVICE = 2
ARCHIVAL = 3
CUSTOMER_RATE_PLAN_CHANGE = 4
CUSTOMER_ASSIGNMENT = 5
CARRIER_RATE_PLAN_CHANGE = 7
CREATE_REV_SERVICE = 8
CHANGE_ICCID_AND_IMEI = 9
EDIT_USERNAME_COST_CENTER = 10

# DeviceResult.status values.
PROCESSED = "PROCESSED"
API_FAILED = "API_FAILED"
PROCESSING = "PROCESSING"


class CarrierError(Exception):
    """Base of every error a carrier client raises.

    `log` carries the redacted exchanges that led to the error, so a caller that turns the error
    into a per-device failure can still store the audit trail of what was sent and received.
    """

    def __init__(self, message: str, *, log: list[LogEntry] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log: list[LogEntry] = list(log or [])


class TransientCarrierError(CarrierError):
    """A failure worth retrying: 5xx, timeouts, 429, Jasper 40000029, a malformed body.

    `retry_after` is a wait the carrier stated (Retry-After header or "try again in N seconds");
    `over_limit` marks the carrier's own rate-limit answer so the limiter can back off and the
    benchmarks can count over-limit answers separately from faults.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        over_limit: bool = False,
        log: list[LogEntry] | None = None,
    ) -> None:
        super().__init__(message, log=log)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.over_limit = over_limit


class BusinessCarrierError(CarrierError):
    """The carrier refused the change (a 4xx business answer). Retrying would get the same answer,
    so it is recorded per device and never retried."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int = 400,
        log: list[LogEntry] | None = None,
    ) -> None:
        super().__init__(message, log=log)
        self.code = code
        self.status = status

    def __str__(self) -> str:
        prefix = f"[{self.code}] " if self.code else ""
        return f"{prefix}{self.message} (HTTP {self.status})"


class WritesDisabledError(CarrierError):
    """The service provider has `write_enabled = false`: operations switched writes off for this
    account, so nothing may be sent to the carrier (not even a first attempt)."""


@dataclass(frozen=True)
class CarrierAccount:
    """One service provider's connection settings; the secret comes from the environment, never
    from the database, and is hidden from repr so it cannot leak through logs or Dagster events."""

    service_provider_id: int
    integration: str
    base_url: str
    username: str
    secret: str = field(repr=False)
    rate_per_second: float = 5.0
    max_concurrency: int = 1
    write_enabled: bool = True
    timeout_seconds: float = 10.0
    max_attempts: int = 4
    retry_wait_seconds: float = 1.0
    # Further secrets some carriers need (ThingSpace OAuth client_id/client_secret and the callback
    # username/password it echoes; Rev.io subscription_key), keyed in lower case.
    extra: dict = field(default_factory=dict, repr=False, hash=False, compare=False)
    # Where an async carrier should send callbacks: our callback endpoint's public base URL
    # (the adapter appends /callbacks/{callback_name}).
    callback_base_url: str | None = None
    # The tenant's billing (Rev.io) account, attached by the engine only for a change type whose
    # carrier must also update billing (`carriers.BILLING_UPDATES`); None otherwise.
    billing: CarrierAccount | None = field(default=None, repr=False, compare=False, hash=False)


@dataclass
class LogEntry:
    """One redacted request/response exchange, stored as a bulk_change_log row."""

    description: str
    request_text: str
    response_text: str
    response_status: int | None
    has_errors: bool
    response_ms: float | None = None  # how long the carrier took to answer (None: no exchange)
    # Which try of one logical request this was (1 = first), and when it was sent (naive UTC): the
    # wait before try n is sent_at[n] - (sent_at[n-1] + response_ms[n-1]), so the audit log shows
    # the retry policy at work, not only its outcome. None for entries that are no HTTP exchange.
    attempt: int | None = None
    sent_at: datetime | None = None


@dataclass
class DeviceChange:
    """One device row to apply, built by the engine from a device_change row.

    `target` keys: status, carrier_rate_plan, communication_plan, customer_name, username,
    cost_center, effective_date (ISO string or None).
    """

    device_change_id: int
    device_id: int | None
    change_type: int
    iccid: str | None
    imei: str | None
    msisdn: str | None
    eid: str | None
    target: dict
    carrier_request_id: str | None = None  # set for rows an async carrier accepted (for poll/callback matching)
    # Our database's flag: the device's line has an active Rev.io service, so a change that must
    # reach billing too (Telegence EditUsernameCostCenter) updates that service.
    has_active_rev_service: bool = False


@dataclass
class DeviceResult:
    """What happened to one device: PROCESSED, API_FAILED or PROCESSING (async, settled later).

    `new_values` are the device columns the carrier now holds, for the engine to write to the
    device table and the history.
    """

    device_change_id: int
    status: str
    detail: str
    new_values: dict
    carrier_request_id: str | None = None
    log: list[LogEntry] = field(default_factory=list)


@runtime_checkable
class CarrierAdapter(Protocol):
    """What the engine calls. One adapter per carrier account."""

    integration: str

    def supports(self, change_type: int) -> bool:
        """True if this carrier applies `change_type` through its API."""
        ...

    async def apply(self, changes: Sequence[DeviceChange]) -> list[DeviceResult]:
        """Apply the changes concurrently under the account's limits, one result per change in the
        same order. Never raises for a per-device failure (that becomes API_FAILED with the
        carrier's message); raises WritesDisabledError if the account has writes disabled."""
        ...

    async def already_applied(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """For rows an earlier crashed attempt left in PROCESSING: a PROCESSED result if the
        carrier already holds the target, else None so the caller re-sends."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...


@dataclass
class AsyncOutcome:
    """A carrier's final word on one device of an asynchronous request, read from a callback.

    `device_key` is the identifier the carrier reports for the device (ThingSpace: the ICCID, or
    the IMEI when only that is given; Teal: the EID), or "" when the callback covers the whole
    request and the result must be fetched (Teal's operation result).
    """

    request_id: str
    device_key: str
    status: str  # PROCESSED | API_FAILED | PROCESSING (callback says "go fetch the result")
    detail: str
    new_values: dict = field(default_factory=dict)


@runtime_checkable
class AsyncCarrierAdapter(CarrierAdapter, Protocol):
    """A carrier that answers later. `apply` returns PROCESSING results carrying the carrier's
    request id; the outcome arrives as a callback (stored by the callback endpoint, parsed here)
    or is fetched by `poll`. No call ever waits for the outcome."""

    callback_name: str  # path segment of the callback endpoint: /callbacks/{callback_name}

    def parse_callback(self, payload: dict) -> list[AsyncOutcome]:
        """Pure: the outcomes one stored callback body reports (may be empty for noise)."""
        ...

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Ask the carrier about rows still PROCESSING (each has `carrier_request_id`): a final
        DeviceResult (PROCESSED / API_FAILED) where the carrier knows, None where still pending."""
        ...
