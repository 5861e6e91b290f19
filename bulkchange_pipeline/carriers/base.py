"""The carrier port: the one interface between the engine and every carrier client.

The engine only ever sees these types: it builds `DeviceChange` rows, hands a batch to a
`CarrierAdapter`, and stores the `DeviceResult`s and their `LogEntry`s. Keeping this module free of
HTTP and of any one carrier's vocabulary is what lets a new carrier be added without touching the
engine, and lets the engine be tested against any adapter. The port speaks the domain's enums
(`ChangeType`, `DeviceChangeStatus`, `Integration`), so no number or status word is copied here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..domain import CarrierProtocol, ChangeType, DeviceChangeStatus, Integration

if TYPE_CHECKING:
    from .http import CallResult

__all__ = [
    "AsyncOutcome",
    "BusinessCarrierError",
    "CarrierAccount",
    "CarrierAdapter",
    "CarrierError",
    "DeviceChange",
    "DeviceResult",
    "LogEntry",
    "TransientCarrierError",
    "WritesDisabledError",
    "require_writes",
]


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


def require_writes(account: CarrierAccount, carrier: str) -> None:
    """Raise WritesDisabledError unless `account` may write: every client calls this first in
    `apply`, so the refusal (and its message) is the same for every carrier."""
    if not account.write_enabled:
        raise WritesDisabledError(
            f"writes are disabled for service provider {account.service_provider_id}; nothing was sent to {carrier}"
        )


@dataclass(frozen=True)
class CarrierAccount:
    """One service provider's connection settings; the secret comes from the environment, never
    from the database, and is hidden from repr so it cannot leak through logs or Dagster events.

    `integration` is the service provider's integration as configured (any spelling
    `Integration.parse` reads, e.g. "rogers" for the Jasper family), so labels keep its name.
    `protocol` picks the client among those of the integration (`carriers.build_adapter`): a
    Jasper-family account is reached through REST or through the SOAP Terminal service."""

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
    extra: dict[str, Any] = field(default_factory=dict, repr=False, hash=False, compare=False)
    # Where an async carrier should send callbacks: our callback endpoint's public base URL
    # (the adapter appends /callbacks/{callback_name}).
    callback_base_url: str | None = None
    # The tenant's billing (Rev.io) account, attached by the engine only for a change type whose
    # carrier must also update billing (`carriers.updates_billing`); None otherwise.
    billing: CarrierAccount | None = field(default=None, repr=False, compare=False, hash=False)
    protocol: CarrierProtocol = CarrierProtocol.REST


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
    cost_center, effective_date (ISO string or None). `change_type` is always a `ChangeType`
    (a plain number is converted on construction, so every client compares against the enum).
    """

    device_change_id: int
    device_id: int | None
    change_type: ChangeType
    iccid: str | None
    imei: str | None
    msisdn: str | None
    eid: str | None
    target: dict[str, Any]
    carrier_request_id: str | None = None  # set for rows an async carrier accepted (for poll/callback matching)
    # Our database's flag: the device's line has an active Rev.io service, so a change that must
    # reach billing too (Telegence EditUsernameCostCenter) updates that service.
    has_active_rev_service: bool = False

    def __post_init__(self) -> None:
        self.change_type = ChangeType(self.change_type)


@dataclass
class DeviceResult:
    """What happened to one device: PROCESSED, API_FAILED or PROCESSING (async, settled later).

    `new_values` are the device columns the carrier now holds, for the engine to write to the
    device table and the history. `status` is always a `DeviceChangeStatus` (a stored status
    string is converted on construction).
    """

    device_change_id: int
    status: DeviceChangeStatus
    detail: str
    new_values: dict[str, Any]
    carrier_request_id: str | None = None
    log: list[LogEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = DeviceChangeStatus(self.status)


@dataclass
class AsyncOutcome:
    """A carrier's final word on one device of an asynchronous request, read from a callback.

    `device_key` is the identifier the carrier reports for the device (ThingSpace: the ICCID, or
    the IMEI when only that is given; Teal: the EID), or "" when the callback covers the whole
    request and the result must be fetched (Teal's operation result). `status` is PROCESSED,
    API_FAILED, or PROCESSING when the callback only says "go fetch the result".
    """

    request_id: str
    device_key: str
    status: DeviceChangeStatus
    detail: str
    new_values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = DeviceChangeStatus(self.status)


@runtime_checkable
class CarrierAdapter(Protocol):
    """Everything the engine asks of a carrier; one adapter per carrier account.

    Every client subclasses this Protocol explicitly and so inherits the defaults below for what
    its carrier lacks (callbacks, a poll limit, a billing companion), so the engine uses each
    member directly and never asks whether a carrier has it. A carrier that answers later
    (ThingSpace, Teal, Telegence activations) returns PROCESSING results carrying its request id
    from `apply`; the outcome arrives as a callback (stored by the callback endpoint, read by
    `parse_callback`) or is fetched by `poll`. No call ever waits for the outcome.
    """

    integration: ClassVar[Integration]
    # The API this client speaks for its integration; (integration, protocol) keys the registry.
    protocol: ClassVar[CarrierProtocol] = CarrierProtocol.REST
    # Credentials-entry extras (`CarrierAccount.extra` keys) the client cannot work without; the
    # engine refuses the account before anything is sent when one is unset, naming its variable.
    required_extras: ClassVar[tuple[str, ...]] = ()
    # Path segment of our callback endpoint (/callbacks/{callback_name}); None: no callbacks.
    callback_name: ClassVar[str | None] = None
    # Status polls after which a row still pending is failed (None: it waits for the timeout).
    max_polls: ClassVar[int | None] = None
    # Change types whose carrier change must also update the tenant's billing (Rev.io) account:
    # for those the engine attaches that account (`CarrierAccount.billing`).
    billing_change_types: ClassVar[frozenset[ChangeType]] = frozenset()

    def __init__(self, account: CarrierAccount) -> None:
        """Every adapter is built from its account alone (`carriers.build_adapter`)."""

    def supports(self, change_type: ChangeType) -> bool:
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

    async def poll(self, changes: Sequence[DeviceChange]) -> list[DeviceResult | None]:
        """Ask the carrier about rows still PROCESSING (each has `carrier_request_id`): a final
        DeviceResult (PROCESSED / API_FAILED) where the carrier knows, None where still pending.
        Default: nothing to ask (None for every row; the engine's timeout ends them)."""
        return [None] * len(changes)

    @staticmethod
    def parse_callback(payload: dict[str, Any]) -> list[AsyncOutcome]:
        """Pure: the outcomes one stored callback body reports (may be empty for noise). Static,
        so a body can be read without an account (`carriers.parse_callback`). Default: none."""
        return []

    async def register_callback(self) -> CallResult | None:
        """Tell the carrier where to send callbacks (idempotent; the engine calls it before a
        batch's first write when a callback base URL is set). Default: nothing to register, as
        for a carrier without callbacks or one that names the URL in every request (Teal)."""
        return None

    async def aclose(self) -> None:
        """Release the HTTP client."""
        ...
