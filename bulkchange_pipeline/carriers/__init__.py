"""Carrier clients behind one interface (`base.CarrierAdapter`), and the registry that picks the
client for a service provider's integration, so the engine never names a carrier module.

`BILLING_UPDATES` says which (integration, change type) pairs must also reach the tenant's
billing (Rev.io) account; for those the engine attaches that account (`CarrierAccount.billing`)
and the registry hands the carrier's client a Rev.io client as its billing companion.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    EDIT_USERNAME_COST_CENTER,
    AsyncOutcome,
    BusinessCarrierError,
    CarrierAccount,
    CarrierAdapter,
    CarrierError,
    DeviceChange,
    DeviceResult,
    LogEntry,
    TransientCarrierError,
    WritesDisabledError,
)


def _jasper(account: CarrierAccount) -> CarrierAdapter:
    from .jasper import JasperClient

    return JasperClient(account)


def _teal(account: CarrierAccount) -> CarrierAdapter:
    from .teal import TealClient

    return TealClient(account)


def _thingspace(account: CarrierAccount) -> CarrierAdapter:
    from .thingspace import ThingSpaceClient

    return ThingSpaceClient(account)


def _pond(account: CarrierAccount) -> CarrierAdapter:
    from .pond import PondClient

    return PondClient(account)


def _telegence(account: CarrierAccount) -> CarrierAdapter:
    from .revio import RevioClient
    from .telegence import TelegenceClient

    billing = RevioClient(account.billing) if account.billing is not None else None
    return TelegenceClient(account, billing=billing)


def _revio(account: CarrierAccount) -> CarrierAdapter:
    from .revio import RevioClient

    return RevioClient(account)


# Integration name -> adapter factory. The Jasper family shares one wire format.
ADAPTERS: dict[str, Callable[[CarrierAccount], CarrierAdapter]] = {
    "jasper": _jasper,
    "att_cisco_jasper": _jasper,
    "att_pod19": _jasper,
    "t_mobile_jasper": _jasper,
    "rogers": _jasper,
    "thingspace": _thingspace,
    "teal": _teal,
    "revio": _revio,
    "telegence": _telegence,
    "pond": _pond,
}


# Integration -> change types whose carrier change must also update the line's Rev.io service
# (DESIGN section 4, "PATCH + Rev update").
BILLING_UPDATES: dict[str, frozenset[int]] = {
    "telegence": frozenset({EDIT_USERNAME_COST_CENTER}),
}


def updates_billing(integration: str, change_type: int) -> bool:
    """True if `change_type` on this integration also updates the tenant's Rev.io account."""
    return change_type in BILLING_UPDATES.get(integration.strip().lower(), frozenset())


class UnknownIntegrationError(CarrierError, ValueError):
    """No client is registered for the service provider's integration."""


def build_adapter(account: CarrierAccount) -> CarrierAdapter:
    """The adapter for `account.integration` (case-insensitive)."""
    key = account.integration.strip().lower()
    factory = ADAPTERS.get(key)
    if factory is None:
        known = ", ".join(sorted(ADAPTERS))
        raise UnknownIntegrationError(
            f"no carrier client for integration {account.integration!r} "
            f"(service provider {account.service_provider_id}); known: {known}"
        )
    return factory(account)


def parse_callback(integration: str, payload: dict) -> list[AsyncOutcome]:
    """The outcomes a callback body reports, for the callback endpoint (dedupe keys) and reconcile.

    Pure and carrier-specific; raises UnknownIntegrationError for a carrier that has no callbacks.
    """
    key = integration.strip().lower()
    if key == "thingspace":
        from .thingspace_wire import parse_thingspace_callback

        return parse_thingspace_callback(payload)
    if key == "teal":
        from .teal_wire import parse_teal_callback

        return parse_teal_callback(payload)
    raise UnknownIntegrationError(f"{integration!r} sends no callbacks (known: thingspace, teal)")


__all__ = [
    "ADAPTERS",
    "BILLING_UPDATES",
    "AsyncOutcome",
    "parse_callback",
    "BusinessCarrierError",
    "CarrierAccount",
    "CarrierAdapter",
    "CarrierError",
    "DeviceChange",
    "DeviceResult",
    "LogEntry",
    "TransientCarrierError",
    "UnknownIntegrationError",
    "WritesDisabledError",
    "build_adapter",
    "updates_billing",
]
